//! `moor rollback`

use clap::Args;

// `moor rollback`
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The source (its name in the agent's configuration, which is its project).
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// The revision to go back to (at least 4 characters of it, as `moor
    /// history` shows it) [default: the last healthy one before the
    /// revision in force].
    #[arg(long, value_name = "REVISION")]
    pub to: Option<String>,
}
