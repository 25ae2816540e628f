//! GitOps operations end to end: `moor suspend`/`resume` across an agent
//! restart, `moor reconcile --fetch` without waiting for the poll interval,
//! `drift = "report"` leaving a container removed by hand and still
//! applying source changes, `mode = "plan"` never touching the host, and the
//! control socket against clients that connect and send nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::instance::Instance;
use crate::common::{self, edit, git, http_get, wait_for};

const PROJECT: &str = "gitops";

/// Two sleeping containers, `app` and `side`, without networking.
fn manifest(app_env: &str) -> String {
    format!(
        r#"[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[containers.app]
image        = "busybox"
command      = ["sleep", "3600"]
env          = {{ V = "{app_env}" }}
network_mode = "none"
init         = true

[containers.side]
image        = "busybox"
command      = ["sleep", "3600"]
network_mode = "none"
init         = true
"#
    )
}

/// A manifest directory holding [`manifest`].
fn source_dir(tmp: &Path, app_env: &str) -> PathBuf {
    let dir = tmp.join(PROJECT);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("stack.toml"), manifest(app_env)).expect("write manifest");
    dir
}

fn source(host: &Instance) -> serde_json::Value {
    host.status()["sources"][0].clone()
}

fn metrics(host: &Instance) -> String {
    http_get(host.port, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

fn env_v(host: &Instance) -> Option<String> {
    host.container_env("app", "V")
}

/// Runs `moor ARGS…` and asserts that it succeeded quickly enough not to
/// have waited on anything but the agent's answer.
#[track_caller]
fn control(host: &Instance, args: &[&str]) -> String {
    let started = Instant::now();
    let out = host.moor_ok(args);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "moor {args:?} took {:?}",
        started.elapsed()
    );
    out
}

#[test]
fn suspension_survives_a_restart_and_resume_applies_what_waited() {
    let Some(mut host) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = source_dir(tmp.path(), "1");
    let dir_s = dir.to_str().expect("utf-8").to_string();
    let args = ["--source", &dir_s, "-p", PROJECT, "--resync", "1s"];
    host.start_agent(&args);
    wait_for("app with V=1", Duration::from_secs(60), || {
        env_v(&host).as_deref() == Some("1")
    });
    let socket = host.dir().join("control.sock");
    let mode = std::fs::metadata(&socket)
        .expect("control socket")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // A client that connects and sends nothing does not hold the agent up.
    let idle = std::os::unix::net::UnixStream::connect(&socket).expect("idle client");
    let said = control(&host, &["suspend", PROJECT]);
    assert!(said.contains("suspended"), "{said}");
    assert_eq!(source(&host)["suspended"], true, "{}", source(&host));
    assert!(
        metrics(&host).contains("moor_source_suspended{source=\"gitops\"} 1"),
        "{}",
        metrics(&host)
    );

    // Suspended: a source change and a container removed by hand both wait.
    let app_pid = host.pid("app").expect("app runs");
    edit(&dir.join("stack.toml"), "V = \"1\"", "V = \"2\"");
    wait_for("the new revision to wait", Duration::from_secs(30), || {
        source(&host)["pending_revision"].is_string()
    });
    host.moor_ok(&["dev", "rm", "--force", "side"]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        host.pid("app"),
        Some(app_pid),
        "app untouched while suspended"
    );
    assert!(
        host.container("side").is_none(),
        "side not recreated while suspended"
    );

    // The idle client was dropped after its timeout.
    let mut idle = idle;
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = idle.read_to_string(&mut answer);
    assert!(answer.contains("no request within"), "{answer:?}");

    // Across a restart it stays suspended.
    host.stop_agent();
    assert!(!socket.exists(), "the socket goes with the agent");
    host.start_agent(&args);
    wait_for("the agent's /status", Duration::from_secs(30), || {
        source(&host)["suspended"] == true
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        host.pid("app"),
        Some(app_pid),
        "still untouched after a restart"
    );
    assert!(host.container("side").is_none());
    assert!(
        host.agent_log()
            .contains("suspended (since before this start)"),
        "{}",
        host.agent_log()
    );
    let refused = host.moor(&["reconcile", PROJECT]);
    assert!(!refused.status.success());
    assert!(
        common::text(&refused).contains("is suspended"),
        "{}",
        common::text(&refused)
    );

    // Resume: the change applies and the drift is corrected.
    control(&host, &["resume", PROJECT]);
    wait_for(
        "app with V=2 and side back",
        Duration::from_secs(60),
        || env_v(&host).as_deref() == Some("2") && host.running("side"),
    );
    assert_eq!(source(&host)["suspended"], false);
    assert!(metrics(&host).contains("moor_source_suspended{source=\"gitops\"} 0"));
    assert!(!host.dir().join("suspended").join(PROJECT).exists());

    let unknown = host.moor(&["suspend", "nope"]);
    assert!(!unknown.status.success());
    assert!(common::text(&unknown).contains("no source named \"nope\""));
}

#[test]
fn reconcile_fetch_applies_a_commit_without_waiting_for_the_interval() {
    let Some(mut host) = Instance::with_busybox(PROJECT, &["git"]) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let bare = tmp.path().join("gitops.git");
    let work = tmp.path().join("work");
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "gitops.git"],
    );
    git(tmp.path(), &["init", "-q", "-b", "main", "work"]);
    let commit = |v: &str| {
        std::fs::write(work.join("stack.toml"), manifest(v)).expect("write");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", v]);
        git(
            &work,
            &["push", "-q", bare.to_str().expect("utf-8"), "HEAD:main"],
        );
        git(&work, &["rev-parse", "HEAD"])
    };
    commit("1");
    let url = format!("git+file://{}", bare.display());
    host.start_agent(&["--source", &url, "-p", PROJECT, "--interval", "1h"]);
    wait_for("app with V=1", Duration::from_secs(60), || {
        env_v(&host).as_deref() == Some("1")
    });
    let second = commit("2");
    // Without --fetch the agent reconciles what it has: still V=1.
    control(&host, &["reconcile", PROJECT]);
    assert_eq!(env_v(&host).as_deref(), Some("1"));
    let said = control(&host, &["reconcile", PROJECT, "--fetch"]);
    assert!(said.contains(&second[..12]), "{said}");
    wait_for("app with V=2", Duration::from_secs(60), || {
        env_v(&host).as_deref() == Some("2")
    });
}

#[test]
fn drift_report_leaves_a_removed_container_and_applies_source_changes() {
    let Some(mut host) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = source_dir(tmp.path(), "1");
    let dir_s = dir.to_str().expect("utf-8").to_string();
    host.start_agent(&[
        "--source", &dir_s, "-p", PROJECT, "--resync", "1s", "--drift", "report",
    ]);
    wait_for("app and side", Duration::from_secs(60), || {
        host.running("app") && host.running("side")
    });
    assert_eq!(source(&host)["drift_mode"], "report");

    host.moor_ok(&["dev", "rm", "--force", "side"]);
    wait_for("side reported as drifted", Duration::from_secs(30), || {
        host.status()["resources"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["name"] == "side" && r["reason"] == "Drifted")
        })
    });
    assert!(
        metrics(&host).contains("moor_drift_resources{kind=\"container\",source=\"gitops\"} 1"),
        "{}",
        metrics(&host)
    );
    let drift = source(&host)["drift"].clone();
    assert!(
        drift
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["name"] == "side")),
        "{drift}"
    );

    // A source change still applies; side stays gone through resyncs.
    edit(&dir.join("stack.toml"), "V = \"1\"", "V = \"2\"");
    wait_for("app with V=2", Duration::from_secs(60), || {
        env_v(&host).as_deref() == Some("2")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(host.container("side").is_none(), "drift left alone");

    // An operator's reconcile corrects it.
    control(&host, &["reconcile", PROJECT]);
    wait_for("side back", Duration::from_secs(60), || {
        host.running("side")
    });
    wait_for("the drift gauge back to 0", Duration::from_secs(30), || {
        metrics(&host).contains("moor_drift_resources{kind=\"container\",source=\"gitops\"} 0")
    });
}

#[test]
fn plan_mode_shows_its_plan_and_never_touches_the_host() {
    let Some(mut host) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = source_dir(tmp.path(), "1");
    let dir_s = dir.to_str().expect("utf-8").to_string();
    host.start_agent(&[
        "--source", &dir_s, "-p", PROJECT, "--resync", "1s", "--mode", "plan",
    ]);
    wait_for("the plan in /status", Duration::from_secs(30), || {
        source(&host)["plan"].as_array().is_some_and(|p| {
            p.iter()
                .any(|a| a["name"] == "app" && a["action"] == "create")
        })
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(host.containers().is_empty(), "{:?}", host.containers());
    assert_eq!(source(&host)["mode"], "plan");
}
