//! `update_order = "start-first"` on the real engine, by `moor apply` and by
//! the agent: the new container of `web` starts and becomes healthy while the
//! old one still runs, then the old one stops; `ps`, `logs`, `exec`,
//! `inspect` and DNS know it as `web`; a new container that never becomes
//! healthy is removed and the old one keeps running.
//!
//! The order is read from what the containers themselves recorded, in a
//! shared volume, as it happened (`start`, `healthy`, `stop` lines), not from
//! timing.

use std::path::Path;
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{self, text};

const PROJECT: &str = "order";

/// `web` with `greeting`; its health check passes once it has started,
/// unless `greeting` is `broken`, and records the first pass.
fn manifest(greeting: &str) -> String {
    let check = if greeting == "broken" {
        "false".to_string()
    } else {
        format!(
            "grep -qx 'start {greeting}' /data/events && \
             {{ grep -qx 'healthy {greeting}' /data/events || echo 'healthy {greeting}' >> /data/events; }}"
        )
    };
    format!(
        r#"
[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[volumes.events]

[networks.uonet]

[containers.client]
image    = "busybox"
command  = ["sleep", "3600"]
networks = ["uonet"]
init     = true

[containers.web]
image        = "busybox"
command      = ["sh", "-c", "echo 'start {greeting}' >> /data/events; echo 'started {greeting}'; trap \"echo 'stop {greeting}' >> /data/events; exit 0\" TERM; while true; do sleep 0.1; done"]
env          = {{ GREETING = "{greeting}" }}
mounts       = ["events:/data"]
networks     = ["uonet"]
init         = true
update_order = "start-first"
stop_grace_period = "5s"
healthcheck  = {{ cmd = ["sh", "-c", "{check}"], interval = "300ms", retries = 2 }}
"#,
        check = check.replace('"', "\\\"")
    )
}

fn apply(host: &Instance, dir: &Path) -> std::process::Output {
    host.moor(&[
        "apply",
        "-p",
        PROJECT,
        "--timeout",
        "90s",
        dir.to_str().expect("utf-8"),
    ])
}

/// The rows of `moor ps --all --json` named `name`.
fn rows(host: &Instance, name: &str) -> Vec<serde_json::Value> {
    host.containers()
        .into_iter()
        .filter(|c| c["name"] == name)
        .collect()
}

/// The events the containers recorded, in order.
fn events(host: &Instance) -> Vec<String> {
    let out = host.moor(&["exec", "web", "--", "cat", "/data/events"]);
    assert!(out.status.success(), "moor exec: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The address of `name`'s current container on its network.
fn address(host: &Instance, name: &str) -> String {
    host.container_ipv4(name).to_string()
}

/// What the network's DNS answers for `name`, asked from `client`.
fn lookup(host: &Instance, name: &str) -> String {
    let out = host.moor(&["exec", "client", "--", "nslookup", name]);
    text(&out)
}

fn position(events: &[String], line: &str) -> usize {
    events
        .iter()
        .position(|e| e == line)
        .unwrap_or_else(|| panic!("no {line:?} in {events:?}"))
}

#[test]
fn start_first_runs_the_new_container_before_stopping_the_old() {
    let Some(mut host) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let src = tempfile::tempdir().expect("source dir");
    let dir = src.path();
    let write = |greeting: &str| {
        std::fs::write(dir.join("stack.toml"), manifest(greeting)).expect("write manifest")
    };

    write("hello");
    let out = apply(&host, dir);
    assert!(out.status.success(), "first apply: {}", text(&out));
    let first = rows(&host, "web");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["host_id"], "web", "created stop-first as before");
    let old_address = address(&host, "web");

    // The update.
    write("bonjour");
    let out = apply(&host, dir);
    assert!(out.status.success(), "update: {}", text(&out));
    let e = events(&host);
    let started = position(&e, "start bonjour");
    let healthy = position(&e, "healthy bonjour");
    let stopped = position(&e, "stop hello");
    assert!(
        position(&e, "healthy hello") < started && started < healthy && healthy < stopped,
        "the old container stops only after the new one is healthy: {e:?}"
    );
    let after = rows(&host, "web");
    assert_eq!(
        after.len(),
        1,
        "exactly one web after the update: {after:?}"
    );
    let id = after[0]["host_id"].as_str().expect("host_id").to_string();
    assert!(id.starts_with("web--"), "{id}");
    assert_eq!(after[0]["state"], "running");
    assert_eq!(
        host.container_env("web", "GREETING").as_deref(),
        Some("bonjour")
    );
    let logs = host.moor(&["logs", "web"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("started bonjour"),
        "moor logs web follows the new container: {}",
        text(&logs)
    );
    let inspect = host.moor(&["inspect", "web"]);
    let inspected: serde_json::Value =
        serde_json::from_slice(&inspect.stdout).expect("inspect json");
    assert_eq!(inspected["name"], "web");
    assert_eq!(inspected["host_id"], id.as_str());
    let hostname = host.moor(&["exec", "web", "--", "hostname"]);
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "web");
    // Its own address; the name now finds it, and only it.
    let new_address = address(&host, "web");
    assert_ne!(new_address, old_address);
    // The network's DNS server runs in the agent.
    host.start_agent(&[
        "--source",
        dir.to_str().expect("utf-8"),
        "-p",
        PROJECT,
        "--resync",
        "2s",
    ]);
    let mut answer = String::new();
    common::wait_for(
        "the agent's DNS server to answer for web",
        Duration::from_secs(30),
        || {
            answer = lookup(&host, "web");
            answer.contains("Address") && answer.contains(&new_address)
        },
    );
    assert!(
        !answer.contains(&old_address),
        "web resolves to {new_address}, not {old_address}: {answer}"
    );

    // The agent updates the same way.
    write("hallo");
    common::wait_for("the agent to update web", Duration::from_secs(60), || {
        host.container_env("web", "GREETING").as_deref() == Some("hallo")
            && rows(&host, "web").len() == 1
    });
    let e = events(&host);
    assert!(
        position(&e, "start hallo") < position(&e, "healthy hallo")
            && position(&e, "healthy hallo") < position(&e, "stop bonjour"),
        "{e:?}"
    );
    let id = rows(&host, "web")[0]["host_id"]
        .as_str()
        .expect("host_id")
        .to_string();
    assert!(id.starts_with("web--"), "{id}");
    host.stop_agent();
    let plan = host.moor(&["plan", "-p", PROJECT, dir.to_str().expect("utf-8")]);
    assert_eq!(plan.status.code(), Some(0), "converged: {}", text(&plan));

    // A new container that never becomes healthy: removed, the old one stays.
    write("broken");
    let out = apply(&host, dir);
    assert!(
        !out.status.success(),
        "a failed update fails: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("keeps running"),
        "the failure says the old container keeps running: {}",
        text(&out)
    );
    let kept = rows(&host, "web");
    assert_eq!(kept.len(), 1, "the new container is gone: {kept:?}");
    assert_eq!(kept[0]["host_id"], id.as_str());
    assert_eq!(kept[0]["state"], "running");
    assert_eq!(
        host.container_env("web", "GREETING").as_deref(),
        Some("hallo")
    );
    let e = events(&host);
    assert!(
        e.contains(&"start broken".to_string()) && !e.contains(&"stop hallo".to_string()),
        "{e:?}"
    );
}

/// `web` whose health check passes once `go-GREETING` exists in `gate`,
/// a host directory mounted at `/data`.
fn gated(greeting: &str, gate: &Path) -> String {
    format!(
        r#"
[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[containers.web]
image        = "busybox"
command      = ["sleep", "3600"]
env          = {{ GREETING = "{greeting}" }}
mounts       = ["{gate}:/data"]
network_mode = "none"
init         = true
update_order = "start-first"
stop_grace_period = "1s"
healthcheck  = {{ cmd = ["test", "-e", "/data/go-{greeting}"], interval = "300ms", retries = 1000 }}
"#,
        gate = gate.display()
    )
}

#[test]
fn an_update_killed_half_way_converges_to_one_container() {
    let Some(host) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let src = tempfile::tempdir().expect("source dir");
    let dir = src.path();
    let gate = tempfile::tempdir().expect("gate dir");
    let write = |greeting: &str| {
        std::fs::write(dir.join("stack.toml"), gated(greeting, gate.path()))
            .expect("write manifest")
    };
    let open = |greeting: &str| {
        std::fs::write(gate.path().join(format!("go-{greeting}")), "").expect("open the gate")
    };
    open("hello");
    write("hello");
    let out = apply(&host, dir);
    assert!(out.status.success(), "first apply: {}", text(&out));

    // The update waits for a health check that cannot pass yet: both
    // containers run. Then the process applying it is killed.
    write("bonjour");
    let mut applying = host
        .command()
        .args(["apply", "-p", PROJECT, dir.to_str().expect("utf-8")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start moor apply");
    common::wait_for(
        "the new container to run beside the old one",
        Duration::from_secs(60),
        || {
            rows(&host, "web")
                .iter()
                .filter(|r| r["state"] == "running")
                .count()
                == 2
        },
    );
    applying.kill().expect("kill -9 moor apply");
    applying.wait().expect("reap moor apply");
    assert_eq!(
        host.container_env("web", "GREETING").as_deref(),
        Some("hello"),
        "until the new one is healthy, web is the old one"
    );

    // The next apply removes the leftover and does the update again.
    open("bonjour");
    let plan = host.moor(&["plan", "-p", PROJECT, dir.to_str().expect("utf-8")]);
    assert!(
        text(&plan).contains("superseded by web"),
        "the plan removes the leftover: {}",
        text(&plan)
    );
    let out = apply(&host, dir);
    assert!(out.status.success(), "apply after the kill: {}", text(&out));
    let after = rows(&host, "web");
    assert_eq!(after.len(), 1, "no duplicate containers: {after:?}");
    assert_eq!(after[0]["state"], "running");
    assert_eq!(
        host.container_env("web", "GREETING").as_deref(),
        Some("bonjour")
    );
    let plan = host.moor(&["plan", "-p", PROJECT, dir.to_str().expect("utf-8")]);
    assert_eq!(plan.status.code(), Some(0), "converged: {}", text(&plan));
}
