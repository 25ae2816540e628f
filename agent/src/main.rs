//! The `moor` binary: the command line, the agent daemon, the
//! sources (directory watch, git) and the per-container shim.

mod cli;
mod cmd;
mod config;
mod logging;
mod source;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match &cli.command {
        // The shim stays minimal: it writes its own records, not logs.
        cli::Command::Shim(_) => {}
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
