//! `moor build`: a Dockerfile built on moor's own engine
//! (`moor_runtime::build`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use moor_runtime::build::cache::{PruneOptions, prune, usage};
use moor_runtime::build::{BuildOptions, RunNetwork, build, source_date_epoch};
use moor_runtime::host::HostConfig;
use moor_runtime::image::Images;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::build_progress::{Plain, Quiet, Tty};
use crate::cli::{BuildArgs, BuildNetwork, BuildProgress, BuilderArgs, BuilderCommand};

/// Runs `moor build`.
pub fn run(state_dir: &Path, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let host = HostConfig::new(state_dir);
    if let Some(p) = host.problems.first() {
        bail!("{p}");
    }
    let mut build_args = std::collections::BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_owned(), v.to_owned());
            }
            None => {
                // Docker: `--build-arg K` takes K from the environment, or
                // leaves it out.
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    let images = Images::open(state_dir)
        .with_context(|| format!("open the image store in {}", state_dir.display()))?;
    let mut engine = host.engine;
    // RUN containers live apart from the host's: `moor ps` and the
    // reconciler never see them.
    engine.state_dir = engine.state_dir.join("build");
    let opts = BuildOptions {
        context: args.context.clone(),
        dockerfile: args.file.clone(),
        build_args,
        target: args.target.clone(),
        tags: args.tags.clone(),
        no_cache: args.no_cache,
        network: match args.network {
            BuildNetwork::None => RunNetwork::None,
            BuildNetwork::Host => RunNetwork::Host,
        },
        pull: host.pull,
        source_date_epoch: source_date_epoch(
            std::env::var("SOURCE_DATE_EPOCH").ok().as_deref(),
            args.reproducible,
        )
        .map_err(anyhow::Error::msg)?,
    };
    let mode = match (args.quiet, args.progress) {
        (true, _) | (_, BuildProgress::Quiet) => BuildProgress::Quiet,
        (false, BuildProgress::Auto) if std::io::stderr().is_terminal() => BuildProgress::Tty,
        (false, BuildProgress::Auto) => BuildProgress::Plain,
        (false, m) => m,
    };
    let built = match mode {
        BuildProgress::Tty => {
            let tty = Tty::default();
            let done = AtomicBool::new(false);
            let built = std::thread::scope(|scope| {
                // The running steps' times move without output.
                scope.spawn(|| {
                    while !done.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(250));
                        if !done.load(Ordering::Relaxed) {
                            tty.tick();
                        }
                    }
                });
                let built = build(&images, engine, &opts, &tty);
                done.store(true, Ordering::Relaxed);
                built
            });
            tty.finish();
            built
        }
        BuildProgress::Quiet => build(&images, engine, &opts, &Quiet),
        _ => build(&images, engine, &opts, &Plain),
    }
    .with_context(|| format!("build {}", args.context.display()))?;
    if mode == BuildProgress::Quiet {
        println!("{}", built.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `moor builder`.
pub fn builder(state_dir: &Path, args: &BuilderArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        BuilderCommand::Prune(a) => {
            let images = Images::open(state_dir)
                .with_context(|| format!("open the image store in {}", state_dir.display()))?;
            let opts = PruneOptions {
                all: a.all,
                // Several `until`s: an entry must be unused for the longest.
                until: a.filter.iter().max().copied(),
                keep_storage: a.keep_storage,
            };
            let report = prune(&images, &opts).context("prune the build cache")?;
            println!(
                "removed {} build cache entries, {} blobs ({}), {} snapshots",
                report.entries,
                report.gc.blobs,
                super::image::human(report.gc.bytes),
                report.gc.snapshots
            );
            let (entries, bytes) = usage(&images).context("measure the build cache")?;
            println!(
                "the build cache keeps {entries} entries, {} of layers no image holds",
                super::image::human(bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
