//! A Dockerfile as owned data: the `escape` directive, the `ARG`s before the
//! first `FROM`, and the stages with their instructions, each with its line,
//! column and text for diagnostics.
//!
//! The syntax (directives, line continuations, comments, heredocs, JSON
//! forms, flags) is the `parse-dockerfile` crate's; this module turns its
//! borrowed tree into [`Dockerfile`], splits `ENV`/`LABEL`/`ARG` into words
//! as Docker does, joins the continuation lines of shell forms, and rejects
//! what Docker rejects (and the BuildKit-only flags moor does not run).
//! Nothing is substituted here: see [`crate::resolve`].
//!
//! Start at [`parse`].

use std::collections::HashMap;

use parse_dockerfile as pd;

use crate::words;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\`, or `` ` `` from `# escape=`).
    pub escape: char,
    /// `ARG` instructions before the first `FROM`: usable in `FROM` only.
    pub meta_args: Vec<Instruction>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `FROM` instruction ([`Kind::From`]).
    pub from: Instruction,
    /// The instructions after it.
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The stage's name from `AS name`, lower-cased as Docker compares it.
    pub fn name(&self) -> Option<&str> {
        match &self.from.kind {
            Kind::From { name, .. } => name.as_deref(),
            _ => None,
        }
    }
}

/// One instruction and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the keyword.
    pub line: usize,
    /// 1-based column of the keyword.
    pub column: usize,
    /// The instruction as written, continuation lines joined (heredoc
    /// bodies left out): for messages and history.
    pub text: String,
    /// What it says.
    pub kind: Kind,
}

impl Instruction {
    /// The keyword, upper-case (`COPY`).
    pub fn keyword(&self) -> &'static str {
        self.kind.keyword()
    }
}

/// A command of `RUN`, `CMD`, `ENTRYPOINT` or `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    /// The JSON form: run as is.
    Exec(Vec<String>),
    /// The shell form: given to the `SHELL` (`/bin/sh -c` by default).
    Shell(String),
}

/// A source of `COPY` or `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A path (or glob, or URL for `ADD`) as written, not yet substituted.
    Path(String),
    /// A heredoc (`COPY <<EOF /dst`): its body is the file.
    HereDoc {
        /// The delimiter: the file's name in a directory destination.
        name: String,
        /// The body, lines included, as written.
        body: String,
        /// Whether variables are substituted in it (the delimiter was not quoted).
        expand: bool,
    },
}

/// `COPY` and `ADD`, with the flags moor supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    /// `--from=STAGE|INDEX|IMAGE` (COPY only).
    pub from: Option<String>,
    /// `--chown=USER[:GROUP]`.
    pub chown: Option<String>,
    /// `--chmod=MODE`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--checksum=sha256:…` (ADD of a URL only).
    pub checksum: Option<String>,
    /// The sources, at least one.
    pub sources: Vec<Source>,
    /// The destination, as written.
    pub dest: String,
}

/// `HEALTHCHECK` options (durations and retries as written).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthOptions {
    /// `--interval`.
    pub interval: Option<String>,
    /// `--timeout`.
    pub timeout: Option<String>,
    /// `--start-period`.
    pub start_period: Option<String>,
    /// `--start-interval`.
    pub start_interval: Option<String>,
    /// `--retries`.
    pub retries: Option<String>,
}

/// What an instruction says. Strings are as written (quotes and variables
/// still in them) except where the syntax itself removed them (JSON forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `FROM [--platform=P] IMAGE [AS name]`.
    From {
        /// The image, a stage's name, or `scratch`.
        image: String,
        /// The stage's name, lower-cased.
        name: Option<String>,
        /// `--platform`.
        platform: Option<String>,
    },
    /// `ARG name[=default] …`.
    Arg(Vec<(String, Option<String>)>),
    /// `ENV k=v …`.
    Env(Vec<(String, String)>),
    /// `LABEL k=v …`.
    Label(Vec<(String, String)>),
    /// `RUN [--network=none|host|default] command`.
    Run {
        /// The command; a heredoc script is part of the shell form.
        command: Command,
        /// `--network`.
        network: Option<String>,
    },
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `SHELL ["executable", "parameters"]`.
    Shell(Vec<String>),
    /// `COPY`.
    Copy(CopyArgs),
    /// `ADD`.
    Add(CopyArgs),
    /// `EXPOSE port[/proto] …`.
    Expose(Vec<String>),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `USER user[:group]`.
    User(String),
    /// `WORKDIR path`.
    Workdir(String),
    /// `STOPSIGNAL signal`.
    Stopsignal(String),
    /// `HEALTHCHECK [options] CMD command`; `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<(HealthOptions, Command)>),
    /// `ONBUILD INSTRUCTION`: recorded in the image, run by its children.
    Onbuild {
        /// The trigger as written (what the image config records).
        trigger: String,
        /// The trigger parsed.
        instruction: Box<Instruction>,
    },
    /// `MAINTAINER name` (deprecated; sets the author).
    Maintainer(String),
}

impl Kind {
    /// The keyword, upper-case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Kind::From { .. } => "FROM",
            Kind::Arg(_) => "ARG",
            Kind::Env(_) => "ENV",
            Kind::Label(_) => "LABEL",
            Kind::Run { .. } => "RUN",
            Kind::Cmd(_) => "CMD",
            Kind::Entrypoint(_) => "ENTRYPOINT",
            Kind::Shell(_) => "SHELL",
            Kind::Copy(_) => "COPY",
            Kind::Add(_) => "ADD",
            Kind::Expose(_) => "EXPOSE",
            Kind::Volume(_) => "VOLUME",
            Kind::User(_) => "USER",
            Kind::Workdir(_) => "WORKDIR",
            Kind::Stopsignal(_) => "STOPSIGNAL",
            Kind::Healthcheck(_) => "HEALTHCHECK",
            Kind::Onbuild { .. } => "ONBUILD",
            Kind::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// A Dockerfile that cannot be parsed or built as written, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {}{message}", instruction_prefix(.instruction))]
pub struct DockerfileError {
    /// The Dockerfile's name as the user gave it.
    pub file: String,
    /// 1-based line (0 when the file as a whole is wrong).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The instruction's text, when the error is in one.
    pub instruction: Option<String>,
    /// What is wrong.
    pub message: String,
}

fn instruction_prefix(instruction: &Option<String>) -> String {
    match instruction {
        Some(text) => format!("{}: ", truncate(text, 80)),
        None => String::new(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Parses `text`, read from `file` (the name used in errors).
pub fn parse(file: &str, text: &str) -> Result<Dockerfile, DockerfileError> {
    let (blanked, later_heredocs) = later_heredocs(text);
    let text = blanked.as_str();
    let parsed = pd::parse(text).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        DockerfileError {
            file: file.to_owned(),
            line,
            column,
            instruction: (line > 0)
                .then(|| text.lines().nth(line - 1))
                .flatten()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty()),
            message: format!("{e:#}"),
        }
    })?;
    let escape = parsed
        .parser_directives
        .escape
        .as_ref()
        .map_or('\\', |d| d.value.value);
    let cx = Cx {
        file,
        text,
        escape,
        later_heredocs,
    };
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for inst in &parsed.instructions {
        let mut converted = cx.instruction(inst)?;
        if let Some(h) = cx.later_heredocs.get(&converted.line)
            && matches!(converted.kind, Kind::Run { .. })
        {
            converted.text = h.line.clone();
        }
        match (&converted.kind, stages.last_mut()) {
            (Kind::From { name, .. }, _) => {
                if let Some(name) = name
                    && stages.iter().any(|s| s.name() == Some(name))
                {
                    return Err(cx.error(&converted, format!("duplicate stage name {name:?}")));
                }
                stages.push(Stage {
                    from: converted,
                    instructions: Vec::new(),
                });
            }
            (_, Some(stage)) => stage.instructions.push(converted),
            (Kind::Arg(_), None) => meta_args.push(converted),
            (_, None) => return Err(cx.error(&converted, "expected FROM".into())),
        }
    }
    Ok(Dockerfile {
        escape,
        meta_args,
        stages,
    })
}

struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    escape: char,
    /// The `RUN`s [`later_heredocs`] took, by line.
    later_heredocs: HashMap<usize, LaterHeredocs>,
}

/// A heredoc's opening in a command line: `<<WORD`, `<<-WORD`, `<<'WORD'`
/// or `<<"WORD"` (not `<<<`), as BuildKit finds them; its delimiter and
/// whether leading tabs are stripped.
fn heredoc_openings(line: &str) -> Vec<(String, bool)> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None if c == b'\\' => i += 1,
            None if b[i..].starts_with(b"<<")
                && (i == 0 || b[i - 1] != b'<')
                && b.get(i + 2) != Some(&b'<') =>
            {
                let mut j = i + 2;
                let strip = b.get(j) == Some(&b'-');
                if strip {
                    j += 1;
                }
                let q = b.get(j).copied().filter(|c| *c == b'\'' || *c == b'"');
                if q.is_some() {
                    j += 1;
                }
                let start = j;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                let word = &line[start..j];
                let closed = q.is_none_or(|q| b.get(j) == Some(&q));
                if !word.is_empty() && !word.as_bytes()[0].is_ascii_digit() && closed {
                    out.push((word.to_owned(), strip));
                    i = j + usize::from(q.is_some());
                    continue;
                }
            }
            None => {}
        }
        i += 1;
    }
    out
}

/// A `RUN` with heredocs the parser does not take.
struct LaterHeredocs {
    /// Its first line, as written.
    line: String,
    /// What the shell runs: the command, then the bodies and delimiter
    /// lines.
    script: String,
}

/// `RUN` lines whose heredocs parse-dockerfile does not take — one after
/// the start of the command (`RUN python3 <<EOF`), or several — as BuildKit
/// runs them: the shell gets the command line with the bodies and
/// delimiter lines after it, and reads the heredocs itself. Returns the
/// text the parser gets — such a `RUN`'s command `:`, its bodies and
/// delimiter lines blank, so that line numbers stay — and each such `RUN`
/// by line.
fn later_heredocs(text: &str) -> (String, HashMap<usize, LaterHeredocs>) {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut scripts = HashMap::new();
    let mut blank = vec![false; lines.len()];
    // The RUN lines, and where their command starts.
    let mut commands: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end_matches(['\n', '\r']);
        let trimmed = line.trim_start();
        let Some((keyword, mut rest)) = trimmed.split_once(char::is_whitespace) else {
            i += 1;
            continue;
        };
        if !keyword.eq_ignore_ascii_case("RUN") {
            i += 1;
            continue;
        }
        rest = rest.trim_start();
        while rest.starts_with("--") {
            rest = rest
                .split_once(char::is_whitespace)
                .map_or("", |(_, r)| r.trim_start());
        }
        let continued = line.ends_with('\\') || line.ends_with('`');
        let openings = heredoc_openings(rest);
        let parser_takes = rest.starts_with("<<") && openings.len() == 1;
        if continued || rest.starts_with('[') || openings.is_empty() || parser_takes {
            i += 1;
            continue;
        }
        // Each body ends at its delimiter line, in order.
        let mut at = i + 1;
        let mut found = true;
        for (word, strip) in &openings {
            loop {
                let Some(l) = lines.get(at) else {
                    found = false;
                    break;
                };
                let l = l.trim_end_matches(['\n', '\r']);
                let l = if *strip {
                    l.trim_start_matches('\t')
                } else {
                    l
                };
                at += 1;
                if l == word {
                    break;
                }
            }
            if !found {
                break;
            }
        }
        if !found {
            i += 1;
            continue;
        }
        let mut script = rest.to_owned();
        for (j, l) in lines.iter().enumerate().take(at).skip(i + 1) {
            script.push('\n');
            script.push_str(l.trim_end_matches(['\n', '\r']));
            blank[j] = true;
        }
        scripts.insert(
            i + 1,
            LaterHeredocs {
                line: trimmed.to_owned(),
                script,
            },
        );
        commands.push((i, line.len() - rest.len()));
        i = at;
    }
    if scripts.is_empty() {
        return (text.to_owned(), scripts);
    }
    let mut out = String::with_capacity(text.len());
    for (i, (l, blank)) in lines.iter().zip(blank).enumerate() {
        let end = &l[l.trim_end_matches(['\n', '\r']).len()..];
        if let Some((_, at)) = commands.iter().find(|(line, _)| *line == i) {
            out.push_str(&l[..*at]);
            out.push(':');
            out.push_str(end);
        } else if blank {
            // A blank line, its line ending kept.
            out.push_str(end);
        } else {
            out.push_str(l);
        }
    }
    (out, scripts)
}

impl Cx<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, self.text[line_start..offset].chars().count() + 1)
    }

    fn error(&self, inst: &Instruction, message: String) -> DockerfileError {
        DockerfileError {
            file: self.file.to_owned(),
            line: inst.line,
            column: inst.column,
            instruction: Some(inst.text.clone()),
            message,
        }
    }

    /// The end of the logical line that starts at `start`: continuation
    /// lines (ending with the escape character) run on.
    fn logical_end(&self, start: usize) -> usize {
        let mut at = start;
        let mut first = true;
        loop {
            let (line, next) = match self.text[at..].find('\n') {
                Some(nl) => (&self.text[at..at + nl], Some(at + nl + 1)),
                None => (&self.text[at..], None),
            };
            let skipped = !first && (line.trim_start().starts_with('#') || line.trim().is_empty());
            let runs_on = skipped || line.trim_end().ends_with(self.escape);
            match next {
                Some(n) if runs_on => {
                    at = n;
                    first = false;
                }
                Some(n) => return n - 1,
                None => return self.text.len(),
            }
        }
    }

    fn instruction(&self, inst: &pd::Instruction<'_>) -> Result<Instruction, DockerfileError> {
        let start = keyword_span(inst).start;
        let (line, column) = self.position(start);
        let text = join_continuations(&self.text[start..self.logical_end(start)], self.escape)
            .trim()
            .to_owned();
        let mut out = Instruction {
            line,
            column,
            text,
            kind: Kind::Maintainer(String::new()),
        };
        out.kind = self
            .kind(inst, &out)
            .map_err(|message| self.error(&out, message))?;
        Ok(out)
    }

    fn kind(&self, inst: &pd::Instruction<'_>, at: &Instruction) -> Result<Kind, String> {
        let esc = self.escape;
        Ok(match inst {
            pd::Instruction::From(f) => {
                let mut platform = None;
                for flag in &f.options {
                    match &*flag.name.value {
                        "platform" => platform = Some(flag_value(flag)?),
                        other => return Err(unknown_flag("FROM", other)),
                    }
                }
                let name = match &f.as_ {
                    Some((_, name)) => {
                        let name = name.value.to_ascii_lowercase();
                        if !valid_stage_name(&name) {
                            return Err(format!(
                                "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                            ));
                        }
                        Some(name)
                    }
                    None => None,
                };
                Kind::From {
                    image: f.image.value.to_string(),
                    name,
                    platform,
                }
            }
            pd::Instruction::Arg(a) => {
                Kind::Arg(words::args(&a.arguments.value, esc).map_err(|e| e.to_string())?)
            }
            pd::Instruction::Env(e) => Kind::Env(
                words::name_values(&e.arguments.value, esc, "ENV").map_err(|e| e.to_string())?,
            ),
            pd::Instruction::Label(l) => Kind::Label(
                words::name_values(&l.arguments.value, esc, "LABEL").map_err(|e| e.to_string())?,
            ),
            pd::Instruction::Run(r) => {
                let mut network = None;
                for flag in &r.options {
                    match &*flag.name.value {
                        "network" => {
                            let v = flag_value(flag)?;
                            if !matches!(v.as_str(), "none" | "host" | "default") {
                                return Err(format!(
                                    "invalid --network {v:?}: want none, host or default"
                                ));
                            }
                            network = Some(v);
                        }
                        "mount" | "security" => {
                            return Err(format!(
                                "RUN --{} is not supported by moor's builder",
                                flag.name.value
                            ));
                        }
                        other => return Err(unknown_flag("RUN", other)),
                    }
                }
                let line = self.position(r.run.span.start).0;
                let command = if let Some(h) = self.later_heredocs.get(&line) {
                    Command::Shell(h.script.clone())
                } else if r.here_docs.is_empty() {
                    self.command(&r.arguments)
                } else {
                    self.run_heredoc(r)
                };
                Kind::Run { command, network }
            }
            pd::Instruction::Cmd(c) => Kind::Cmd(self.command(&c.arguments)),
            pd::Instruction::Entrypoint(e) => Kind::Entrypoint(self.command(&e.arguments)),
            pd::Instruction::Shell(s) => {
                Kind::Shell(s.arguments.iter().map(|a| a.value.to_string()).collect())
            }
            pd::Instruction::Copy(c) => {
                let mut args = CopyArgs::new(self.text, &c.src, &c.dest);
                for flag in &c.options {
                    match &*flag.name.value {
                        "from" => args.from = Some(flag_value(flag)?),
                        "chown" => args.chown = Some(flag_value(flag)?),
                        "chmod" => args.chmod = Some(flag_value(flag)?),
                        "link" => args.link = bool_flag(flag)?,
                        "parents" | "exclude" => {
                            return Err(format!(
                                "COPY --{} is not supported by moor's builder",
                                flag.name.value
                            ));
                        }
                        other => return Err(unknown_flag("COPY", other)),
                    }
                }
                Kind::Copy(args)
            }
            pd::Instruction::Add(c) => {
                let mut args = CopyArgs::new(self.text, &c.src, &c.dest);
                for flag in &c.options {
                    match &*flag.name.value {
                        "chown" => args.chown = Some(flag_value(flag)?),
                        "chmod" => args.chmod = Some(flag_value(flag)?),
                        "link" => args.link = bool_flag(flag)?,
                        "checksum" => args.checksum = Some(flag_value(flag)?),
                        "keep-git-dir" | "exclude" => {
                            return Err(format!(
                                "ADD --{} is not supported by moor's builder",
                                flag.name.value
                            ));
                        }
                        other => return Err(unknown_flag("ADD", other)),
                    }
                }
                Kind::Add(args)
            }
            pd::Instruction::Expose(e) => {
                Kind::Expose(e.arguments.iter().map(|a| a.value.to_string()).collect())
            }
            pd::Instruction::Volume(v) => Kind::Volume(match &v.arguments {
                pd::JsonOrStringArray::Json(j) => {
                    j.value.iter().map(|a| a.value.to_string()).collect()
                }
                pd::JsonOrStringArray::String(s) => s.iter().map(|a| a.value.to_string()).collect(),
            }),
            pd::Instruction::User(u) => Kind::User(u.arguments.value.to_string()),
            pd::Instruction::Workdir(w) => Kind::Workdir(w.arguments.value.to_string()),
            pd::Instruction::Stopsignal(s) => Kind::Stopsignal(s.arguments.value.to_string()),
            pd::Instruction::Maintainer(m) => Kind::Maintainer(m.name.value.to_string()),
            pd::Instruction::Healthcheck(h) => {
                let mut options = HealthOptions::default();
                for flag in &h.options {
                    let slot = match &*flag.name.value {
                        "interval" => &mut options.interval,
                        "timeout" => &mut options.timeout,
                        "start-period" => &mut options.start_period,
                        "start-interval" => &mut options.start_interval,
                        "retries" => &mut options.retries,
                        other => return Err(unknown_flag("HEALTHCHECK", other)),
                    };
                    *slot = Some(flag_value(flag)?);
                }
                match &h.arguments {
                    pd::HealthcheckArguments::Cmd { arguments, .. } => {
                        Kind::Healthcheck(Some((options, self.command(arguments))))
                    }
                    pd::HealthcheckArguments::None { .. } => {
                        if options != HealthOptions::default() {
                            return Err("HEALTHCHECK NONE takes no options".into());
                        }
                        Kind::Healthcheck(None)
                    }
                    _ => return Err("unknown HEALTHCHECK form".into()),
                }
            }
            pd::Instruction::Onbuild(o) => {
                let trigger = self.instruction(&o.instruction).map_err(|e| e.message)?;
                match trigger.kind {
                    Kind::Onbuild { .. } => {
                        return Err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into());
                    }
                    Kind::From { .. } | Kind::Maintainer(_) => {
                        return Err(format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            trigger.keyword()
                        ));
                    }
                    _ => {}
                }
                Kind::Onbuild {
                    trigger: trigger.text.clone(),
                    instruction: Box::new(trigger),
                }
            }
            _ => return Err(format!("instruction {:?} is not supported", at.text)),
        })
    }

    fn command(&self, c: &pd::Command<'_>) -> Command {
        match c {
            pd::Command::Exec(e) => {
                Command::Exec(e.value.iter().map(|a| a.value.to_string()).collect())
            }
            pd::Command::Shell(s) => Command::Shell(join_continuations(s.value, self.escape)),
            _ => Command::Shell(String::new()),
        }
    }

    /// `RUN` with heredocs. A lone `RUN <<EOF` runs the body as the script;
    /// otherwise the shell gets the command line and the heredocs as
    /// written (it reads them itself), as BuildKit does.
    fn run_heredoc(&self, r: &pd::RunInstruction<'_>) -> Command {
        let pd::Command::Shell(shell) = &r.arguments else {
            return self.command(&r.arguments);
        };
        if shell.value.trim().is_empty() && r.here_docs.len() == 1 {
            return Command::Shell(r.here_docs[0].value.to_string());
        }
        let start = r.options.last().map_or(r.run.span.end, |f| f.span().end);
        let last = r.here_docs.last().map_or(shell.span.end, |h| h.span.end);
        // The delimiter line after the last body.
        let end = self.text[last..]
            .find('\n')
            .map_or(self.text.len(), |i| last + i);
        Command::Shell(self.text[start..end].trim().to_owned())
    }
}

impl CopyArgs {
    fn new(text: &str, src: &[pd::Source<'_>], dest: &pd::UnescapedString<'_>) -> CopyArgs {
        CopyArgs {
            from: None,
            chown: None,
            chmod: None,
            link: false,
            checksum: None,
            sources: src
                .iter()
                .map(|s| match s {
                    pd::Source::HereDoc(h) => Source::HereDoc {
                        // The body ends where its delimiter line starts.
                        name: text
                            .get(h.span.end..)
                            .and_then(|t| t.lines().next())
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                        body: h.value.to_string(),
                        expand: h.expand,
                    },
                    pd::Source::Path(p) => Source::Path(p.value.to_string()),
                    _ => Source::Path(String::new()),
                })
                .collect(),
            dest: dest.value.to_string(),
        }
    }
}

fn keyword_span(inst: &pd::Instruction<'_>) -> std::ops::Range<usize> {
    match inst {
        pd::Instruction::Add(i) => i.add.span.clone(),
        pd::Instruction::Arg(i) => i.arg.span.clone(),
        pd::Instruction::Cmd(i) => i.cmd.span.clone(),
        pd::Instruction::Copy(i) => i.copy.span.clone(),
        pd::Instruction::Entrypoint(i) => i.entrypoint.span.clone(),
        pd::Instruction::Env(i) => i.env.span.clone(),
        pd::Instruction::Expose(i) => i.expose.span.clone(),
        pd::Instruction::From(i) => i.from.span.clone(),
        pd::Instruction::Healthcheck(i) => i.healthcheck.span.clone(),
        pd::Instruction::Label(i) => i.label.span.clone(),
        pd::Instruction::Maintainer(i) => i.maintainer.span.clone(),
        pd::Instruction::Onbuild(i) => i.onbuild.span.clone(),
        pd::Instruction::Run(i) => i.run.span.clone(),
        pd::Instruction::Shell(i) => i.shell.span.clone(),
        pd::Instruction::Stopsignal(i) => i.stopsignal.span.clone(),
        pd::Instruction::User(i) => i.user.span.clone(),
        pd::Instruction::Volume(i) => i.volume.span.clone(),
        pd::Instruction::Workdir(i) => i.workdir.span.clone(),
        _ => 0..0,
    }
}

fn flag_value(flag: &pd::Flag<'_>) -> Result<String, String> {
    flag.value
        .as_ref()
        .map(|v| v.value.to_string())
        .ok_or_else(|| format!("missing a value on flag: --{}", flag.name.value))
}

fn bool_flag(flag: &pd::Flag<'_>) -> Result<bool, String> {
    match flag.value.as_ref().map(|v| &*v.value) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!(
            "expecting boolean value for flag --{}, not: {other}",
            flag.name.value
        )),
    }
}

fn unknown_flag(instruction: &str, flag: &str) -> String {
    format!("unknown flag for {instruction}: --{flag}")
}

/// Docker's stage names: `^[a-z][a-z0-9-_.]*$`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Joins the lines of a shell form as Docker's parser does: the escape
/// character (and trailing blanks) at the end of a line is removed and the
/// next line appended as is; comment lines and empty lines in between are
/// dropped.
pub fn join_continuations(raw: &str, escape: char) -> String {
    let mut out = String::new();
    for (i, line) in raw.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i > 0 && (line.trim_start().starts_with('#') || line.trim().is_empty()) {
            continue;
        }
        let trimmed = line.trim_end_matches([' ', '\t']);
        match trimmed.strip_suffix(escape) {
            Some(head) => out.push_str(head),
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Dockerfile {
        parse("Dockerfile", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        parse("Dockerfile", text).unwrap_err().to_string()
    }

    fn kinds(d: &Dockerfile) -> Vec<&Kind> {
        d.stages[0].instructions.iter().map(|i| &i.kind).collect()
    }

    #[test]
    fn stages_meta_args_and_positions() {
        let d = p(
            "ARG V=1\n\nFROM alpine:$V AS Build\nRUN make\n# c\nFROM scratch\n  COPY --from=build /a /b\n",
        );
        assert_eq!(d.meta_args.len(), 1);
        assert_eq!(d.stages.len(), 2);
        assert_eq!(d.stages[0].name(), Some("build"));
        assert_eq!(
            d.stages[0].from.kind,
            Kind::From {
                image: "alpine:$V".into(),
                name: Some("build".into()),
                platform: None
            }
        );
        let copy = &d.stages[1].instructions[0];
        assert_eq!((copy.line, copy.column), (7, 3));
        assert_eq!(copy.text, "COPY --from=build /a /b");
        let Kind::Copy(args) = &copy.kind else {
            panic!()
        };
        assert_eq!(args.from.as_deref(), Some("build"));
        assert_eq!(args.sources, vec![Source::Path("/a".into())]);
        assert_eq!(args.dest, "/b");
    }

    #[test]
    fn shell_forms_join_continuations_and_drop_comments() {
        let d = p(
            "FROM a\nRUN echo a \\\n  # a comment\n\n  && echo b\nCMD [\"sh\", \"-c\", \"x\"]\nENTRYPOINT top -b\n",
        );
        assert_eq!(
            kinds(&d),
            vec![
                &Kind::Run {
                    command: Command::Shell("echo a   && echo b".into()),
                    network: None
                },
                &Kind::Cmd(Command::Exec(vec!["sh".into(), "-c".into(), "x".into()])),
                &Kind::Entrypoint(Command::Shell("top -b".into())),
            ]
        );
        assert_eq!(d.stages[0].instructions[0].text, "RUN echo a   && echo b");
    }

    #[test]
    fn crlf_line_ends() {
        let d = p("FROM a\r\nRUN echo a \\\r\n  b\r\nENV A=1\r\n");
        assert_eq!(
            kinds(&d),
            vec![
                &Kind::Run {
                    command: Command::Shell("echo a   b".into()),
                    network: None
                },
                &Kind::Env(vec![("A".into(), "1".into())]),
            ]
        );
        assert_eq!(d.stages[0].instructions[0].text, "RUN echo a   b");
    }

    #[test]
    fn the_escape_directive() {
        let d = p("# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\nENV P=c:\\x` y\n");
        assert_eq!(d.escape, '`');
        assert_eq!(
            kinds(&d)[0],
            &Kind::Run {
                command: Command::Shell("dir c:\\   /w".into()),
                network: None
            }
        );
        assert_eq!(
            kinds(&d)[1],
            &Kind::Env(vec![("P".into(), "c:\\x` y".into())])
        );
    }

    #[test]
    fn malformed_json_is_the_shell_form_as_in_docker() {
        let d = p("FROM a\nCMD [\"a\",\n");
        assert_eq!(kinds(&d)[0], &Kind::Cmd(Command::Shell("[\"a\",".into())));
    }

    /// BuildKit's heredocs anywhere in a `RUN` line, several at once: the
    /// shell gets them as written; the lines after keep their numbers.
    #[test]
    fn heredocs_later_in_a_run_line() {
        let run = |s: &str| Kind::Run {
            command: Command::Shell(s.into()),
            network: None,
        };
        let d = p(concat!(
            "FROM a\n",
            "RUN cat <<EOF > /x\nhello $A\nEOF\n",
            "RUN --network=none <<A cat > /a && <<-'B' cat > /b\na\nA\n\tb\n\tB\n",
            "RUN echo $((1<<2)) && cat <<<word\n",
            "RUN echo after\n",
        ));
        let k = kinds(&d);
        assert_eq!(k[0], &run("cat <<EOF > /x\nhello $A\nEOF"));
        let Kind::Run { command, .. } = k[1] else {
            panic!("{:?}", k[1])
        };
        assert_eq!(
            command,
            &Command::Shell("<<A cat > /a && <<-'B' cat > /b\na\nA\n\tb\n\tB".into())
        );
        // `<<2` and `<<<` are not heredocs.
        assert_eq!(k[2], &run("echo $((1<<2)) && cat <<<word"));
        assert_eq!(k[3], &run("echo after"));
        assert_eq!(d.stages[0].instructions[3].line, 11);
        assert_eq!(
            d.stages[0].instructions[1].text,
            "RUN --network=none <<A cat > /a && <<-'B' cat > /b"
        );
        // A body without its delimiter line is an error, as before.
        assert!(err("FROM a\nRUN cat <<EOF\nno end\n").contains("Dockerfile:3"));
        // A delimiter climbing out of a directory destination parses; the
        // copy refuses it (runtime).
        assert_eq!(heredoc_openings("x <<../../y"), vec![]);
        assert_eq!(
            heredoc_openings("a <<\"Q\" b <<-R 'c <<no' \\<<no"),
            vec![("Q".to_owned(), false), ("R".to_owned(), true)]
        );
    }

    #[test]
    fn heredocs() {
        let d = p(
            "FROM a\nRUN <<EOF\necho $A\nEOF\nRUN <<EOF cat > /x\nhello\nEOF\nCOPY <<'X' <<Y /dst/\n$B\nX\n$C\nY\n",
        );
        assert_eq!(
            kinds(&d)[0],
            &Kind::Run {
                command: Command::Shell("echo $A\n".into()),
                network: None
            }
        );
        assert_eq!(
            kinds(&d)[1],
            &Kind::Run {
                command: Command::Shell("<<EOF cat > /x\nhello\nEOF".into()),
                network: None
            }
        );
        let Kind::Copy(c) = kinds(&d)[2] else {
            panic!()
        };
        assert_eq!(
            c.sources,
            vec![
                Source::HereDoc {
                    name: "X".into(),
                    body: "$B\n".into(),
                    expand: false
                },
                Source::HereDoc {
                    name: "Y".into(),
                    body: "$C\n".into(),
                    expand: true
                }
            ]
        );
        assert_eq!(c.dest, "/dst/");
    }

    #[test]
    fn every_instruction() {
        let d = p(concat!(
            "FROM --platform=linux/amd64 a\n",
            "ARG X Y=2\n",
            "ENV A=1 B=\"2 3\"\n",
            "LABEL \"k 1\"=v k2='v 2'\n",
            "RUN --network=none [\"true\"]\n",
            "SHELL [\"/bin/bash\", \"-c\"]\n",
            "ADD --chown=1:2 --chmod=644 --checksum=sha256:ab http://x/y /z\n",
            "COPY --link a b /c/\n",
            "EXPOSE 80 53/udp\n",
            "VOLUME [\"/a\", \"/b\"]\n",
            "VOLUME /c /d\n",
            "USER app:app\n",
            "WORKDIR /w\n",
            "STOPSIGNAL SIGTERM\n",
            "HEALTHCHECK --interval=5s --retries=3 CMD curl -f http://x/\n",
            "HEALTHCHECK NONE\n",
            "ONBUILD RUN echo \\\n  hi\n",
            "MAINTAINER me\n",
        ));
        assert_eq!(
            d.stages[0].from.kind,
            Kind::From {
                image: "a".into(),
                name: None,
                platform: Some("linux/amd64".into())
            }
        );
        let k = kinds(&d);
        assert_eq!(
            k[0],
            &Kind::Arg(vec![("X".into(), None), ("Y".into(), Some("2".into()))])
        );
        assert_eq!(
            k[1],
            &Kind::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"2 3\"".into())
            ])
        );
        assert_eq!(
            k[2],
            &Kind::Label(vec![
                ("\"k 1\"".into(), "v".into()),
                ("k2".into(), "'v 2'".into())
            ])
        );
        assert_eq!(
            k[3],
            &Kind::Run {
                command: Command::Exec(vec!["true".into()]),
                network: Some("none".into())
            }
        );
        assert_eq!(k[4], &Kind::Shell(vec!["/bin/bash".into(), "-c".into()]));
        let Kind::Add(add) = k[5] else { panic!() };
        assert_eq!(add.chown.as_deref(), Some("1:2"));
        assert_eq!(add.chmod.as_deref(), Some("644"));
        assert_eq!(add.checksum.as_deref(), Some("sha256:ab"));
        let Kind::Copy(copy) = k[6] else { panic!() };
        assert!(copy.link);
        assert_eq!(copy.sources.len(), 2);
        assert_eq!(k[7], &Kind::Expose(vec!["80".into(), "53/udp".into()]));
        assert_eq!(k[8], &Kind::Volume(vec!["/a".into(), "/b".into()]));
        assert_eq!(k[9], &Kind::Volume(vec!["/c".into(), "/d".into()]));
        assert_eq!(k[10], &Kind::User("app:app".into()));
        assert_eq!(k[11], &Kind::Workdir("/w".into()));
        assert_eq!(k[12], &Kind::Stopsignal("SIGTERM".into()));
        let Kind::Healthcheck(Some((opts, cmd))) = k[13] else {
            panic!()
        };
        assert_eq!(opts.interval.as_deref(), Some("5s"));
        assert_eq!(opts.retries.as_deref(), Some("3"));
        assert_eq!(cmd, &Command::Shell("curl -f http://x/".into()));
        assert_eq!(k[14], &Kind::Healthcheck(None));
        let Kind::Onbuild {
            trigger,
            instruction,
        } = k[15]
        else {
            panic!()
        };
        assert_eq!(trigger, "RUN echo   hi");
        assert_eq!(instruction.keyword(), "RUN");
        assert_eq!(k[16], &Kind::Maintainer("me".into()));
    }

    #[test]
    fn errors_name_file_line_column_and_instruction() {
        let table: &[(&str, &str)] = &[
            (
                "FROM a\nFOO bar\n",
                "Dockerfile:2:1: FOO bar: unknown instruction 'FOO'",
            ),
            ("RUN x\n", "Dockerfile:1:1: RUN x: expected FROM"),
            (
                "ENV A=1\nFROM a\n",
                "Dockerfile:1:1: ENV A=1: expected FROM",
            ),
            (
                "FROM a\nCOPY a\n",
                "Dockerfile:2:1: COPY a: COPY instruction requires at least two arguments",
            ),
            (
                "FROM a AS x\nFROM b AS X\n",
                "Dockerfile:2:1: FROM b AS X: duplicate stage name \"x\"",
            ),
            (
                "FROM a AS 1x\n",
                "Dockerfile:1:1: FROM a AS 1x: invalid name for build stage: \"1x\", name can't start with a number or contain symbols",
            ),
            (
                "FROM a\nRUN --mount=type=cache,target=/c make\n",
                "Dockerfile:2:1: RUN --mount=type=cache,target=/c make: RUN --mount is not supported by moor's builder",
            ),
            (
                "FROM a\nRUN --network=bridge x\n",
                "Dockerfile:2:1: RUN --network=bridge x: invalid --network \"bridge\": want none, host or default",
            ),
            (
                "FROM a\nCOPY --chwon=1 a b\n",
                "Dockerfile:2:1: COPY --chwon=1 a b: unknown flag for COPY: --chwon",
            ),
            (
                "FROM a\nENV A=1 B\n",
                "Dockerfile:2:1: ENV A=1 B: syntax error - can't find = in \"B\". Must be of the form: name=value",
            ),
            (
                "FROM a\nENV A\n",
                "Dockerfile:2:1: ENV A: ENV must have two arguments",
            ),
            (
                "FROM a\nONBUILD ONBUILD RUN x\n",
                "Dockerfile:2:9: ONBUILD ONBUILD RUN x: ONBUILD ONBUILD is not allowed",
            ),
            (
                "FROM a\nONBUILD FROM b\n",
                "Dockerfile:2:1: ONBUILD FROM b: FROM isn't allowed as an ONBUILD trigger",
            ),
            (
                "FROM a\nHEALTHCHECK --interval=1s NONE\n",
                "Dockerfile:2:1: HEALTHCHECK --interval=1s NONE: HEALTHCHECK NONE takes no options",
            ),
            (
                "FROM a\nRUN <<EOF\nx\n",
                "Dockerfile:3:1: x: expected end of here-document (EOF), but reached eof",
            ),
            (
                "# nothing\n",
                "Dockerfile:0:0: expected at least one FROM instruction",
            ),
        ];
        for (text, want) in table {
            assert_eq!(&err(text), want, "parsing {text:?}");
        }
    }

    #[test]
    fn join_continuations_like_docker() {
        assert_eq!(join_continuations("a \\\nb", '\\'), "a b");
        assert_eq!(join_continuations("a \\  \n  b", '\\'), "a   b");
        assert_eq!(join_continuations("a \\\n#x\n   # y\n\nb", '\\'), "a b");
        assert_eq!(join_continuations("a \\\r\nb\r", '\\'), "a b");
        assert_eq!(
            join_continuations("no continuation", '\\'),
            "no continuation"
        );
    }
}
