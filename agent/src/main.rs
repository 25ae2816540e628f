//! The `moor` binary: the command line, and later the agent daemon, the
//! sources (directory watch, git) and the per-container shim.

mod cli;
mod cmd;
mod source;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
