//! `moor down DIR`

use clap::Args;

use super::ProjectArgs;

// `moor down`
#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Remove the project's volumes too (their data is lost).
    #[arg(long)]
    pub volumes: bool,
}
