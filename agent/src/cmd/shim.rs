//! `moor shim DIR` (hidden): the per-container supervisor, started by
//! `start`. See `moor_runtime::container::shim`.

use std::process::ExitCode;

use crate::cli::ShimArgs;

/// Runs the shim; it must be the first and only thing this process does
/// (it forks, and relies on being single-threaded).
pub fn run(args: &ShimArgs) -> anyhow::Result<ExitCode> {
    let code = moor_runtime::container::shim::run(&args.dir);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
