//! `moor suspend` and `moor resume`

use clap::Args;

// `moor suspend` / `moor resume`
#[derive(Debug, Args)]
pub struct SuspendArgs {
    /// The source (its name in the agent's configuration, which is its project).
    #[arg(value_name = "SOURCE")]
    pub source: String,
}
