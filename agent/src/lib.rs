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
//!          ├──▶ logging
//!          └──▶ secret_key                      the host's key for secrets
//!                                               (the daemon uses it too)
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
/// `moor ps | head`: a reader that stops early ends a listing command the
/// way it ends `ls` (SIGPIPE, quietly), not with a panic from `println!`.
/// Only for commands that print and exit: the agent and the resolver keep
/// Rust's ignored SIGPIPE, so a peer hanging up is an error they handle.
fn quiet_on_closed_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: set once at start, before any thread exists; SIG_DFL installs
    // no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if cli.command.prints_for_a_pipe() {
        quiet_on_closed_pipe();
    }
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
