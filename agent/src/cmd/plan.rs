//! `moor plan`: what `apply` would change, read-only.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use moor_reconcile::{DiffOptions, diff};
use moor_runtime::host::{HostConfig, HostView};

use super::common::runtime;
use super::project::{HostKey, load, project_name};
use crate::cli::PlanArgs;
use crate::source::pins::Pins;
use crate::source::written::Written;

/// Prints the plan; exit 0 with no changes, 2 with changes, 1 on error.
pub fn run(state_dir: &Path, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let project = project_name(&args.project)?;
    let written = Written::open(state_dir, &project);
    let desired = match load(
        &args.project.paths,
        &args.host,
        &written,
        HostKey::Read(state_dir),
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    // The images the agent's updates put in force, as the agent has them.
    let desired = Pins::load(state_dir, &project)?.apply(&desired);
    // Read-only, beside a running agent: no lock, nothing repaired.
    let host = HostView::open(HostConfig::new(state_dir))?;
    let observed = runtime()?.block_on(host.observe(&desired))?;
    let opts = DiffOptions {
        project: &project,
        allow_empty: args.allow_empty,
        remove_volumes: false,
        now: SystemTime::now(),
    };
    let plan = diff(&desired, &observed, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{plan}");
    }
    Ok(ExitCode::from(if plan.is_empty() { 0 } else { 2 }))
}
