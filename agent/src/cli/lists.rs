//! `moor networks` and `moor volumes`

use clap::Args;

// `moor networks` / `moor volumes`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
