//! `moor status`

use std::path::PathBuf;

use clap::Args;

// `moor status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's HTTP address (its --metrics-addr).
    #[arg(long, env = "MOOR_AGENT_ADDR", default_value = moor_metrics::DEFAULT_ADDR)]
    pub addr: String,
    /// A file holding the token the agent's /status asks for (its status_token_file).
    #[arg(long, env = "MOOR_STATUS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the agent's /status document as JSON.
    #[arg(long)]
    pub json: bool,
}
