//! Everything the `moor` binary does: the command line, the agent daemon
//! and the sources (directory watch, git). The binary (`src/main.rs` at the
//! repository root) only calls [`main`]; the per-container shim is a binary
//! of its own (`src/bin/moor-shim.rs`, `moor_runtime::container::shim`).
//!
//! Start at `cli` (what can be asked, one file per verb) and `cmd` (what
//! each verb does: a handler per file, chosen in `cmd::run`). The layers
//! point one way, and `tests/layers.rs` keeps them so:
//!
//! ```text
//! main ─▶ cmd ─▶ cli            clap argument types, nothing else
//!          │
//!          ├──▶ daemon ─▶ config ─▶ source      the agent: its set-up, its
//!          │                                    sources, controllers, HTTP
//!          └──▶ logging
//! ```
//!
//! Rules shared with the library crates live there: names, durations,
//! sizes, host labels and the host's identity in `moor_spec`; when a stack
//! has converged in `moor_reconcile`.

mod cli;
mod cmd;
mod config;
mod daemon;
mod logging;
mod secret_key;
mod source;

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match &cli.command {
        cli::Command::Agent(_) | cli::Command::Dns => logging::init(cli.log_format, "info"),
        _ => logging::init(cli.log_format, "warn"),
    }
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
