//! A format-neutral document tree that remembers where every value was written.
//!
//! TOML and YAML are two spellings of one model: both parsers lower their input
//! into [`Node`]s, and everything after that (decoding, normalisation,
//! validation) works on this tree only, so a field behaves the same and is
//! reported at the same place whichever spelling the user chose.

use std::fmt;

/// The text of a key or a string scalar: inline up to 24 bytes, as almost
/// every key and most values of a manifest are, so a parse does not
/// allocate for each.
pub type Text = compact_str::CompactString;

/// A 1-based line and column (in characters) inside a manifest file.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: u32,
    /// Column, starting at 1, counted in characters.
    pub column: u32,
}

impl Pos {
    /// A position from 1-based line and column numbers.
    pub fn new(line: u32, column: u32) -> Self {
        Self { line, column }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One value of a manifest document and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// The value itself.
    pub value: Value,
    /// A number exactly as it was written (`1.10`, `0123`, `1e3`): text
    /// fields such as environment values and labels keep it, so `1.10` does
    /// not become `1.1`.
    pub raw: Option<Text>,
}

/// A key of a mapping and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key's text.
    pub name: Text,
    /// Where the key starts.
    pub pos: Pos,
}

/// The shape of a value, independent of the format it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// YAML `null`/`~`/empty value (TOML has none).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(Text),
    /// A TOML date or time, which no manifest field accepts.
    DateTime(Text),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in the order it was written.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// The kind of value as a user would name it in an error message.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::DateTime(_) => "a date-time",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a table",
        }
    }
}

impl Node {
    /// A node at `pos` holding `value`.
    pub fn new(pos: Pos, value: Value) -> Self {
        Self {
            pos,
            value,
            raw: None,
        }
    }

    /// The same node, remembering how a number was written.
    pub fn with_raw(mut self, raw: impl Into<Text>) -> Self {
        self.raw = Some(raw.into());
        self
    }

    /// The text of a scalar (string, number or boolean), as a user wrote it.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.to_string()),
            Value::Int(_) | Value::Float(_) if self.raw.is_some() => {
                self.raw.as_deref().map(String::from)
            }
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// [`Node::scalar_text`], taking the text rather than copying it.
    pub fn into_scalar_text(self) -> Option<Text> {
        match self.value {
            Value::Str(s) => Some(s),
            Value::Int(_) | Value::Float(_) if self.raw.is_some() => self.raw,
            _ => self.scalar_text().map(Text::from),
        }
    }
}

/// Maps byte offsets of a source text to 1-based lines and character columns.
///
/// Columns count characters, so finding one means counting the characters
/// between the start of the line and the offset. Counting from the line's
/// start on every call is quadratic for a long line (one line of a million
/// list items); instead the index keeps, for every [`BLOCK`] bytes of text,
/// the number of characters before it, and counts at most one block's bytes
/// per call. Building the index and every lookup are linear in total.
#[derive(Debug)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
    /// `chars_before[k]`: characters in `text[..k * BLOCK]`.
    chars_before: Vec<usize>,
    /// The line of the last lookup: parsers ask in order, mostly on the
    /// same line or the next.
    last: std::cell::Cell<usize>,
}

/// Bytes per entry of [`LineIndex::chars_before`].
const BLOCK: usize = 256;

/// True for the first byte of a UTF-8 character (not a continuation byte).
fn starts_char(b: u8) -> bool {
    b & 0xC0 != 0x80
}

impl<'a> LineIndex<'a> {
    /// The text this index is over.
    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    pub(crate) fn new(text: &'a str) -> Self {
        let bytes = text.as_bytes();
        let mut starts = Vec::with_capacity(bytes.len() / 32 + 1);
        starts.push(0);
        starts.extend(memchr::memchr_iter(b'\n', bytes).map(|i| i + 1));
        let mut chars_before = Vec::with_capacity(bytes.len() / BLOCK + 2);
        let mut count = 0;
        chars_before.push(0);
        for block in bytes.chunks(BLOCK) {
            count += if block.is_ascii() {
                block.len()
            } else {
                block.iter().filter(|&&b| starts_char(b)).count()
            };
            chars_before.push(count);
        }
        Self {
            text,
            starts,
            chars_before,
            last: std::cell::Cell::new(0),
        }
    }

    /// Characters in `text[..offset]`, counting at most one block's bytes
    /// (none when the block holds no continuation byte, as ASCII text does).
    fn chars_to(&self, offset: usize) -> usize {
        let block = offset / BLOCK;
        let start = block * BLOCK;
        let block_len = (self.text.len() - start).min(BLOCK);
        if let Some(&after) = self.chars_before.get(block + 1)
            && after - self.chars_before[block] == block_len
        {
            return self.chars_before[block] + (offset - start);
        }
        let tail = &self.text.as_bytes()[start..offset];
        #[cfg(test)]
        tests::SCANNED.with(|s| s.set(s.get() + tail.len()));
        self.chars_before[block] + tail.iter().filter(|&&b| starts_char(b)).count()
    }

    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let on = |line: usize| {
            self.starts[line] <= offset && self.starts.get(line + 1).is_none_or(|&n| offset < n)
        };
        let last = self.last.get();
        let line = if on(last) {
            last
        } else if last + 1 < self.starts.len() && on(last + 1) {
            last + 1
        } else {
            self.starts.partition_point(|&s| s <= offset) - 1
        };
        self.last.set(line);
        let column = self.chars_to(offset) - self.chars_to(self.starts[line]);
        Pos::new(line as u32 + 1, column as u32 + 1)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Bytes [`LineIndex`] scanned to find columns, on this thread.
        pub(crate) static SCANNED: Cell<usize> = const { Cell::new(0) };
    }

    #[test]
    fn columns_of_one_long_line_cost_linear_time() {
        // Today's hostile case: a million items on one line. Counting from
        // the start of the line for each would scan ~10^12 bytes.
        let items = 1_000_000;
        let text = format!("x = [{}]", vec!["\"é\""; items].join(","));
        let idx = LineIndex::new(&text);
        SCANNED.with(|s| s.set(0));
        let mut last = Pos::new(1, 1);
        for (offset, _) in text.match_indices('"').step_by(2) {
            last = idx.pos(offset);
        }
        let scanned = SCANNED.with(Cell::get);
        assert!(
            scanned <= items * 2 * BLOCK,
            "{scanned} bytes scanned for {items} lookups"
        );
        // Each item is `"é",`: 4 characters; the last one starts after `x = [`.
        assert_eq!(last, Pos::new(1, 6 + 4 * (items as u32 - 1)));
    }

    #[test]
    fn ascii_blocks_and_others_give_the_same_columns_as_counting() {
        // ASCII blocks take the shortcut; blocks with a multi-byte
        // character (or the tail of one) are counted.
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&"x = 1\n".repeat(i % 7));
            text.push_str(if i % 5 == 0 {
                "é = \"ü\"\n"
            } else {
                "long line\n"
            });
            text.push_str(&"a".repeat(i * 13));
        }
        let idx = LineIndex::new(&text);
        for (offset, _) in text.char_indices() {
            let before = &text[..offset];
            let line = before.matches('\n').count() as u32 + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = text[line_start..offset].chars().count() as u32 + 1;
            assert_eq!(idx.pos(offset), Pos::new(line, column), "offset {offset}");
        }
    }

    #[test]
    fn line_index_counts_lines_and_characters() {
        let idx = LineIndex::new("ab\nçd\n\nx");
        assert_eq!(idx.pos(0), Pos::new(1, 1));
        assert_eq!(idx.pos(1), Pos::new(1, 2));
        assert_eq!(idx.pos(3), Pos::new(2, 1));
        assert_eq!(
            idx.pos(5),
            Pos::new(2, 2),
            "ç is one character of two bytes"
        );
        assert_eq!(idx.pos(7), Pos::new(3, 1));
        assert_eq!(idx.pos(8), Pos::new(4, 1));
        assert_eq!(idx.pos(100), Pos::new(4, 2));
    }
}
