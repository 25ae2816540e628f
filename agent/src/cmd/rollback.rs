//! `moor rollback`: ask the running agent, through its control socket, to
//! put an earlier healthy revision of a source back in force. The revision
//! in force is not applied again until the source moves.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::RollbackArgs;
use crate::daemon::control::{self, Request};

/// Rolls `args.source` back.
pub fn run(state_dir: &Path, args: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let req = Request::Rollback {
        source: args.source.clone(),
        to: args.to.clone(),
    };
    let reply = control::call(state_dir, &req)?;
    if !reply.ok {
        anyhow::bail!("{}", reply.message);
    }
    println!("{}", reply.message);
    Ok(ExitCode::SUCCESS)
}
