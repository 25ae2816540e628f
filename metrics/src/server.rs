//! The agent's HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, `/status`,
//! plus whatever routes the agent adds (the git webhook).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::Metrics;

/// The default address: loopback only, as DESIGN.md §7 asks.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// What the endpoint asks the agent.
pub trait StatusSource: Send + Sync + 'static {
    /// True once every source synced once and the first reconcile finished.
    fn ready(&self) -> bool;
    /// The `/status` document.
    fn status(&self) -> serde_json::Value;
    /// Refreshes metrics that are read on demand (cgroup usage) before a scrape.
    fn before_scrape(&self, _metrics: &Metrics) {}
}

struct Shared {
    metrics: Arc<Metrics>,
    source: Arc<dyn StatusSource>,
}

/// The router for the standard endpoints; merge more routes into it.
pub fn router(metrics: Arc<Metrics>, source: Arc<dyn StatusSource>) -> Router {
    let shared = Arc::new(Shared { metrics, source });
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(shared)
}

async fn metrics_handler(State(s): State<Arc<Shared>>) -> Response {
    s.source.before_scrape(&s.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if s.source.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: sources have not synced or the first reconcile has not finished\n",
        )
            .into_response()
    }
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.source.status()).into_response()
}

/// Binding or serving the endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Binds `addr`; returns the bound address (useful with port 0) and a future
/// that serves `router` until `shutdown` completes.
pub async fn bind(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = Result<(), ServeError>>,
    ),
    ServeError,
> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let serve = async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Serve)
    };
    Ok((local, serve))
}
