//! `moor convert [--to toml|yaml|compose] PATH`

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::HostArgs;

/// The format `moor convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConvertTo {
    /// moor's TOML.
    Toml,
    /// moor's YAML.
    Yaml,
    /// A Compose file (`compose.yaml`).
    Compose,
}

// `moor convert`
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The format to print [default: toml for a Compose file or a directory
    /// holding one, compose otherwise].
    #[arg(long, value_enum)]
    pub to: Option<ConvertTo>,
    /// A manifest file or directory (searched recursively).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    #[command(flatten)]
    pub host: HostArgs,
}
