//! `moor exec NAME -- CMD…`: a command in a running container.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::ExecArgs;

/// Runs the command with this terminal's stdio; exits with its code.
pub fn run(state_dir: &Path, args: &ExecArgs) -> anyhow::Result<ExitCode> {
    let engine = super::dev::engine(state_dir)?;
    let code = engine.exec(&args.name, &args.command, args.tty)?;
    Ok(ExitCode::from((code & 0xff) as u8))
}
