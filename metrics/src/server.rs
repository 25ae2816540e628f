//! The agent's HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, `/status`,
//! plus whatever routes the agent adds (the git webhook).
//!
//! Start at [`serve`]. The endpoint faces whoever can reach its address, so
//! it defends itself (see [`Limits`]): a client gets [`Limits::header_timeout`]
//! to send its request head, the whole request (body and answer) must be done
//! within [`Limits::request_timeout`], a connection on which no byte moves
//! for [`Limits::idle_timeout`] is closed, bodies over [`Limits::max_body`]
//! get 413, and at most [`Limits::max_connections`] are open at once: a new
//! one then closes the oldest idle one (one between requests, or that has
//! not sent a request yet), so a thousand idle connections cannot keep a
//! scrape out. `/status` can require a bearer token ([`router`]).
//! Handlers that read the disk (`/status`, the cgroup reads before a scrape)
//! run on the blocking pool, never on the async workers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::Metrics;

/// The default address: loopback only, as the README's security model says.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// What the endpoint asks the agent.
pub trait StatusSource: Send + Sync + 'static {
    /// True once every source synced once and the first reconcile finished.
    fn ready(&self) -> bool;
    /// The `/status` document. May read the disk: called on the blocking pool.
    fn status(&self) -> serde_json::Value;
    /// Refreshes metrics that are read on demand (cgroup usage) before a
    /// scrape. May read the disk: called on the blocking pool.
    fn before_scrape(&self, _metrics: &Metrics) {}
}

/// How the endpoint protects itself from its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send a request's head (from the connection, or
    /// from the end of the previous answer on a kept-alive one).
    pub header_timeout: Duration,
    /// Time for a whole request: its body, and the answer; 408 after.
    pub request_timeout: Duration,
    /// A connection on which no byte is read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request body; 413 for more.
    pub max_body: usize,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_body: 1 << 20,
            max_connections: 256,
        }
    }
}

struct Shared {
    metrics: Arc<Metrics>,
    source: Arc<dyn StatusSource>,
}

/// The router for the standard endpoints; merge more routes into it. With
/// `status_token_file`, `/status` answers only requests that carry
/// `Authorization: Bearer <the file's content>` (401 otherwise); the file is
/// read at each request, so a new token applies at once. `/metrics`,
/// `/healthz` and `/readyz` stay open.
pub fn router(
    metrics: Arc<Metrics>,
    source: Arc<dyn StatusSource>,
    status_token_file: Option<PathBuf>,
) -> Router {
    let shared = Arc::new(Shared { metrics, source });
    let mut status_route = Router::new().route("/status", get(status));
    if let Some(file) = status_token_file {
        // `route_layer`: only /status itself; a plain `layer` would also
        // guard the fallback, and so every unknown path.
        status_route = status_route.route_layer(axum::middleware::from_fn_with_state(
            Arc::new(file),
            require_token,
        ));
    }
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(status_route)
        .with_state(shared)
}

async fn metrics_handler(State(s): State<Arc<Shared>>) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        s.source.before_scrape(&s.metrics);
        s.metrics.encode()
    })
    .await;
    match text {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n").into_response(),
    }
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
    match tokio::task::spawn_blocking(move || s.source.status()).await {
        Ok(doc) => axum::Json(doc).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "status failed\n").into_response(),
    }
}

/// Lets a request through only with `Authorization: Bearer <token>`, the
/// token being the file's content (a trailing newline dropped). Compared in
/// constant time; a missing or empty file refuses everything.
async fn require_token(State(file): State<Arc<PathBuf>>, req: Request, next: Next) -> Response {
    let path = (*file).clone();
    let token = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .ok()
        .and_then(Result::ok);
    let Some(mut token) = token else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the status token file cannot be read\n",
        )
            .into_response();
    };
    while token.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        token.pop();
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let ok = match given {
        // Digests, so that neither the length nor the content leaks through timing.
        Some(given) if !token.is_empty() => {
            bool::from(Sha256::digest(given).ct_eq(&Sha256::digest(&token)))
        }
        _ => false,
    };
    if ok {
        return next.run(req).await;
    }
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "/status needs Authorization: Bearer <token> (the agent's status_token_file)\n",
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"moor\""),
    );
    r
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
}

/// Binds `addr`; returns the bound address (useful with port 0) and a future
/// that serves `router` within `limits` until `shutdown` completes (then
/// stops accepting, lets requests under way finish for up to
/// [`Limits::request_timeout`], and returns).
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let router = router.layer(DefaultBodyLimit::max(limits.max_body));
    Ok((local, accept_loop(listener, router, limits, shutdown)))
}

/// One open connection, as the accept loop sees it.
struct Open {
    /// No request is being answered on it.
    idle: Arc<AtomicBool>,
    /// Tells its task to close it.
    close: Arc<Notify>,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Open>,
}

impl Table {
    /// Makes room for one more connection under `max`: closes the oldest
    /// idle one if needed. False when every one is busy.
    fn make_room(&mut self, max: usize) -> bool {
        if self.open.len() < max {
            return true;
        }
        let oldest_idle = self
            .open
            .iter()
            .find(|(_, o)| o.idle.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        match oldest_idle.and_then(|id| self.open.remove(&id)) {
            Some(o) => {
                o.close.notify_one();
                true
            }
            None => false,
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let table = Arc::new(Mutex::new(Table::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, or a connection reset before it
                // was accepted: try again shortly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Reap finished connection tasks as we go.
        while tasks.try_join_next().is_some() {}
        let (id, idle, close) = {
            let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
            if !t.make_room(limits.max_connections) {
                // Every slot is answering a request: refuse this one.
                drop(stream);
                continue;
            }
            let id = t.next;
            t.next += 1;
            let open = Open {
                idle: Arc::new(AtomicBool::new(true)),
                close: Arc::new(Notify::new()),
            };
            let handles = (open.idle.clone(), open.close.clone());
            t.open.insert(id, open);
            (id, handles.0, handles.1)
        };
        let conn = Connection {
            router: router.clone(),
            limits: limits.clone(),
            idle,
            close,
            stop: stop_rx.clone(),
        };
        let table = table.clone();
        tasks.spawn(async move {
            conn.run(stream).await;
            table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .open
                .remove(&id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.request_timeout, drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
}

struct Connection {
    router: Router,
    limits: Limits,
    idle: Arc<AtomicBool>,
    close: Arc<Notify>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let started = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let io = TokioIo::new(Activity {
            inner: stream,
            started,
            last: last.clone(),
        });
        let service = Service {
            inner: TowerToHyperService::new(self.router.clone()),
            idle: self.idle.clone(),
            timeout: self.limits.request_timeout,
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .keep_alive(true)
            .serve_connection(io, service);
        tokio::pin!(conn);
        let idle_for = self.limits.idle_timeout;
        let mut stopping = false;
        loop {
            // The server is stopping: finish the request under way, if
            // any, and close.
            if !stopping && *self.stop.borrow() {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            let quiet_since = started + Duration::from_millis(last.load(Ordering::Relaxed));
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = self.close.notified() => return,
                _ = tokio::time::sleep_until(quiet_since + idle_for) => {
                    let moved = started + Duration::from_millis(last.load(Ordering::Relaxed));
                    if moved + idle_for <= Instant::now() {
                        return;
                    }
                }
                changed = self.stop.changed(), if !stopping => {
                    if changed.is_err() {
                        // The accept loop is gone: stop as well.
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// The router as hyper calls it: each request bounded in time, and the
/// connection marked busy while it is answered.
#[derive(Clone)]
struct Service {
    inner: TowerToHyperService<Router>,
    idle: Arc<AtomicBool>,
    timeout: Duration,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response, Infallible>> + Send + 'static>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        self.idle.store(false, Ordering::Release);
        let answer = hyper::service::Service::call(&self.inner, req);
        let (idle, timeout) = (self.idle.clone(), self.timeout);
        Box::pin(async move {
            let r = tokio::time::timeout(timeout, answer).await;
            idle.store(true, Ordering::Release);
            Ok(match r {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    let mut r = (StatusCode::REQUEST_TIMEOUT, "the request took too long\n")
                        .into_response();
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    r
                }
            })
        })
    }
}

/// A stream that records when a byte last moved either way (milliseconds
/// after `started`).
struct Activity {
    inner: TcpStream,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Activity {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Activity {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
