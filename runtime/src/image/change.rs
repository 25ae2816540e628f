//! `moor image import --change`: Dockerfile instructions applied to the
//! config of an imported root filesystem, as `docker import --change` does.
//!
//! Start at [`apply()`]. Each change is one instruction; the ones Docker
//! allows there (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL,
//! USER, VOLUME, WORKDIR) are parsed with Docker's rules: the JSON (exec)
//! and shell forms of CMD and ENTRYPOINT, `KEY=VALUE` pairs and the legacy
//! `KEY VALUE` form of ENV and LABEL, quotes and backslash escapes, and
//! `$VAR`/`${VAR:-default}` substitution from the environment set so far
//! (in ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME and WORKDIR, as in a
//! Dockerfile). Anything else is an error that names the change.

use std::collections::BTreeMap;

use serde::Serialize;

/// The instructions a change may use.
pub const ALLOWED: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Dockerfile instructions that exist but cannot be a change.
const BUILD_ONLY: &[&str] = &[
    "ADD",
    "ARG",
    "COPY",
    "FROM",
    "HEALTHCHECK",
    "MAINTAINER",
    "RUN",
    "SHELL",
];

/// The PATH an imported root filesystem gets unless a change sets another.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    /// The change holds no instruction.
    #[error("change is empty")]
    Empty,
    /// The change holds a line break.
    #[error("change \"{change}\" spans several lines: give each instruction its own --change")]
    Multiline {
        /// The change.
        change: String,
    },
    /// A Dockerfile instruction that only a build can run.
    #[error(
        "change \"{change}\": {instruction} cannot be applied to an imported image; \
         only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME and WORKDIR can"
    )]
    NotAllowed {
        /// The change.
        change: String,
        /// Its instruction, upper case.
        instruction: String,
    },
    /// Not a Dockerfile instruction.
    #[error("change \"{change}\": unknown instruction \"{instruction}\"")]
    Unknown {
        /// The change.
        change: String,
        /// Its first word.
        instruction: String,
    },
    /// The instruction's arguments are wrong.
    #[error("change \"{change}\": {message}")]
    Invalid {
        /// The change.
        change: String,
        /// What is wrong.
        message: String,
    },
}

/// An empty JSON object, the value of `ExposedPorts` and `Volumes` entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Empty {}

/// The run section of an imported image's config, with every field a change
/// can set, serialised as Docker and OCI image configs spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportConfig {
    /// `USER`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `EXPOSE`: `80/tcp` → `{}`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `ENV`: `KEY=value`, in the order first set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `CMD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `VOLUME`: `/data` → `{}`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Empty>,
    /// `WORKDIR`, absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `ONBUILD` triggers, as written.
    #[serde(rename = "OnBuild", skip_serializing_if = "Vec::is_empty")]
    pub on_build: Vec<String>,
    /// `LABEL`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

impl Default for ImportConfig {
    /// What an import without changes gives: only a PATH.
    fn default() -> Self {
        Self {
            user: None,
            exposed_ports: BTreeMap::new(),
            env: vec![DEFAULT_PATH.to_string()],
            cmd: None,
            entrypoint: None,
            volumes: BTreeMap::new(),
            working_dir: None,
            on_build: Vec::new(),
            labels: BTreeMap::new(),
            stop_signal: None,
        }
    }
}

impl ImportConfig {
    /// The value of `key` in the environment.
    fn lookup(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(key)?.strip_prefix('='))
    }

    /// Sets `key` to `value`, in place when it is already set.
    fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
        {
            Some(e) => *e = entry,
            None => self.env.push(entry),
        }
    }
}

/// Applies `changes`, in order, to `config`. As in a Dockerfile, an
/// ENTRYPOINT clears the command unless a CMD came before it.
pub fn apply(config: &mut ImportConfig, changes: &[String]) -> Result<(), ChangeError> {
    let mut cmd_set = false;
    for change in changes {
        apply_one(config, change, &mut cmd_set)?;
    }
    Ok(())
}

fn apply_one(
    config: &mut ImportConfig,
    change: &str,
    cmd_set: &mut bool,
) -> Result<(), ChangeError> {
    if change.contains(['\n', '\r']) {
        return Err(ChangeError::Multiline {
            change: change.to_string(),
        });
    }
    let trimmed = change.trim();
    if trimmed.is_empty() {
        return Err(ChangeError::Empty);
    }
    let (word, rest) = trimmed
        .split_once(char::is_whitespace)
        .unwrap_or((trimmed, ""));
    let rest = rest.trim();
    let instruction = word.to_ascii_uppercase();
    let invalid = |message: String| ChangeError::Invalid {
        change: trimmed.to_string(),
        message,
    };
    if ALLOWED.contains(&instruction.as_str()) && rest.is_empty() {
        return Err(invalid(format!("{instruction} needs an argument")));
    }
    let lex = |s: &str, split: bool| lex(s, config, split).map_err(invalid);
    match instruction.as_str() {
        "CMD" => {
            config.cmd = Some(exec_or_shell(rest));
            *cmd_set = true;
        }
        "ENTRYPOINT" => {
            config.entrypoint = Some(exec_or_shell(rest));
            if !*cmd_set {
                config.cmd = None;
            }
        }
        "ENV" | "LABEL" => {
            let pairs = pairs(rest, &instruction, config).map_err(invalid)?;
            for (k, v) in pairs {
                if instruction == "ENV" {
                    config.set_env(&k, &v);
                } else {
                    config.labels.insert(k, v);
                }
            }
        }
        "EXPOSE" => {
            let mut ports = Vec::new();
            for w in lex(rest, true)? {
                ports.extend(port_spec(&w).map_err(invalid)?);
            }
            config
                .exposed_ports
                .extend(ports.into_iter().map(|p| (p, Empty {})));
        }
        "STOPSIGNAL" => {
            let signal = one_word(lex(rest, true)?, "STOPSIGNAL").map_err(invalid)?;
            moor_spec::linux::normalize_signal(&signal).map_err(invalid)?;
            config.stop_signal = Some(signal);
        }
        "USER" => {
            let user = one_word(lex(rest, true)?, "USER").map_err(invalid)?;
            config.user = Some(user);
        }
        "VOLUME" => {
            let paths = match json_list(rest) {
                Some(list) => {
                    let mut out = Vec::new();
                    for p in list {
                        out.push(lex(&p, false)?.concat());
                    }
                    out
                }
                None => lex(rest, true)?,
            };
            let mut volumes = Vec::new();
            for p in paths {
                let p = p.trim();
                if p.is_empty() {
                    return Err(invalid("a VOLUME path cannot be empty".into()));
                }
                volumes.push(p.to_string());
            }
            config
                .volumes
                .extend(volumes.into_iter().map(|p| (p, Empty {})));
        }
        "WORKDIR" => {
            let dir = lex(rest, false)?.concat();
            let base = config.working_dir.as_deref().unwrap_or("/");
            config.working_dir = Some(join_clean(base, dir.trim()));
        }
        "ONBUILD" => {
            let trigger = rest.split_whitespace().next().unwrap_or("");
            let upper = trigger.to_ascii_uppercase();
            if matches!(upper.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(invalid(format!(
                    "{upper} is not allowed as an ONBUILD trigger"
                )));
            }
            if !ALLOWED.contains(&upper.as_str()) && !BUILD_ONLY.contains(&upper.as_str()) {
                return Err(invalid(format!(
                    "unknown instruction \"{trigger}\" as an ONBUILD trigger"
                )));
            }
            config.on_build.push(rest.to_string());
        }
        _ if BUILD_ONLY.contains(&instruction.as_str()) => {
            return Err(ChangeError::NotAllowed {
                change: trimmed.to_string(),
                instruction,
            });
        }
        _ => {
            return Err(ChangeError::Unknown {
                change: trimmed.to_string(),
                instruction: word.to_string(),
            });
        }
    }
    Ok(())
}

/// A JSON array of strings, or `None` when `s` is not one.
fn json_list(s: &str) -> Option<Vec<String>> {
    s.starts_with('[')
        .then(|| serde_json::from_str::<Vec<String>>(s).ok())
        .flatten()
}

/// CMD and ENTRYPOINT: the exec form (a JSON array of strings) as it is,
/// anything else run by `/bin/sh -c`, unprocessed, as Docker does.
fn exec_or_shell(s: &str) -> Vec<String> {
    json_list(s).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), s.to_string()])
}

fn one_word(words: Vec<String>, instruction: &str) -> Result<String, String> {
    match <[String; 1]>::try_from(words) {
        Ok([w]) if !w.is_empty() => Ok(w),
        _ => Err(format!("{instruction} takes exactly one argument")),
    }
}

/// ENV and LABEL: `K=V K2="V 2"` pairs, or the legacy `K the value`.
fn pairs(
    rest: &str,
    instruction: &str,
    config: &ImportConfig,
) -> Result<Vec<(String, String)>, String> {
    let raw = split_raw(rest);
    let first = raw.first().map(String::as_str).unwrap_or("");
    let mut out = Vec::new();
    if !first.contains('=') {
        // Legacy form: the first word is the key, the rest the value.
        let value = rest[first.len()..].trim_start();
        if value.is_empty() {
            return Err(format!(
                "{instruction} {first} needs a value (or write {first}=VALUE)"
            ));
        }
        out.push((
            lex(first, config, false)?.concat(),
            lex(value, config, false)?.concat(),
        ));
    } else {
        for w in &raw {
            let Some((k, v)) = w.split_once('=') else {
                return Err(format!(
                    "\"{w}\" is not of the form NAME=VALUE (as every word must be once one is)"
                ));
            };
            out.push((
                lex(k, config, false)?.concat(),
                lex(v, config, false)?.concat(),
            ));
        }
    }
    if out.iter().any(|(k, _)| k.trim().is_empty()) {
        return Err(format!("{instruction} names cannot be empty"));
    }
    if instruction == "ENV" && out.iter().any(|(k, _)| k.contains(['=', '\0'])) {
        return Err("ENV names cannot contain \"=\" or NUL".into());
    }
    Ok(out)
}

/// `80`, `53/udp`, `8000-8002/tcp`: the `port/proto` keys they expose.
fn port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "EXPOSE {spec}: protocol \"{proto}\" is not tcp, udp or sctp"
        ));
    }
    let port = |p: &str| {
        Some(p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("EXPOSE {spec}: \"{p}\" is not a port from 1 to 65535"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if lo > hi {
        return Err(format!("EXPOSE {spec}: the range ends before it starts"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// `base` joined with `dir` (unless absolute), `.` and `..` resolved, as
/// Go's `filepath.Join` does for Docker's WORKDIR.
fn join_clean(base: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_string()
    } else {
        format!("{base}/{dir}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Splits on whitespace outside quotes, keeping quotes and escapes as they
/// are (the Dockerfile parser's first pass).
fn split_raw(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            (q, '\\') if q != Some('\'') => {
                cur.push('\\');
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (_, c) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Docker's word processing: single quotes literal, double quotes with
/// `\"`, `\\`, `\$` escapes and substitution, a backslash outside quotes
/// escaping any character, `$VAR` and `${VAR…}` from `config`'s
/// environment. With `split`, unquoted whitespace (also inside a
/// substituted value) separates words; without, the result is one word.
fn lex(s: &str, config: &ImportConfig, split: bool) -> Result<Vec<String>, String> {
    lex_at(s, config, split, 0)
}

/// How deep `${A:-${B:-…}}` may nest: deeper is refused, not a stack overflow.
const MAX_NESTING: usize = 16;

/// [`lex()`] inside `depth` substitutions.
fn lex_at(
    s: &str,
    config: &ImportConfig,
    split: bool,
    depth: usize,
) -> Result<Vec<String>, String> {
    if depth > MAX_NESTING {
        return Err(format!("substitutions nested more than {MAX_NESTING} deep"));
    }
    let chars: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    let end_word = |words: &mut Vec<String>, cur: &mut String, in_word: &mut bool| {
        if *in_word {
            words.push(std::mem::take(cur));
            *in_word = false;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            c if split && c.is_whitespace() => end_word(&mut words, &mut cur, &mut in_word),
            '\\' => {
                cur.push(chars.get(i).copied().unwrap_or('\\'));
                i += 1;
                in_word = true;
            }
            '\'' => {
                let close = chars[i..]
                    .iter()
                    .position(|&c| c == '\'')
                    .ok_or_else(|| format!("unterminated single quote in {s}"))?;
                cur.extend(&chars[i..i + close]);
                i += close + 1;
                in_word = true;
            }
            '"' => {
                in_word = true;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(format!("unterminated double quote in {s}"));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' if matches!(chars.get(i), Some('"' | '\\' | '$')) => {
                            cur.push(chars[i]);
                            i += 1;
                        }
                        '$' => cur.push_str(&substitute(&chars, &mut i, config, depth)?),
                        c => cur.push(c),
                    }
                }
            }
            '$' => {
                for c in substitute(&chars, &mut i, config, depth)?.chars() {
                    if split && c.is_whitespace() {
                        end_word(&mut words, &mut cur, &mut in_word);
                    } else {
                        cur.push(c);
                        in_word = true;
                    }
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if split {
        end_word(&mut words, &mut cur, &mut in_word);
        Ok(words)
    } else {
        Ok(vec![cur])
    }
}

/// After a `$` at `chars[*i - 1]`: `NAME`, `{NAME}`, `{NAME:-word}`,
/// `{NAME-word}`, `{NAME:+word}`, `{NAME+word}`, `{NAME:?word}`,
/// `{NAME?word}`. A `$` before anything else is itself.
fn substitute(
    chars: &[char],
    i: &mut usize,
    config: &ImportConfig,
    depth: usize,
) -> Result<String, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let text: String = chars.iter().collect();
    match chars.get(*i) {
        Some('{') => {
            *i += 1;
            let start = *i;
            while chars.get(*i).is_some_and(|&c| is_name(c)) {
                *i += 1;
            }
            let name: String = chars[start..*i].iter().collect();
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!("bad substitution in {text}"));
            }
            let value = config.lookup(&name);
            if chars.get(*i).is_none() {
                return Err(format!("missing '}}' in {text}"));
            }
            if chars.get(*i) == Some(&'}') {
                *i += 1;
                return Ok(value.unwrap_or("").to_string());
            }
            let colon = chars.get(*i) == Some(&':');
            if colon {
                *i += 1;
            }
            let op = *chars
                .get(*i)
                .filter(|c| matches!(c, '-' | '+' | '?'))
                .ok_or_else(|| format!("bad substitution in {text}"))?;
            *i += 1;
            // The word runs to the matching brace.
            let start = *i;
            let mut open = 1;
            while let Some(&c) = chars.get(*i) {
                match c {
                    '{' => open += 1,
                    '}' => open -= 1,
                    '\\' => *i += 1,
                    _ => {}
                }
                if open == 0 {
                    break;
                }
                *i += 1;
            }
            if open != 0 {
                return Err(format!("missing '}}' in {text}"));
            }
            let word: String = chars[start..*i].iter().collect();
            *i += 1;
            let set = match value {
                Some(v) => !colon || !v.is_empty(),
                None => false,
            };
            let word = || lex_at(&word, config, false, depth + 1).map(|w| w.concat());
            match op {
                '-' if set => Ok(value.unwrap_or("").to_string()),
                '-' => word(),
                '+' if set => word(),
                '+' => Ok(String::new()),
                _ if set => Ok(value.unwrap_or("").to_string()),
                _ => Err(format!("{name}: {}", word()?)),
            }
        }
        Some(&c) if c.is_ascii_alphabetic() || c == '_' => {
            let start = *i;
            while chars.get(*i).is_some_and(|&c| is_name(c)) {
                *i += 1;
            }
            let name: String = chars[start..*i].iter().collect();
            Ok(config.lookup(&name).unwrap_or("").to_string())
        }
        _ => Ok("$".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(changes: &[&str]) -> Result<ImportConfig, ChangeError> {
        let mut c = ImportConfig::default();
        let changes: Vec<String> = changes.iter().map(|s| s.to_string()).collect();
        apply(&mut c, &changes).map(|()| c)
    }

    fn ok(changes: &[&str]) -> ImportConfig {
        applied(changes).unwrap_or_else(|e| panic!("{changes:?}: {e}"))
    }

    fn err(change: &str) -> String {
        match applied(&[change]) {
            Ok(c) => panic!("{change:?} was accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cmd_and_entrypoint_take_the_exec_and_the_shell_form() {
        let c = ok(&[r#"CMD ["python3", "/app/app.py"]"#]);
        assert_eq!(c.cmd, Some(strings(&["python3", "/app/app.py"])));
        let c = ok(&["cmd echo $HOME  &&  ls"]);
        assert_eq!(
            c.cmd,
            Some(strings(&["/bin/sh", "-c", "echo $HOME  &&  ls"]))
        );
        // Not an array of strings: the shell form, as Docker does.
        let c = ok(&["CMD [1, 2]"]);
        assert_eq!(c.cmd, Some(strings(&["/bin/sh", "-c", "[1, 2]"])));
        let c = ok(&["CMD []"]);
        assert_eq!(c.cmd, Some(vec![]));
        let c = ok(&[r#"ENTRYPOINT ["/entrypoint.sh"]"#]);
        assert_eq!(c.entrypoint, Some(strings(&["/entrypoint.sh"])));
    }

    #[test]
    fn an_entrypoint_clears_the_command_unless_a_cmd_came_first() {
        let c = ok(&[r#"CMD ["postgres"]"#, r#"ENTRYPOINT ["/e.sh"]"#]);
        assert_eq!(c.cmd, Some(strings(&["postgres"])));
        let c = ok(&[r#"ENTRYPOINT ["/e.sh"]"#, r#"CMD ["postgres"]"#]);
        assert_eq!(c.cmd, Some(strings(&["postgres"])));
        assert_eq!(c.entrypoint, Some(strings(&["/e.sh"])));
        let c = ok(&[r#"ENTRYPOINT ["/a"]"#, r#"ENTRYPOINT ["/b"]"#]);
        assert_eq!(c.entrypoint, Some(strings(&["/b"])));
        assert_eq!(c.cmd, None);
    }

    #[test]
    fn env_pairs_quotes_substitution_and_the_legacy_form() {
        let c = ok(&[
            r#"ENV PGDATA=/var/lib/postgresql/data GREETING="hello world" ESC=a\ b"#,
            "ENV PATH=/usr/lib/postgresql/15/bin:$PATH",
            "env LEGACY  two words  here",
            r#"ENV Q='$PATH' D="${PGDATA}/x" U=${UNSET:-fallback} P=${PGDATA:+set} N=${NONE+x}"#,
        ]);
        assert_eq!(
            c.env,
            strings(&[
                "PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "PGDATA=/var/lib/postgresql/data",
                "GREETING=hello world",
                "ESC=a b",
                "LEGACY=two words  here",
                "Q=$PATH",
                "D=/var/lib/postgresql/data/x",
                "U=fallback",
                "P=set",
                "N=",
            ])
        );
        // Substitution sees the environment from before the instruction.
        let c = ok(&["ENV A=1", "ENV A=2 B=$A"]);
        assert!(c.env.contains(&"B=1".to_string()), "{:?}", c.env);
        // An escaped dollar and a lone one stay.
        let c = ok(&[r#"ENV PRICE=\$5 LONE=a$ DQ="\$x \"q\"""#]);
        assert!(c.env.contains(&"PRICE=$5".to_string()), "{:?}", c.env);
        assert!(c.env.contains(&"LONE=a$".to_string()), "{:?}", c.env);
        assert!(c.env.contains(&r#"DQ=$x "q""#.to_string()), "{:?}", c.env);
    }

    #[test]
    fn labels_exposed_ports_volumes_and_the_rest() {
        let c = ok(&[
            r#"LABEL org.opencontainers.image.title="moor test" version=1"#,
            "LABEL legacy some value",
            "EXPOSE 5432 53/udp 8000-8002/TCP",
            r#"VOLUME ["/var/lib/postgresql/data"]"#,
            "VOLUME /a /b",
            "USER postgres",
            "WORKDIR /srv",
            "WORKDIR app/../www",
            "STOPSIGNAL SIGINT",
            "ONBUILD RUN echo hi",
        ]);
        assert_eq!(c.labels["org.opencontainers.image.title"], "moor test");
        assert_eq!(c.labels["version"], "1");
        assert_eq!(c.labels["legacy"], "some value");
        let ports: Vec<&str> = c.exposed_ports.keys().map(String::as_str).collect();
        assert_eq!(
            ports,
            ["53/udp", "5432/tcp", "8000/tcp", "8001/tcp", "8002/tcp"]
        );
        let vols: Vec<&str> = c.volumes.keys().map(String::as_str).collect();
        assert_eq!(vols, ["/a", "/b", "/var/lib/postgresql/data"]);
        assert_eq!(c.user.as_deref(), Some("postgres"));
        assert_eq!(c.working_dir.as_deref(), Some("/srv/www"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(c.on_build, ["RUN echo hi"]);
        let c = ok(&[
            "ENV U=nobody D=/data",
            "USER $U",
            "VOLUME $D",
            "WORKDIR ${D}/x",
        ]);
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert!(c.volumes.contains_key("/data"));
        assert_eq!(c.working_dir.as_deref(), Some("/data/x"));
    }

    #[test]
    fn the_config_is_written_as_docker_spells_it() {
        let c = ok(&[
            "USER nobody",
            r#"CMD ["python3","/app/app.py"]"#,
            "ENV PORT=8000",
            "EXPOSE 8000",
            "VOLUME /data",
            "WORKDIR /app",
            "LABEL a=b",
            "STOPSIGNAL 3",
            "ONBUILD RUN true",
        ]);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "User": "nobody",
                "ExposedPorts": {"8000/tcp": {}},
                "Env": [DEFAULT_PATH, "PORT=8000"],
                "Cmd": ["python3", "/app/app.py"],
                "Volumes": {"/data": {}},
                "WorkingDir": "/app",
                "OnBuild": ["RUN true"],
                "Labels": {"a": "b"},
                "StopSignal": "3",
            })
        );
        // Without changes: only the PATH.
        let json = serde_json::to_value(ImportConfig::default()).unwrap();
        assert_eq!(json, serde_json::json!({"Env": [DEFAULT_PATH]}));
    }

    #[test]
    fn bad_changes_are_clear_errors() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("RUN apt-get update", "RUN cannot be applied to an imported image; only CMD"),
            ("COPY . /app", "COPY cannot be applied"),
            ("FROM debian", "FROM cannot be applied"),
            ("HEALTHCHECK CMD true", "HEALTHCHECK cannot be applied"),
            ("BOGUS x", "unknown instruction \"BOGUS\""),
            ("", "change is empty"),
            ("   ", "change is empty"),
            ("CMD", "CMD needs an argument"),
            ("USER", "USER needs an argument"),
            ("ENV A=1\nRUN x", "spans several lines"),
            ("ENV A", "ENV A needs a value"),
            ("ENV A=1 B", "\"B\" is not of the form NAME=VALUE"),
            ("ENV =1", "ENV names cannot be empty"),
            ("LABEL =x", "LABEL names cannot be empty"),
            ("ENV A=\"open", "unterminated double quote"),
            ("ENV A='open", "unterminated single quote"),
            ("ENV A=${B", "missing '}'"),
            ("ENV A=${}", "bad substitution"),
            ("ENV A=${B:?required}", "B: required"),
            ("EXPOSE 0", "\"0\" is not a port"),
            ("EXPOSE 70000", "\"70000\" is not a port"),
            ("EXPOSE http", "\"http\" is not a port"),
            ("EXPOSE 80/icmp", "protocol \"icmp\""),
            ("EXPOSE +80", "\"+80\" is not a port"),
            ("EXPOSE 80-", "\"\" is not a port"),
            ("EXPOSE 90-80", "the range ends before it starts"),
            ("STOPSIGNAL SIGNOPE", "unknown signal"),
            ("STOPSIGNAL 99", "out of range"),
            ("USER a b", "USER takes exactly one argument"),
            ("VOLUME [\"\"]", "a VOLUME path cannot be empty"),
            ("ONBUILD ONBUILD RUN x", "ONBUILD is not allowed as an ONBUILD trigger"),
            ("ONBUILD FROM x", "FROM is not allowed"),
            ("ONBUILD NOPE x", "unknown instruction \"NOPE\" as an ONBUILD trigger"),
        ];
        for (change, want) in cases {
            let got = err(change);
            assert!(got.contains(want), "{change:?}: {got:?} lacks {want:?}");
        }
        // Hostile nesting is refused, not a stack overflow.
        let deep = format!("ENV A={}x{}", "${B:-".repeat(10_000), "}".repeat(10_000));
        assert!(err(&deep).contains("nested more than 16 deep"));
        let ok_depth = format!("ENV A={}x{}", "${B:-".repeat(16), "}".repeat(16));
        assert!(ok(&[ok_depth.as_str()]).env.contains(&"A=x".to_string()));
        // The error names the change.
        assert_eq!(
            err("run  make"),
            "change \"run  make\": RUN cannot be applied to an imported image; only CMD, \
             ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME and WORKDIR can"
        );
    }

    #[test]
    fn lexing_follows_docker() {
        let c = ImportConfig::default();
        let words = |s: &str| lex(s, &c, true).unwrap();
        assert_eq!(words(r#"a "b c" 'd e' f\ g"#), ["a", "b c", "d e", "f g"]);
        assert_eq!(words(r#""" x"#), ["", "x"]);
        assert_eq!(words("$UNSET x"), ["x"]);
        let c = ok(&["ENV TWO=\"p q\""]);
        assert_eq!(lex("$TWO", &c, true).unwrap(), ["p", "q"]);
        assert_eq!(lex("\"$TWO\"", &c, true).unwrap(), ["p q"]);
        assert_eq!(
            split_raw(r#"A="x y" B='c d' C=e\ f"#),
            [r#"A="x y""#, "B='c d'", r"C=e\ f"]
        );
    }
}
