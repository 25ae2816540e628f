//! Decoding the [`Node`] tree into the model, collecting every error.
//!
//! The decoder never stops at the first problem: a field that is wrong is
//! reported and skipped, and decoding goes on with the next, so one run shows
//! the user everything that needs fixing.

mod container;
mod resources;
mod target;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::{Diagnostic, Diagnostics};
use crate::node::{Key, Node, Pos, Value};
use crate::tree::Tree;

pub(crate) use container::ContainerDraft;
pub(crate) use resources::{Declared, Draft, Drafts, Elsewhere};

/// The longest resource name: a DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// Suggests the candidate closest to `input`, if one is close enough to be a typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let input = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&input, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|&(d, c)| d <= 2.max(c.len() / 3) && d < c.len())
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// The hint for an unknown key: the field a known alias stands for, or the
/// closest allowed field or alias (a typo of `environment` suggests `env`).
pub(crate) fn hint<'a>(
    key: &str,
    allowed: &[&'a str],
    aliases: &[(&'a str, &'a str)],
) -> Option<&'a str> {
    if let Some((_, ours)) = aliases.iter().find(|(alias, _)| *alias == key) {
        return Some(ours);
    }
    let candidates = allowed
        .iter()
        .copied()
        .chain(aliases.iter().map(|(alias, _)| *alias));
    let best = did_you_mean(key, candidates)?;
    Some(
        aliases
            .iter()
            .find(|(alias, _)| *alias == best)
            .map_or(best, |(_, ours)| *ours),
    )
}

/// Checks a resource name: lower-case letters, digits, `-` and `_`, starting
/// with a letter or digit, at most 63 characters, so that it can be a host
/// name, a DNS label, and the seed of a network interface name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.contains('/') || name.contains("..") {
        return Err(format!("name \"{name}\" must not contain '/' or '..'"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name \"{name}\" is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("name \"{name}\" must be lower-case"));
    }
    let bytes = name.as_bytes();
    if !bytes[0].is_ascii_lowercase() && !bytes[0].is_ascii_digit() {
        return Err(format!(
            "name \"{name}\" must start with a lower-case letter or a digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'))
    {
        return Err(format!(
            "name \"{name}\" contains {bad:?}; use lower-case letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// `parent.key`, the way fields are named in diagnostics.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        format!("{parent}.{key}")
    } else {
        format!("{parent}.\"{key}\"")
    }
}

/// The fields of one table, checked for unknown and repeated keys.
pub(crate) struct Fields<'n> {
    pub(crate) pos: Pos,
    entries: Vec<(&'n Key, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub(crate) fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, v)| *v)
    }
}

/// Decodes nodes of one manifest file into values, recording diagnostics.
pub(crate) struct Decoder<'a> {
    pub(crate) file: &'a Path,
    /// The manifest file's directory, against which relative paths resolve.
    pub(crate) dir: &'a Path,
    /// The source's tree, which relative paths must not leave.
    pub(crate) tree: &'a Tree,
    /// What the manifests may ask of the host; None: anything.
    pub(crate) policy: Option<&'a crate::policy::Policy>,
    /// What a read-write bind into the tree does.
    pub(crate) writes: crate::writes::Writes,
    pub(crate) diags: Diagnostics,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(file: &'a Path, dir: &'a Path, tree: &'a Tree) -> Self {
        Self {
            file,
            dir,
            tree,
            policy: None,
            writes: crate::writes::Writes::default(),
            diags: Diagnostics::default(),
        }
    }

    /// A relative path of this manifest (bind source, `env_file`): the
    /// path as written, resolved against the manifest's directory
    /// (lexically), and the real path it names, its links followed inside
    /// the source's tree. An absolute path is taken as it is.
    pub(crate) fn in_tree(&self, relative: &Path) -> Result<(PathBuf, PathBuf), String> {
        let lexical = crate::bind::resolve(self.dir, relative);
        if relative.is_absolute() {
            return Ok((lexical.clone(), lexical));
        }
        let real = self.tree.resolve(&lexical).map_err(|e| e.to_string())?;
        Ok((lexical, real))
    }

    pub(crate) fn error(&mut self, pos: Pos, field: &str, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(self.file, pos, field, message));
    }

    fn type_error(&mut self, node: &Node, field: &str, expected: &str) {
        let message = format!("expected {expected}, found {}", node.value.kind());
        self.error(node.pos, field, message);
    }

    /// The entries of a mapping, in order, with repeated keys reported.
    pub(crate) fn entries<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
    ) -> Option<Vec<(&'n Key, &'n Node)>> {
        let Value::Map(entries) = &node.value else {
            self.type_error(node, field, "a table");
            return None;
        };
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            if let Some(first) = seen.insert(&k.name, k.pos) {
                self.error(
                    k.pos,
                    &join(field, &k.name),
                    format!("defined twice in one table (first at line {})", first.line),
                );
                continue;
            }
            out.push((k, v));
        }
        Some(out)
    }

    /// A table whose keys must be among `allowed`; unknown keys are reported
    /// with the closest allowed one or a known alias as a hint.
    pub(crate) fn fields<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        allowed: &[&str],
        aliases: &[(&str, &str)],
    ) -> Option<Fields<'n>> {
        // YAML `web:` with nothing under it is an empty table.
        if node.value == Value::Null {
            return Some(Fields {
                pos: node.pos,
                entries: Vec::new(),
            });
        }
        let entries = self.entries(node, field)?;
        let mut known = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            if allowed.contains(&k.name.as_str()) {
                known.push((k, v));
                continue;
            }
            let hint = hint(&k.name, allowed, aliases);
            let message = match hint {
                Some(h) => format!("unknown field; did you mean \"{h}\"?"),
                None => format!("unknown field (expected one of: {})", allowed.join(", ")),
            };
            self.error(k.pos, &join(field, &k.name), message);
        }
        Some(Fields {
            pos: node.pos,
            entries: known,
        })
    }

    pub(crate) fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.type_error(node, field, "a string");
                None
            }
        }
    }

    /// A string, or a number or boolean taken as its text (environment values, labels, users).
    pub(crate) fn scalar_string(&mut self, node: &Node, field: &str) -> Option<String> {
        let s = node.scalar_text();
        if s.is_none() {
            self.type_error(node, field, "a string");
        }
        s
    }

    pub(crate) fn boolean(&mut self, node: &Node, field: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) => {
                self.error(
                    node.pos,
                    field,
                    format!("expected true or false, found the string \"{s}\""),
                );
                None
            }
            _ => {
                self.type_error(node, field, "true or false");
                None
            }
        }
    }

    pub(crate) fn integer(&mut self, node: &Node, field: &str, min: i64, max: i64) -> Option<i64> {
        match node.value {
            Value::Int(i) if (min..=max).contains(&i) => Some(i),
            Value::Int(i) => {
                self.error(
                    node.pos,
                    field,
                    format!("{i} is out of range {min} to {max}"),
                );
                None
            }
            _ => {
                self.type_error(node, field, "an integer");
                None
            }
        }
    }

    pub(crate) fn number(&mut self, node: &Node, field: &str) -> Option<f64> {
        match node.value {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            Value::Str(ref s) => match s.parse::<f64>() {
                Ok(f) => Some(f),
                Err(_) => {
                    self.type_error(node, field, "a number");
                    None
                }
            },
            _ => {
                self.type_error(node, field, "a number");
                None
            }
        }
    }

    pub(crate) fn duration(&mut self, node: &Node, field: &str) -> Option<Duration> {
        match &node.value {
            Value::Str(s) => self.check(node.pos, field, crate::units::parse_duration(s)),
            Value::Int(0) => Some(Duration::ZERO),
            Value::Int(i) => {
                self.error(
                    node.pos,
                    field,
                    format!("a duration needs a unit: write \"{i}s\" or \"{i}ms\""),
                );
                None
            }
            _ => {
                self.type_error(node, field, "a duration such as \"2s\"");
                None
            }
        }
    }

    pub(crate) fn size(&mut self, node: &Node, field: &str) -> Option<u64> {
        match &node.value {
            Value::Str(s) => self.check(node.pos, field, crate::units::parse_size(s)),
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            _ => {
                self.type_error(node, field, "a size such as \"64m\"");
                None
            }
        }
    }

    /// Reports `Err` at `pos` and turns the result into an option.
    pub(crate) fn check<T>(&mut self, pos: Pos, field: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.error(pos, field, e)).ok()
    }

    /// A list of strings (or one string, taken as a list of one), each with its place.
    pub(crate) fn strings(&mut self, node: &Node, field: &str) -> Vec<(String, Pos, String)> {
        match &node.value {
            Value::Str(s) => vec![(s.clone(), node.pos, field.to_string())],
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let f = format!("{field}[{i}]");
                    self.scalar_string(item, &f).map(|s| (s, item.pos, f))
                })
                .collect(),
            _ => {
                self.type_error(node, field, "a list of strings");
                Vec::new()
            }
        }
    }

    /// A command: a list of words, or one string split like a shell would.
    pub(crate) fn command(&mut self, node: &Node, field: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Str(s) => self.check(node.pos, field, crate::words::split(s)),
            Value::Seq(_) => Some(
                self.strings(node, field)
                    .into_iter()
                    .map(|(s, ..)| s)
                    .collect(),
            ),
            _ => {
                self.type_error(node, field, "a string or a list of strings");
                None
            }
        }
    }

    /// A string map written as a table, or as a list of `KEY=VALUE`.
    pub(crate) fn string_map(
        &mut self,
        node: &Node,
        field: &str,
        what: &str,
    ) -> Vec<(String, String, Pos)> {
        match &node.value {
            Value::Map(_) => {
                let entries = self.entries(node, field).unwrap_or_default();
                entries
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let f = join(field, &k.name);
                        if v.value == Value::Null {
                            self.error(
                                k.pos,
                                &f,
                                format!("{what} needs a value (write \"\" for an empty one)"),
                            );
                            return None;
                        }
                        self.scalar_string(v, &f)
                            .map(|s| (k.name.clone(), s, k.pos))
                    })
                    .collect()
            }
            Value::Seq(_) => self
                .strings(node, field)
                .into_iter()
                .filter_map(|(s, pos, f)| match s.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string(), pos)),
                    _ => {
                        self.error(
                            pos,
                            &f,
                            format!("\"{s}\" must look like KEY=VALUE ({what} needs a value)"),
                        );
                        None
                    }
                })
                .collect(),
            _ => {
                self.type_error(node, field, "a table or a list of KEY=VALUE");
                Vec::new()
            }
        }
    }

    /// Labels: keys without white space or `=`.
    pub(crate) fn labels(
        &mut self,
        node: &Node,
        field: &str,
    ) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        for (k, v, pos) in self.string_map(node, field, "a label") {
            if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c == '=') {
                self.error(
                    pos,
                    &join(field, &k),
                    "label keys must not be empty or contain white space or '='",
                );
                continue;
            }
            if out.insert(k.clone(), v).is_some() {
                self.error(pos, &join(field, &k), "label given twice");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let fields = ["image", "command", "entrypoint", "env", "ports", "mounts"];
        assert_eq!(did_you_mean("comand", fields), Some("command"));
        assert_eq!(did_you_mean("imgae", fields), Some("image"));
        assert_eq!(did_you_mean("port", fields), Some("ports"));
        assert_eq!(did_you_mean("Image", fields), Some("image"));
        assert_eq!(did_you_mean("zzzzzz", fields), None);
        assert_eq!(did_you_mean("x", fields), None);
    }

    #[test]
    fn names() {
        for good in ["web", "db-1", "a", "x_y", "0abc", &"a".repeat(63)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Web",
            "a/b",
            "..",
            "a..b",
            "-x",
            "_x",
            "a b",
            "a.b",
            "ü",
            &"a".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
