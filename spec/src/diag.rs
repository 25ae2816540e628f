//! Diagnostics: every problem found in a set of manifests, with its place.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::node::Pos;

/// An I/O error as a message fragment: lower-case, without the OS error number
/// (`no such file or directory`).
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The manifests are invalid and will not be applied.
    Error,
    /// Something is not done as written (a Compose key moor does not
    /// support, ignored); the manifests are applied all the same.
    Warning,
}

/// One problem in one manifest file, rendered as `path:line:column: error: message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// How bad it is.
    pub severity: Severity,
    /// The field at fault as a path, e.g. `containers.web.ports[1]`; empty for
    /// whole-file problems such as syntax errors.
    pub field: String,
    /// What is wrong, lower-case, without a trailing period.
    pub message: String,
}

impl Diagnostic {
    /// An error at `pos` of `file` about `field`.
    pub fn error(
        file: &Path,
        pos: Pos,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            severity: Severity::Error,
            field: field.into(),
            message: message.into(),
        }
    }

    /// A warning at `pos` of `file` about `field`: it does not refuse a load.
    pub fn warning(
        file: &Path,
        pos: Pos,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, pos, field, message)
        }
    }

    fn sort_key(&self) -> (&Path, u32, u32, &str, &str) {
        (
            &self.file,
            self.line,
            self.column,
            &self.field,
            &self.message,
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {severity}: ",
            self.file.display(),
            self.line,
            self.column
        )?;
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// At most this many diagnostics are kept per file; the rest are counted
/// and reported as one line, so a hostile file cannot make a load hold (or
/// print, or put into `/status`) millions of them.
pub const MAX_PER_FILE: usize = 100;

/// All the diagnostics of one load, in file and position order.
///
/// At most [`MAX_PER_FILE`] are kept for each file (the first found); the
/// others are only counted, and shown as one more line for that file
/// ("N more errors in this file are not shown").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
    /// How many of `list` are about each file.
    kept: HashMap<PathBuf, usize>,
    /// How many more were found about each file, and not kept.
    omitted: BTreeMap<PathBuf, usize>,
    /// Whether an error is among those not kept.
    errors_omitted: bool,
}

impl Diagnostics {
    /// Adds one diagnostic (or only counts it, when its file already has
    /// [`MAX_PER_FILE`]).
    pub fn push(&mut self, d: Diagnostic) {
        let kept = match self.kept.get_mut(d.file.as_path()) {
            Some(n) => n,
            None => self.kept.entry(d.file.clone()).or_default(),
        };
        if *kept < MAX_PER_FILE {
            *kept += 1;
            self.list.push(d);
        } else {
            self.errors_omitted |= d.severity == Severity::Error;
            *self.omitted.entry(d.file).or_default() += 1;
        }
    }

    /// Adds all of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        for d in other.list {
            self.push(d);
        }
        self.errors_omitted |= other.errors_omitted;
        for (file, n) in other.omitted {
            *self.omitted.entry(file).or_default() += n;
        }
    }

    /// True when at least one diagnostic (kept or not) is an error.
    pub fn has_errors(&self) -> bool {
        self.errors_omitted || self.list.iter().any(|d| d.severity == Severity::Error)
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many problems were found, shown or not.
    pub fn len(&self) -> usize {
        self.list.len() + self.omitted.values().sum::<usize>()
    }

    /// The diagnostics kept, in order (without the lines that count the others).
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.list.iter()
    }

    /// Every line to show: the diagnostics kept, each file's followed by
    /// one that counts those not kept.
    pub fn shown(&self) -> Vec<Diagnostic> {
        let mut out = Vec::with_capacity(self.list.len() + self.omitted.len());
        for (i, d) in self.list.iter().enumerate() {
            out.push(d.clone());
            let last_of_file = self.list.get(i + 1).is_none_or(|next| next.file != d.file);
            if let Some(n) = self.omitted.get(&d.file).filter(|_| last_of_file) {
                out.push(Diagnostic {
                    field: String::new(),
                    message: format!(
                        "{n} more error{} in this file {} not shown (at most {MAX_PER_FILE} are kept per file)",
                        if *n == 1 { "" } else { "s" },
                        if *n == 1 { "is" } else { "are" },
                    ),
                    ..d.clone()
                });
            }
        }
        out
    }

    /// Sorts by file, line and column and drops exact repeats.
    pub(crate) fn sort(&mut self) {
        self.list.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        self.list.dedup();
    }
}

impl Serialize for Diagnostics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.shown())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.shown() {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_a_hundred_per_file_are_kept_and_the_rest_counted() {
        let mut all = Diagnostics::default();
        let (a, b) = (Path::new("a.toml"), Path::new("b.yaml"));
        for i in 0..100_000u32 {
            all.push(Diagnostic::error(a, Pos::new(i + 1, 1), "f", "bad"));
        }
        let mut other = Diagnostics::default();
        for i in 0..150u32 {
            other.push(Diagnostic::error(b, Pos::new(i + 1, 3), "g", "worse"));
        }
        other.push(Diagnostic::error(a, Pos::new(7, 7), "h", "also"));
        all.extend(other);
        all.sort();
        assert_eq!(all.len(), 100_000 + 151, "every problem is counted");
        assert_eq!(all.iter().count(), 2 * MAX_PER_FILE, "100 kept per file");
        let shown = all.shown();
        assert_eq!(shown.len(), 2 * MAX_PER_FILE + 2);
        assert_eq!(
            shown[MAX_PER_FILE].to_string(),
            "a.toml:100:1: error: 99901 more errors in this file are not shown (at most 100 are kept per file)"
        );
        assert_eq!(
            shown.last().unwrap().to_string(),
            "b.yaml:100:3: error: 50 more errors in this file are not shown (at most 100 are kept per file)"
        );
        let text = all.to_string();
        assert_eq!(text.lines().count(), 202);
        let json = serde_json::to_value(&all).unwrap();
        assert_eq!(json.as_array().map(Vec::len), Some(202));
    }
}
