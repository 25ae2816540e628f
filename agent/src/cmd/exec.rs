//! `moor exec NAME -- CMD…`: a command in a running container.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::ExecArgs;

/// Runs the command with this terminal's stdio; exits with its code.
pub fn run(state_dir: &Path, args: &ExecArgs) -> anyhow::Result<ExitCode> {
    let engine = super::dev::engine(state_dir)?;
    // The instance's current container (see moor_runtime::host::instances).
    let name = moor_runtime::host::instances::resolve(&engine, &args.name)?;
    let code = engine.exec(&name, &args.command, args.tty)?;
    Ok(ExitCode::from((code & 0xff) as u8))
}
