//! `moor apply`: one convergence, from the command line. The loop itself
//! (observe, diff, apply, wait until settled) is `moor_reconcile::converge`,
//! whose idea of "settled" the agent's controller shares; this prints what
//! it did and turns how it ended into an exit code.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use moor_reconcile::{ConvergeOptions, Convergence, converge};

use moor_runtime::host::{Host, HostConfig};

use super::common::runtime;
use super::project::{HostKey, load, project_name};
use crate::cli::ApplyArgs;
use crate::source::pins::Pins;
use crate::source::written::Written;

/// Applies the manifests and waits until the host has settled.
pub fn run(state_dir: &Path, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let project = project_name(&args.project)?;
    let mut config = HostConfig::new(state_dir);
    if let Some(file) = &args.verify_config {
        config.pull.verify = crate::config::read_verify_rules(file)?;
    }
    let mut written = Written::open(state_dir, &project);
    let desired = load(
        &args.project.paths,
        &args.host,
        &written,
        HostKey::Make(state_dir),
    )?;
    // Where its containers write is not read as manifests next time.
    written
        .remember(&desired)
        .context("recording the directories the containers write")?;
    // The images the agent's updates put in force (`[images.X] update`),
    // not the older ones the manifests write.
    let desired = Pins::load(state_dir, &project)?.apply(&desired);
    let host = Host::open(config)?;
    let mut opts = ConvergeOptions::new(&project, args.timeout);
    opts.allow_empty = args.allow_empty;
    let report = |o: &moor_reconcile::Outcome| match &o.result {
        Ok(()) => println!(
            "{} {} {}: {} ({:.0?})",
            o.action.verb, o.action.kind, o.action.name, o.action.reason, o.elapsed
        ),
        Err(e) => eprintln!(
            "failed: {} {} {}: {e}",
            o.action.verb, o.action.kind, o.action.name
        ),
    };
    match runtime()?.block_on(converge(&host, &desired, &opts, report))? {
        Convergence::Converged => {
            println!("{project}: up to date ({} resources)", desired.len());
            Ok(ExitCode::SUCCESS)
        }
        Convergence::Blocked(blocked) => {
            for b in &blocked {
                eprintln!("blocked: {} {}: {}", b.kind, b.name, b.reason);
            }
            Ok(ExitCode::FAILURE)
        }
        Convergence::Failed(failed) => bail!("{} action(s) failed", failed.len()),
        Convergence::TimedOut { after, plan } => bail!("not converged after {after:?}:\n{plan}"),
    }
}
