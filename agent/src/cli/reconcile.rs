//! `moor reconcile`

use clap::Args;

// `moor reconcile`
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The source (its name in the agent's configuration, which is its project).
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Fetch the source first (a git source; a directory is always watched).
    #[arg(long)]
    pub fetch: bool,
}
