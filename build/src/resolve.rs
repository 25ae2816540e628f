//! From instructions as written to steps as they will run: `ARG` scoping,
//! `ENV`, and variable substitution where Docker does it.
//!
//! The rules are Docker's classic builder's (the reference for moor):
//! - `ARG`s before the first `FROM` ([`meta_args`]) are usable in `FROM`
//!   (and `COPY --from`) only; a stage sees one only by declaring it again
//!   (`ARG NAME` without a default inherits its value).
//! - In a stage, an `ARG` is in effect from its line on: `--build-arg`
//!   overrides its default; without either it is unset.
//! - `ENV` always wins over an `ARG` of the same name.
//! - Substituted: `ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME
//!   WORKDIR`, `ARG` defaults, the `--chown`/`--chmod` flags, heredoc bodies
//!   of `COPY`/`ADD` with an unquoted delimiter. Not substituted: `RUN`,
//!   `CMD`, `ENTRYPOINT`, `SHELL`, `HEALTHCHECK` (the shell does it at run
//!   time) and `ONBUILD` (its trigger is substituted when it runs).
//!   All words of one instruction see the variables as they were before it
//!   (`ENV a=1 b=$a` gives `b` the old `a`).
//! - The predefined proxy arguments (`HTTP_PROXY`, …) need no `ARG`; they
//!   reach `RUN` and substitution but not the cache key unless declared.
//!
//! Start at [`stage`].

use std::collections::BTreeMap;

use crate::dockerfile::{self, Command, CopyArgs, DockerfileError, Instruction, Kind, Source};
use crate::lex;

/// The arguments Docker predefines: usable without an `ARG`, left out of
/// cache keys unless declared.
pub const PREDEFINED_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The `PATH` a stage gets when its base has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `--build-arg` values.
pub type BuildArgs = BTreeMap<String, String>;

/// Where a stage starts, or where `COPY --from` reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Base {
    /// `FROM scratch`: empty.
    Scratch,
    /// An image reference, as substituted.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// What a stage inherits from its base and hands to stages built on it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BaseConfig {
    /// `Env` of the image config, `KEY=value` split.
    pub env: Vec<(String, String)>,
    /// `WorkingDir`; empty means `/`.
    pub working_dir: String,
    /// `SHELL` (Docker keeps it in the image config); empty means `/bin/sh -c`.
    pub shell: Vec<String>,
    /// `OnBuild` triggers, run right after `FROM` of a stage built on it.
    pub onbuild: Vec<String>,
}

/// A step, substituted and ready for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The line of the instruction (of `FROM` for an inherited trigger).
    pub line: usize,
    /// The instruction as written (the trigger, for an `ONBUILD` one).
    pub text: String,
    /// What to do.
    pub op: Op,
}

/// What a step does: run a process (a new layer from the overlay's upper
/// directory), copy files (a new layer written directly), or change the
/// image config only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// `RUN`.
    Run {
        /// The process: the shell form already wrapped in `SHELL`.
        argv: Vec<String>,
        /// `--network`: `none`, `host`, or `default`.
        network: String,
        /// The process's environment: the config's `Env`, then the build
        /// arguments in effect, then predefined ones given.
        env: Vec<(String, String)>,
        /// The build arguments in effect that key the cache, sorted.
        cache_args: Vec<(String, String)>,
        /// `USER` and `WORKDIR` in effect.
        user: String,
        /// The working directory (absolute).
        workdir: String,
    },
    /// `COPY` or `ADD`.
    Copy(CopyOp),
    /// `WORKDIR`: sets the config and creates the directory.
    Workdir(String),
    /// Everything else: the config changes, no layer.
    Config(ConfigChange),
}

/// `COPY` or `ADD`, substituted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CopyOp {
    /// `ADD` (URLs fetched, local tar archives extracted).
    pub add: bool,
    /// Where sources are read: the build context ([`None`]), a stage or an image.
    pub from: Option<Base>,
    /// The sources.
    pub sources: Vec<CopySource>,
    /// The destination, absolute (joined to `WORKDIR`); a trailing `/`
    /// kept: the destination is a directory.
    pub dest: String,
    /// `--chown`, substituted.
    pub chown: Option<String>,
    /// `--chmod`, as a mode.
    pub chmod: Option<u32>,
    /// `--link`.
    pub link: bool,
    /// `--checksum` of an `ADD` URL.
    pub checksum: Option<String>,
}

/// A source of a [`CopyOp`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CopySource {
    /// A path or glob, relative to the context (or the `--from` root).
    Path(String),
    /// An `ADD` URL.
    Url(String),
    /// A heredoc's content, substituted if its delimiter was unquoted.
    Inline {
        /// The heredoc's delimiter: the file's name in a directory.
        name: String,
        /// The file's content.
        content: String,
    },
}

/// A change to the image config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigChange {
    /// `ARG`: declared; no config change, but part of the history.
    Arg(Vec<(String, Option<String>)>),
    /// `ENV`.
    Env(Vec<(String, String)>),
    /// `LABEL`.
    Label(Vec<(String, String)>),
    /// `CMD`, the shell form wrapped in `SHELL`.
    Cmd(Vec<String>),
    /// `ENTRYPOINT`, the shell form wrapped in `SHELL`; it drops the
    /// `CMD` inherited from the base, not one set earlier in the stage
    /// (`keep_cmd`), as Docker does.
    Entrypoint { argv: Vec<String>, keep_cmd: bool },
    /// `SHELL`.
    Shell(Vec<String>),
    /// `EXPOSE`, normalised to `port/proto`, ranges expanded.
    Expose(Vec<String>),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `USER`.
    User(String),
    /// `STOPSIGNAL`.
    Stopsignal(String),
    /// `HEALTHCHECK`: the test (`["CMD", …]`, `["CMD-SHELL", cmd]`, or
    /// `["NONE"]`) and the options as written.
    Healthcheck {
        /// The test.
        test: Vec<String>,
        /// `--interval`, `--timeout`, `--start-period`, `--start-interval`, `--retries`.
        options: Vec<(String, String)>,
    },
    /// `ONBUILD`: the trigger, recorded.
    Onbuild(String),
    /// `MAINTAINER`: the author.
    Maintainer(String),
}

/// The outcome of resolving one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedStage {
    /// The steps, in order; inherited `ONBUILD` triggers first.
    pub steps: Vec<Step>,
    /// The config at the end, for stages built on this one.
    pub config: BaseConfig,
    /// Build arguments this stage declared.
    pub declared: Vec<String>,
}

/// The meta arguments (`ARG` before the first `FROM`) with their values:
/// `--build-arg` over the default, defaults substituted in order. Also
/// returns the names declared, values or not.
pub fn meta_args(
    file: &str,
    df: &dockerfile::Dockerfile,
    build_args: &BuildArgs,
) -> Result<(BTreeMap<String, String>, Vec<String>), DockerfileError> {
    let mut values = BTreeMap::new();
    let mut declared = Vec::new();
    for inst in &df.meta_args {
        let Kind::Arg(args) = &inst.kind else {
            continue;
        };
        // Every word of one ARG sees the values from before it, as in a stage.
        let mut updates = Vec::new();
        for (name, default) in args {
            declared.push(name.clone());
            let value = match (build_args.get(name), default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => Some(
                    lex::expand(d, df.escape, &|n| {
                        values.get(n).cloned().or_else(|| predefined(build_args, n))
                    })
                    .map_err(|e| located(file, inst, e.to_string()))?,
                ),
                (None, None) => None,
            };
            updates.push((name, value));
        }
        for (name, value) in updates {
            if let Some(value) = value {
                values.insert(name.clone(), value);
            } else {
                values.remove(name);
            }
        }
    }
    Ok((values, declared))
}

fn predefined(build_args: &BuildArgs, name: &str) -> Option<String> {
    PREDEFINED_ARGS
        .contains(&name)
        .then(|| build_args.get(name).cloned())
        .flatten()
}

/// Substitutes `word` with the meta arguments (and predefined ones given):
/// what `FROM` and `COPY --from` see.
pub fn expand_meta(
    word: &str,
    escape: char,
    meta: &BTreeMap<String, String>,
    build_args: &BuildArgs,
) -> Result<String, lex::SubstError> {
    lex::expand(word, escape, &|n| {
        meta.get(n).cloned().or_else(|| predefined(build_args, n))
    })
}

/// Where `FROM image` starts, given the stages before it.
pub fn from_base(image: &str, earlier: &[Option<String>]) -> Base {
    let lower = image.to_ascii_lowercase();
    if let Some(i) = earlier
        .iter()
        .position(|n| n.as_deref() == Some(lower.as_str()))
    {
        return Base::Stage(i);
    }
    if image == "scratch" {
        return Base::Scratch;
    }
    Base::Image(image.to_owned())
}

/// Where `COPY --from=name` reads, given the stages before this one
/// (`earlier.len()` is this stage's index).
pub fn copy_from_base(name: &str, earlier: &[Option<String>]) -> Result<Base, String> {
    let lower = name.to_ascii_lowercase();
    if let Some(i) = earlier
        .iter()
        .position(|n| n.as_deref() == Some(lower.as_str()))
    {
        return Ok(Base::Stage(i));
    }
    if let Ok(i) = name.parse::<usize>() {
        if i < earlier.len() {
            return Ok(Base::Stage(i));
        }
        return Err(format!(
            "invalid from flag value {name}: refers to current build stage or a later one"
        ));
    }
    if name.is_empty() {
        return Err("--from needs a stage or an image".into());
    }
    Ok(Base::Image(name.to_owned()))
}

fn located(file: &str, inst: &Instruction, message: String) -> DockerfileError {
    DockerfileError {
        file: file.to_owned(),
        line: inst.line,
        column: inst.column,
        instruction: Some(inst.text.clone()),
        message,
    }
}

/// What [`stage`] needs besides the stage.
#[derive(Debug, Clone, Copy)]
pub struct StageInput<'a> {
    /// The Dockerfile's name, for errors.
    pub file: &'a str,
    /// The escape character.
    pub escape: char,
    /// `--build-arg`.
    pub build_args: &'a BuildArgs,
    /// The meta arguments' values ([`meta_args`]).
    pub meta: &'a BTreeMap<String, String>,
    /// The names of the stages before this one.
    pub earlier: &'a [Option<String>],
    /// The base's config.
    pub base: &'a BaseConfig,
}

/// Resolves the instructions of one stage, after its `FROM`.
pub fn stage(
    input: StageInput<'_>,
    from: &Instruction,
    instructions: &[Instruction],
) -> Result<ResolvedStage, DockerfileError> {
    let mut config = BaseConfig {
        onbuild: Vec::new(),
        ..input.base.clone()
    };
    // Docker gives every stage a PATH when its base has none (scratch).
    if !config.env.iter().any(|(k, _)| k == "PATH") {
        config
            .env
            .push(("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    let mut st = State {
        input,
        config,
        args: BTreeMap::new(),
        declared: Vec::new(),
        steps: Vec::new(),
        user: String::new(),
        cmd_set: false,
    };
    // The base's triggers run first, as if written after FROM.
    for trigger in &input.base.onbuild {
        let text = format!("FROM scratch\n{trigger}\n");
        let parsed = dockerfile::parse(input.file, &text).map_err(|e| {
            located(
                input.file,
                from,
                format!("ONBUILD trigger {trigger:?}: {}", e.message),
            )
        })?;
        for inst in &parsed.stages[0].instructions {
            let inst = Instruction {
                line: from.line,
                column: from.column,
                ..inst.clone()
            };
            st.instruction(&inst)?;
        }
    }
    for inst in instructions {
        st.instruction(inst)?;
    }
    Ok(ResolvedStage {
        steps: st.steps,
        config: st.config,
        declared: st.declared,
    })
}

struct State<'a> {
    input: StageInput<'a>,
    config: BaseConfig,
    /// Declared arguments, with their values if they have one.
    args: BTreeMap<String, Option<String>>,
    declared: Vec<String>,
    steps: Vec<Step>,
    user: String,
    /// Whether a `CMD` of this stage came before.
    cmd_set: bool,
}

impl State<'_> {
    fn env_get(&self, name: &str) -> Option<String> {
        self.config
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// A variable as substitution sees it: `ENV`, then declared `ARG`s,
    /// then predefined ones given.
    fn lookup(&self, name: &str) -> Option<String> {
        self.env_get(name)
            .or_else(|| self.args.get(name).cloned().flatten())
            .or_else(|| predefined(self.input.build_args, name))
    }

    fn expand(&self, inst: &Instruction, word: &str) -> Result<String, DockerfileError> {
        lex::expand(word, self.input.escape, &|n| self.lookup(n))
            .map_err(|e| located(self.input.file, inst, e.to_string()))
    }

    fn err(&self, inst: &Instruction, message: impl Into<String>) -> DockerfileError {
        located(self.input.file, inst, message.into())
    }

    fn workdir(&self) -> String {
        if self.config.working_dir.is_empty() {
            "/".to_owned()
        } else {
            self.config.working_dir.clone()
        }
    }

    fn shell(&self) -> Vec<String> {
        if self.config.shell.is_empty() {
            vec!["/bin/sh".to_owned(), "-c".to_owned()]
        } else {
            self.config.shell.clone()
        }
    }

    fn argv(&self, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(argv) => argv.clone(),
            Command::Shell(line) => {
                let mut argv = self.shell();
                argv.push(line.clone());
                argv
            }
        }
    }

    /// Declared arguments with values, not shadowed by `ENV`.
    fn args_in_effect(&self) -> Vec<(String, String)> {
        self.args
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .filter(|(k, _)| self.env_get(k).is_none())
            .collect()
    }

    fn push(&mut self, inst: &Instruction, op: Op) {
        self.steps.push(Step {
            line: inst.line,
            text: inst.text.clone(),
            op,
        });
    }

    fn instruction(&mut self, inst: &Instruction) -> Result<(), DockerfileError> {
        match &inst.kind {
            Kind::From { .. } => return Err(self.err(inst, "FROM inside a stage")),
            Kind::Arg(args) => {
                let mut resolved = Vec::new();
                let mut values = Vec::new();
                for (name, default) in args {
                    let value = match (self.input.build_args.get(name), default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(d)) => Some(self.expand(inst, d)?),
                        (None, None) => self.input.meta.get(name).cloned(),
                    };
                    resolved.push((name.clone(), default.clone()));
                    values.push((name.clone(), value));
                }
                for (name, value) in values {
                    self.declared.push(name.clone());
                    self.args.insert(name, value);
                }
                self.push(inst, Op::Config(ConfigChange::Arg(resolved)));
            }
            Kind::Env(pairs) => {
                let pairs = self.expand_pairs(inst, pairs)?;
                for (k, v) in &pairs {
                    self.config.env.retain(|(ek, _)| ek != k);
                    self.config.env.push((k.clone(), v.clone()));
                }
                self.push(inst, Op::Config(ConfigChange::Env(pairs)));
            }
            Kind::Label(pairs) => {
                let pairs = self.expand_pairs(inst, pairs)?;
                self.push(inst, Op::Config(ConfigChange::Label(pairs)));
            }
            Kind::Run { command, network } => {
                let cache_args = self.args_in_effect();
                let mut env = self.config.env.clone();
                env.extend(cache_args.iter().cloned());
                for name in PREDEFINED_ARGS {
                    if let Some(v) = self.input.build_args.get(name)
                        && !env.iter().any(|(k, _)| k == name)
                    {
                        env.push((name.to_owned(), v.clone()));
                    }
                }
                let op = Op::Run {
                    argv: self.argv(command),
                    network: network.clone().unwrap_or_else(|| "default".into()),
                    env,
                    cache_args,
                    user: self.user.clone(),
                    workdir: self.workdir(),
                };
                self.push(inst, op);
            }
            Kind::Cmd(c) => {
                let argv = self.argv(c);
                self.cmd_set = true;
                self.push(inst, Op::Config(ConfigChange::Cmd(argv)));
            }
            Kind::Entrypoint(c) => {
                let argv = self.argv(c);
                let keep_cmd = self.cmd_set;
                self.push(
                    inst,
                    Op::Config(ConfigChange::Entrypoint { argv, keep_cmd }),
                );
            }
            Kind::Shell(argv) => {
                if argv.is_empty() {
                    return Err(self.err(inst, "SHELL requires at least one argument"));
                }
                self.config.shell = argv.clone();
                self.push(inst, Op::Config(ConfigChange::Shell(argv.clone())));
            }
            Kind::Copy(args) => {
                let op = self.copy(inst, args, false)?;
                self.push(inst, Op::Copy(op));
            }
            Kind::Add(args) => {
                let op = self.copy(inst, args, true)?;
                self.push(inst, Op::Copy(op));
            }
            Kind::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    let p = self.expand(inst, p)?;
                    out.extend(expose(&p).map_err(|m| self.err(inst, m))?);
                }
                self.push(inst, Op::Config(ConfigChange::Expose(out)));
            }
            Kind::Volume(paths) => {
                let mut out = Vec::new();
                for p in paths {
                    let p = self.expand(inst, p)?;
                    if p.trim().is_empty() {
                        return Err(self.err(inst, "VOLUME specified can not be an empty string"));
                    }
                    out.push(p);
                }
                self.push(inst, Op::Config(ConfigChange::Volume(out)));
            }
            Kind::User(u) => {
                let u = self.expand(inst, u)?;
                self.user = u.clone();
                self.push(inst, Op::Config(ConfigChange::User(u)));
            }
            Kind::Workdir(w) => {
                let w = self.expand(inst, w)?;
                let path = join_path(&self.workdir(), &w);
                self.config.working_dir = path.clone();
                self.push(inst, Op::Workdir(path));
            }
            Kind::Stopsignal(s) => {
                let s = self.expand(inst, s)?;
                if !valid_signal(&s) {
                    return Err(self.err(inst, format!("invalid signal: {s}")));
                }
                self.push(inst, Op::Config(ConfigChange::Stopsignal(s)));
            }
            Kind::Healthcheck(h) => {
                let change = match h {
                    None => ConfigChange::Healthcheck {
                        test: vec!["NONE".into()],
                        options: Vec::new(),
                    },
                    Some((o, command)) => {
                        let test = match command {
                            Command::Exec(argv) => std::iter::once("CMD".to_owned())
                                .chain(argv.iter().cloned())
                                .collect(),
                            Command::Shell(line) => vec!["CMD-SHELL".into(), line.clone()],
                        };
                        let options = [
                            ("interval", &o.interval),
                            ("timeout", &o.timeout),
                            ("start-period", &o.start_period),
                            ("start-interval", &o.start_interval),
                            ("retries", &o.retries),
                        ]
                        .into_iter()
                        .filter_map(|(k, v)| Some((k.to_owned(), v.clone()?)))
                        .collect();
                        ConfigChange::Healthcheck { test, options }
                    }
                };
                self.push(inst, Op::Config(change));
            }
            Kind::Onbuild { trigger, .. } => {
                // The trigger as written (from its keyword), unsubstituted.
                self.config.onbuild.push(trigger.clone());
                self.push(inst, Op::Config(ConfigChange::Onbuild(trigger.clone())));
            }
            Kind::Maintainer(m) => {
                self.push(inst, Op::Config(ConfigChange::Maintainer(m.clone())));
            }
        }
        Ok(())
    }

    /// `ENV` and `LABEL`: every word sees the variables from before the
    /// instruction.
    fn expand_pairs(
        &self,
        inst: &Instruction,
        pairs: &[(String, String)],
    ) -> Result<Vec<(String, String)>, DockerfileError> {
        pairs
            .iter()
            .map(|(k, v)| Ok((self.expand(inst, k)?, self.expand(inst, v)?)))
            .collect()
    }

    fn copy(
        &self,
        inst: &Instruction,
        args: &CopyArgs,
        add: bool,
    ) -> Result<CopyOp, DockerfileError> {
        let from = match &args.from {
            None => None,
            Some(name) => {
                let name = expand_meta(
                    name,
                    self.input.escape,
                    self.input.meta,
                    self.input.build_args,
                )
                .map_err(|e| self.err(inst, e.to_string()))?;
                Some(copy_from_base(&name, self.input.earlier).map_err(|m| self.err(inst, m))?)
            }
        };
        let mut sources = Vec::new();
        for s in &args.sources {
            sources.push(match s {
                Source::HereDoc { name, body, expand } => CopySource::Inline {
                    name: name.clone(),
                    content: if *expand {
                        self.expand_heredoc(inst, body)?
                    } else {
                        body.clone()
                    },
                },
                Source::Path(p) => {
                    let p = self.expand(inst, p)?;
                    if add && (p.starts_with("http://") || p.starts_with("https://")) {
                        CopySource::Url(p)
                    } else if p.contains("://") || p.starts_with("git@") {
                        return Err(self.err(
                            inst,
                            format!("source {p:?}: only http and https URLs are supported, by ADD"),
                        ));
                    } else {
                        CopySource::Path(p)
                    }
                }
            });
        }
        let dest = self.expand(inst, &args.dest)?;
        if dest.is_empty() {
            return Err(self.err(inst, "the destination is empty"));
        }
        if sources.len() > 1 && !dest.ends_with('/') {
            return Err(self.err(
                inst,
                format!(
                    "When using {} with more than one source file, the destination must be a directory and end with a /",
                    inst.keyword()
                ),
            ));
        }
        let dest = if dest.starts_with('/') {
            dest
        } else {
            let joined = join_path(&self.workdir(), &dest);
            if (dest.ends_with('/') || dest == "." || dest.ends_with("/.")) && joined != "/" {
                format!("{joined}/")
            } else {
                joined
            }
        };
        let chown = match &args.chown {
            Some(c) => Some(self.expand(inst, c)?),
            None => None,
        };
        let chmod = match &args.chmod {
            Some(c) => {
                let c = self.expand(inst, c)?;
                Some(
                    u32::from_str_radix(&c, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            self.err(inst, format!("invalid --chmod {c:?}: want an octal mode"))
                        })?,
                )
            }
            None => None,
        };
        if args.checksum.is_some() && !sources.iter().all(|s| matches!(s, CopySource::Url(_))) {
            return Err(self.err(inst, "--checksum can only be used with an HTTP(S) source"));
        }
        Ok(CopyOp {
            add,
            from,
            sources,
            dest,
            chown,
            chmod,
            link: args.link,
            checksum: args.checksum.clone(),
        })
    }

    /// A heredoc body is substituted as a shell substitutes an unquoted
    /// heredoc: quotes are plain characters, the escape character escapes
    /// only `$` and itself.
    fn expand_heredoc(&self, inst: &Instruction, body: &str) -> Result<String, DockerfileError> {
        let esc = self.input.escape;
        let mut quoted = String::with_capacity(body.len());
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' | '\'' => {
                    quoted.push(esc);
                    quoted.push(c);
                }
                c if c == esc => match chars.peek() {
                    Some(&n) if n == '$' || n == esc => {
                        quoted.push(esc);
                        quoted.push(n);
                        chars.next();
                    }
                    _ => {
                        quoted.push(esc);
                        quoted.push(esc);
                    }
                },
                c => quoted.push(c),
            }
        }
        self.expand(inst, &quoted)
    }
}

/// Docker's `signal.ParseSignal`: a number, or a name with or without
/// `SIG`, any case, including `RTMIN+n` and `RTMAX-n`.
fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "RTMIN", "RTMAX",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    let offset = |rest: &str, max: u32| rest.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n));
    name.strip_prefix("RTMIN+").is_some_and(|r| offset(r, 15))
        || name.strip_prefix("RTMAX-").is_some_and(|r| offset(r, 14))
}

/// `EXPOSE 80`, `80/udp`, `8000-8002/tcp`: one `port/proto` per port.
fn expose(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid containerPort: {p}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(ports)?, port(ports)?),
    };
    if hi < lo {
        return Err(format!(
            "invalid range specified for container port: {ports}"
        ));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Joins `path` to the directory `dir` (absolute) and cleans the result:
/// `.` and `..` resolved, never above `/`.
pub fn join_path(dir: &str, path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{dir}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;

    fn resolve_with(
        text: &str,
        build_args: &[(&str, &str)],
        base: &BaseConfig,
    ) -> Result<Vec<Op>, String> {
        let df = parse("Dockerfile", text).map_err(|e| e.to_string())?;
        let build_args: BuildArgs = build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (meta, _) = meta_args("Dockerfile", &df, &build_args).map_err(|e| e.to_string())?;
        let last = df.stages.len() - 1;
        let earlier: Vec<Option<String>> = df.stages[..last]
            .iter()
            .map(|s| s.name().map(str::to_owned))
            .collect();
        let last_stage = &df.stages[last];
        let input = StageInput {
            file: "Dockerfile",
            escape: df.escape,
            build_args: &build_args,
            meta: &meta,
            earlier: &earlier,
            base,
        };
        stage(input, &last_stage.from, &last_stage.instructions)
            .map(|r| r.steps.into_iter().map(|s| s.op).collect())
            .map_err(|e| e.to_string())
    }

    fn resolve(text: &str, build_args: &[(&str, &str)]) -> Vec<Op> {
        resolve_with(text, build_args, &BaseConfig::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn envs(ops: &[Op]) -> Vec<Vec<(String, String)>> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Config(ConfigChange::Env(e)) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    type Pairs = Vec<(String, String)>;

    fn run(op: &Op) -> (&Vec<String>, &Pairs, &Pairs) {
        match op {
            Op::Run {
                argv,
                env,
                cache_args,
                ..
            } => (argv, env, cache_args),
            other => panic!("not a RUN: {other:?}"),
        }
    }

    /// The Dockerfile reference's "Environment replacement" example.
    #[test]
    fn env_words_see_the_values_from_before_the_instruction() {
        let ops = resolve(
            "FROM a\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n",
            &[],
        );
        assert_eq!(
            envs(&ops),
            vec![
                pairs(&[("abc", "hello")]),
                pairs(&[("abc", "bye"), ("def", "hello")]),
                pairs(&[("ghi", "bye")]),
            ]
        );
    }

    /// The reference's `ARG` examples: ENV beats ARG, `${VAR:-default}`
    /// lets the build argument through.
    #[test]
    fn env_overrides_arg_of_the_same_name() {
        let text =
            "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=v1.0.0\nRUN echo $CONT_IMG_VER\n";
        let ops = resolve(text, &[("CONT_IMG_VER", "v2.0.1")]);
        let (_, env, cache_args) = run(&ops[2]);
        assert_eq!(
            env,
            &pairs(&[("PATH", DEFAULT_PATH), ("CONT_IMG_VER", "v1.0.0")])
        );
        assert!(
            cache_args.is_empty(),
            "ENV shadows the argument: {cache_args:?}"
        );

        let text = "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}\n";
        assert_eq!(
            envs(&resolve(text, &[("CONT_IMG_VER", "v2.0.1")])),
            vec![pairs(&[("CONT_IMG_VER", "v2.0.1")])]
        );
        assert_eq!(
            envs(&resolve(text, &[])),
            vec![pairs(&[("CONT_IMG_VER", "v1.0.0")])]
        );
    }

    #[test]
    fn arg_is_in_effect_from_its_line_and_build_args_override_defaults() {
        let text = "FROM a\nENV A=$USER\nARG USER=some_user\nENV B=$USER\nARG V=dflt\nENV C=$V\n";
        assert_eq!(
            envs(&resolve(text, &[])),
            vec![
                pairs(&[("A", "")]),
                pairs(&[("B", "some_user")]),
                pairs(&[("C", "dflt")])
            ]
        );
        assert_eq!(
            envs(&resolve(text, &[("USER", "what_user"), ("V", "x")])),
            vec![
                pairs(&[("A", "")]),
                pairs(&[("B", "what_user")]),
                pairs(&[("C", "x")])
            ]
        );
    }

    #[test]
    fn meta_args_reach_a_stage_only_when_declared_again() {
        let text = "ARG VERSION=latest\nFROM busybox:$VERSION\nENV A=${VERSION:-unset}\nARG VERSION\nENV B=$VERSION\n";
        assert_eq!(
            envs(&resolve(text, &[])),
            vec![pairs(&[("A", "unset")]), pairs(&[("B", "latest")])]
        );
        assert_eq!(
            envs(&resolve(text, &[("VERSION", "1.36")])),
            vec![pairs(&[("A", "unset")]), pairs(&[("B", "1.36")])]
        );
        // A redeclaration with its own default keeps its own default.
        let text = "ARG V=meta\nFROM a\nARG V=stage\nENV B=$V\n";
        assert_eq!(envs(&resolve(text, &[])), vec![pairs(&[("B", "stage")])]);
    }

    /// Seen in Docker 28 with the classic builder: `ARG M1=one M2=${M1}-two`
    /// gives M2 `-two`, before FROM as in a stage (`ARG A=1 B=x$A` gives `x`).
    #[test]
    fn words_of_one_arg_see_the_values_from_before_it() {
        let df = parse(
            "Dockerfile",
            "ARG M1=one M2=${M1}-two\nARG M3=$M1\nFROM a\n",
        )
        .unwrap();
        let (meta, _) = meta_args("Dockerfile", &df, &BuildArgs::new()).unwrap();
        assert_eq!(meta["M2"], "-two");
        assert_eq!(meta["M3"], "one");
        let ops = resolve("FROM a\nARG A=1 B=x$A\nENV B=$B\n", &[]);
        assert_eq!(envs(&ops), vec![pairs(&[("B", "x")])]);
    }

    /// Seen in Docker: `FROM scratch` gets the default PATH in its config.
    #[test]
    fn a_base_without_path_gets_docker_s_default() {
        let ops = resolve("FROM scratch\nRUN x\n", &[]);
        let (_, env, _) = run(&ops[0]);
        assert_eq!(env, &pairs(&[("PATH", DEFAULT_PATH)]));
        let base = BaseConfig {
            env: pairs(&[("PATH", "/bin")]),
            ..BaseConfig::default()
        };
        let ops = resolve_with("FROM a\nRUN x\n", &[], &base).unwrap();
        let (_, env, _) = run(&ops[0]);
        assert_eq!(env, &pairs(&[("PATH", "/bin")]));
    }

    #[test]
    fn meta_args_substitute_from_in_order_and_build_args_override() {
        let df = parse(
            "Dockerfile",
            "ARG REG=docker.io\nARG IMG=$REG/lib/x\nARG UNSET\nFROM $IMG\n",
        )
        .unwrap();
        let (meta, declared) = meta_args("Dockerfile", &df, &BuildArgs::new()).unwrap();
        assert_eq!(meta.get("IMG").map(String::as_str), Some("docker.io/lib/x"));
        assert!(!meta.contains_key("UNSET"));
        assert_eq!(declared, vec!["REG", "IMG", "UNSET"]);
        let args: BuildArgs = [("REG".to_string(), "r.example".to_string())].into();
        let (meta, _) = meta_args("Dockerfile", &df, &args).unwrap();
        assert_eq!(meta["IMG"], "r.example/lib/x");
        assert_eq!(
            expand_meta("$IMG:${TAG:-1}", '\\', &meta, &args).unwrap(),
            "r.example/lib/x:1"
        );
    }

    #[test]
    fn run_sees_args_in_effect_and_keys_on_them() {
        let text = "FROM a\nARG A=1\nARG B\nARG C\nRUN echo $A\n";
        let ops = resolve(text, &[("B", "2")]);
        let (argv, env, cache_args) = run(&ops[3]);
        assert_eq!(argv, &["/bin/sh", "-c", "echo $A"]);
        assert_eq!(cache_args, &pairs(&[("A", "1"), ("B", "2")]));
        assert_eq!(
            env,
            &pairs(&[("PATH", DEFAULT_PATH), ("A", "1"), ("B", "2")])
        );
    }

    #[test]
    fn predefined_proxy_args_reach_run_but_not_the_cache_key_unless_declared() {
        let ops = resolve(
            "FROM a\nRUN x\n",
            &[("HTTP_PROXY", "http://p:3128"), ("NOT_DECLARED", "v")],
        );
        let (_, env, cache_args) = run(&ops[0]);
        assert_eq!(
            env,
            &pairs(&[("PATH", DEFAULT_PATH), ("HTTP_PROXY", "http://p:3128")])
        );
        assert!(cache_args.is_empty());
        let ops = resolve(
            "FROM a\nARG HTTP_PROXY\nRUN x\n",
            &[("HTTP_PROXY", "http://p:3128")],
        );
        let (_, _, cache_args) = run(&ops[1]);
        assert_eq!(cache_args, &pairs(&[("HTTP_PROXY", "http://p:3128")]));
    }

    #[test]
    fn base_env_and_workdir_are_inherited() {
        let base = BaseConfig {
            env: pairs(&[("PATH", "/usr/bin"), ("HOME", "/root")]),
            working_dir: "/srv".into(),
            ..BaseConfig::default()
        };
        let ops = resolve_with(
            "FROM a\nENV PATH=/opt/bin:$PATH\nWORKDIR app\nWORKDIR $HOME/../tmp\nCOPY x .\n",
            &[],
            &base,
        )
        .unwrap();
        assert_eq!(envs(&ops), vec![pairs(&[("PATH", "/opt/bin:/usr/bin")])]);
        assert_eq!(ops[1], Op::Workdir("/srv/app".into()));
        assert_eq!(ops[2], Op::Workdir("/tmp".into()));
        let Op::Copy(c) = &ops[3] else { panic!() };
        assert_eq!(c.dest, "/tmp/");
    }

    /// Docker: "If CMD is defined from the base image, setting ENTRYPOINT
    /// will reset CMD to an empty value"; a CMD of the stage itself stays.
    #[test]
    fn entrypoint_resets_only_an_inherited_cmd() {
        let keep = |text: &str| {
            resolve(text, &[])
                .into_iter()
                .find_map(|op| match op {
                    Op::Config(ConfigChange::Entrypoint { keep_cmd, .. }) => Some(keep_cmd),
                    _ => None,
                })
                .expect("an ENTRYPOINT")
        };
        assert!(!keep("FROM a\nENTRYPOINT [\"e\"]\nCMD [\"c\"]\n"));
        assert!(keep("FROM a\nCMD [\"c\"]\nENTRYPOINT [\"e\"]\n"));
        // A CMD of an earlier stage is not this stage's.
        assert!(!keep(
            "FROM a AS one\nCMD [\"c\"]\nFROM one\nENTRYPOINT [\"e\"]\n"
        ));
    }

    #[test]
    fn substituted_where_docker_substitutes_and_not_elsewhere() {
        let text = concat!(
            "FROM a\nARG V=1\nARG U=app\n",
            "LABEL \"k$V\"=\"v $V\"\n",
            "EXPOSE ${P:-80} 53/udp 8000-8001\n",
            "VOLUME /data$V\n",
            "USER $U:$U\n",
            "STOPSIGNAL SIGRTMIN+${V}\n",
            "COPY --chown=$U --chmod=0${V}44 src$V /dst$V/\n",
            "CMD echo $V\n",
            "ENTRYPOINT [\"echo\", \"$V\"]\n",
            "HEALTHCHECK CMD check $V\n",
            "SHELL [\"/bin/bash\", \"-c\"]\n",
            "RUN echo $V\n",
            "ONBUILD RUN echo $V\n",
        );
        let ops = resolve(text, &[]);
        assert_eq!(
            ops[2],
            Op::Config(ConfigChange::Label(pairs(&[("k1", "v 1")])))
        );
        assert_eq!(
            ops[3],
            Op::Config(ConfigChange::Expose(vec![
                "80/tcp".into(),
                "53/udp".into(),
                "8000/tcp".into(),
                "8001/tcp".into()
            ]))
        );
        assert_eq!(
            ops[4],
            Op::Config(ConfigChange::Volume(vec!["/data1".into()]))
        );
        assert_eq!(ops[5], Op::Config(ConfigChange::User("app:app".into())));
        assert_eq!(
            ops[6],
            Op::Config(ConfigChange::Stopsignal("SIGRTMIN+1".into()))
        );
        let Op::Copy(c) = &ops[7] else { panic!() };
        assert_eq!(c.chown.as_deref(), Some("app"));
        assert_eq!(c.chmod, Some(0o144));
        assert_eq!(c.sources, vec![CopySource::Path("src1".into())]);
        assert_eq!(c.dest, "/dst1/");
        assert_eq!(
            ops[8],
            Op::Config(ConfigChange::Cmd(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo $V".into()
            ]))
        );
        assert_eq!(
            ops[9],
            // The CMD before it is the stage's own: kept.
            Op::Config(ConfigChange::Entrypoint {
                argv: vec!["echo".into(), "$V".into()],
                keep_cmd: true
            })
        );
        assert_eq!(
            ops[10],
            Op::Config(ConfigChange::Healthcheck {
                test: vec!["CMD-SHELL".into(), "check $V".into()],
                options: vec![]
            })
        );
        let (argv, _, _) = run(&ops[12]);
        assert_eq!(
            argv,
            &["/bin/bash", "-c", "echo $V"],
            "SHELL changes how RUN runs"
        );
        assert_eq!(
            ops[13],
            Op::Config(ConfigChange::Onbuild("RUN echo $V".into()))
        );
    }

    #[test]
    fn copy_from_stage_index_image_and_errors() {
        let ops = resolve(
            "FROM a AS one\nFROM b\nARG X=one\nCOPY --from=one /a /b\nCOPY --from=0 /a /b\nCOPY --from=alpine:3 /a /b\n",
            &[],
        );
        let froms: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Copy(c) => Some(c.from.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            froms,
            vec![
                Some(Base::Stage(0)),
                Some(Base::Stage(0)),
                Some(Base::Image("alpine:3".into()))
            ]
        );
        let e =
            resolve_with("FROM a\nCOPY --from=0 /a /b\n", &[], &BaseConfig::default()).unwrap_err();
        assert_eq!(
            e,
            "Dockerfile:2:1: COPY --from=0 /a /b: invalid from flag value 0: refers to current build stage or a later one"
        );
        // --from sees meta arguments, not the stage's.
        let ops = resolve(
            "ARG S=one\nFROM a AS one\nFROM b\nARG T=one\nCOPY --from=$S /a /b\nCOPY --from=${T:-img} /a /b\n",
            &[],
        );
        let froms: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Copy(c) => Some(c.from.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            froms,
            vec![Some(Base::Stage(0)), Some(Base::Image("img".into()))]
        );
    }

    #[test]
    fn copy_destinations_and_sources() {
        let ops = resolve(
            "FROM a\nWORKDIR /w\nCOPY a rel\nCOPY a rel/\nCOPY a .\nADD https://x/y.tgz /z\nCOPY <<EOF <<'RAW' /h/\n$HOME \"q\" \\$HOME \\n\nEOF\n$HOME\nRAW\n",
            &[],
        );
        let copies: Vec<&CopyOp> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Copy(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(copies[0].dest, "/w/rel");
        assert_eq!(copies[1].dest, "/w/rel/");
        assert_eq!(copies[2].dest, "/w/");
        assert_eq!(
            copies[3].sources,
            vec![CopySource::Url("https://x/y.tgz".into())]
        );
        assert!(copies[3].add);
        assert_eq!(
            copies[4].sources,
            vec![
                CopySource::Inline {
                    name: "EOF".into(),
                    content: " \"q\" $HOME \\n\n".into()
                },
                CopySource::Inline {
                    name: "RAW".into(),
                    content: "$HOME\n".into()
                }
            ]
        );
    }

    #[test]
    fn errors_name_the_instruction() {
        let table: &[(&str, &str)] = &[
            (
                "FROM a\nCOPY a b c\n",
                "Dockerfile:2:1: COPY a b c: When using COPY with more than one source file, the destination must be a directory and end with a /",
            ),
            (
                "FROM a\nENV A=${B:?needed}\n",
                "Dockerfile:2:1: ENV A=${B:?needed}: B: needed",
            ),
            (
                "FROM a\nWORKDIR ${\n",
                "Dockerfile:2:1: WORKDIR ${: syntax error: missing '}'",
            ),
            (
                "FROM a\nEXPOSE 80/xtp\n",
                "Dockerfile:2:1: EXPOSE 80/xtp: invalid proto: xtp",
            ),
            (
                "FROM a\nEXPOSE 0\n",
                "Dockerfile:2:1: EXPOSE 0: invalid containerPort: 0",
            ),
            (
                "FROM a\nCOPY --chmod=u+x a b\n",
                "Dockerfile:2:1: COPY --chmod=u+x a b: invalid --chmod \"u+x\": want an octal mode",
            ),
            (
                "FROM a\nCOPY git@github.com:x/y /b\n",
                "Dockerfile:2:1: COPY git@github.com:x/y /b: source \"git@github.com:x/y\": only http and https URLs are supported, by ADD",
            ),
            (
                "FROM a\nCOPY http://x/y /b\n",
                "Dockerfile:2:1: COPY http://x/y /b: source \"http://x/y\": only http and https URLs are supported, by ADD",
            ),
            (
                "FROM a\nADD --checksum=sha256:00 a /b\n",
                "Dockerfile:2:1: ADD --checksum=sha256:00 a /b: --checksum can only be used with an HTTP(S) source",
            ),
            (
                "FROM a\nVOLUME $NOPE\n",
                "Dockerfile:2:1: VOLUME $NOPE: VOLUME specified can not be an empty string",
            ),
            (
                "FROM a\nENV abc=bye\nSTOPSIGNAL SIG$abc\n",
                "Dockerfile:3:1: STOPSIGNAL SIG$abc: invalid signal: SIGbye",
            ),
            (
                "FROM a\nSTOPSIGNAL 0\n",
                "Dockerfile:2:1: STOPSIGNAL 0: invalid signal: 0",
            ),
            (
                "FROM a\nSTOPSIGNAL RTMIN+16\n",
                "Dockerfile:2:1: STOPSIGNAL RTMIN+16: invalid signal: RTMIN+16",
            ),
        ];
        for (text, want) in table {
            assert_eq!(
                &resolve_with(text, &[], &BaseConfig::default()).unwrap_err(),
                want,
                "{text:?}"
            );
        }
    }

    #[test]
    fn inherited_onbuild_triggers_run_first_substituted_in_the_child() {
        let base = BaseConfig {
            onbuild: vec!["ENV FROM_PARENT=$V".into(), "RUN echo hi".into()],
            ..BaseConfig::default()
        };
        let df = parse("Dockerfile", "FROM parent\nARG V=child\nONBUILD RUN mine\n").unwrap();
        let build_args = BuildArgs::new();
        let meta = BTreeMap::new();
        let input = StageInput {
            file: "Dockerfile",
            escape: '\\',
            build_args: &build_args,
            meta: &meta,
            earlier: &[],
            base: &base,
        };
        let r = stage(input, &df.stages[0].from, &df.stages[0].instructions).unwrap();
        assert_eq!(
            r.steps[0].op,
            Op::Config(ConfigChange::Env(pairs(&[("FROM_PARENT", "")])))
        );
        assert_eq!(r.steps[0].line, 1, "a trigger is reported at the FROM");
        assert!(matches!(&r.steps[1].op, Op::Run { .. }));
        assert_eq!(
            r.config.onbuild,
            vec!["RUN mine".to_string()],
            "a child's triggers are not inherited further"
        );
    }

    /// Built by Docker 28's CLI with the classic builder (`DOCKER_BUILDKIT=0`,
    /// `--build-arg HTTP_PROXY=p`); the config Docker wrote is the expectation.
    #[test]
    fn the_config_docker_builds() {
        let text = r#"ARG M1=one M2=${M1}-two
ARG S=src
FROM scratch AS src
FROM scratch
ARG A=1 B=x$A
ARG M2
ENV abc=hello
ENV abc=bye def=$abc
ENV ghi=$abc
ENV M2=$M2 UNSET=${NOPE:-dflt} PLUS=${abc:+set} EMPTYP=${NOPE:+set} B=$B
LABEL "k $abc"="v ${abc}" q='$abc' e=\$abc
ENV legacy the rest  $abc
WORKDIR rel
WORKDIR ../x/$abc
USER ${abc}:grp
EXPOSE 80 53/udp 8000-8001
STOPSIGNAL SIG${NOPE:-TERM}
VOLUME /v$abc
"#;
        let ops = resolve(text, &[("HTTP_PROXY", "p")]);
        let mut env: Vec<(String, String)> = pairs(&[("PATH", DEFAULT_PATH)]);
        let (mut labels, mut ports, mut volumes) = (Vec::new(), Vec::new(), Vec::new());
        let (mut workdir, mut user, mut signal) = (String::new(), String::new(), String::new());
        for op in ops {
            match op {
                Op::Config(ConfigChange::Env(p)) => {
                    for (k, v) in p {
                        env.retain(|(ek, _)| *ek != k);
                        env.push((k, v));
                    }
                }
                Op::Config(ConfigChange::Label(p)) => labels.extend(p),
                Op::Config(ConfigChange::Expose(p)) => ports.extend(p),
                Op::Config(ConfigChange::Volume(p)) => volumes.extend(p),
                Op::Config(ConfigChange::User(u)) => user = u,
                Op::Config(ConfigChange::Stopsignal(s)) => signal = s,
                Op::Workdir(w) => workdir = w,
                _ => {}
            }
        }
        assert_eq!(
            env,
            pairs(&[
                ("PATH", DEFAULT_PATH),
                ("abc", "bye"),
                ("def", "hello"),
                ("ghi", "bye"),
                ("M2", "-two"),
                ("UNSET", "dflt"),
                ("PLUS", "set"),
                ("EMPTYP", ""),
                ("B", "x"),
                ("legacy", "the rest  bye"),
            ])
        );
        labels.sort();
        assert_eq!(
            labels,
            pairs(&[("e", "$abc"), ("k bye", "v bye"), ("q", "$abc")])
        );
        ports.sort();
        assert_eq!(ports, vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
        assert_eq!(volumes, vec!["/vbye"]);
        assert_eq!(workdir, "/x/bye");
        assert_eq!(user, "bye:grp");
        assert_eq!(signal, "SIGTERM");
    }

    #[test]
    fn signals_docker_accepts() {
        for ok in [
            "SIGTERM",
            "term",
            "9",
            "64",
            "SIGRTMIN+3",
            "rtmax-14",
            "SIGUSR1",
        ] {
            assert!(valid_signal(ok), "{ok}");
        }
        for bad in ["", "SIG", "65", "SIGFOO", "RTMAX-15", "RTMIN+0"] {
            assert!(!valid_signal(bad), "{bad}");
        }
    }

    #[test]
    fn join_path_cleans() {
        assert_eq!(join_path("/", "a/./b/../c"), "/a/c");
        assert_eq!(join_path("/w", "../../.."), "/");
        assert_eq!(join_path("/w", "/abs"), "/abs");
        assert_eq!(join_path("/w", "."), "/w");
    }
}
