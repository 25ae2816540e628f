//! `moor history`

use clap::Args;

// `moor history`
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The source (its name in the agent's configuration, which is its project).
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Print the history as JSON (every record in full).
    #[arg(long)]
    pub json: bool,
}
