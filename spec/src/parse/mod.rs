//! Lowering TOML and YAML text into the format-neutral [`Node`] tree.

mod toml;
mod toml_plain;
mod yaml;
mod yaml_plain;

use crate::node::{Node, Pos};

/// A syntax error: the file is not well-formed TOML or YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub pos: Pos,
    /// What the parser says was wrong, lower-case, without a trailing period.
    pub message: String,
}

/// Which spelling a manifest file uses, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `*.toml`
    Toml,
    /// `*.yaml` or `*.yml`
    Yaml,
}

impl Format {
    /// The format a file name's extension selects, if any.
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// Parses `text` into one root node per document (TOML files hold one, YAML
/// files may hold several separated by `---`).
pub fn parse(format: Format, text: &str) -> Result<Vec<Node>, SyntaxError> {
    match format {
        Format::Toml => toml::parse(text).map(|n| vec![n]),
        Format::Yaml => yaml::parse(text),
    }
}

/// Makes a parser's message read like ours: lower-case first letter, no
/// trailing period, one line.
fn tidy(message: &str) -> String {
    let line = message
        .trim()
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('.');
    let mut chars = line.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => "syntax error".to_string(),
    }
}

/// The benchmark's manifests, for the test below.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../benches/corpus.rs"]
mod corpus;

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a fast path's tree (`None`: it left the text to the general
    /// parser) is the general parser's: `Ok(true)` when it is, `Ok(false)`
    /// when the fast path did not read the text, and what differs
    /// otherwise. Every value, key, position and number's text counts;
    /// trees are compared as debug text, in which a NaN equals itself.
    pub(super) fn agrees<T: std::fmt::Debug>(
        text: &str,
        fast: Option<T>,
        general: Result<T, SyntaxError>,
    ) -> Result<bool, String> {
        match (fast, general) {
            (None, _) => Ok(false),
            (Some(fast), Ok(general)) => {
                let (fast, general) = (format!("{fast:#?}"), format!("{general:#?}"));
                if fast == general {
                    Ok(true)
                } else {
                    Err(format!("{text}\n--- fast\n{fast}\n--- general\n{general}"))
                }
            }
            (Some(fast), Err(e)) => Err(format!("{text}\nread as {fast:?}\nbut {e:?}")),
        }
    }

    /// The text of every `*.EXT` manifest in `examples/manifests`, which
    /// holds at least one.
    pub(super) fn examples(ext: &str) -> Vec<String> {
        let dir = format!("{}/../examples/manifests", env!("CARGO_MANIFEST_DIR"));
        let texts: Vec<String> = std::fs::read_dir(&dir)
            .expect(&dir)
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .map(|p| std::fs::read_to_string(&p).expect("example"))
            .collect();
        assert!(!texts.is_empty(), "no *.{ext} in {dir}");
        texts
    }

    /// `text` with `insert` put in before the character `at` picks.
    pub(super) fn inserted(text: &str, at: proptest::sample::Index, insert: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let at = at.index(chars.len() + 1);
        chars[..at]
            .iter()
            .copied()
            .chain(insert.chars())
            .chain(chars[at..].iter().copied())
            .collect()
    }

    /// The benchmark's manifests are the usual kind: if they stopped
    /// taking the fast paths, its figures would no longer say what a
    /// usual load costs.
    #[test]
    fn the_benchmark_corpus_takes_the_fast_paths() {
        let dir = tempfile::tempdir().expect("temp dir");
        corpus::write_corpus(dir.path());
        let mut seen = [0, 0];
        for entry in std::fs::read_dir(dir.path()).expect("corpus") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            match Format::from_path(&path) {
                Some(Format::Toml) => {
                    let lines = crate::node::LineIndex::new(&text);
                    assert!(toml_plain::document(&lines).is_some(), "{path:?}");
                    seen[0] += 1;
                }
                Some(Format::Yaml) => {
                    assert!(yaml_plain::document(&text).is_some(), "{path:?}");
                    seen[1] += 1;
                }
                None => {}
            }
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    }
}
