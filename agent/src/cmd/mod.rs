//! One module per subcommand.

pub mod agent;
mod dev;
mod exec;
pub(crate) mod image;
mod inspect;
mod logs;
mod ps;
mod shim;
pub mod stack;
mod validate;

use std::process::ExitCode;

use anyhow::bail;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let name = match &cli.command {
        Command::Validate(args) => return validate::run(args),
        Command::Plan(args) => return stack::plan(&cli.state_dir, args),
        Command::Apply(args) => return stack::apply_cmd(&cli.state_dir, args),
        Command::Down(args) => return stack::down(&cli.state_dir, args),
        Command::Agent(args) => return agent::run(&cli.state_dir, args),
        Command::Ps(args) => return ps::run(&cli.state_dir, args),
        Command::Logs(args) => return logs::run(&cli.state_dir, args),
        Command::Exec(args) => return exec::run(&cli.state_dir, args),
        Command::Shim(args) => return shim::run(args),
        Command::Dev(cmd) => return dev::run(&cli.state_dir, cmd),
        Command::Images(args) => return image::list(&cli.state_dir, args),
        Command::Networks(_) => "networks",
        Command::Volumes(_) => "volumes",
        Command::Inspect(args) => return inspect::run(&cli.state_dir, args),
        Command::Image(args) => return image::run(&cli.state_dir, args),
    };
    bail!("`moor {name}` is not built yet; only `moor validate` works in this version")
}
