//! Fleet targeting: which hosts a resource is meant for.
//!
//! One repository can describe a whole fleet. A manifest document may carry a
//! top-level `target`, and any resource a `target` field of its own, both of
//! the form `{ hosts = ["edge-*", "db-1"], labels = { role = "db" } }`:
//!
//! - `hosts` are globs over the host's name (`*` any run of characters, `?`
//!   one character, `[a-z0-9]` / `[!0-9]` one character of / not of a class),
//!   matched case-insensitively, since host names are; any one of them may match.
//! - `labels` must *all* be present on the host with exactly these values.
//! - With both, a host must satisfy both.
//!
//! A resource's own `target` **replaces** its document's (it does not narrow
//! it): a file for `hosts = ["edge-*"]` can hold one container with
//! `target = { labels = { gpu = "yes" } }` that goes wherever a GPU is. A
//! resource with neither applies to every host. In a YAML file of several
//! documents, each document's `target` covers that document's resources.
//!
//! A host's identity — its name and labels — is a [`HostIdentity`]. The target
//! is deliberately *not* part of any spec hash: moving a container's target
//! around never recreates it on a host where it still applies.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Who this host is, for targeting: its name and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostIdentity {
    /// The host's name, matched against `hosts` globs.
    pub name: String,
    /// The host's labels, matched against `labels`.
    pub labels: BTreeMap<String, String>,
}

impl HostIdentity {
    /// A host with this name and no labels.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
        }
    }

    /// This machine, by its host name (as `hostname` prints it), with no labels.
    pub fn from_hostname() -> std::io::Result<Self> {
        let name = nix::unistd::gethostname()
            .map_err(std::io::Error::from)?
            .into_string()
            .map_err(|_| std::io::Error::other("the host name is not valid UTF-8"))?;
        check_host_name(&name).map_err(std::io::Error::other)?;
        Ok(Self::new(name))
    }

    /// The host to act as: `name` when given (checked as
    /// [`check_host_name`] does), else this machine's host name, with
    /// `labels` (each key checked as [`check_label_key`] does). A machine
    /// whose host name cannot be read is an error naming `--host-name`,
    /// never some default name: a host that became "localhost" would
    /// silently apply what targets another one, or nothing.
    pub fn resolve(
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Self, IdentityError> {
        let mut host = match name {
            Some(name) => {
                check_host_name(name).map_err(IdentityError::BadName)?;
                Self::new(name)
            }
            None => Self::from_hostname().map_err(|error| IdentityError::NoHostName { error })?,
        };
        for key in labels.keys() {
            check_label_key(key).map_err(IdentityError::BadLabel)?;
        }
        host.labels = labels;
        Ok(host)
    }

    /// The same host with one more label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

impl fmt::Display for HostIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, " ({})", labels.join(", "))?;
        }
        Ok(())
    }
}

/// Why the identity of the host to act as cannot be settled.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No name was given, and this machine's host name cannot be read or
    /// is not one a manifest could target.
    #[error("cannot read this machine's host name ({error}); pass --host-name")]
    NoHostName {
        /// Why it cannot be read.
        error: std::io::Error,
    },
    /// The name given is not a host name (the message says why).
    #[error("{0}")]
    BadName(String),
    /// A label key is not one a target could name (the message says why).
    #[error("{0}")]
    BadLabel(String),
    /// The same label key was given twice (`--host-label role=a --host-label role=b`).
    #[error("--host-label {key} is given twice")]
    DuplicateLabel {
        /// The key.
        key: String,
    },
}

/// Labels given one at a time (each `--host-label KEY=VALUE`, parsed by
/// [`parse_label`]) as a map; a key given twice is an error rather than
/// the last one silently winning.
pub fn label_map(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, IdentityError> {
    let mut labels = BTreeMap::new();
    for (key, value) in pairs {
        if labels.contains_key(&key) {
            return Err(IdentityError::DuplicateLabel { key });
        }
        labels.insert(key, value);
    }
    Ok(labels)
}

/// Parses a host name given to act as (`--host-name`), checked as
/// [`check_host_name`] does.
pub fn parse_host_name(s: &str) -> Result<String, String> {
    check_host_name(s).map(|()| s.to_string())
}

/// Checks a host name given to act as (`--host-name`): not empty, no white
/// space, no glob characters, at most 253 characters (a DNS name).
pub fn check_host_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the host name must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "host name \"{name}\" is longer than 253 characters"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '?' | '[' | ']'))
    {
        return Err(format!("host name \"{name}\" contains {bad:?}"));
    }
    Ok(())
}

/// Checks a target or host label key: 1 to 63 characters of ASCII letters,
/// digits, `.`, `-`, `_` and `/`, starting and ending with a letter or digit
/// (`role`, `zone`, `example.com/tier`). Stricter than container labels, so
/// that a typo such as `role:db` is caught rather than never matching.
pub fn check_label_key(key: &str) -> Result<(), String> {
    const MAX: usize = 63;
    if key.is_empty() {
        return Err("a label key must not be empty".into());
    }
    if key.len() > MAX {
        return Err(format!(
            "label key \"{key}\" is longer than {MAX} characters"
        ));
    }
    if let Some(bad) = key
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')))
    {
        return Err(format!(
            "label key \"{key}\" contains {bad:?}; use letters, digits, '.', '-', '_' and '/'"
        ));
    }
    let b = key.as_bytes();
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err(format!(
            "label key \"{key}\" must start and end with a letter or a digit"
        ));
    }
    Ok(())
}

/// Parses `KEY=VALUE` (as `--host-label` takes it) into a checked label.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let Some((k, v)) = s.split_once('=') else {
        return Err(format!("\"{s}\" must look like KEY=VALUE"));
    };
    check_label_key(k)?;
    Ok((k.to_string(), v.to_string()))
}

/// One element of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// This character (lower-cased).
    Char(char),
    /// `?`: any one character.
    One,
    /// `*`: any run of characters, empty included.
    Star,
    /// `[…]`: one character in (or, negated, not in) these inclusive ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A host name glob: `*`, `?` and `[…]` classes (`[!…]` or `[^…]` negated,
/// `a-z` ranges), matched case-insensitively against the whole name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostGlob {
    text: String,
    toks: Vec<Tok>,
}

impl HostGlob {
    /// Compiles a glob, or says what is wrong with it.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a host glob must not be empty".into());
        }
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*' | '?');
        let mut toks = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                }
                '?' => toks.push(Tok::One),
                '[' => {
                    let negated = chars.next_if(|&c| c == '!' || c == '^').is_some();
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        if c == ']' {
                            closed = true;
                            break;
                        }
                        if !allowed(c) || c == '*' || c == '?' {
                            return Err(format!(
                                "host glob \"{text}\" has {c:?} in a [...] class; only letters, digits, '-', '.' and '_' can be in a host name"
                            ));
                        }
                        let lo = c.to_ascii_lowercase();
                        let is_range = c != '-'
                            && chars.peek() == Some(&'-')
                            && chars.clone().nth(1).is_some_and(|n| n != ']');
                        if is_range {
                            chars.next();
                            let hi_raw = chars.next().unwrap_or(c);
                            if !allowed(hi_raw) || hi_raw == '*' || hi_raw == '?' {
                                return Err(format!(
                                    "host glob \"{text}\" has {hi_raw:?} in a [...] class; only letters, digits, '-', '.' and '_' can be in a host name"
                                ));
                            }
                            let hi = hi_raw.to_ascii_lowercase();
                            if hi < lo {
                                return Err(format!(
                                    "host glob \"{text}\" has the backwards range {c}-{hi_raw}"
                                ));
                            }
                            ranges.push((lo, hi));
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    if !closed {
                        return Err(format!(
                            "host glob \"{text}\" has a '[' without its closing ']'"
                        ));
                    }
                    if ranges.is_empty() {
                        return Err(format!("host glob \"{text}\" has an empty [] class"));
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                ']' => {
                    return Err(format!(
                        "host glob \"{text}\" has a ']' without its opening '['"
                    ));
                }
                c if allowed(c) => toks.push(Tok::Char(c.to_ascii_lowercase())),
                c => {
                    return Err(format!(
                        "host glob \"{text}\" contains {c:?}, which no host name has; use letters, digits, '-', '.', '_' and the wildcards *, ? and [...]"
                    ));
                }
            }
        }
        Ok(Self {
            text: text.to_string(),
            toks,
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the whole of `name` matches (case-insensitively).
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().map(|c| c.to_ascii_lowercase()).collect();
        let one = |t: &Tok, c: char| match t {
            Tok::Char(p) => *p == c,
            Tok::One => true,
            Tok::Star => unreachable!("stars are handled by the loop"),
            Tok::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)) != *negated
            }
        };
        // The classic linear-backtracking wildcard match: remember the last
        // star and the name position it was tried at; on a mismatch, let
        // that star swallow one more character.
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.toks.get(p) {
                Some(Tok::Star) => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(t) if one(t, name[n]) => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        p = sp + 1;
                        n = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        self.toks[p..].iter().all(|t| *t == Tok::Star)
    }
}

impl TryFrom<String> for HostGlob {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        HostGlob::new(&s)
    }
}

impl From<HostGlob> for String {
    fn from(g: HostGlob) -> String {
        g.text
    }
}

impl fmt::Display for HostGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `target = { hosts = [...], labels = {...} }`: the hosts a resource is for.
/// At least one of the two is given (the decoder refuses an empty target).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Target {
    /// Host name globs, any of which may match; empty means any name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostGlob>,
    /// Labels the host must all have, with these values; empty means any labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Target {
    /// True when `host` is one this target is for.
    pub fn matches(&self, host: &HostIdentity) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|g| g.matches(&host.name)))
            && self
                .labels
                .iter()
                .all(|(k, v)| host.labels.get(k) == Some(v))
    }
}

/// Whether a resource with this (effective) target applies to `host`:
/// untargeted resources apply everywhere.
pub fn applies(target: Option<&Target>, host: &HostIdentity) -> bool {
    target.is_none_or(|t| t.matches(host))
}

impl fmt::Display for Target {
    /// The target in manifest syntax: `hosts = ["edge-*"], labels = { role = "db" }`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.hosts.is_empty() {
            let hosts: Vec<String> = self.hosts.iter().map(|g| format!("{:?}", g.text)).collect();
            parts.push(format!("hosts = [{}]", hosts.join(", ")));
        }
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k} = {v:?}"))
                .collect();
            parts.push(format!("labels = {{ {} }}", labels.join(", ")));
        }
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(s: &str) -> HostGlob {
        HostGlob::new(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn globs_match_whole_names() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("db-1", &["db-1", "DB-1"], &["db-10", "xdb-1", "db-"]),
            (
                "edge-*",
                &["edge-", "edge-1", "edge-eu-22"],
                &["edge", "xedge-1"],
            ),
            ("*", &["a", "edge-1", ""], &[]),
            ("node-?", &["node-1", "node-a"], &["node-", "node-12"]),
            ("*-db-*", &["eu-db-1", "x-db-db-y"], &["eu-db", "db-1"]),
            ("web[0-9]", &["web0", "web7"], &["weba", "web10", "web"]),
            ("web[!0-9]*", &["weba", "webab"], &["web1", "web"]),
            ("web[^0-9]", &["webx"], &["web2"]),
            ("r[a-cx]", &["ra", "rb", "rc", "rx", "RB"], &["rd", "r"]),
            ("[-a]z", &["-z", "az"], &["bz"]),
            ("a*b*c", &["abc", "aXbYc", "abbbc", "acbc"], &["ab", "acb"]),
            ("**x", &["x", "yx"], &["xy"]),
        ];
        for (pattern, yes, no) in cases {
            let g = glob(pattern);
            for name in *yes {
                assert!(g.matches(name), "{pattern} should match {name}");
            }
            for name in *no {
                assert!(!g.matches(name), "{pattern} should not match {name}");
            }
        }
    }

    #[test]
    fn bad_globs_say_why() {
        for (pattern, says) in [
            ("", "must not be empty"),
            ("web[0-9", "without its closing ']'"),
            ("web]", "without its opening '['"),
            ("web[]", "empty [] class"),
            ("web[!]", "empty [] class"),
            ("web[9-0]", "backwards range 9-0"),
            ("edge 1", "' '"),
            ("edge/1", "'/'"),
            ("web[*]", "in a [...] class"),
        ] {
            let err = HostGlob::new(pattern).expect_err(pattern);
            assert!(err.contains(says), "{pattern}: {err}");
        }
    }

    #[test]
    fn a_long_pathological_glob_matches_quickly() {
        let g = glob(&"a*".repeat(30));
        let name = "a".repeat(200) + "b";
        let t = std::time::Instant::now();
        assert!(g.matches(&name));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn targets_need_every_label_and_any_host() {
        let t = Target {
            hosts: vec![glob("edge-*"), glob("db-1")],
            labels: [("role".to_string(), "db".to_string())].into(),
        };
        let edge_db = HostIdentity::new("edge-7").with_label("role", "db");
        let db1 = HostIdentity::new("db-1")
            .with_label("role", "db")
            .with_label("zone", "a");
        let edge_web = HostIdentity::new("edge-7").with_label("role", "web");
        let other_db = HostIdentity::new("core-1").with_label("role", "db");
        let edge_nolabel = HostIdentity::new("edge-7");
        assert!(t.matches(&edge_db));
        assert!(t.matches(&db1));
        assert!(!t.matches(&edge_web));
        assert!(!t.matches(&other_db));
        assert!(!t.matches(&edge_nolabel));

        let labels_only = Target {
            hosts: vec![],
            labels: t.labels.clone(),
        };
        assert!(labels_only.matches(&other_db));
        assert!(!labels_only.matches(&edge_nolabel));
        assert!(applies(None, &edge_nolabel));
        assert!(!applies(Some(&labels_only), &edge_nolabel));
        assert_eq!(
            t.to_string(),
            r#"hosts = ["edge-*", "db-1"], labels = { role = "db" }"#
        );
    }

    #[test]
    fn label_keys_and_cli_labels() {
        for good in ["role", "zone", "example.com/tier", "a", "gpu_0"] {
            assert!(check_label_key(good).is_ok(), "{good}");
        }
        for bad in ["", "role db", "role:db", "-x", "x-", "é", &"a".repeat(64)] {
            assert!(check_label_key(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_label("role=db"), Ok(("role".into(), "db".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), "".into())));
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("role").is_err());
        assert!(parse_label("=db").is_err());
    }

    #[test]
    fn host_names_and_this_machine() {
        assert!(check_host_name("edge-1.example.com").is_ok());
        assert!(check_host_name("").is_err());
        assert!(check_host_name("edge 1").is_err());
        assert!(check_host_name("edge-*").is_err());
        let me = HostIdentity::from_hostname().expect("this machine has a host name");
        assert!(!me.name.is_empty());
        assert!(me.labels.is_empty());
    }

    #[test]
    fn one_identity_for_every_caller() {
        let labels = label_map([
            ("role".to_string(), "db".to_string()),
            ("zone".to_string(), "a".to_string()),
        ])
        .expect("distinct keys");
        let host = HostIdentity::resolve(Some("db-1"), labels.clone()).expect("valid");
        assert_eq!(host.name, "db-1");
        assert_eq!(host.labels, labels);
        assert_eq!(parse_host_name("edge-1"), Ok("edge-1".to_string()));

        let me = HostIdentity::resolve(None, BTreeMap::new()).expect("this machine");
        assert_eq!(me, HostIdentity::from_hostname().expect("this machine"));

        for (name, labels, says) in [
            (Some("edge-*"), vec![], "host name \"edge-*\" contains '*'"),
            (Some(""), vec![], "must not be empty"),
            (
                Some("db-1"),
                vec![("role:db", "x")],
                "label key \"role:db\"",
            ),
        ] {
            let labels = labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let e = HostIdentity::resolve(name, labels).expect_err(says);
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = label_map([
            ("role".to_string(), "db".to_string()),
            ("role".to_string(), "web".to_string()),
        ])
        .expect_err("a key twice");
        assert_eq!(e.to_string(), "--host-label role is given twice");
        let e = IdentityError::NoHostName {
            error: std::io::Error::other("no name"),
        };
        assert_eq!(
            e.to_string(),
            "cannot read this machine's host name (no name); pass --host-name"
        );
    }

    #[test]
    fn globs_round_trip_through_serde() {
        let t = Target {
            hosts: vec![glob("edge-[0-9]*")],
            labels: BTreeMap::new(),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"hosts":["edge-[0-9]*"]}"#);
        assert_eq!(serde_json::from_str::<Target>(&json).unwrap(), t);
        assert!(serde_json::from_str::<Target>(r#"{"hosts":["a["]}"#).is_err());
    }
}
