//! The metrics and the endpoint, over real HTTP on loopback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moor_reconcile::{ContainerState, Health, Observed, ObservedContainer, Recorder, Verb};
use moor_spec::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::*;

fn container(restarts: u32, state: ContainerState) -> ObservedContainer {
    ObservedContainer {
        id: String::new(),
        project: Some("demo".into()),
        resource: "web".into(),
        replica: 1,
        hash: moor_spec::hash::volume(&Default::default()),
        spec: None,
        networks: vec![],
        volumes: vec![],
        state,
        health: Health::Healthy,
        restart_count: restarts,
        started_at: None,
        finished_at: None,
        fault: None,
        hold: None,
    }
}

#[test]
fn recorder_and_host_view_fill_the_metrics() {
    let m = Metrics::new("0.1.0", "abc123");
    m.reconcile(true, Duration::from_millis(12));
    m.reconcile(false, Duration::from_millis(3));
    m.action(Kind::Container, Verb::Create, true);
    m.action(Kind::Network, Verb::Create, false);
    m.drift(Kind::Container);
    m.queue(2, 5);
    m.source_sync("main", Some("0123abcd"), true, 1_700_000_000.0);
    m.source_sync("main", Some("4567ef01"), true, 1_700_000_100.0);
    m.image_pull(1024, Duration::from_secs(2), true);
    m.build(true, Duration::from_secs(4));
    m.build(false, Duration::from_millis(300));
    m.action(Kind::Image, Verb::Build, false);
    let desired = moor_spec::load_texts(&[(
        "/m/a.toml".into(),
        "[containers.web]\nimage = \"busybox\"\nreplicas = 2\n".to_string(),
    )])
    .expect("valid");
    let mut observed = Observed::default();
    observed
        .containers
        .insert("web".into(), container(0, ContainerState::Running));
    m.host(
        &desired,
        &observed,
        "demo",
        &BTreeMap::from([(Kind::Container, 1)]),
    );
    observed.containers.insert(
        "web".into(),
        container(
            3,
            ContainerState::Exited {
                code: 1,
                oom: false,
            },
        ),
    );
    m.host(&desired, &observed, "demo", &BTreeMap::new());
    m.container_usage(
        "web",
        ContainerUsage {
            cpu_seconds: 1.5,
            memory_bytes: 4096,
            pids: 3,
        },
    );
    let text = m.encode();
    for line in [
        "moor_build_info{commit=\"abc123\",version=\"0.1.0\"} 1",
        "moor_reconcile_total{result=\"success\"} 1",
        "moor_reconcile_total{result=\"failure\"} 1",
        "moor_reconcile_duration_seconds_count 2",
        "moor_actions_total{action=\"create\",kind=\"container\",result=\"success\"} 1",
        "moor_reconcile_errors_total{kind=\"network\"} 1",
        "moor_drift_detected_total{kind=\"container\"} 1",
        "moor_workqueue_depth 2",
        "moor_workqueue_retries_total 5",
        "moor_source_sync_total{result=\"success\",source=\"main\"} 2",
        "moor_source_revision_info{revision=\"4567ef01\",source=\"main\"} 1",
        "moor_source_last_sync_timestamp_seconds{source=\"main\"} 1700000100",
        "moor_image_pull_bytes_total 1024",
        "moor_build_total{result=\"success\"} 1",
        "moor_build_total{result=\"failure\"} 1",
        "moor_build_duration_seconds_count 2",
        "moor_build_duration_seconds_bucket{le=\"0.5\"} 1",
        "moor_actions_total{action=\"build\",kind=\"image\",result=\"failure\"} 1",
        "moor_resources{kind=\"container\",state=\"desired\"} 2",
        "moor_resources{kind=\"container\",state=\"observed\"} 1",
        "moor_container_state{container=\"web\",state=\"exited\"} 1",
        "moor_container_state{container=\"web\",state=\"running\"} 0",
        "moor_container_restarts_total{container=\"web\"} 3",
        "moor_container_health{container=\"web\"} 1",
        "moor_container_cpu_seconds_total{container=\"web\"} 1.5",
        "moor_container_memory_bytes{container=\"web\"} 4096",
        "moor_container_pids{container=\"web\"} 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        !text.contains("0123abcd"),
        "an old revision's series is removed"
    );
    // A container that is gone takes its series with it.
    m.host(&desired, &Observed::default(), "demo", &BTreeMap::new());
    assert!(!m.encode().contains("container=\"web\""));
}

#[test]
fn image_info_holds_the_images_in_use_and_nothing_stale() {
    let m = Metrics::new("0.1.0", "abc");
    let d1 = format!("sha256:{}", "1".repeat(64));
    let d2 = format!("sha256:{}", "2".repeat(64));
    m.images([("app", "localhost:5000/app:1.4.0", d1.as_str())]);
    m.image_update_check("unchanged");
    m.image_update_check("failure");
    let text = m.encode();
    let want = format!(
        "moor_image_info{{digest=\"{d1}\",image=\"app\",reference=\"localhost:5000/app:1.4.0\"}} 1"
    );
    assert!(text.lines().any(|l| l == want), "missing {want} in\n{text}");
    assert!(text.contains("moor_image_update_checks_total{result=\"failure\"} 1"));
    // Resolved anew: the old digest's series goes.
    m.images([("app", "localhost:5000/app:1.10.0", d2.as_str())]);
    let text = m.encode();
    assert!(!text.contains(&d1), "{text}");
    assert!(text.contains(&d2));
}

struct Fake {
    ready: AtomicBool,
}

impl StatusSource for Fake {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "resources": [{ "kind": "container", "name": "web", "state": "running" }] })
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    request(
        addr,
        &format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n"),
        b"",
    )
    .await
}

/// Sends `head` and `body` on a new connection; the status code and the
/// whole answer (status 0 when the server closed without answering).
async fn request(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    // The server may answer (413) and close before taking the whole body.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    let buf = String::from_utf8_lossy(&buf).into_owned();
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, buf)
}

/// A running endpoint; stops when dropped.
struct Server {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(app: axum::Router, limits: Limits) -> Server {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, serve) = serve("127.0.0.1:0".parse().expect("addr"), app, limits, async {
            let _ = rx.await;
        })
        .await
        .expect("bind");
        Server {
            addr,
            stop: Some(tx),
            task: Some(tokio::spawn(serve)),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        self.task.take().expect("running").await.expect("join");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn fake(ready: bool) -> Arc<Fake> {
    Arc::new(Fake {
        ready: AtomicBool::new(ready),
    })
}

fn app(token: Option<std::path::PathBuf>) -> axum::Router {
    let metrics = Arc::new(Metrics::new("0.1.0", "unknown"));
    router(metrics, fake(true), token).route(
        "/echo",
        axum::routing::post(|b: axum::body::Bytes| async move { format!("{}\n", b.len()) }),
    )
}

#[tokio::test]
async fn endpoint_serves_metrics_health_readiness_and_status() {
    let metrics = Arc::new(Metrics::new("0.1.0", "unknown"));
    let source = fake(false);
    let app = router(metrics.clone(), source.clone(), None);
    let server = Server::start(app, Limits::default()).await;
    let addr = server.addr;
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    source.ready.store(true, Ordering::SeqCst);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    assert!(body.contains("moor_build_info"), "{body}");
    let (code, body) = get(addr, "/status").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"name\":\"web\""), "{body}");
    assert_eq!(get(addr, "/nope").await.0, 404);
    tokio::time::timeout(Duration::from_secs(60), server.stop())
        .await
        .expect("test timeout expired: the server did not shut down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_keep_a_scrape_out() {
    let server = Server::start(app(None), Limits::default()).await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(
            tokio::net::TcpStream::connect(server.addr)
                .await
                .expect("connect"),
        );
    }
    let (code, body) = tokio::time::timeout(Duration::from_secs(30), get(server.addr, "/metrics"))
        .await
        .expect("test timeout expired: /metrics did not answer");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("moor_build_info"));
    // The server made room by closing the oldest idle connections: it
    // holds no more than its cap.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut closed = 0;
        for s in &idle {
            let mut b = [0u8; 1];
            match s.try_read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => closed += 1,
            }
        }
        if closed >= 1000 - Limits::default().max_connections {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "test timeout expired: only {closed} idle connections were closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_client_that_sends_its_head_one_byte_a_second_is_cut_off() {
    let limits = Limits {
        header_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let server = Server::start(app(None), limits).await;
    let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: slowloris\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut sent = 0;
    let mut answer = Vec::new();
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut buf = [0u8; 512];
        match s.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    assert!(
        sent < head.len(),
        "the whole head was sent one byte a second and the connection is still open"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains(" 200 "),
        "a slow client was served: {answer}"
    );
    // Meanwhile, and after, others are served.
    assert_eq!(get(server.addr, "/healthz").await.0, 200);
}

#[tokio::test]
async fn bodies_over_the_cap_get_413_and_slow_ones_408() {
    let limits = Limits {
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let server = Server::start(app(None), limits).await;
    let post = |n: usize| format!("POST /echo HTTP/1.0\r\nHost: x\r\nContent-Length: {n}\r\n\r\n");
    let small = vec![b'x'; 1000];
    let (code, body) = request(server.addr, &post(small.len()), &small).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.ends_with("\r\n\r\n1000\n"), "{body}");
    let big = vec![b'x'; (1 << 20) + 1];
    let (code, body) = request(server.addr, &post(big.len()), &big).await;
    assert_eq!(code, 413, "{body}");
    // A body that never comes: the request is given up.
    let (code, body) = request(server.addr, &post(100), b"only ten b").await;
    assert_eq!(code, 408, "{body}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_so_is_one_that_does_not_read() {
    let limits = Limits {
        header_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let big = "x".repeat(64 << 20);
    let app = app(None).route(
        "/big",
        axum::routing::get(move || {
            let big = big.clone();
            async move { big }
        }),
    );
    let server = Server::start(app, limits).await;
    // Kept alive after an answer, then silent: closed.
    let mut s = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "test timeout expired: the kept-alive connection stayed open"
    );
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));

    // Asks for 64 MiB and never reads: closed, not held for ever.
    let mut s = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "test timeout expired: the stalled connection stayed open"
    );
    assert!(
        got.len() < 64 << 20,
        "the whole answer arrived: {}",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_idle_ones_make_room_and_busy_ones_do_not() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let app = app(None).route(
        "/slow",
        axum::routing::get(move || {
            let g = g.clone();
            async move {
                g.notified().await;
                "done\n"
            }
        }),
    );
    let server = Server::start(app, limits).await;
    // Two idle connections: a scrape still gets in.
    let _a = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(server.addr, "/healthz").await.0, 200);
    // Two requests under way fill the cap: a third connection is refused.
    let slow = || {
        let addr = server.addr;
        tokio::spawn(async move { get(addr, "/slow").await })
    };
    let (one, two) = (slow(), slow());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, _) = get(server.addr, "/healthz").await;
    assert_eq!(code, 0, "a connection over the cap was served");
    gate.notify_waiters();
    assert_eq!(one.await.unwrap().0, 200);
    assert_eq!(two.await.unwrap().0, 200);
    assert_eq!(get(server.addr, "/healthz").await.0, 200);
}

#[tokio::test]
async fn status_needs_the_token_when_one_is_set_and_the_rest_stays_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret-token\n").unwrap();
    let server = Server::start(app(Some(file.clone())), Limits::default()).await;
    let addr = server.addr;
    let status = |auth: Option<&str>| {
        let head = match auth {
            Some(a) => format!("GET /status HTTP/1.0\r\nHost: x\r\nAuthorization: {a}\r\n\r\n"),
            None => "GET /status HTTP/1.0\r\nHost: x\r\n\r\n".to_string(),
        };
        async move { request(addr, &head, b"").await }
    };
    let (code, body) = status(None).await;
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("www-authenticate: Bearer realm=\"moor\""),
        "{body}"
    );
    assert!(!body.contains("web"), "{body}");
    assert_eq!(status(Some("Bearer wrong")).await.0, 401);
    assert_eq!(status(Some("Bearer s3cret-token-and-more")).await.0, 401);
    assert_eq!(status(Some("Basic s3cret-token")).await.0, 401);
    let (code, body) = status(Some("Bearer s3cret-token")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"name\":\"web\""), "{body}");
    for open in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get(server.addr, open).await.0, 200, "{open}");
    }
    assert_eq!(
        get(server.addr, "/nope").await.0,
        404,
        "only /status is guarded"
    );
    // A new token applies at once; an empty file lets nobody in.
    std::fs::write(&file, "rotated").unwrap();
    assert_eq!(status(Some("Bearer s3cret-token")).await.0, 401);
    assert_eq!(status(Some("Bearer rotated")).await.0, 200);
    std::fs::write(&file, "").unwrap();
    assert_eq!(status(Some("Bearer ")).await.0, 401);
}
