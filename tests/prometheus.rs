//! The examples under examples/prometheus and examples/grafana, and a real
//! Prometheus server (Debian's `prometheus`) scraping a real `moor agent`
//! that runs the example stack.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{self, KillOnDrop, edit, free_port, http_get, wait_for};

const PROJECT: &str = "promstack";

/// `promtool check config` accepts examples/prometheus/prometheus.yml, and it
/// scrapes the agent's default address.
#[test]
fn example_prometheus_config_is_valid() {
    if !common::require(&["promtool"], false) {
        return;
    }
    let config = common::repo_root().join("examples/prometheus/prometheus.yml");
    let out = Command::new(common::which("promtool").expect("promtool"))
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool rejected {}:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&config).expect("read config");
    assert!(text.contains("127.0.0.1:9464"), "{text}");
    assert!(text.contains(moor_metrics::DEFAULT_ADDR), "{text}");
}

/// Every metric the Grafana dashboard queries is one the agent exports.
#[test]
fn example_dashboard_uses_real_metric_names() {
    let path = common::repo_root().join("examples/grafana/moor.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read dashboard"))
            .expect("the dashboard is JSON");
    let exposition = populated_metrics().encode();
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 8, "{exprs:?}");
    for expr in &exprs {
        for name in metric_names(expr) {
            let family = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(
                exposition.contains(&format!("# TYPE {family} ")),
                "the dashboard queries {name}, which moor does not export"
            );
        }
    }
    for title in [
        "Reconcile rate",
        "Reconcile errors",
        "Reconcile duration p95",
        "Resources desired vs observed",
        "Container restarts",
        "CPU per container",
        "Memory per container",
    ] {
        assert!(
            dash["panels"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["title"] == title)),
            "no panel {title:?}"
        );
    }
}

/// Metrics with a series in every family, as a running agent has them.
fn populated_metrics() -> moor_metrics::Metrics {
    use moor_reconcile::{ContainerState, Health, Observed, ObservedContainer, Recorder, Verb};
    let m = moor_metrics::Metrics::new("0", "test");
    m.reconcile(true, Duration::from_millis(5));
    m.action(moor_spec::Kind::Container, Verb::Create, false);
    m.drift(moor_spec::Kind::Container);
    let desired = moor_spec::load(&[common::repo_root().join("examples/manifests")])
        .expect("example is valid");
    let mut observed = Observed::default();
    observed.containers.insert(
        "web".into(),
        ObservedContainer {
            id: String::new(),
            project: Some("manifests".into()),
            resource: "web".into(),
            replica: 1,
            hash: moor_spec::hash::volume(&Default::default()),
            spec: None,
            networks: vec![],
            volumes: vec![],
            state: ContainerState::Running,
            health: Health::Healthy,
            restart_count: 1,
            started_at: None,
            finished_at: None,
            fault: None,
            hold: None,
        },
    );
    m.host(&desired, &observed, "manifests", &BTreeMap::new());
    m.container_usage(
        "web",
        moor_metrics::ContainerUsage {
            cpu_seconds: 0.5,
            memory_bytes: 1 << 20,
            pids: 2,
        },
    );
    m
}

fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    dash["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect()
}

fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("moor_"))
        .map(str::to_string)
        .collect()
}

/// Percent-encodes a PromQL expression for a query string.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on loopback with its own storage, killed on drop.
struct Prometheus {
    _child: KillOnDrop,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("prometheus dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: moor\n    scrape_interval: 1s\n    \
                 static_configs:\n      - targets: [\"127.0.0.1:{target_port}\"]\n"
            ),
        )
        .expect("write prometheus config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = KillOnDrop::spawn(
            Command::new(common::which("prometheus").expect("prometheus"))
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--storage.tsdb.retention.time=1h")
                .stdout(Stdio::null())
                .stderr(log),
        );
        let p = Self {
            _child: child,
            port,
            dir,
        };
        wait_for("prometheus to be ready", Duration::from_secs(60), || {
            http_get(p.port, "/-/ready").is_some_and(|(c, _)| c == 200)
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The result vector of an instant query; panics if Prometheus rejects it.
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let (code, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", url_encode(expr)),
        )
        .unwrap_or_else(|| panic!("prometheus does not answer:\n{}", self.log()));
        let v: serde_json::Value = serde_json::from_str(&body).expect("query answer is JSON");
        assert!(
            code == 200 && v["status"] == "success",
            "query {expr} failed: {body}"
        );
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query that returns one sample, if it does.
    fn value(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        if r.len() != 1 {
            return None;
        }
        r[0]["value"][1].as_str().and_then(|v| v.parse().ok())
    }
}

/// A real Prometheus scrapes the agent every second while it runs the
/// example stack; its HTTP API shows what the agent did.
#[test]
fn prometheus_scrapes_the_agent_running_the_example() {
    let Some(mut s) = Instance::with_busybox(PROJECT, &["prometheus", "promtool"]) else {
        return;
    };
    let src = tempfile::tempdir().expect("source dir");
    let (dir, _) = crate::stack::example(&s, src.path());
    let stack = dir.join("stack.toml");

    // Start with a broken manifest: the agent answers but is not ready.
    edit(&stack, "init     = true", "init     = tru");
    s.start_agent(&[
        "--source",
        dir.to_str().expect("utf-8"),
        "-p",
        PROJECT,
        "--resync",
        "2s",
    ]);
    wait_for("/healthz", Duration::from_secs(30), || {
        http_get(s.port, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    wait_for(
        "the source error in /status",
        Duration::from_secs(30),
        || {
            http_get(s.port, "/status")
                .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["sources"][0]["error"].is_string())
        },
    );
    assert_eq!(
        http_get(s.port, "/readyz").map(|(c, _)| c),
        Some(503),
        "/readyz before the first reconcile\n{}",
        s.agent_log()
    );

    let prom = Prometheus::start(s.port);

    // Fixed: the first reconcile brings the stack up and the agent is ready.
    edit(&stack, "init     = tru", "init     = true");
    wait_for("/readyz to answer 200", Duration::from_secs(90), || {
        http_get(s.port, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    wait_for("both containers running", Duration::from_secs(90), || {
        ["web", "fetcher"].iter().all(|n| {
            s.container(n)
                .is_some_and(|c| c["state"] == "running" && c["pid"].as_i64().is_some())
        })
    });

    // /status lists every resource of the example with its state.
    let (_, body) = http_get(s.port, "/status").expect("/status");
    let status: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
    let resources = status["resources"].as_array().expect("resources").clone();
    for (kind, name) in [
        ("image", "localhost/moor-example/busybox:1"),
        ("image", "localhost/moor-example/web:dev"),
        ("network", "front"),
        ("volume", "site"),
        ("container", "web"),
        ("container", "fetcher"),
    ] {
        let r = resources
            .iter()
            .find(|r| r["kind"] == kind && r["name"] == name)
            .unwrap_or_else(|| panic!("/status does not list {kind} {name}: {status:#}"));
        assert!(
            ["Ready", "Progressing", "Failed"].contains(&r["status"].as_str().unwrap_or("")),
            "{kind} {name} has no state: {r}"
        );
    }
    assert_eq!(resources.len(), 6, "{status:#}");

    // Prometheus sees the agent and both containers.
    wait_for(
        "prometheus to scrape the agent",
        Duration::from_secs(30),
        || prom.value("up{job=\"moor\"}") == Some(1.0),
    );
    wait_for(
        "moor_resources{kind=\"container\",state=\"observed\"} == 2",
        Duration::from_secs(30),
        || prom.value("moor_resources{kind=\"container\",state=\"observed\"}") == Some(2.0),
    );

    // A manifest change: moor_reconcile_total goes up.
    let before = prom
        .value("sum(moor_reconcile_total)")
        .expect("moor_reconcile_total is scraped");
    let web_pid = s.pid("web").expect("web runs");
    edit(&stack, "GREETING = \"hello\"", "GREETING = \"bonjour\"");
    wait_for("web to be replaced", Duration::from_secs(60), || {
        s.pid("web").is_some_and(|p| p != web_pid)
    });
    wait_for(
        "moor_reconcile_total to increase",
        Duration::from_secs(30),
        || {
            prom.value("sum(moor_reconcile_total)")
                .is_some_and(|v| v > before)
        },
    );

    // Kill web by hand: restart = "always" brings it back, and it counts.
    let restarts = |prom: &Prometheus| {
        prom.value("moor_container_restarts_total{container=\"web\"}")
            .unwrap_or(0.0)
    };
    wait_for("the new web's series", Duration::from_secs(30), || {
        prom.value("moor_container_restarts_total{container=\"web\"}")
            .is_some()
    });
    let before = restarts(&prom);
    let web_pid = s.pid("web").expect("web runs");
    let killed = Command::new("kill")
        .args(["-KILL", &web_pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -KILL {web_pid}");
    wait_for("web to be restarted", Duration::from_secs(60), || {
        s.container("web")
            .is_some_and(|c| c["state"] == "running" && c["pid"].as_i64() != Some(web_pid))
    });
    wait_for(
        "moor_container_restarts_total{container=\"web\"} to increase",
        Duration::from_secs(30),
        || restarts(&prom) > before,
    );

    // Its memory, from its cgroup.
    wait_for(
        "moor_container_memory_bytes{container=\"web\"} > 0",
        Duration::from_secs(30),
        || {
            prom.value("moor_container_memory_bytes{container=\"web\"}")
                .is_some_and(|v| v > 0.0)
        },
    );

    // Every query of the Grafana dashboard is valid PromQL with data behind it.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("examples/grafana/moor.json"))
            .expect("read dashboard"),
    )
    .expect("dashboard JSON");
    for expr in dashboard_exprs(&dash) {
        let expr = expr
            .replace("$job", "moor")
            .replace("$__rate_interval", "1m")
            .replace("$__range", "5m");
        prom.query(&expr);
    }
    for expr in [
        "moor_container_memory_bytes",
        "moor_container_cpu_seconds_total",
        "moor_reconcile_duration_seconds_bucket",
        "moor_resources",
    ] {
        assert!(!prom.query(expr).is_empty(), "no series for {expr}");
    }
}
