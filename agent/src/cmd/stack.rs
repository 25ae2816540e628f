//! `moor plan`, `moor apply` and `moor down`: one reconcile, from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use moor_reconcile::{ApplyOptions, DiffOptions, Health, Observed, Plan, Runtime, apply, diff};
use moor_runtime::host::{Host, HostConfig, HostView};
use moor_spec::DesiredState;

use crate::cli::HostArgs;

/// Which project, from where.
#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// The manifest directory (or files).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The project the resources belong to (default: the directory's name).
    #[arg(long, short = 'p')]
    pub project: Option<String>,
}

/// `moor plan`
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub host: HostArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Allow a manifest set with no resources to remove everything the project owns.
    #[arg(long)]
    pub allow_empty: bool,
}

/// `moor apply`
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub host: HostArgs,
    /// Give up waiting for convergence (running and healthy) after this long.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Allow a manifest set with no resources to remove everything the project owns.
    #[arg(long)]
    pub allow_empty: bool,
}

/// `moor down`
#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Remove the project's volumes too (their data is lost).
    #[arg(long)]
    pub volumes: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    moor_spec::units::parse_duration(s)
}

/// The project name: given, or the directory's base name made into a valid name.
pub fn project_name(args: &ProjectArgs) -> anyhow::Result<String> {
    if let Some(p) = &args.project {
        moor_spec::check_name(p).map_err(|e| anyhow::anyhow!("--project: {e}"))?;
        return Ok(p.clone());
    }
    let first = args
        .paths
        .first()
        .context("give a manifest directory or --project")?;
    let dir = if first.is_dir() {
        first.clone()
    } else {
        first.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let base = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("default");
    let name = name_from(base);
    if name.is_empty() {
        bail!(
            "cannot make a project name from {}; pass --project",
            dir.display()
        );
    }
    Ok(name)
}

/// `base` made into a valid resource name (lower case, `-` for anything else);
/// empty when nothing usable is left.
pub fn name_from(base: &str) -> String {
    let name: String = base
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.trim_start_matches(['-', '_'])
        .chars()
        .take(moor_spec::MAX_NAME_LEN)
        .collect()
}

/// Loads what targets `host` from the manifests, printing diagnostics on failure.
fn load(paths: &[PathBuf], args: &HostArgs) -> anyhow::Result<DesiredState> {
    if paths.is_empty() {
        bail!("give a manifest directory");
    }
    let host = args.identity()?;
    moor_spec::load_with(paths, Some(&host), &args.load_options()).map_err(|diags| {
        eprint!("{diags}");
        anyhow::anyhow!(
            "{} error(s) in the manifests; nothing was changed",
            diags.len()
        )
    })
}

fn open_host(state_dir: &Path) -> anyhow::Result<Host> {
    Ok(Host::open(HostConfig::new(state_dir))?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")
}

pub fn plan(state_dir: &Path, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let desired = match load(&args.project.paths, &args.host) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    let project = project_name(&args.project)?;
    // Read-only, beside a running agent: no lock, nothing repaired.
    let host = HostView::open(HostConfig::new(state_dir))?;
    let observed = runtime()?.block_on(host.observe())?;
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

/// True when every desired container runs and every health check passes;
/// one stopped on purpose (`moor stop`) or paused counts as settled.
fn settled(desired: &DesiredState, observed: &Observed, plan: &Plan) -> bool {
    plan.is_empty()
        && desired.containers.values().all(|c| {
            (1..=c.spec.replicas).all(|r| {
                observed
                    .containers
                    .get(&moor_reconcile::instance_name(&c.name, r))
                    .is_some_and(|o| {
                        o.hold.is_some()
                            || (o.state == moor_reconcile::ContainerState::Running
                                && (c.spec.healthcheck.is_none() || o.health == Health::Healthy))
                    })
            })
        })
}

pub fn apply_cmd(state_dir: &Path, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let desired = load(&args.project.paths, &args.host)?;
    let project = project_name(&args.project)?;
    let host = open_host(state_dir)?;
    let rt = runtime()?;
    let deadline = Instant::now() + args.timeout;
    let mut failures = Vec::new();
    let mut blocked;
    loop {
        let observed = rt.block_on(host.observe())?;
        let opts = DiffOptions {
            project: &project,
            allow_empty: args.allow_empty,
            remove_volumes: false,
            now: SystemTime::now(),
        };
        let plan = diff(&desired, &observed, &opts)?;
        blocked = plan.blocked.clone();
        if settled(&desired, &observed, &plan) {
            break;
        }
        if Instant::now() >= deadline {
            bail!("not converged after {:?}:\n{plan}", args.timeout);
        }
        if plan.is_empty() {
            // Waiting for health checks or a restart's backoff.
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let outcomes = rt.block_on(apply(
            &host,
            &plan,
            &desired,
            &observed,
            &ApplyOptions::new(&project),
        ));
        failures.clear();
        for o in outcomes {
            match &o.result {
                Ok(()) => println!(
                    "{} {} {}: {} ({:.0?})",
                    o.action.verb, o.action.kind, o.action.name, o.action.reason, o.elapsed
                ),
                Err(e) => {
                    eprintln!(
                        "failed: {} {} {}: {e}",
                        o.action.verb, o.action.kind, o.action.name
                    );
                    failures.push(format!(
                        "{} {} {}: {e}",
                        o.action.verb, o.action.kind, o.action.name
                    ));
                }
            }
        }
        if !failures.is_empty() {
            bail!("{} action(s) failed", failures.len());
        }
    }
    for b in &blocked {
        eprintln!("blocked: {} {}: {}", b.kind, b.name, b.reason);
    }
    if !blocked.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    println!("{project}: up to date ({} resources)", desired.len());
    Ok(ExitCode::SUCCESS)
}

pub fn down(state_dir: &Path, args: &DownArgs) -> anyhow::Result<ExitCode> {
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
