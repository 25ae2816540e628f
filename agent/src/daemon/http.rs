//! The agent's HTTP endpoint: `/metrics`, `/healthz`, `/readyz` and
//! `/status` (`moor_metrics::router`) and the git webhooks, on one address,
//! or the webhooks on their own (`webhook_addr`) so that what faces the
//! forge is not the status page.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use moor_metrics::Metrics;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use super::status::AgentStatus;
use crate::config::SourceKind;
use crate::source::git::Secret;
use crate::source::webhook;

/// The servers under way; [`Http::stop`] ends them.
#[derive(Debug)]
pub struct Http {
    /// Where the main endpoint listens.
    pub addr: SocketAddr,
    main: (oneshot::Sender<()>, JoinHandle<()>),
    hooks: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// Where to serve, and who may read `/status`.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// The main endpoint (and the webhooks, unless `webhook_addr`).
    pub metrics_addr: SocketAddr,
    /// The webhooks' own address.
    pub webhook_addr: Option<SocketAddr>,
    /// The bearer token `/status` asks for.
    pub status_token_file: Option<PathBuf>,
}

/// Binds and starts serving.
pub async fn start(
    metrics: Arc<Metrics>,
    status: Arc<AgentStatus>,
    at: Addresses,
) -> anyhow::Result<Http> {
    let hooks: BTreeMap<String, Hook> = status
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
    let main = moor_metrics::router(metrics, status, at.status_token_file);
    let hooks = axum::Router::new()
        .route("/hooks/git/{source}", axum::routing::post(git_hook))
        .with_state(Arc::new(hooks));
    let limits = moor_metrics::Limits::default();
    let (main, hook_server) = match at.webhook_addr {
        Some(hook_addr) => {
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let (addr, serve) = moor_metrics::serve(hook_addr, hooks, limits.clone(), async {
                let _ = stop_rx.await;
            })
            .await?;
            tracing::info!("moor agent: git webhooks on http://{addr}/hooks/git/");
            (main, Some((stop_tx, tokio::spawn(serve))))
        }
        None => (main.merge(hooks), None),
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (addr, http) = moor_metrics::serve(at.metrics_addr, main, limits, async {
        let _ = stop_rx.await;
    })
    .await?;
    Ok(Http {
        addr,
        main: (stop_tx, tokio::spawn(http)),
        hooks: hook_server,
    })
}

impl Http {
    /// Stops serving: the main endpoint, then the webhooks.
    pub async fn stop(self) {
        let (stop, task) = self.main;
        let _ = stop.send(());
        let _ = task.await;
        if let Some((stop, task)) = self.hooks {
            let _ = stop.send(());
            let _ = task.await;
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
