//! `moor agent`: watch a source and reconcile forever, serving metrics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use moor_metrics::{Metrics, StatusSource};
use moor_reconcile::{Controller, ControllerOptions, Status, Trigger};
use moor_runtime::host::{Host, HostConfig};
use tokio::sync::{mpsc, watch};

use crate::cmd::stack::{ProjectArgs, parse_duration, project_name};

/// `moor agent`
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The manifest directory to watch.
    #[arg(long, value_name = "DIR")]
    pub source: PathBuf,
    /// The project the resources belong to (default: the directory's name).
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// Where to serve /metrics, /healthz, /readyz and /status.
    #[arg(long, default_value = moor_metrics::DEFAULT_ADDR)]
    pub metrics_addr: SocketAddr,
    /// Time between full reconciles when nothing triggers one.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub resync: Duration,
    /// Quiet time after a file change before the directory is reloaded.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Let a source with no resources remove everything the project owns.
    #[arg(long)]
    pub allow_empty: bool,
}

struct AgentStatus {
    host: Host,
    project: String,
    source: PathBuf,
    status: watch::Receiver<Status>,
}

impl StatusSource for AgentStatus {
    fn before_scrape(&self, metrics: &Metrics) {
        for (name, u) in self.host.usage() {
            let usage = moor_metrics::ContainerUsage {
                cpu_seconds: u.cpu_seconds,
                memory_bytes: u.memory_bytes,
                pids: u.pids,
            };
            metrics.container_usage(&name, usage);
        }
    }

    fn ready(&self) -> bool {
        self.status.borrow().ready
    }

    fn status(&self) -> serde_json::Value {
        let s = self.status.borrow();
        serde_json::json!({
            "project": self.project,
            "sources": [{
                "name": self.project,
                "kind": "directory",
                "path": self.source,
                "revision": s.revision,
                "error": s.source_error,
            }],
            "ready": s.ready,
            "last_reconcile": s.last_reconcile.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()),
            "last_error": s.last_error,
            "reconciles": s.reconciles,
            "resources": s.conditions.values().collect::<Vec<_>>(),
        })
    }
}

pub fn run(state_dir: &Path, args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let project = project_name(&ProjectArgs {
        paths: vec![args.source.clone()],
        project: args.project.clone(),
    })?;
    let host = Host::open(HostConfig::new(state_dir))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(serve(host, project, args))
}

async fn serve(host: Host, project: String, args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        option_env!("MOOR_COMMIT").unwrap_or("unknown"),
    ));
    let (tx, rx) = mpsc::channel::<Trigger>(64);
    let (status_tx, status_rx) = watch::channel(Status::default());

    let mut opts = ControllerOptions::new(&project);
    opts.resync = args.resync;
    opts.allow_empty = args.allow_empty;
    let controller = Controller::new(host.clone(), opts);
    let recorder = metrics.clone();
    let control = tokio::spawn(async move { controller.run(rx, status_tx, &*recorder).await });

    // The directory source.
    let (source_tx, mut source_rx) = mpsc::channel::<Trigger>(8);
    let watcher = tokio::spawn(crate::source::dir::watch(
        args.source.clone(),
        args.debounce,
        source_tx,
    ));
    let forward_tx = tx.clone();
    let source_name = project.clone();
    let source_metrics = metrics.clone();
    tokio::spawn(async move {
        while let Some(t) = source_rx.recv().await {
            if let Trigger::Source { revision, result } = &t {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                source_metrics.source_sync(&source_name, revision.as_deref(), result.is_ok(), now);
                match result {
                    Ok(_) => eprintln!("source: revision {}", revision.as_deref().unwrap_or("-")),
                    Err(e) => eprint!(
                        "source: invalid manifests; the last good state stays in force:\n{e}"
                    ),
                }
            }
            if forward_tx.send(t).await.is_err() {
                break;
            }
        }
    });

    // Container exits: a cheap poll of the engine's view of its containers.
    let exit_tx = tx.clone();
    let watched = host.clone();
    tokio::spawn(async move {
        let mut last: Option<Vec<(String, &'static str)>> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let engine_host = watched.clone();
            let now = tokio::task::spawn_blocking(move || {
                engine_host.engine().list().map(|l| {
                    l.into_iter()
                        .map(|i| (i.record.name, i.status.name()))
                        .collect::<Vec<_>>()
                })
            })
            .await;
            let Ok(Ok(now)) = now else { continue };
            if last.as_ref().is_some_and(|l| *l != now)
                && exit_tx.send(Trigger::HostChanged).await.is_err()
            {
                break;
            }
            last = Some(now);
        }
    });

    // The HTTP endpoint.
    let status_source = Arc::new(AgentStatus {
        host: host.clone(),
        project: project.clone(),
        source: args.source.clone(),
        status: status_rx,
    });
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let app = moor_metrics::router(metrics.clone(), status_source);
    let (addr, http) = moor_metrics::bind(args.metrics_addr, app, async {
        let _ = stop_http_rx.await;
    })
    .await?;
    let http = tokio::spawn(http);
    eprintln!(
        "moor agent: project {project}, source {}, metrics on http://{addr}/metrics",
        args.source.display()
    );

    // SIGTERM or SIGINT: finish the pass under way and stop; containers keep running.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("moor agent: stopping (containers keep running)");
    let _ = tx.send(Trigger::Shutdown).await;
    let _ = control.await;
    watcher.abort();
    let _ = stop_http_tx.send(());
    let _ = http.await;
    Ok(ExitCode::SUCCESS)
}
