//! `moor agent`: watch sources and reconcile forever, serving metrics.
//!
//! Each source (a directory or a git repository) is its own project with its
//! own controller; all of them share the host. Container exits wake every
//! controller; each only touches what its project owns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use moor_metrics::{Metrics, StatusSource};
use moor_reconcile::{Controller, ControllerOptions, Status, Trigger};
use moor_runtime::container::ExitWatch;
use moor_runtime::host::{Host, HostConfig};
use tokio::sync::{Notify, mpsc, watch};

use crate::cmd::stack::parse_duration;
use crate::config::{self, AgentConfig, Overrides, SourceConfig, SourceKind, SourceSection};
use crate::source::git::{GitAuth, GitConfig, GitSource, Secret, VerifyConfig};
use crate::source::poll::{Fetched, Sinks};
use crate::source::webhook;
use crate::source::{Loader, SharedStatus, SourceStatus};

/// `moor agent`
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// What to watch: a manifest directory, or a git repository
    /// (`git+https://…`, `git+ssh://…`, `git+file://…`, `git+git://…`).
    /// More sources go in the configuration file.
    #[arg(long, value_name = "DIR|git+URL")]
    pub source: Option<String>,
    /// The project the source's resources belong to (default: the directory's
    /// or the repository's name).
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// Git: the branch, tag or commit to follow (default: the remote's HEAD).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Git: the sub-directory holding the manifests.
    #[arg(long, value_name = "SUBDIR")]
    pub path: Option<PathBuf>,
    /// Git: the poll interval.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Git: enable `POST /hooks/git/<project>` with the secret in this file.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Git over https: a file holding the access token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Git over https: the user name.
    #[arg(long)]
    pub username: Option<String>,
    /// Git over https: a file holding the password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Git over ssh: the private key.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// Git over ssh: the known host keys (required; host keys are checked).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Git: apply only commits signed by a key in this SSH `allowed_signers` file.
    #[arg(long, value_name = "FILE")]
    pub verify_allowed_signers: Option<PathBuf>,
    /// Git: apply only commits signed by this OpenPGP public key (repeatable).
    #[arg(long, value_name = "FILE")]
    pub verify_pgp_key: Vec<PathBuf>,
    /// The configuration file (default: /etc/moor/agent.toml, when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to serve /metrics, /healthz, /readyz, /status and the webhooks
    /// [default: 127.0.0.1:9464].
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the git webhooks on this address instead, and not on --metrics-addr.
    #[arg(long, value_name = "ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// Answer /status only with `Authorization: Bearer <this file's content>`.
    #[arg(long, value_name = "FILE")]
    pub status_token_file: Option<PathBuf>,
    /// Registry credentials, in the `auths` format of Docker's config.json
    /// [default: /etc/moor/auth.json, when it exists].
    #[arg(long, value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,
    /// Refuse manifest files larger than this (bytes, or with k/m/g) [default: 4m].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_manifest_size: Option<u64>,
    /// Time between full reconciles when nothing triggers one [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub resync: Option<Duration>,
    /// Directory: quiet time after a file change before it is reloaded.
    #[arg(long, value_name = "DURATION")]
    pub debounce: Option<String>,
    /// Let a source with no resources remove everything the project owns.
    #[arg(long)]
    pub allow_empty: bool,
    /// This host's name for manifests' `target.hosts` (default: the machine's).
    #[arg(long)]
    pub host_name: Option<String>,
    /// A label of this host for manifests' `target.labels` (repeatable).
    #[arg(long = "host-label", value_name = "KEY=VALUE", value_parser = config::parse_label)]
    pub host_labels: Vec<(String, String)>,
}

impl AgentArgs {
    fn overrides(&self) -> Overrides {
        let source = self.source.as_ref().map(|url| SourceSection {
            name: self.project.clone(),
            url: url.clone(),
            reference: self.reference.clone(),
            path: self.path.clone(),
            interval: self.interval.clone(),
            debounce: self.debounce.clone(),
            allow_empty: self.allow_empty,
            webhook_secret_file: self.webhook_secret_file.clone(),
            auth: config::AuthSection {
                token_file: self.token_file.clone(),
                username: self.username.clone(),
                password_file: self.password_file.clone(),
                ssh_key_file: self.ssh_key.clone(),
                known_hosts: self.known_hosts.clone(),
                ..config::AuthSection::default()
            },
            verify: config::VerifySection {
                allowed_signers: self.verify_allowed_signers.clone(),
                pgp_keys: self.verify_pgp_key.clone(),
            },
        });
        Overrides {
            config: self.config.clone(),
            source,
            metrics_addr: self.metrics_addr,
            webhook_addr: self.webhook_addr,
            status_token_file: self.status_token_file.clone(),
            registry_auth: self.registry_auth.clone(),
            resync: self.resync,
            max_manifest_size: self.max_manifest_size,
            host_name: self.host_name.clone(),
            host_labels: self.host_labels.iter().cloned().collect(),
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    moor_spec::units::parse_size(s)
}

/// A source the agent runs.
struct Running {
    config: SourceConfig,
    status: SharedStatus,
    controller: watch::Receiver<Status>,
    /// Wakes a polled source at once (its webhook).
    wake: Arc<Notify>,
}

struct AgentStatus {
    host: Host,
    host_name: String,
    host_labels: BTreeMap<String, String>,
    sources: Vec<Running>,
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
        self.sources.iter().all(|s| s.controller.borrow().ready)
    }

    fn status(&self) -> serde_json::Value {
        // Observed container states, read now (not at the last pass).
        // By instance name; of two containers of one instance (a start-first
        // update under way), the current one.
        let health_dir = self.host.engine().state_dir().join("health");
        let mut current: BTreeMap<String, ((bool, u8, u64), serde_json::Value)> = BTreeMap::new();
        for i in self.host.engine().list().unwrap_or_default() {
            let health = moor_runtime::host::read_health(&health_dir, &i.record.name);
            let rank = moor_runtime::host::instances::preference(
                i.status.is_active(),
                moor_runtime::host::instances::recorded_health(&health_dir, &i.record.name),
                i.record.created_ms,
            );
            let name = i.record.instance().to_string();
            if current.get(&name).is_none_or(|(r, _)| *r < rank) {
                let value = serde_json::json!({ "state": i.status.name(), "health": health });
                current.insert(name, (rank, value));
            }
        }
        let observed: BTreeMap<String, serde_json::Value> =
            current.into_iter().map(|(n, (_, v))| (n, v)).collect();
        let mut sources = Vec::new();
        let mut resources = Vec::new();
        let mut last_reconcile: Option<f64> = None;
        for s in &self.sources {
            let st = s.status.lock().expect("status poisoned").clone();
            let c = s.controller.borrow();
            let finished = c
                .last_reconcile
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64());
            last_reconcile = match (last_reconcile, finished) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let mut source = serde_json::to_value(&st).expect("plain data");
            source["project"] = s.config.name.clone().into();
            source["applied_revision"] = c.revision.clone().into();
            source["manifest_error"] = c.source_error.clone().into();
            source["last_reconcile"] = finished.into();
            source["last_error"] = c.last_error.clone().into();
            source["reconciles"] = c.reconciles.into();
            source["ready"] = c.ready.into();
            sources.push(source);
            for cond in c.conditions.values() {
                let mut r = serde_json::to_value(cond).expect("plain data");
                r["project"] = s.config.name.clone().into();
                if cond.kind == moor_spec::Kind::Container {
                    r["observed"] = observed
                        .get(&cond.name)
                        .cloned()
                        .unwrap_or_else(|| serde_json::json!({"state": "absent"}));
                }
                resources.push(r);
            }
        }
        let last_error = self.sources.iter().find_map(|s| {
            let c = s.controller.borrow();
            c.last_error
                .clone()
                .or_else(|| c.source_error.clone())
                .map(|e| format!("{}: {e}", s.config.name))
        });
        serde_json::json!({
            "host": { "name": self.host_name, "labels": self.host_labels },
            // The single project when there is one source, as before.
            "project": (self.sources.len() == 1).then(|| self.sources[0].config.name.clone()),
            "ready": self.ready(),
            "last_reconcile": last_reconcile,
            "last_error": last_error,
            "reconciles": self.sources.iter().map(|s| s.controller.borrow().reconciles).sum::<u64>(),
            "sources": sources,
            "resources": resources,
        })
    }
}

/// How often the engine is listed even when no shim exited and no pass ran.
const EXIT_SAFETY_NET: Duration = Duration::from_secs(10);

/// Sends [`Trigger::HostChanged`] to every controller whenever a container's
/// state changes: waits on the pidfds of the active containers' shims, on
/// the end of any pass (which may have started or stopped containers) and
/// on a slow timer; polls every 500 ms only where the kernel has no pidfds.
async fn watch_exits(host: Host, senders: Vec<mpsc::Sender<Trigger>>, passes: Arc<Notify>) {
    let mut last: Option<Vec<(String, &'static str)>> = None;
    loop {
        let engine_host = host.clone();
        let listed = tokio::task::spawn_blocking(move || engine_host.engine().list()).await;
        let Ok(Ok(list)) = listed else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let now: Vec<(String, &'static str)> = list
            .iter()
            .map(|i| (i.record.name.clone(), i.status.name()))
            .collect();
        if last.as_ref().is_some_and(|l| *l != now) {
            for tx in &senders {
                // A full queue already holds a pass; nothing is lost.
                let _ = tx.try_send(Trigger::HostChanged);
            }
        }
        last = Some(now);
        let shims: Vec<(i32, u64)> = list
            .iter()
            .filter(|i| i.status.is_active())
            .filter_map(|i| i.shim.map(|s| (s.shim_pid, s.shim_start_ticks)))
            .collect();
        match ExitWatch::new(shims.iter().copied()) {
            // A shim exited between the listing and the watch: list again.
            Some(watch) if watch.len() < shims.len() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(watch) => {
                tokio::select! {
                    _ = watch.any_exit() => {}
                    _ = passes.notified() => {}
                    _ = tokio::time::sleep(EXIT_SAFETY_NET) => {}
                }
            }
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

pub fn run(state_dir: &Path, args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let config = config::resolve(args.overrides())?;
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
    let mut host_config = HostConfig::new(state_dir);
    host_config.pull.auth_file = config.registry_auth.clone();
    let host = Host::open(host_config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(serve(host, config, state_dir))
}

async fn serve(host: Host, config: AgentConfig, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        option_env!("MOOR_COMMIT").unwrap_or("unknown"),
    ));
    let loader = Loader::new(
        moor_spec::HostIdentity {
            name: config.host_name.clone(),
            labels: config.host_labels.clone(),
        },
        config.load.clone(),
    );

    let mut running = Vec::new();
    let mut controllers = Vec::new();
    let mut senders: Vec<mpsc::Sender<Trigger>> = Vec::new();
    let mut tasks = Vec::new();
    for source in &config.sources {
        let (tx, rx) = mpsc::channel::<Trigger>(64);
        let (status_tx, status_rx) = watch::channel(Status::default());
        let mut opts = ControllerOptions::new(&source.name);
        opts.resync = config.resync;
        opts.allow_empty = source.allow_empty;
        let controller = Controller::new(host.clone(), opts);
        let recorder = metrics.clone();
        controllers.push(tokio::spawn(async move {
            controller.run(rx, status_tx, &*recorder).await;
        }));
        let status: SharedStatus = Arc::new(Mutex::new(SourceStatus::new(source)));
        let wake = Arc::new(Notify::new());
        tasks.push(start_source(
            source,
            state_dir,
            &loader,
            &status,
            &wake,
            &metrics,
            tx.clone(),
        )?);
        senders.push(tx);
        running.push(Running {
            config: source.clone(),
            status,
            controller: status_rx,
            wake,
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
    tasks.push(tokio::spawn(watch_exits(
        host.clone(),
        senders.clone(),
        passes,
    )));

    // The HTTP endpoint.
    let names: Vec<String> = running.iter().map(|r| r.config.name.clone()).collect();
    let status_source = Arc::new(AgentStatus {
        host: host.clone(),
        host_name: config.host_name.clone(),
        host_labels: config.host_labels.clone(),
        sources: running,
    });
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let hooks: BTreeMap<String, Hook> = status_source
        .sources
        .iter()
        .map(|r| {
            let hook = Hook {
                secret_file: match r.config.kind {
                    SourceKind::Git { .. } => r.config.webhook_secret_file.clone(),
                    SourceKind::Dir { .. } => None,
                },
                wake: r.wake.clone(),
            };
            (r.config.name.clone(), hook)
        })
        .collect();
    let main = moor_metrics::router(
        metrics.clone(),
        status_source.clone(),
        config.status_token_file.clone(),
    );
    let hooks = axum::Router::new()
        .route("/hooks/git/{source}", axum::routing::post(git_hook))
        .with_state(Arc::new(hooks));
    let limits = moor_metrics::Limits::default();
    // The webhooks on their own address when asked, so that what faces the
    // forge is not the status page.
    let (main, hook_server) = match config.webhook_addr {
        Some(hook_addr) => {
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let (addr, serve) = moor_metrics::serve(hook_addr, hooks, limits.clone(), async {
                let _ = stop_rx.await;
            })
            .await?;
            tracing::info!("moor agent: git webhooks on http://{addr}/hooks/git/");
            (main, Some((stop_tx, tokio::spawn(serve))))
        }
        None => (main.merge(hooks), None),
    };
    let (addr, http) = moor_metrics::serve(config.metrics_addr, main, limits, async {
        let _ = stop_http_rx.await;
    })
    .await?;
    let http = tokio::spawn(http);
    tracing::info!(
        host = %config.host_name,
        sources = %names.join(","),
        "moor agent: metrics on http://{addr}/metrics"
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
    let _ = stop_http_tx.send(());
    let _ = http.await;
    if let Some((stop, task)) = hook_server {
        let _ = stop.send(());
        let _ = task.await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts the task that feeds `source`'s controller.
fn start_source(
    source: &SourceConfig,
    state_dir: &Path,
    loader: &Loader,
    status: &SharedStatus,
    wake: &Arc<Notify>,
    metrics: &Arc<Metrics>,
    controller: mpsc::Sender<Trigger>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    match &source.kind {
        SourceKind::Dir { path, debounce } => {
            let (tx, mut rx) = mpsc::channel::<Trigger>(8);
            let (name, status, metrics) = (source.name.clone(), status.clone(), metrics.clone());
            let watcher = tokio::spawn(crate::source::dir::watch(
                path.clone(),
                *debounce,
                loader.clone(),
                tx,
            ));
            Ok(tokio::spawn(async move {
                while let Some(t) = rx.recv().await {
                    if let Trigger::Source { revision, result } = &t {
                        metrics.source_sync(
                            &name,
                            revision.as_deref(),
                            result.is_ok(),
                            crate::source::unix_now(),
                        );
                        let mut st = status.lock().expect("status poisoned");
                        match (revision, result) {
                            (Some(rev), Ok(_)) => {
                                tracing::info!(source = %name, revision = %rev, "directory loaded");
                                st.synced(rev, None);
                            }
                            (_, Err(e)) => st.failed(e),
                            (None, Ok(_)) => {}
                        }
                    }
                    if controller.send(t).await.is_err() {
                        break;
                    }
                }
                watcher.abort();
            }))
        }
        SourceKind::Git {
            url,
            reference,
            path,
            interval,
            auth,
            verify,
        } => {
            let secret = |file: &Option<PathBuf>, env: &Option<String>| {
                file.clone()
                    .map(Secret::File)
                    .or_else(|| env.clone().map(Secret::Env))
            };
            let git = GitConfig {
                url: url.clone(),
                reference: reference.clone(),
                path: path.clone(),
                auth: GitAuth {
                    username: auth.username.clone(),
                    password: secret(&auth.token_file, &auth.token_env)
                        .or_else(|| secret(&auth.password_file, &auth.password_env)),
                    ssh_key: auth.ssh_key_file.clone(),
                    ssh_passphrase: auth.ssh_passphrase_file.clone().map(Secret::File),
                    known_hosts: auth.known_hosts.clone(),
                },
                verify: verify.enabled().then(|| VerifyConfig {
                    allowed_signers: verify.allowed_signers.clone(),
                    openpgp_keys: verify.pgp_keys.clone(),
                }),
                ..GitConfig::default()
            };
            let cache = state_dir.join("sources").join(&source.name);
            let mut repo = GitSource::open(&source.name, git, &cache);
            // What a previous run checked out (and verified) goes in force at
            // once, so a restart while the remote is down keeps the host as it was.
            let initial = repo.last_checkout().map(|s| Fetched {
                revision: s.commit,
                subject: s.subject,
                dir: s.dir,
            });
            // A commit goes in force (`current`) only when its manifests
            // load: after a bad commit, the state in force keeps seeing its
            // own files (bind sources next to the manifests included).
            let checker = loader.clone();
            let fetch = move || {
                let mut accept = |dir: &Path| checker.load(dir).map(drop);
                let s = repo.sync_checked(&mut accept).map_err(|e| {
                    if e.is_verification() {
                        tracing::error!(source = %repo.name(), "commit refused: {e}");
                    }
                    e.to_string()
                })?;
                if let Some(why) = &s.recloned {
                    tracing::warn!(
                        source = %repo.name(),
                        url = %repo.redacted_url(),
                        "the local clone was damaged and was cloned again: {why}"
                    );
                }
                Ok(Fetched {
                    revision: s.commit,
                    subject: s.subject,
                    dir: s.dir,
                })
            };
            Ok(tokio::spawn(crate::source::poll::run(
                source.name.clone(),
                initial,
                fetch,
                *interval,
                wake.clone(),
                loader.clone(),
                Sinks {
                    status: status.clone(),
                    metrics: metrics.clone(),
                    triggers: controller,
                },
            )))
        }
    }
}

/// A source's webhook: its secret's file (None: not enabled) and what it wakes.
#[derive(Debug)]
struct Hook {
    secret_file: Option<PathBuf>,
    wake: Arc<Notify>,
}

/// `POST /hooks/git/<source>`: a push webhook from GitHub, Gitea/Forgejo or
/// GitLab. A request that proves it knows the secret wakes the source at once
/// (202); a bad or missing signature gets 401 and wakes nothing. Neither the
/// body nor the secret is ever logged.
async fn git_hook(
    axum::extract::State(hooks): axum::extract::State<Arc<BTreeMap<String, Hook>>>,
    axum::extract::Path(source): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let Some(hook) = hooks.get(&source) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no source named {source:?}\n"),
        );
    };
    let Some(file) = &hook.secret_file else {
        return (
            StatusCode::NOT_FOUND,
            format!("source {source:?} has no webhook (give it webhook_secret_file)\n"),
        );
    };
    let read = tokio::task::spawn_blocking({
        let file = file.clone();
        move || Secret::File(file).read()
    })
    .await;
    let secret = match read
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(source = %source, "webhook refused: {e}");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the webhook secret cannot be read\n".into(),
            );
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match webhook::verify(header, &body, secret.as_bytes()) {
        Ok(provider) => {
            tracing::info!(source = %source, provider = ?provider, "webhook: fetching now");
            hook.wake.notify_one();
            (StatusCode::ACCEPTED, "fetching\n".into())
        }
        Err(e) => {
            tracing::warn!(source = %source, "webhook refused: {e}");
            (StatusCode::UNAUTHORIZED, format!("{e}\n"))
        }
    }
}
