//! The usual manifest, built straight from `toml_parser`'s events.
//!
//! `toml`'s `DeTable` builds a map of maps of spanned values that
//! [`super::toml`] then copies into [`Node`]s; for a manifest that is a
//! list of `[kind.name]` tables that is half the time of a TOML load. This
//! builds the nodes from the same parser's events instead, for the documents
//! almost every manifest is: `[a.b]` headers each naming a new table, and
//! `key = value` lines with plain keys. Anything else — an array of tables,
//! a dotted key on the left of `=`, a header that names a table again, a
//! date, a repeated key, an error — makes it answer `None`, and the caller
//! parses the text with `DeTable` as before, which also reports every
//! error. So this accepts a subset of what `DeTable` accepts, and for that
//! subset it must build the same tree: the tests below compare the two on
//! documents written to reach every rule.

use std::borrow::Cow;
use std::collections::HashMap;

use smallvec::SmallVec;
use toml_parser::decoder::ScalarKind;
use toml_parser::parser::{Event, EventKind, RecursionGuard, ValidateWhitespace};
use toml_parser::{ErrorSink, ParseError, Source};

use crate::node::{Key, LineIndex, Node, Pos, Text, Value};

/// How deep arrays and inline tables may nest: `toml`'s own limit, so that
/// a document this refuses is one `DeTable` refuses too.
const DEPTH: u32 = 80;
/// A table with more entries than this looks keys up in a hash map rather
/// than by a scan, so a file of many tables is not quadratic.
const SCAN: usize = 32;
/// A header with more keys than this is left to `DeTable`.
const PATH: usize = 16;
/// An inline table with more entries than this is left to `DeTable`.
const INLINE: usize = 64;

/// The document's tree, or `None` when it is not one this builds (including
/// every document with an error).
pub(super) fn document(lines: &LineIndex<'_>) -> Option<Node> {
    let source = Source::new(lines.text());
    let tokens = source.lex().into_vec();
    let mut events = Vec::with_capacity(tokens.len());
    let mut failed = Failed(false);
    {
        let mut push = |e: Event| events.push(e);
        let mut whitespace = ValidateWhitespace::new(&mut push, source);
        let mut guard = RecursionGuard::new(&mut whitespace, DEPTH);
        toml_parser::parser::parse_document(&tokens, &mut guard, &mut failed);
    }
    if failed.0 {
        return None;
    }
    Builder {
        source,
        lines,
        events: &events,
        at: 0,
        failed,
    }
    .document()
}

/// Remembers that an error was reported.
struct Failed(bool);

impl ErrorSink for Failed {
    fn report_error(&mut self, _error: ParseError) {
        self.0 = true;
    }
}

/// A table made by `[headers]`: its own, or one a header named on the way
/// to its own. Only these may be descended into by a later header.
struct Table {
    pos: Pos,
    entries: Vec<(Key, Item)>,
    /// Where each key is in `entries`, once there are more than [`SCAN`].
    index: HashMap<Text, usize>,
}

enum Item {
    Table(Table),
    Value(Node),
}

impl Table {
    fn new(pos: Pos) -> Self {
        Self {
            pos,
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        if self.entries.len() > SCAN {
            self.index.get(name).copied()
        } else {
            self.entries.iter().position(|(k, _)| k.name == name)
        }
    }

    /// Adds an entry whose key is known to be new; returns its place.
    fn push(&mut self, key: Key, item: Item) -> usize {
        let at = self.entries.len();
        if at >= SCAN {
            if at == SCAN {
                self.index = self
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.name.clone(), i))
                    .collect();
            }
            self.index.insert(key.name.clone(), at);
        }
        self.entries.push((key, item));
        at
    }

    /// The table at `path` of entry indexes below this one.
    fn at(&mut self, path: &[usize]) -> &mut Table {
        let mut table = self;
        for &i in path {
            table = match &mut table.entries[i].1 {
                Item::Table(t) => t,
                Item::Value(_) => unreachable!("a header's path holds tables only"),
            };
        }
        table
    }

    fn into_node(self) -> Node {
        let entries = self
            .entries
            .into_iter()
            .map(|(key, item)| match item {
                Item::Table(t) => (key, t.into_node()),
                Item::Value(v) => (key, v),
            })
            .collect();
        Node::new(self.pos, Value::Map(entries))
    }
}

struct Builder<'e, 'i> {
    source: Source<'i>,
    lines: &'e LineIndex<'i>,
    events: &'e [Event],
    at: usize,
    failed: Failed,
}

impl Builder<'_, '_> {
    /// The next event that is not whitespace, a comment or a line end (the
    /// parser has already checked where those may be).
    fn next(&mut self) -> Option<Event> {
        while let Some(e) = self.events.get(self.at) {
            self.at += 1;
            match e.kind() {
                EventKind::Whitespace | EventKind::Comment | EventKind::Newline => {}
                _ => return Some(*e),
            }
        }
        None
    }

    fn pos(&self, e: &Event) -> Pos {
        self.lines.pos(e.span().start())
    }

    fn document(mut self) -> Option<Node> {
        let mut root = Table::new(Pos::new(1, 1));
        // The entry indexes from the root to the table of the last header.
        let mut current: SmallVec<[usize; 4]> = SmallVec::new();
        while let Some(e) = self.next() {
            match e.kind() {
                EventKind::StdTableOpen => current = self.header(&mut root)?,
                EventKind::SimpleKey => {
                    let key = self.key(&e)?;
                    if self.next()?.kind() != EventKind::KeyValSep {
                        return None;
                    }
                    let first = self.next()?;
                    let value = self.value(&first, key.pos)?;
                    let table = root.at(&current);
                    if table.find(&key.name).is_some() {
                        return None;
                    }
                    table.push(key, Item::Value(value));
                }
                _ => return None,
            }
        }
        Some(root.into_node())
    }

    /// A `[a.b.c]` header whose last key is new to its table: the path to
    /// that new table.
    fn header(&mut self, root: &mut Table) -> Option<SmallVec<[usize; 4]>> {
        let mut keys: SmallVec<[Key; 4]> = SmallVec::new();
        loop {
            let e = self.next()?;
            match e.kind() {
                EventKind::SimpleKey => keys.push(self.key(&e)?),
                EventKind::KeySep => {}
                EventKind::StdTableClose => break,
                _ => return None,
            }
        }
        // `toml` refuses a path of 80 keys; a long one is left to it.
        if keys.len() > PATH {
            return None;
        }
        let last = keys.pop()?;
        let mut path = SmallVec::new();
        let mut table = root;
        for key in keys {
            let i = match table.find(&key.name) {
                Some(i) => i,
                None => {
                    let pos = key.pos;
                    table.push(key, Item::Table(Table::new(pos)))
                }
            };
            path.push(i);
            table = match &mut table.entries[i].1 {
                Item::Table(t) => t,
                Item::Value(_) => return None,
            };
        }
        if table.find(&last.name).is_some() {
            return None;
        }
        let pos = last.pos;
        path.push(table.push(last, Item::Table(Table::new(pos))));
        Some(path)
    }

    /// A key's text and where it was written. (A dotted key on the left
    /// of `=` is left to `DeTable`: after its first part comes a `.`, not
    /// the `=` the callers expect.)
    fn key(&mut self, e: &Event) -> Option<Key> {
        let raw = self.source.get(*e)?;
        let mut name = Cow::Borrowed("");
        raw.decode_key(&mut name, &mut self.failed);
        if self.failed.0 {
            return None;
        }
        Some(Key {
            name: Text::from(name.as_ref()),
            pos: self.pos(e),
        })
    }

    /// The value that starts with `e`; `key_pos` is where its key was
    /// written, where an inline table is reported.
    fn value(&mut self, e: &Event, key_pos: Pos) -> Option<Node> {
        match e.kind() {
            EventKind::Scalar => self.scalar(e),
            EventKind::ArrayOpen => {
                let pos = self.pos(e);
                let mut items = Vec::new();
                loop {
                    let e = self.next()?;
                    match e.kind() {
                        EventKind::ArrayClose => break,
                        EventKind::ValueSep => {}
                        _ => {
                            let at = self.pos(&e);
                            items.push(self.value(&e, at)?);
                        }
                    }
                }
                Some(Node::new(pos, Value::Seq(items)))
            }
            EventKind::InlineTableOpen => {
                let mut entries: Vec<(Key, Node)> = Vec::new();
                loop {
                    let e = self.next()?;
                    match e.kind() {
                        EventKind::InlineTableClose => break,
                        EventKind::ValueSep => {}
                        EventKind::SimpleKey => {
                            let key = self.key(&e)?;
                            if self.next()?.kind() != EventKind::KeyValSep
                                || entries.len() >= INLINE
                                || entries.iter().any(|(k, _)| k.name == key.name)
                            {
                                return None;
                            }
                            let first = self.next()?;
                            let value = self.value(&first, key.pos)?;
                            entries.push((key, value));
                        }
                        _ => return None,
                    }
                }
                Some(Node::new(key_pos, Value::Map(entries)))
            }
            _ => None,
        }
    }

    fn scalar(&mut self, e: &Event) -> Option<Node> {
        let raw = self.source.get(*e)?;
        let mut text = Cow::Borrowed("");
        let kind = raw.decode_scalar(&mut text, &mut self.failed);
        if self.failed.0 {
            return None;
        }
        let value = match kind {
            ScalarKind::String => return Some(Node::new(self.pos(e), Value::Str(text.into()))),
            ScalarKind::Boolean(b) => return Some(Node::new(self.pos(e), Value::Bool(b))),
            // No manifest field takes a date; `DeTable` says how it reads.
            ScalarKind::DateTime => return None,
            ScalarKind::Integer(radix) => match i64::from_str_radix(&text, radix.value()) {
                Ok(i) => Value::Int(i),
                // Too big for an `i64`: kept as text, as `DeTable`'s would be.
                Err(_) => return Some(Node::new(self.pos(e), Value::Str(text.into()))),
            },
            // The decoded text is without `_` and in Rust's float syntax.
            ScalarKind::Float => Value::Float(text.parse().unwrap_or(f64::NAN)),
        };
        Some(Node::new(self.pos(e), value).with_raw(raw.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// When this builds a tree, `DeTable` accepts the text and builds the
    /// same one.
    fn agrees(text: &str) -> Result<bool, String> {
        let lines = LineIndex::new(text);
        crate::parse::tests::agrees(
            text,
            document(&lines),
            super::super::toml::parse_table(&lines),
        )
    }

    #[track_caller]
    fn built(text: &str) {
        assert_eq!(agrees(text), Ok(true), "{text}");
    }

    #[track_caller]
    fn left_to_detable(text: &str) {
        assert_eq!(agrees(text), Ok(false), "{text}");
    }

    #[test]
    fn the_usual_manifest_is_built_as_detable_builds_it() {
        built("");
        built("# nothing but a comment\n\n");
        built(
            "[networks.front]\nsubnet = \"10.1.0.0/24\"\n\n[volumes.data]\n\n\
             [containers.web]\nimage = \"localhost:5000/web:1\" # pinned\n\
             command = [\"httpd\", \"-f\", \"-p\", \"80\"]\n\
             env = { INDEX = \"1\", MODE = 'bench', N = 1_000, F = 1.10, B = true }\n\
             ports = [\"8080:80\",\n  \"8443:443\", # tls\n]\n\
             resources = { memory = \"64m\", cpus = 0.5, pids = 100 }\n\
             healthcheck = { http = \"http://localhost/\", interval = \"2s\" }\n\
             depends_on = { db = \"healthy\" }\n\n\
             [containers.db]\nimage = \"postgres\"\nlabels = { \"com.example/tier\" = \"db\", 'x y' = \"\" }\n",
        );
        built(
            "top = 1\n[ a . \"b\" . 'c' ]\nx = [ [1, 2], [], [{ y = 0x1F }], -0.0, +inf, nan ]\n",
        );
        built(
            "a = \"\"\"\nline\\\n  joined \\u00e9\"\"\"\nb = '''\nraw \\n'''\nc = \"tab\\tquote\\\"\"\n",
        );
        built("[a]\nx = 1\n[a.b]\ny = 2\n[a.c.d]\n[e]\n");
        built("big = 9223372036854775808\nsmall = -9223372036854775808\nhex = 0xdead_beef\n");
        for text in crate::parse::tests::examples("toml") {
            built(&text);
        }
    }

    #[test]
    fn everything_else_is_left_to_detable() {
        for text in [
            // Valid, but not built here.
            "a.b = 1\n",
            "t = { a.b = 1 }\n",
            "[[a]]\nx = 1\n",
            "[a.b]\nx = 1\n[a]\ny = 2\n",
            "when = 1979-05-27T07:32:00Z\n",
            "when = [1979-05-27]\n",
            // Not valid: DeTable says why.
            "a = 1\na = 2\n",
            "a = 1\n\"a\" = 2\n",
            "t = { a = 1, a = 2 }\n",
            "[a]\n[a]\n",
            "[a]\nb = 1\n[a.b]\n",
            "a = { x = 1 }\n[a.b]\n",
            "a = 1\n[a.b]\n",
            "a = \n",
            "a = [1,,2]\n",
            "a = \"bad \\q escape\"\n",
            "a = 01\n",
            "a = 1__0\n",
            "a = 1 b = 2\n",
            "[a\n",
            "[]\n",
            "a = 1 # bell \u{7}\n",
            "key with space = 1\n",
            "\"multi\nline\" = 1\n",
            "'''ml key''' = 1\n",
        ] {
            left_to_detable(text);
        }
        let deep = format!("a = {}{}\n", "[".repeat(100), "]".repeat(100));
        left_to_detable(&deep);
        let long = format!("[{}]\n", vec!["k"; 90].join("."));
        left_to_detable(&long);
    }

    #[test]
    fn a_table_of_many_tables_finds_a_repeated_one() {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("[containers.c{i}]\nimage = \"x\"\n"));
        }
        built(&text);
        text.push_str("[containers.c7]\n");
        left_to_detable(&text);
        text.push_str("[containers.\"c7\"]\n");
        left_to_detable(&text);
    }

    /// Keys that collide in different spellings, and values of every kind
    /// in several spellings, some of them wrong.
    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "a",
            "b",
            "c",
            "\"a\"",
            "'b'",
            "\"\\u0063\"",
            "\"a.b\"",
            "\"\"",
            "x-y_z",
            "1",
            "a.b",
            "b . c",
            "true",
        ])
        .prop_map(String::from)
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "1",
            "+2",
            "-0",
            "0x1F",
            "0o17",
            "0b101",
            "1_000",
            "01",
            "99999999999999999999",
            "1.5",
            "1e3",
            "-0.0",
            "inf",
            "-nan",
            "1.",
            ".5",
            "1_0.5e-2",
            "true",
            "false",
            "\"s\"",
            "'lit'",
            "\"\"\"ml\nx\"\"\"",
            "'''ml\n'''",
            "\"esc\\n\\t\\u00e9\"",
            "\"bad\\q\"",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "\"unclosed",
        ])
        .prop_map(String::from)
    }

    fn value() -> impl Strategy<Value = String> {
        scalar().prop_recursive(3, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(", "))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|entries| {
                    let entries: Vec<_> =
                        entries.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{ {} }}", entries.join(", "))
                }),
            ]
        })
    }

    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (key(), value()).prop_map(|(k, v)| format!("{k} = {v}")),
            2 => prop::collection::vec(key(), 1..4).prop_map(|p| format!("[{}]", p.join("."))),
            1 => prop::collection::vec(key(), 1..3).prop_map(|p| format!("[[{}]]", p.join("."))),
            1 => Just("# a comment".to_string()),
            1 => Just(String::new()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn whatever_is_built_here_detable_builds_the_same(
            lines in prop::collection::vec(line(), 0..12),
            cut in any::<prop::sample::Index>(),
            insert in prop::sample::select(vec!["", "[", "]", "{", "}", "=", ",", ".", "\"", "\n", "#", " "]),
        ) {
            let text = lines.join("\n");
            // The text, and the same text with one character put in somewhere.
            for text in [text.clone(), crate::parse::tests::inserted(&text, cut, insert)] {
                let result = agrees(&text);
                prop_assert!(result.is_ok(), "{}", result.unwrap_err());
            }
        }
    }
}
