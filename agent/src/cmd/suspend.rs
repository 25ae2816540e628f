//! `moor suspend` and `moor resume`: ask the running agent, through its
//! control socket, to stop or start applying a source.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::SuspendArgs;
use crate::daemon::control::{self, Request};

/// Suspends (`suspend`) or resumes `args.source`.
pub fn run(state_dir: &Path, args: &SuspendArgs, suspend: bool) -> anyhow::Result<ExitCode> {
    let source = args.source.clone();
    let req = if suspend {
        Request::Suspend { source }
    } else {
        Request::Resume { source }
    };
    let reply = control::call(state_dir, &req)?;
    if !reply.ok {
        anyhow::bail!("{}", reply.message);
    }
    println!("{}", reply.message);
    Ok(ExitCode::SUCCESS)
}
