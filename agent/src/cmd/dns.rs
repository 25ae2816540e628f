//! `moor dns` (hidden): the state dir's DNS resolver, started by any moor
//! process that creates a network. See `moor_runtime::net::resolver`.

use std::path::Path;
use std::process::ExitCode;

/// Runs the resolver; it must be the first and only thing this process
/// does (it forks, and relies on being single-threaded).
pub fn run(state_dir: &Path) -> anyhow::Result<ExitCode> {
    let code = moor_runtime::net::resolver::run(state_dir);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
