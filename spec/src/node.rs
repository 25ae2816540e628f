//! A format-neutral document tree that remembers where every value was written.
//!
//! TOML and YAML are two spellings of one model: both parsers lower their input
//! into [`Node`]s, and everything after that (decoding, normalisation,
//! validation) works on this tree only, so a field behaves the same and is
//! reported at the same place whichever spelling the user chose.

use std::fmt;

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
    pub raw: Option<String>,
}

/// A key of a mapping and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key's text.
    pub name: String,
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
    Str(String),
    /// A TOML date or time, which no manifest field accepts.
    DateTime(String),
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
    pub fn with_raw(mut self, raw: impl Into<String>) -> Self {
        self.raw = Some(raw.into());
        self
    }

    /// The text of a scalar (string, number or boolean), as a user wrote it.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) if self.raw.is_some() => self.raw.clone(),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Maps byte offsets of a source text to 1-based lines and character columns.
#[derive(Debug)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// The text this index is over.
    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }

    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        Pos::new(line as u32 + 1, column as u32 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
