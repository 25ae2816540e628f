//! `moor validate PATH...`

use std::path::PathBuf;

use clap::Args;

use super::HostArgs;

// `moor validate`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Manifest files or directories (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print the result and the diagnostics as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub host: HostArgs,
}
