//! `moor dev …` (hidden): drives the container engine directly, until the
//! reconciler creates containers from manifests.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use moor_runtime::container::{Engine, EngineConfig, Executor};
use moor_spec::ContainerSpec;

use super::common::engine;
use crate::cli::{DevCommand, DevRunArgs};

/// Runs a `moor dev` subcommand.
pub fn run(state_dir: &Path, cmd: &DevCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DevCommand::Run(args) => run_container(state_dir, args),
        DevCommand::Start(args) => {
            let state = engine(state_dir)?.start(&args.name)?;
            println!("{}", state.pid);
            Ok(ExitCode::SUCCESS)
        }
        DevCommand::Stop(args) => {
            let grace = args.time.map(Duration::from_secs_f64);
            let exit = engine(state_dir)?.stop(&args.name, grace)?;
            println!("{}", serde_json::to_string(&exit)?);
            Ok(ExitCode::SUCCESS)
        }
        DevCommand::Rm(args) => {
            engine(state_dir)?.remove(&args.name, args.force)?;
            Ok(ExitCode::SUCCESS)
        }
        DevCommand::Wait(args) => {
            let engine = engine(state_dir)?;
            match engine.wait_exit(&args.name, Duration::from_secs_f64(args.timeout))? {
                Some(exit) => {
                    println!("{}", serde_json::to_string(&exit)?);
                    Ok(ExitCode::from((exit.exit_code & 0xff) as u8))
                }
                None => bail!(
                    "container \"{}\" did not exit within {} s",
                    args.name,
                    args.timeout
                ),
            }
        }
    }
}

fn run_container(state_dir: &Path, args: &DevRunArgs) -> anyhow::Result<ExitCode> {
    let mut spec = spec_for(&args.name, &args.manifest)?;
    if !args.command.is_empty() {
        spec.command = Some(args.command.clone());
    }
    let mut config = EngineConfig::new(state_dir);
    config.executor = Executor::parse(&args.executor)?;
    config.cgroup_parent = args.cgroup_parent.clone();
    if let Some(max) = args.log_max_bytes {
        config.log_max_bytes = max;
    }
    let engine = Engine::new(config)?;
    let rootfs: Vec<PathBuf> = args
        .rootfs
        .iter()
        .map(|p| {
            std::fs::canonicalize(p).with_context(|| format!("root filesystem {}", p.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let record = engine.create(&args.name, spec, None, rootfs)?;
    match engine.start(&args.name) {
        Ok(state) => {
            println!("{} {}", record.id, state.pid);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = engine.remove(&args.name, true);
            Err(e.into())
        }
    }
}

/// The spec of container `name`: from the manifests when given, else the
/// defaults of a manifest that names only an image.
fn spec_for(name: &str, manifests: &[PathBuf]) -> anyhow::Result<ContainerSpec> {
    let state = if manifests.is_empty() {
        let text = format!("[containers.{name}]\nimage = \"moor.invalid/dev/rootfs\"\n");
        moor_spec::load_texts(&[(PathBuf::from("dev.toml"), text)])
    } else {
        moor_spec::load(manifests)
    };
    let mut state = state.map_err(|diags| anyhow::anyhow!("invalid manifests:\n{diags}"))?;
    match state.containers.remove(name) {
        Some(resource) => Ok(std::sync::Arc::unwrap_or_clone(resource.spec)),
        None => bail!("the manifests declare no container \"{name}\""),
    }
}
