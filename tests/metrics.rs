//! The metrics exposition against Prometheus's own checker.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use moor_metrics::{ContainerUsage, Metrics};
use moor_reconcile::{Observed, Recorder, Verb};
use moor_spec::Kind;

use crate::common;

/// `promtool check metrics` (Debian's `prometheus` package) accepts what
/// /metrics serves, with every metric family populated.
#[test]
fn promtool_accepts_the_exposition() {
    if !common::require(&["promtool"], false) {
        return;
    }
    let m = Metrics::new(env!("CARGO_PKG_VERSION"), "test");
    m.reconcile(true, Duration::from_millis(5));
    m.action(Kind::Container, Verb::Create, true);
    m.drift(Kind::Network);
    m.queue(1, 1);
    m.source_sync("main", Some("abc"), true, 1.7e9);
    m.source_suspended("main", true);
    m.images([(
        "app",
        "localhost:5000/app:1",
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    )]);
    m.image_update_check("updated");
    m.notification("success");
    m.notification_dropped();
    m.drift_left("main", &BTreeMap::from([(Kind::Container, 1)]));
    m.image_pull(10, Duration::from_secs(1), true);
    let desired = moor_spec::load(&[common::repo_root().join("examples/manifests")])
        .expect("example is valid");
    m.host(
        &desired,
        &Observed::default(),
        "manifests",
        &BTreeMap::new(),
    );
    m.container_usage(
        "web",
        ContainerUsage {
            cpu_seconds: 0.5,
            memory_bytes: 1 << 20,
            pids: 2,
        },
    );
    let text = m.encode();
    let mut child = Command::new(common::which("promtool").expect("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool rejected the metrics:\n{report}\n{text}"
    );
    assert!(
        report.trim().is_empty(),
        "promtool found problems:\n{report}"
    );
}
