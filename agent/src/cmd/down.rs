//! `moor down`: remove what a project created.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::bail;
use moor_reconcile::{ApplyOptions, DiffOptions, Runtime, apply, diff};
use moor_spec::DesiredState;

use super::common::{open_host, runtime};
use super::project::project_name;
use crate::cli::DownArgs;

/// Removes the project's resources (its volumes only with `--volumes`).
pub fn run(state_dir: &Path, args: &DownArgs) -> anyhow::Result<ExitCode> {
    let project = project_name(&args.project)?;
    let host = open_host(state_dir)?;
    let rt = runtime()?;
    let observed = rt.block_on(host.observe())?;
    let empty = DesiredState::default();
    let opts = DiffOptions {
        project: &project,
        allow_empty: true,
        remove_volumes: args.volumes,
        now: SystemTime::now(),
    };
    let plan = diff(&empty, &observed, &opts)?;
    let outcomes = rt.block_on(apply(
        &host,
        &plan,
        &empty,
        &observed,
        &ApplyOptions::new(&project),
    ));
    let mut failed = 0;
    for o in outcomes {
        match &o.result {
            Ok(()) => println!("{} {} {}", o.action.verb, o.action.kind, o.action.name),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "failed: {} {} {}: {e}",
                    o.action.verb, o.action.kind, o.action.name
                );
            }
        }
    }
    if failed > 0 {
        bail!("{failed} removal(s) failed");
    }
    println!("{project}: down");
    Ok(ExitCode::SUCCESS)
}
