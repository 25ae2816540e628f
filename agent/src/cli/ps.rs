//! `moor ps`

use clap::Args;

// `moor ps`
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show every container, not only running ones.
    #[arg(short, long)]
    pub all: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
