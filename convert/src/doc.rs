//! A small ordered document tree and its two spellings: TOML (moor's
//! manifests) and block YAML (moor's manifests, Compose files, Kubernetes
//! objects).
//!
//! Keys keep the order they were inserted in, and every string is quoted,
//! so the same tree always gives the same bytes and no value is ever read
//! back as another type (`"no"`, `"1.0"`, `"0755"` stay strings).

use std::fmt::Write;

/// One value of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A list.
    List(Vec<Doc>),
    /// A table, in insertion order.
    Map(Vec<(String, Doc)>),
}

impl Doc {
    /// An empty table.
    pub fn map() -> Doc {
        Doc::Map(Vec::new())
    }

    /// A string.
    pub fn s(s: impl Into<String>) -> Doc {
        Doc::Str(s.into())
    }

    /// A list of strings.
    pub fn strs<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Doc {
        Doc::List(items.into_iter().map(|s| Doc::s(s.as_ref())).collect())
    }

    /// A table of strings.
    pub fn str_map<'a>(items: impl IntoIterator<Item = (&'a String, &'a String)>) -> Doc {
        Doc::Map(
            items
                .into_iter()
                .map(|(k, v)| (k.clone(), Doc::s(v.clone())))
                .collect(),
        )
    }

    /// Adds `key = value` to a table (a no-op on other values).
    pub fn set(&mut self, key: &str, value: Doc) -> &mut Self {
        if let Doc::Map(e) = self {
            e.push((key.to_string(), value));
        }
        self
    }

    /// The entry `key` of a table, created as an empty table when absent.
    pub fn entry(&mut self, key: &str) -> &mut Doc {
        let Doc::Map(e) = self else {
            panic!("entry() on a value that is not a table")
        };
        let i = match e.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                e.push((key.to_string(), Doc::map()));
                e.len() - 1
            }
        };
        &mut e[i].1
    }

    /// The entry `key` of a table.
    pub fn get(&self, key: &str) -> Option<&Doc> {
        match self {
            Doc::Map(e) => e.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Doc::Str(s) => Some(s),
            _ => None,
        }
    }

    /// True for an empty table or list.
    pub fn is_empty(&self) -> bool {
        matches!(self, Doc::Map(e) if e.is_empty()) || matches!(self, Doc::List(l) if l.is_empty())
    }

    /// This document as block YAML, ending in a newline.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        match self {
            Doc::Map(e) if !e.is_empty() => yaml_map(&mut out, e, 0),
            Doc::List(l) if !l.is_empty() => yaml_list(&mut out, l, 0),
            other => {
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
        out
    }

    /// This document (a table of tables of tables: `[kind.name]`) as TOML.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let Doc::Map(kinds) = self else {
            return out;
        };
        for (kind, resources) in kinds {
            let Doc::Map(resources) = resources else {
                continue;
            };
            for (name, fields) in resources {
                if !out.is_empty() {
                    out.push('\n');
                }
                let _ = writeln!(out, "[{}.{}]", toml_key(kind), toml_key(name));
                if let Doc::Map(fields) = fields {
                    for (k, v) in fields {
                        let _ = writeln!(out, "{} = {}", toml_key(k), toml_inline(v));
                    }
                }
            }
        }
        out
    }
}

/// A string quoted for YAML and TOML alike (both read JSON's escapes).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn scalar(v: &Doc) -> String {
    match v {
        Doc::Str(s) => quote(s),
        Doc::Int(i) => i.to_string(),
        Doc::Float(f) => float(*f),
        Doc::Bool(b) => b.to_string(),
        Doc::List(_) => "[]".into(),
        Doc::Map(_) => "{}".into(),
    }
}

fn float(f: f64) -> String {
    let s = format!("{f}");
    if s.contains(['.', 'e', 'E']) || !f.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

/// A key that need not be quoted: letters, digits, `_`, `-`, `.`, `/`,
/// not starting with a character YAML gives a meaning to.
fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        )
}

fn yaml_key(k: &str) -> String {
    if plain_key(k) {
        k.to_string()
    } else {
        quote(k)
    }
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        quote(k)
    }
}

fn toml_inline(v: &Doc) -> String {
    match v {
        Doc::List(items) => {
            let items: Vec<String> = items.iter().map(toml_inline).collect();
            format!("[{}]", items.join(", "))
        }
        Doc::Map(e) => {
            if e.is_empty() {
                return "{}".into();
            }
            let items: Vec<String> = e
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_key(k), toml_inline(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        other => scalar(other),
    }
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn yaml_map(out: &mut String, entries: &[(String, Doc)], depth: usize) {
    for (i, (k, v)) in entries.iter().enumerate() {
        // The first key of a list item goes on the dash's line.
        if i > 0 || depth == 0 || !out.ends_with("- ") {
            indent(out, depth);
        }
        out.push_str(&yaml_key(k));
        out.push(':');
        yaml_value(out, v, depth);
    }
}

fn yaml_list(out: &mut String, items: &[Doc], depth: usize) {
    for item in items {
        indent(out, depth);
        out.push_str("- ");
        match item {
            Doc::Map(e) if !e.is_empty() => yaml_map(out, e, depth + 2),
            Doc::List(l) if !l.is_empty() => {
                out.push('\n');
                yaml_list(out, l, depth + 2)
            }
            other => {
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn yaml_value(out: &mut String, v: &Doc, depth: usize) {
    match v {
        Doc::Map(e) if !e.is_empty() => {
            out.push('\n');
            yaml_map(out, e, depth + 2);
        }
        Doc::List(l) if !l.is_empty() => {
            out.push('\n');
            yaml_list(out, l, depth + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let mut d = Doc::map();
        d.set("a", Doc::s("no"));
        d.set("list", Doc::List(vec![Doc::Int(1), Doc::map()]));
        let mut item = Doc::map();
        item.set("name", Doc::s("x")).set("on", Doc::Bool(true));
        d.set("items", Doc::List(vec![item]));
        d.set("f", Doc::Float(2.0));
        assert_eq!(
            d.to_yaml(),
            "a: \"no\"\nlist:\n  - 1\n  - {}\nitems:\n  - name: \"x\"\n    \"on\": true\nf: 2.0\n"
        );
    }

    #[test]
    fn toml_tables_and_inline_values() {
        let mut d = Doc::map();
        let web = d.entry("containers").entry("web");
        web.set("image", Doc::s("a\"b\n"));
        web.set(
            "env",
            Doc::str_map([(&"A.B".to_string(), &"1".to_string())]),
        );
        assert_eq!(
            d.to_toml(),
            "[containers.web]\nimage = \"a\\\"b\\n\"\nenv = { \"A.B\" = \"1\" }\n"
        );
    }
}
