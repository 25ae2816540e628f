//! The agent: watch sources and reconcile forever, serving metrics. Start
//! at [`run`].
//!
//! Each source (a directory or a git repository) is its own project with its
//! own controller; all of them share the host. Container exits wake every
//! controller; each only touches what its project owns.
//!
//! - `sources`: the task behind each source, feeding its controller;
//! - `exits`: container exits, turned into triggers;
//! - `status`: what `/status` and `/readyz` say;
//! - `http`: the endpoint and the git webhooks;
//! - `control`: the control socket (`moor suspend`, `resume`, `reconcile`, `rollback`);
//! - `history`: each source's revision history on disk (`moor history`);
//! - `notify`: notifications (`[[notify]]`);
//! - `snapshots`: a directory source's files of its healthy revisions,
//!   for a rollback;
//! - `updates`: image updates (`[images.X] update`), between each source
//!   and its controller.
//!
//! It takes a resolved `AgentConfig` and knows nothing of the command line.

pub mod control;
mod exits;
pub mod history;
mod http;
mod notify;
mod snapshots;
mod sources;
mod status;
mod updates;

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use moor_metrics::Metrics;
use moor_reconcile::{Controller, ControllerOptions, Status, Trigger};
use moor_runtime::host::{Host, HostConfig};
use tokio::sync::{Notify, mpsc, watch};

use crate::config::AgentConfig;
use crate::source::{Loader, SharedStatus};
use moor_runtime::image::Event;
use moor_runtime::image::events::SharedObserver;
use status::{AgentStatus, Running};

/// Checks what the configuration names, opens the host and runs the agent
/// until SIGTERM or SIGINT.
pub fn run(state_dir: &Path, mut config: AgentConfig) -> anyhow::Result<ExitCode> {
    // Files named in the configuration are read at each use (so a new
    // token or password applies at once); a mistake is better found now.
    if let Some(file) = &config.status_token_file {
        let token = std::fs::read(file)
            .with_context(|| format!("reading the status_token_file {}", file.display()))?;
        if token.iter().all(u8::is_ascii_whitespace) {
            anyhow::bail!(
                "the status_token_file {} is empty: /status would let nobody in",
                file.display()
            );
        }
    }
    if let Some(file) = &config.registry_auth {
        moor_runtime::image::auth::AuthFile::load(Some(file))?;
    }
    // Secrets enter spec hashes as HMACs under the host's key.
    config.load.secret_key = crate::secret_key::load_or_create(state_dir)?;
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        option_env!("MOOR_COMMIT").unwrap_or("unknown"),
    ));
    let mut host_config = HostConfig::new(state_dir);
    host_config.pull.auth_file = config.registry_auth.clone();
    host_config.pull.verify = config.verify.clone();
    let recorder = metrics.clone();
    host_config.pull.events = Some(SharedObserver(Arc::new(move |e: Event| match e {
        Event::Finished {
            bytes,
            duration,
            result,
            ..
        } => recorder.image_pull(bytes, duration, result.is_ok()),
        Event::Verified { result, .. } => recorder.image_verify(result.is_ok()),
        _ => {}
    })));
    let host = Host::open(host_config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(serve(host, config, state_dir, metrics))
}

async fn serve(
    host: Host,
    config: AgentConfig,
    state_dir: &Path,
    metrics: Arc<Metrics>,
) -> anyhow::Result<ExitCode> {
    let loader = Loader::new(config.host.clone(), config.load.clone());

    let mut running = Vec::new();
    let mut controllers = Vec::new();
    let mut senders: Vec<mpsc::Sender<Trigger>> = Vec::new();
    let mut tasks = Vec::new();
    let mut handles = std::collections::BTreeMap::new();
    let notifier = notify::Notifier::start(&config.notify, &config.host.name, &metrics);
    for source in &config.sources {
        let (tx, rx) = mpsc::channel::<Trigger>(64);
        let (status_tx, status_rx) = watch::channel(Status::default());
        let mut opts = ControllerOptions::new(&source.name);
        opts.resync = config.resync;
        opts.allow_empty = source.allow_empty;
        opts.drift = source.drift;
        opts.mode = source.mode;
        opts.suspended = control::is_suspended(state_dir, &source.name);
        opts.rollback = source.rollback;
        opts.limits = source.limits;
        opts.history = match history::load(state_dir, &source.name) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(source = %source.name, "the revision history is unreadable and starts anew: {e:#}");
                Vec::new()
            }
        };
        if let Some(r) = opts.history.last() {
            moor_reconcile::Recorder::revision_outcome(&*metrics, &source.name, r.outcome);
        }
        metrics.source_rollbacks(&source.name);
        metrics.source_suspended(&source.name, opts.suspended);
        if opts.suspended {
            tracing::warn!(source = %source.name, "suspended (since before this start): `moor resume {}` to apply again", source.name);
        }
        tasks.push(tokio::spawn(history::keep(
            state_dir.to_path_buf(),
            source.name.clone(),
            status_rx.clone(),
        )));
        let status: SharedStatus = Arc::new(Mutex::new(sources::initial_status(source)));
        let wake = Arc::new(Notify::new());
        // The source's desired states pass through its image updates.
        let (source_tx, source_rx) = mpsc::channel::<Trigger>(64);
        let (task, rollbacks) = sources::start_source(
            source,
            state_dir,
            &loader,
            sources::Links {
                status: status.clone(),
                wake: wake.clone(),
                metrics: metrics.clone(),
                controller: source_tx,
            },
            moor_reconcile::refused_after_restart(&opts.history),
        )?;
        tasks.push(task);
        let images: updates::Shared = Arc::default();
        let updater = updates::Updater {
            source: source.name.clone(),
            host: host.clone(),
            state_dir: state_dir.to_path_buf(),
            metrics: metrics.clone(),
            notifier: notifier.clone(),
            view: images.clone(),
            status: status_rx.clone(),
        };
        tasks.push(tokio::spawn(updater.run(source_rx, tx.clone())));
        if let Some(r) = rollbacks {
            opts.restore = Some(r.restore);
            opts.load_revision = Some(r.load);
        }
        if let crate::config::SourceKind::Dir { .. } = source.kind {
            opts.snapshots = Some(Arc::new(snapshots::DirSnapshots::new(
                state_dir,
                &source.name,
            )));
        }
        let controller = Controller::new(host.clone(), opts);
        let recorder = metrics.clone();
        controllers.push(tokio::spawn(async move {
            controller.run(rx, status_tx, &*recorder).await;
        }));
        if !notifier.is_empty() {
            tasks.push(tokio::spawn(
                notifier
                    .clone()
                    .watch(source.name.clone(), status_rx.clone()),
            ));
        }
        handles.insert(
            source.name.clone(),
            control::Handle {
                triggers: tx.clone(),
                controller: status_rx.clone(),
                wake: wake.clone(),
                status: status.clone(),
                polled: matches!(source.kind, crate::config::SourceKind::Git { .. }),
            },
        );
        senders.push(tx);
        running.push(Running {
            config: source.clone(),
            status,
            controller: status_rx,
            wake,
            images,
        });
    }

    // Container exits wake every controller. The engine is listed after
    // every pass and whenever a watched shim exits (a shim exits right after
    // recording its container's exit, or when it is killed), with a slow
    // timer as a safety net: at rest, with no exits, this costs nothing.
    let passes = Arc::new(Notify::new());
    for r in &running {
        let mut rx = r.controller.clone();
        let passes = passes.clone();
        tasks.push(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                passes.notify_one();
            }
        }));
    }
    tasks.push(tokio::spawn(exits::watch_exits(
        host.clone(),
        senders.clone(),
        passes,
    )));

    // The build cache: entries unused for `build_cache_max_age` go, with the
    // layers only they held; checked at start and every hour.
    if let Some(max_age) = config.build_cache_max_age {
        let dir = state_dir.to_path_buf();
        tasks.push(tokio::spawn(async move {
            loop {
                let dir = dir.clone();
                let pruned = tokio::task::spawn_blocking(move || {
                    let images = moor_runtime::image::Images::open(&dir)?;
                    moor_runtime::build::cache::prune_unused(&images, max_age)
                        .map_err(anyhow::Error::from)
                })
                .await;
                match pruned {
                    Ok(Ok(r)) if r.entries > 0 || r.gc.blobs > 0 => tracing::info!(
                        entries = r.entries,
                        blobs = r.gc.blobs,
                        bytes = r.gc.bytes,
                        "pruned the build cache"
                    ),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %format!("{e:#}"), "prune the build cache")
                    }
                    Err(e) => tracing::warn!(error = %e, "prune the build cache"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        }));
    }

    // The control socket.
    let listener = control::bind(state_dir)?;
    let on_suspend: control::OnSuspend = {
        let metrics = metrics.clone();
        Arc::new(move |source: &str, on: bool| metrics.source_suspended(source, on))
    };
    tasks.push(tokio::spawn(control::serve(
        listener,
        state_dir.to_path_buf(),
        handles,
        on_suspend,
    )));

    // The HTTP endpoint.
    let names: Vec<String> = running.iter().map(|r| r.config.name.clone()).collect();
    let status_source = Arc::new(AgentStatus {
        host: host.clone(),
        identity: config.host.clone(),
        sources: running,
    });
    let http = http::start(
        metrics.clone(),
        status_source,
        http::Addresses {
            metrics_addr: config.metrics_addr,
            webhook_addr: config.webhook_addr,
            status_token_file: config.status_token_file.clone(),
        },
    )
    .await?;
    tracing::info!(
        host = %config.host.name,
        sources = %names.join(","),
        "moor agent: metrics on http://{}/metrics",
        http.addr
    );

    // SIGTERM or SIGINT: finish the passes under way and stop; containers keep running.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("moor agent: stopping (containers keep running)");
    for tx in &senders {
        let _ = tx.send(Trigger::Shutdown).await;
    }
    for c in controllers {
        let _ = c.await;
    }
    for t in tasks {
        t.abort();
    }
    http.stop().await;
    let _ = std::fs::remove_file(state_dir.join(control::SOCKET));
    Ok(ExitCode::SUCCESS)
}
