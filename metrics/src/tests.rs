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
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, buf)
}

#[tokio::test]
async fn endpoint_serves_metrics_health_readiness_and_status() {
    let metrics = Arc::new(Metrics::new("0.1.0", "unknown"));
    let source = Arc::new(Fake {
        ready: AtomicBool::new(false),
    });
    let app = router(metrics.clone(), source.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, serve) = bind("127.0.0.1:0".parse().expect("addr"), app, async {
        let _ = rx.await;
    })
    .await
    .expect("bind");
    let server = tokio::spawn(serve);
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
    tx.send(()).expect("server alive");
    server.await.expect("join").expect("clean shutdown");
}
