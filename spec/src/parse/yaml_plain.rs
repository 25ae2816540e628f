//! The usual YAML manifest, read line by line without a general parser.
//!
//! `saphyr-parser` reads any YAML, a character at a time through a token
//! queue, and allocates each scalar; on a manifest of `key: value` lines it
//! was 40 % of a load. Almost every manifest is written in a small part of
//! YAML: nested `key:` blocks, `- item` lists, one-line `[a, b]` and
//! `{k: v}`, plain and one-line quoted scalars. This reads that part and
//! answers `None` for anything else — anchors, tags, `|` and `>` blocks,
//! scalars over several lines, `---`, tabs, non-ASCII text, a list item
//! that is a table, a `<<` merge, anything that is not well formed — and
//! the caller then parses the text with `saphyr-parser` as before, which
//! also reports every error. So this accepts a subset of what the general
//! parser accepts, and for that subset it must build the same tree, down to
//! each position: the tests below compare the two on documents written to
//! reach every rule.

use crate::node::{Key, Node, Pos, Value};

use super::yaml::plain_scalar;

/// Nesting deeper than this is left to the general parser (which refuses
/// more than 64 levels).
const DEPTH: usize = 32;
/// A plain key longer than this is left to the general parser (YAML
/// limits implicit keys to 1024 characters).
const KEY: usize = 512;

/// The document's tree, or `None` when it is not one this reads.
pub(super) fn document(text: &str) -> Option<Vec<Node>> {
    // Printable ASCII and line ends only: columns are bytes, and no tab,
    // carriage return, byte-order mark or control character needs a rule.
    if !text
        .bytes()
        .all(|b| b == b'\n' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    // `---` and `...` at the start of a line mark documents.
    let b = text.as_bytes();
    if [&b"---"[..], b"..."].iter().any(|m| {
        b.starts_with(m)
            || memchr::memmem::find_iter(b, &[b"\n", *m].concat())
                .next()
                .is_some()
    }) {
        return None;
    }
    let mut p = Reader {
        text,
        b: text.as_bytes(),
        next: 0,
        no: 1,
        depth: 0,
    };
    let first = p.peek()?;
    let root = p.block(first)?;
    // Nothing but blank lines and comments after the root.
    match p.peek() {
        None => Some(vec![root]),
        Some(_) => None,
    }
}

/// A line with content: where it starts and ends in the text, its number,
/// and how many spaces indent it.
#[derive(Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
    no: u32,
    indent: usize,
}

/// Where a plain scalar is: a block value runs to the end of its line, a
/// key to its `: `, an item of a `[...]` or `{...}` to the next `,`, `]`,
/// `}` or `: `.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    BlockValue,
    BlockKey,
    Flow,
}

struct Reader<'a> {
    text: &'a str,
    b: &'a [u8],
    /// The start of the first line not yet read.
    next: usize,
    /// That line's number.
    no: u32,
    depth: usize,
}

impl Reader<'_> {
    /// The next line with content, without reading it; blank lines and
    /// lines that are only a comment before it are passed over.
    fn peek(&mut self) -> Option<Line> {
        while self.next < self.b.len() {
            let start = self.next;
            let end = memchr::memchr(b'\n', &self.b[start..]).map_or(self.b.len(), |i| start + i);
            let indent = self.b[start..end]
                .iter()
                .take_while(|&&c| c == b' ')
                .count();
            if start + indent == end || self.b[start + indent] == b'#' {
                self.next = end + 1;
                self.no += 1;
                continue;
            }
            let line = Line {
                start,
                end,
                no: self.no,
                indent,
            };
            return Some(line);
        }
        None
    }

    /// Reads the line `peek` returned.
    fn take(&mut self, l: &Line) {
        self.next = l.end + 1;
        self.no = l.no + 1;
    }

    fn pos(l: &Line, at: usize) -> Pos {
        Pos::new(l.no, (at - l.start + 1) as u32)
    }

    /// Whether `l` is a `- item` line.
    fn is_item(&self, l: &Line) -> bool {
        let c = l.start + l.indent;
        self.b[c] == b'-' && (c + 1 == l.end || self.b[c + 1] == b' ')
    }

    /// The list or table whose first line is `first`.
    fn block(&mut self, first: Line) -> Option<Node> {
        self.depth += 1;
        if self.depth > DEPTH {
            return None;
        }
        let node = if self.is_item(&first) {
            self.list(first, false)
        } else {
            self.table(first)
        };
        self.depth -= 1;
        node
    }

    /// `key: value` lines indented as `first` is.
    fn table(&mut self, first: Line) -> Option<Node> {
        let n = first.indent;
        let mut entries = Vec::new();
        while let Some(l) = self.peek() {
            if l.indent < n {
                break;
            }
            if l.indent > n || self.is_item(&l) {
                return None;
            }
            self.take(&l);
            let (key, colon) = self.key(&l, l.start + n)?;
            let at = self.skip_spaces(&l, colon + 1);
            let value = if at == l.end || self.b[at] == b'#' {
                // The value is on the lines below, or there is none.
                match self.peek() {
                    Some(m) if m.indent > n => self.block(m)?,
                    Some(m) if m.indent == n && self.is_item(&m) => {
                        self.depth += 1;
                        let list = self.list(m, true);
                        self.depth -= 1;
                        list?
                    }
                    _ => Node::new(Self::pos(&l, colon), Value::Null),
                }
            } else {
                let value = self.rest_of_line(&l, at)?;
                // A deeper line after it continues a scalar, or is a mistake.
                if self.peek().is_some_and(|m| m.indent > n) {
                    return None;
                }
                value
            };
            entries.push((key, value));
        }
        Some(Node::new(
            Self::pos(&first, first.start + n),
            Value::Map(entries),
        ))
    }

    /// `- item` lines indented as `first` is. A list written at the
    /// indentation of the key it belongs to (`compact`) is placed where its
    /// first item starts, as the general parser places it.
    fn list(&mut self, first: Line, compact: bool) -> Option<Node> {
        let m = first.indent;
        let mut items = Vec::new();
        let mut pos = None;
        while let Some(l) = self.peek() {
            if l.indent != m || !self.is_item(&l) {
                if l.indent > m {
                    return None;
                }
                break;
            }
            self.take(&l);
            let dash = l.start + m;
            let at = self.skip_spaces(&l, dash + 1);
            // An empty item, or one that is a list itself, is left to the
            // general parser; an item that is a table fails below, at its `:`.
            if at == l.end || self.b[at] == b'#' || self.is_item_at(&l, at) {
                return None;
            }
            pos.get_or_insert(Self::pos(&l, if compact { at } else { dash }));
            items.push(self.rest_of_line(&l, at)?);
            if self.peek().is_some_and(|next| next.indent > m) {
                return None;
            }
        }
        Some(Node::new(pos?, Value::Seq(items)))
    }

    fn is_item_at(&self, l: &Line, at: usize) -> bool {
        self.b[at] == b'-' && (at + 1 == l.end || self.b[at + 1] == b' ')
    }

    fn skip_spaces(&self, l: &Line, mut at: usize) -> usize {
        while at < l.end && self.b[at] == b' ' {
            at += 1;
        }
        at
    }

    /// The value from `at` to the end of the line, where only spaces and a
    /// comment may follow it.
    fn rest_of_line(&mut self, l: &Line, at: usize) -> Option<Node> {
        let (node, end) = self.value(l, at, Context::BlockValue)?;
        let after = self.skip_spaces(l, end);
        if after == l.end || (after > end && self.b[after] == b'#') {
            Some(node)
        } else {
            None
        }
    }

    /// A block table's key and the index of its `:`, which a space or the
    /// line's end follows.
    fn key(&mut self, l: &Line, at: usize) -> Option<(Key, usize)> {
        let (node, end) = match self.b[at] {
            b'"' | b'\'' => self.value(l, at, Context::BlockKey)?,
            _ => self.plain(l, at, Context::BlockKey)?,
        };
        if end >= l.end || self.b[end] != b':' || (end + 1 < l.end && self.b[end + 1] != b' ') {
            return None;
        }
        Some((self.key_of(node, at)?, end))
    }

    /// A scalar as a key: its text, as the general parser's tree takes it.
    fn key_of(&self, node: Node, at: usize) -> Option<Key> {
        let pos = node.pos;
        // A plain `<<` merges a table; the general parser does that.
        if self.b[at] == b'<' && node.value == Value::Str("<<".into()) {
            return None;
        }
        let name = match node.value {
            Value::Null => Default::default(),
            _ => node.into_scalar_text()?,
        };
        Some(Key { name, pos })
    }

    /// The scalar or one-line `[...]` / `{...}` at `at`, and where it ends.
    fn value(&mut self, l: &Line, at: usize, context: Context) -> Option<(Node, usize)> {
        match self.b[at] {
            b'[' | b'{' if context != Context::BlockKey => {
                self.depth += 1;
                if self.depth > DEPTH {
                    return None;
                }
                let flow = if self.b[at] == b'[' {
                    self.flow_list(l, at)
                } else {
                    self.flow_table(l, at)
                };
                self.depth -= 1;
                flow
            }
            b'\'' | b'"' => self.quoted(l, at),
            _ => self.plain(l, at, context),
        }
    }

    fn flow_list(&mut self, l: &Line, open: usize) -> Option<(Node, usize)> {
        let mut items = Vec::new();
        let end = self.flow(l, open, b']', |r, at| {
            let (item, end) = r.value(l, at, Context::Flow)?;
            items.push(item);
            Some(end)
        })?;
        Some((Node::new(Self::pos(l, open), Value::Seq(items)), end))
    }

    fn flow_table(&mut self, l: &Line, open: usize) -> Option<(Node, usize)> {
        let mut entries = Vec::new();
        let end = self.flow(l, open, b'}', |r, at| {
            if matches!(r.b[at], b'[' | b'{') {
                return None;
            }
            let (key, end) = r.value(l, at, Context::Flow)?;
            // `key: value`, with a space after the colon.
            if end + 1 >= l.end || r.b[end] != b':' || r.b[end + 1] != b' ' {
                return None;
            }
            let key = r.key_of(key, at)?;
            let at = r.skip_spaces(l, end + 1);
            if at == l.end || matches!(r.b[at], b',' | b'}' | b']') {
                return None;
            }
            let (value, end) = r.value(l, at, Context::Flow)?;
            entries.push((key, value));
            Some(end)
        })?;
        Some((Node::new(Self::pos(l, open), Value::Map(entries)), end))
    }

    /// The entries of the one-line `[...]` or `{...}` opened at `open`,
    /// separated by commas: `entry` reads one from where it starts and
    /// says where it ends. Returns where the collection ends.
    fn flow(
        &mut self,
        l: &Line,
        open: usize,
        close: u8,
        mut entry: impl FnMut(&mut Self, usize) -> Option<usize>,
    ) -> Option<usize> {
        let mut at = self.skip_spaces(l, open + 1);
        if at == l.end {
            return None;
        }
        if self.b[at] == close {
            return Some(at + 1);
        }
        loop {
            let end = entry(self, at)?;
            at = self.skip_spaces(l, end);
            match self.b.get(at).filter(|_| at < l.end) {
                Some(b',') => at = self.skip_spaces(l, at + 1),
                Some(&c) if c == close => return Some(at + 1),
                _ => return None,
            }
            // An empty entry, or a comma before the close, is left to the
            // general parser.
            if at == l.end || matches!(self.b[at], b',' | b']' | b'}') {
                return None;
            }
        }
    }

    /// A plain scalar that starts at `at`, and where it ends (before the
    /// spaces that end it).
    fn plain(&self, l: &Line, at: usize, context: Context) -> Option<(Node, usize)> {
        let b = self.b;
        let first = b[at];
        let next = b.get(at + 1).copied().filter(|_| at + 1 < l.end);
        let starts = first.is_ascii_alphanumeric()
            || b"._/~+$^(=;<".contains(&first)
            || (first == b'-' && next.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.'));
        if !starts {
            return None;
        }
        let mut end = at;
        let mut i = at;
        let mut at_colon = false;
        while i < l.end {
            let c = b[i];
            let spaced = i + 1 == l.end || b[i + 1] == b' ';
            match c {
                b':' if spaced => match context {
                    // `a: b: c` is not a plain scalar.
                    Context::BlockValue => return None,
                    Context::BlockKey | Context::Flow => {
                        at_colon = true;
                        break;
                    }
                },
                b':' if context == Context::Flow => return None,
                b'#' if b[i - 1] == b' ' => {
                    if context == Context::Flow {
                        return None;
                    }
                    break;
                }
                b',' | b'[' | b']' | b'{' | b'}' if context != Context::BlockValue => {
                    if context == Context::BlockKey {
                        return None;
                    }
                    break;
                }
                b' ' => {}
                // After a space inside `[...]` or `{...}` the general parser
                // reads some characters as the start of something else.
                _ if context == Context::Flow
                    && i > at
                    && b[i - 1] == b' '
                    && !c.is_ascii_alphanumeric() =>
                {
                    return None;
                }
                _ => end = i + 1,
            }
            i += 1;
        }
        // A key ends at its colon: `key : value` is left to the general parser.
        if (at_colon || context == Context::BlockKey) && end != i {
            return None;
        }
        if context == Context::BlockKey && end - at > KEY {
            return None;
        }
        Some((plain_scalar(&self.text[at..end], Self::pos(l, at)), end))
    }

    /// A one-line `'...'` (where `''` is a quote) or `"..."` (with the
    /// escapes of [`Self::escape`]) at `open`, and where it ends.
    fn quoted(&self, l: &Line, open: usize) -> Option<(Node, usize)> {
        let quote = self.b[open];
        let mut text = String::new();
        let mut i = open + 1;
        loop {
            if i >= l.end {
                return None;
            }
            match self.b[i] {
                b'\\' if quote == b'"' => {
                    let (c, len) = self.escape(l, i)?;
                    text.push(c);
                    i += len;
                }
                b'\'' if quote == b'\'' && i + 1 < l.end && self.b[i + 1] == b'\'' => {
                    text.push('\'');
                    i += 2;
                }
                c if c == quote => break,
                c => {
                    text.push(c as char);
                    i += 1;
                }
            }
        }
        Some((
            Node::new(Self::pos(l, open), Value::Str(text.into())),
            i + 1,
        ))
    }

    /// The escape at `at` inside a `"..."`, and its length; the rarer
    /// escapes are left to the general parser.
    fn escape(&self, l: &Line, at: usize) -> Option<(char, usize)> {
        let c = match *self.b.get(at + 1).filter(|_| at + 1 < l.end)? {
            b'\\' => '\\',
            b'"' => '"',
            b'/' => '/',
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'0' => '\0',
            b'u' => {
                let hex = self.text.get(at + 2..at + 6).filter(|_| at + 6 <= l.end)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                return Some((char::from_u32(u32::from_str_radix(hex, 16).ok()?)?, 6));
            }
            _ => return None,
        };
        Some((c, 2))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// When this reads the text, the general parser reads it and builds
    /// the same tree.
    fn agrees(text: &str) -> Result<bool, String> {
        crate::parse::tests::agrees(text, document(text), super::super::yaml::parse_events(text))
    }

    #[track_caller]
    fn read(text: &str) {
        assert_eq!(agrees(text), Ok(true), "{text}");
    }

    #[track_caller]
    fn left_to_general(text: &str) {
        assert_eq!(agrees(text), Ok(false), "{text}");
    }

    #[test]
    fn the_usual_manifest_is_read_as_the_general_parser_reads_it() {
        read(
            "# a stack\nnetworks:\n  front:\n    subnet: 10.1.0.0/24\nvolumes:\n  data: {}\n  logs:   # none\n\
             containers:\n  web:\n    image: localhost:5000/web:1   # pinned\n\
             \x20   command: [httpd, -f, -p, \"80\"]\n    env: {INDEX: \"1\", MODE: bench, N: 1_000, F: 1.10}\n\
             \x20   networks: [front]\n    ports: [\"8080:80\"]\n    mounts: [\"data:/data\", \"tmpfs:/tmp\"]\n\
             \x20   restart: on-failure:3\n    resources: { memory: 64m, cpus: 0.5, pids: 100 }\n\
             \x20   healthcheck: {http: \"http://localhost/\", interval: 2s}\n\
             \x20   labels:\n      com.example/tier: web\n      'quoted key': 'it''s'\n      \"1\": \"a\\tb\\u00e9\"\n\
             \x20   depends_on:\n    - db\n    - cache\n  db:\n    image: postgres\n    command:\n      - postgres\n\
             \x20     - \"-c\"\n      - fsync=off\n",
        );
        read("a:\n  b: 1\n  c:\n  d: [x, \"y\"]\ne:\n- 1\n- two\nf: {}\ng:\n");
        read("  indented: root\n  k: [[], [a, [b]], {}]\n");
        read("- a\n- b\n");
        read(
            "k: ~\nn: null\nt: True\nno: no\ni: -12\nh: 0x1F\no: 0o17\nf: .inf\nm: -.INF\nx: 1e3\nw: a b  c   # t\n",
        );
        read("1: one\ntrue: yes\n~: nothing\n2.50: float\n");
        read("a: [ b , c ]\nt: { k: v , l: w }\n");
        read("a: b[1],c{d}\nurl: http://h:80/p#frag\nq: \"#not a comment\"\n");
        for text in crate::parse::tests::examples("yaml") {
            read(&text);
        }
    }

    #[test]
    fn everything_else_is_left_to_the_general_parser() {
        for text in [
            // Valid, but not read here.
            "",
            "# only a comment\n",
            "---\na: 1\n",
            "a: 1\n...\n",
            "a: 1\n---\nb: 2\n",
            "a: 1\n--- # next\nb: 2\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: |\n  text\n",
            "a: >-\n  text\n",
            "a: two\n  lines\n",
            "a: \"two\n  lines\"\n",
            "a: [1,\n  2]\n",
            "base: {x: 1}\nb:\n  <<: {y: 2}\n",
            "l:\n- a: 1\n",
            "l:\n  - - a\n",
            "l:\n  -\n    a\n",
            "? complex\n: key\n",
            "a:\tb\n",
            "a: caf\u{e9}\n",
            "a: 1\r\nb: 2\r\n",
            "\u{feff}a: 1\n",
            "a: \"\\x41\"\n",
            "a: {b: 1,}\n",
            "a : 1\n",
            "a: [--port, 80]\n",
            // Not valid: the general parser says why.
            "a: b: c\n",
            "a: 1\n  b: 2\n",
            "a:\n    b: 1\n  c: 2\n",
            "a: [1, 2\n",
            "a: {b\n",
            "a: \"open\n",
            "a: 'open\n",
            "- a\nb: 1\n",
            "a: 1\n- b\n",
            "just a scalar\n",
            "a: @reserved\n",
            "a: `reserved`\n",
            "a: 'x' y\n",
            "a: {b: 1} c\n",
            "a: \"\\q\"\n",
            "a: \"\\ud800\"\n",
        ] {
            left_to_general(text);
        }
        let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        left_to_general(&deep);
        let mut nested = String::new();
        for depth in 0..70 {
            nested.push_str(&format!("{}k{depth}:\n", " ".repeat(depth)));
        }
        left_to_general(&nested);
    }

    /// Scalars and keys with every character that has a rule, in spellings
    /// that are and are not read here.
    fn scalar() -> impl Strategy<Value = String> {
        let usual = prop::sample::select(vec![
            "a",
            "b c",
            "1",
            "-1",
            "+2",
            "0x1F",
            "0o7",
            "1_000",
            "1.5",
            ".5",
            "1e3",
            ".inf",
            "-.inf",
            ".NaN",
            "~",
            "null",
            "true",
            "True",
            "no",
            "on",
            "8080:80",
            "localhost:5000/app:1",
            "a#b",
            "a #b",
            "b[1]",
            "x,y",
            "a:b",
            "-f",
            "<<",
            "'q'",
            "'it''s'",
            "''",
            "\"d\"",
            "\"\"",
            "\"e\\n\\t\\\"\\\\\"",
            "\"\\u00e9\"",
            "{}",
            "[]",
            "[a, b]",
            "{k: v}",
            "http://x/",
            "x]",
            "y}",
            "z,",
        ]);
        let odd = prop::sample::select(vec![
            "",
            "a: b",
            "--port",
            "-",
            "@x",
            "`x`",
            "%x",
            "!t x",
            "&a x",
            "*a",
            "|",
            ">",
            "?",
            "? x",
            "\"\\x41\"",
            "\"open",
            "'open",
            "...",
            "---",
            "caf\u{e9}",
            "a\tb",
            "a ",
            " a",
        ]);
        prop_oneof![4 => usual, 1 => odd].prop_map(String::from)
    }

    fn key() -> impl Strategy<Value = String> {
        let usual = prop::sample::select(vec![
            "a", "b", "a", "\"a\"", "'b'", "1", "null", "~", "true", "a b", "a:b", "\"k:\"", "-k",
            ".k",
        ]);
        let odd = prop::sample::select(vec!["<<", "k ", "[k]", "x,y", "{k}", "- k", "#k", ""]);
        prop_oneof![6 => usual, 1 => odd].prop_map(String::from)
    }

    #[derive(Debug, Clone)]
    enum Doc {
        Scalar(String),
        Flow(String),
        Table(Vec<(String, Doc)>),
        List(Vec<Doc>),
    }

    fn doc() -> impl Strategy<Value = Doc> {
        let leaf = prop_oneof![
            3 => scalar().prop_map(Doc::Scalar),
            1 => prop::collection::vec(scalar(), 0..4)
                .prop_map(|items| Doc::Flow(format!("[{}]", items.join(", ")))),
            1 => prop::collection::vec((key(), scalar()), 0..4).prop_map(|entries| {
                let entries: Vec<_> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                Doc::Flow(format!("{{{}}}", entries.join(", ")))
            }),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec((key(), inner.clone()), 1..5).prop_map(Doc::Table),
                prop::collection::vec(inner, 1..4).prop_map(Doc::List),
            ]
        })
    }

    /// Writes `doc` at `indent`, indenting each level by `step`, lists
    /// under a key at the key's own indentation when `compact`.
    fn write(doc: &Doc, indent: usize, step: usize, compact: bool, out: &mut String) {
        let pad = " ".repeat(indent);
        match doc {
            Doc::Scalar(s) | Doc::Flow(s) => {
                out.push_str(&format!("{pad}{s}\n"));
            }
            Doc::Table(entries) => {
                for (k, v) in entries {
                    match v {
                        Doc::Scalar(s) | Doc::Flow(s) => out.push_str(&format!("{pad}{k}: {s}\n")),
                        Doc::List(_) if compact => {
                            out.push_str(&format!("{pad}{k}:\n"));
                            write(v, indent, step, compact, out);
                        }
                        _ => {
                            out.push_str(&format!("{pad}{k}:  # c\n"));
                            write(v, indent + step, step, compact, out);
                        }
                    }
                }
            }
            Doc::List(items) => {
                for item in items {
                    match item {
                        Doc::Scalar(s) | Doc::Flow(s) => out.push_str(&format!("{pad}- {s}\n")),
                        _ => {
                            out.push_str(&format!("{pad}-\n"));
                            write(item, indent + step, step, compact, out);
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        #[test]
        fn whatever_is_read_here_the_general_parser_reads_the_same(
            doc in doc(),
            step in 1usize..4,
            compact in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            insert in prop::sample::select(vec!["", "[", "]", "{", "}", ":", ",", " ", "\n", "#", "-", "'", "\"", "\n  ", "&", "*", "\n---\n", "\n...\n", "\n- "]),
        ) {
            let mut text = String::new();
            write(&doc, 0, step, compact, &mut text);
            // The text, and the same text with one character put in somewhere.
            for text in [text.clone(), crate::parse::tests::inserted(&text, cut, insert)] {
                let result = agrees(&text);
                prop_assert!(result.is_ok(), "{}", result.unwrap_err());
            }
        }
    }
}
