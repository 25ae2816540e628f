//! `moor stop`, `start`, `restart`, `pause` and `unpause`

use clap::Args;

// `moor stop` / `moor restart`
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before SIGKILL (default: the
    /// container's `stop_grace_period`).
    #[arg(
        short = 't',
        long = "timeout",
        visible_alias = "time",
        value_name = "SECONDS"
    )]
    pub timeout: Option<f64>,
    /// The containers.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

// `moor start` / `moor pause` / `moor unpause`
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// The containers.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}
