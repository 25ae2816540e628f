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
