//! `moor stats [NAME...]`

use clap::Args;

// `moor stats`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one reading and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// Print JSON: an array per reading, one per line.
    #[arg(long)]
    pub json: bool,
    /// Only these containers (default: every running one).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}
