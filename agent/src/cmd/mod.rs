//! One module per subcommand.

mod validate;

use std::process::ExitCode;

use anyhow::bail;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let name = match &cli.command {
        Command::Validate(args) => return validate::run(args),
        Command::Plan(_) => "plan",
        Command::Apply(_) => "apply",
        Command::Down(_) => "down",
        Command::Agent(_) => "agent",
        Command::Ps(_) => "ps",
        Command::Logs(_) => "logs",
        Command::Images(_) => "images",
        Command::Networks(_) => "networks",
        Command::Volumes(_) => "volumes",
        Command::Inspect(_) => "inspect",
        Command::Image(_) => "image",
    };
    bail!("`moor {name}` is not built yet; only `moor validate` works in this version")
}
