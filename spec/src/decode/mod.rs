//! Decoding the [`Node`] tree into the model, collecting every error.
//!
//! The decoder never stops at the first problem: a field that is wrong is
//! reported and skipped, and decoding goes on with the next, so one run shows
//! the user everything that needs fixing.

mod build;
mod container;
mod outside;
mod resources;
pub(crate) mod secrets;
mod target;
mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::{Diagnostic, Diagnostics};
use crate::node::{Key, Node, Pos, Value};
use crate::tree::Tree;

pub(crate) use container::ContainerDraft;
pub(crate) use outside::{Read, still_holds};
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

/// Appends `key` to the field path in `out`: `parent.key`, the key quoted
/// when it is not a plain word (and taken as it is at the start).
fn push_key(out: &mut String, key: &str) {
    if out.is_empty() {
        out.push_str(key);
    } else if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        out.push('.');
        out.push_str(key);
    } else {
        out.push_str(".\"");
        out.push_str(key);
        out.push('"');
    }
}

/// `parent.key`, the way fields are named in diagnostics.
pub(crate) fn join(parent: &str, key: &str) -> String {
    let mut out = String::with_capacity(parent.len() + key.len() + 3);
    out.push_str(parent);
    push_key(&mut out, key);
    out
}

/// The path of the field being decoded (`containers.web.ports[1]`), kept as
/// a chain of borrowed segments on the stack while decoding descends, and
/// rendered only when a diagnostic names it: the happy path allocates no
/// path at all.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    /// The document itself (an empty path).
    Root,
    /// `parent.key` (see [`join`]).
    Key(&'a Field<'a>, &'a str),
    /// `parent[index]`.
    Index(&'a Field<'a>, usize),
}

/// The root of every field path.
pub(crate) static ROOT: Field<'static> = Field::Root;

impl<'a> Field<'a> {
    /// The field `key` of this one.
    pub(crate) fn key(&'a self, key: &'a str) -> Field<'a> {
        Field::Key(self, key)
    }

    /// Item `index` of this list, or this field itself when it was one
    /// value standing for a list of one (`None`).
    pub(crate) fn item(&'a self, index: Option<usize>) -> Field<'a> {
        match index {
            Some(i) => Field::Index(self, i),
            None => *self,
        }
    }

    fn render(&self, out: &mut String) {
        match self {
            Field::Root => {}
            Field::Key(parent, key) => {
                parent.render(out);
                push_key(out, key);
            }
            Field::Index(parent, i) => {
                use std::fmt::Write as _;
                parent.render(out);
                let _ = write!(out, "[{i}]");
            }
        }
    }
}

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        self.render(&mut out);
        f.write_str(&out)
    }
}

/// The fields of one table, checked for unknown and repeated keys.
pub(crate) struct Fields<'n> {
    pub(crate) pos: Pos,
    /// Each known key's text, taken out of its inline string once, with
    /// its value: a container's decoding looks up some 30 names here.
    entries: smallvec::SmallVec<[(&'n str, &'n Node); 16]>,
}

/// The entries of a table, in order: on the stack up to the size of the
/// largest tables most manifests write (a container's fields).
pub(crate) type Entries<'n> = smallvec::SmallVec<[(&'n Key, &'n Node); 16]>;

impl<'n> Fields<'n> {
    pub(crate) fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }
}

/// Tables with at most this many keys are checked for repeated keys by
/// comparing every pair; larger ones through a hash map.
const SMALL_TABLE: usize = 16;

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
    /// What decoding read outside the manifest file, and found.
    pub(crate) reads: Vec<Read>,
    /// The agent's environment (`[secrets] env = "VAR"`).
    pub(crate) env: Option<&'a std::collections::BTreeMap<String, String>>,
    /// The host's key for secret digests (see [`crate::hash::secret_digest`]).
    pub(crate) secret_key: &'a [u8],
    /// The age identities SOPS-encrypted env and secret files are
    /// decrypted with (see [`crate::sops`]).
    pub(crate) age: Option<&'a crate::sops::AgeKeys>,
    /// The secrets this file declares.
    pub(crate) secrets: std::collections::BTreeMap<String, secrets::Secret>,
    /// Other files whose values a Compose file's tree holds (its override
    /// file, the files it includes): the values of `others[k]` are at
    /// lines shifted by `(k + 1) * OTHER_LINES` (see [`Decoder::locate`]).
    pub(crate) others: Vec<PathBuf>,
    /// `file`, as the origin of every resource declared in it.
    shared: std::sync::Arc<Path>,
}

/// How far the lines of each of [`Decoder::others`] are shifted.
pub(crate) const OTHER_LINES: u32 = 1 << 23;

impl<'a> Decoder<'a> {
    pub(crate) fn new(file: &'a Path, dir: &'a Path, tree: &'a Tree) -> Self {
        Self {
            file,
            dir,
            tree,
            policy: None,
            writes: crate::writes::Writes::default(),
            diags: Diagnostics::default(),
            reads: Vec::new(),
            env: None,
            secret_key: &[],
            age: None,
            secrets: Default::default(),
            others: Vec::new(),
            shared: file.into(),
        }
    }

    /// Where a resource whose name is at `pos` was declared.
    pub(crate) fn origin(&self, pos: Pos) -> crate::model::Origin {
        let (file, pos) = self.locate(pos);
        let file = if std::ptr::eq(file, self.file) {
            self.shared.clone()
        } else {
            file.into()
        };
        crate::model::Origin { file, pos }
    }

    /// The file and position `pos` is in: this file's, or one of
    /// [`Decoder::others`] for a shifted line.
    pub(crate) fn locate(&self, pos: Pos) -> (&Path, Pos) {
        let k = (pos.line / OTHER_LINES) as usize;
        match k.checked_sub(1).and_then(|k| self.others.get(k)) {
            Some(file) => (file, Pos::new(pos.line % OTHER_LINES, pos.column)),
            None => (self.file, pos),
        }
    }

    pub(crate) fn error(&mut self, pos: Pos, field: &Field<'_>, message: impl Into<String>) {
        let (file, pos) = self.locate(pos);
        let d = Diagnostic::error(file, pos, field.to_string(), message);
        self.diags.push(d);
    }

    fn type_error(&mut self, node: &Node, field: &Field<'_>, expected: &str) {
        let message = format!("expected {expected}, found {}", node.value.kind());
        self.error(node.pos, field, message);
    }

    /// The entries of a mapping, in order, with repeated keys reported.
    pub(crate) fn entries<'n>(&mut self, node: &'n Node, field: &Field<'_>) -> Option<Entries<'n>> {
        let Value::Map(entries) = &node.value else {
            self.type_error(node, field, "a table");
            return None;
        };
        let mut out = Entries::with_capacity(entries.len());
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for (i, (k, v)) in entries.iter().enumerate() {
            // The same key written last before this one, if any.
            let first = if entries.len() <= SMALL_TABLE {
                entries[..i]
                    .iter()
                    .rev()
                    .find(|(e, _)| e.name == k.name)
                    .map(|(e, _)| e.pos)
            } else {
                seen.insert(&k.name, k.pos)
            };
            if let Some(first) = first {
                self.error(
                    k.pos,
                    &field.key(&k.name),
                    format!(
                        "defined twice in one table (first at line {})",
                        self.locate(first).1.line
                    ),
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
        field: &Field<'_>,
        allowed: &[&str],
        aliases: &[(&str, &str)],
    ) -> Option<Fields<'n>> {
        // YAML `web:` with nothing under it is an empty table.
        if node.value == Value::Null {
            return Some(Fields {
                pos: node.pos,
                entries: smallvec::SmallVec::new(),
            });
        }
        let mut entries = smallvec::SmallVec::new();
        let mut unknown = Vec::new();
        for (k, v) in self.entries(node, field)? {
            let name = k.name.as_str();
            if allowed.contains(&name) {
                entries.push((name, v));
            } else {
                unknown.push(k);
            }
        }
        for k in unknown {
            let hint = hint(&k.name, allowed, aliases);
            let message = match hint {
                Some(h) => format!("unknown field; did you mean \"{h}\"?"),
                None => format!("unknown field (expected one of: {})", allowed.join(", ")),
            };
            self.error(k.pos, &field.key(&k.name), message);
        }
        Some(Fields {
            pos: node.pos,
            entries,
        })
    }

    pub(crate) fn string(&mut self, node: &Node, field: &Field<'_>) -> Option<String> {
        self.str(node, field).map(String::from)
    }

    /// [`Decoder::string`], borrowed from the node (for a value that is
    /// only looked at).
    pub(crate) fn str<'n>(&mut self, node: &'n Node, field: &Field<'_>) -> Option<&'n str> {
        match &node.value {
            Value::Str(s) => Some(s),
            _ => {
                self.type_error(node, field, "a string");
                None
            }
        }
    }

    /// A string, or a number or boolean taken as its text (environment values, labels, users).
    pub(crate) fn scalar_string(&mut self, node: &Node, field: &Field<'_>) -> Option<String> {
        let s = node.scalar_text();
        if s.is_none() {
            self.type_error(node, field, "a string");
        }
        s
    }

    pub(crate) fn boolean(&mut self, node: &Node, field: &Field<'_>) -> Option<bool> {
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

    pub(crate) fn integer(
        &mut self,
        node: &Node,
        field: &Field<'_>,
        min: i64,
        max: i64,
    ) -> Option<i64> {
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

    pub(crate) fn number(&mut self, node: &Node, field: &Field<'_>) -> Option<f64> {
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

    pub(crate) fn duration(&mut self, node: &Node, field: &Field<'_>) -> Option<Duration> {
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

    pub(crate) fn size(&mut self, node: &Node, field: &Field<'_>) -> Option<u64> {
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
    pub(crate) fn check<T>(
        &mut self,
        pos: Pos,
        field: &Field<'_>,
        r: Result<T, String>,
    ) -> Option<T> {
        r.map_err(|e| self.error(pos, field, e)).ok()
    }

    /// A list of strings (or one string, taken as a list of one), each with
    /// its place and its index in the list (`None` for the one string).
    pub(crate) fn strings(
        &mut self,
        node: &Node,
        field: &Field<'_>,
    ) -> Vec<(String, Pos, Option<usize>)> {
        match &node.value {
            Value::Str(s) => vec![(s.to_string(), node.pos, None)],
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    self.scalar_string(item, &field.item(Some(i)))
                        .map(|s| (s, item.pos, Some(i)))
                })
                .collect(),
            _ => {
                self.type_error(node, field, "a list of strings");
                Vec::new()
            }
        }
    }

    /// A command: a list of words, or one string split like a shell would.
    pub(crate) fn command(&mut self, node: &Node, field: &Field<'_>) -> Option<Vec<String>> {
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
        field: &Field<'_>,
        what: &str,
    ) -> Vec<(String, String, Pos)> {
        match &node.value {
            Value::Map(_) => {
                let entries = self.entries(node, field).unwrap_or_default();
                entries
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let f = field.key(&k.name);
                        if v.value == Value::Null {
                            self.error(
                                k.pos,
                                &f,
                                format!("{what} needs a value (write \"\" for an empty one)"),
                            );
                            return None;
                        }
                        self.scalar_string(v, &f)
                            .map(|s| (k.name.to_string(), s, k.pos))
                    })
                    .collect()
            }
            Value::Seq(_) => self
                .strings(node, field)
                .into_iter()
                .filter_map(|(s, pos, i)| match s.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string(), pos)),
                    _ => {
                        self.error(
                            pos,
                            &field.item(i),
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
        field: &Field<'_>,
    ) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        for (k, v, pos) in self.string_map(node, field, "a label") {
            if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c == '=') {
                self.error(
                    pos,
                    &field.key(&k),
                    "label keys must not be empty or contain white space or '='",
                );
                continue;
            }
            match out.entry(k) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                // The last one given wins, as with any map.
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    e.insert(v);
                    self.error(pos, &field.key(e.key()), "label given twice");
                }
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
