//! `moor reconcile`: ask the running agent, through its control socket, to
//! reconcile a source now (fetching it first with `--fetch`) and wait for
//! the pass.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::ReconcileArgs;
use crate::daemon::control::{self, Request};

/// Reconciles `args.source` now.
pub fn run(state_dir: &Path, args: &ReconcileArgs) -> anyhow::Result<ExitCode> {
    let req = Request::Reconcile {
        source: args.source.clone(),
        fetch: args.fetch,
    };
    let reply = control::call(state_dir, &req)?;
    if !reply.ok {
        anyhow::bail!("{}", reply.message);
    }
    println!("{}", reply.message);
    Ok(ExitCode::SUCCESS)
}
