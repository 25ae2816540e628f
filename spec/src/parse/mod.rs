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
