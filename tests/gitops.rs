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

/// A request a [`Receiver`] got: its headers (names lower-cased) and body.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Answer {
    Ok,
    Error500,
    /// Reads the request and never answers.
    Hang,
}

/// A local HTTP receiver on 127.0.0.1 recording what it is sent.
pub(crate) struct Receiver {
    pub(crate) port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    pub(crate) fn start(answer: Answer) -> Self {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let (g, st) = (g.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let mut headers = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                        }
                    }
                    let len = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0usize);
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    g.lock().expect("lock").push(Received { headers, body });
                    match answer {
                        Answer::Ok => {
                            let _ = conn.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            );
                        }
                        Answer::Error500 => {
                            let _ = conn.write_all(
                                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            );
                        }
                        Answer::Hang => {
                            while !st.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                });
            }
        });
        Self { port, got, stop }
    }

    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// HMAC-SHA256 by hand (RFC 2104) with sha2, to check the agent against
/// an independent implementation.
fn hmac_sha256(key: &[u8], body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for i in 0..64 {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

#[test]
fn notifications_arrive_in_order_signed_and_slow_receivers_delay_nothing() {
    let Some(mut host) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let good = Receiver::start(Answer::Ok);
    let failing = Receiver::start(Answer::Error500);
    let hanging = Receiver::start(Answer::Hang);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = source_dir(tmp.path(), "1");
    let url_file = |r: &Receiver, name: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, format!("http://127.0.0.1:{}/hook\n", r.port)).expect("url file");
        p.display().to_string()
    };
    let secret = tmp.path().join("notify.secret");
    std::fs::write(&secret, "n0tify-s3cret\n").expect("secret");
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"resync = "1s"
[[source]]
name = "{PROJECT}"
url = "{}"

# The slow ones first: they must hold up neither the deploy nor the good one.
[[notify]]
kind = "webhook"
url_file = "{}"

[[notify]]
kind = "slack"
url_file = "{}"

[[notify]]
kind = "webhook"
url_file = "{}"
secret_file = "{}"
events = ["applied", "failed", "recovered"]
sources = ["{PROJECT}"]
"#,
            dir.display(),
            url_file(&hanging, "hang.url"),
            url_file(&failing, "fail.url"),
            url_file(&good, "good.url"),
            secret.display(),
        ),
    )
    .expect("config");
    host.start_agent(&["--config", config.to_str().expect("utf-8")]);

    let events_of = |r: &Receiver| -> Vec<String> {
        r.events()
            .iter()
            .map(|e| e["event"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    wait_for("the first applied", Duration::from_secs(60), || {
        events_of(&good).first().map(String::as_str) == Some("applied")
    });
    // A change deploys as fast as it would without receivers, and its
    // notification is not queued behind the hanging receiver's retries.
    edit(&dir.join("stack.toml"), "V = \"1\"", "V = \"2\"");
    wait_for("app with V=2", Duration::from_secs(30), || {
        env_v(&host).as_deref() == Some("2")
    });
    wait_for("the second applied", Duration::from_secs(15), || {
        events_of(&good).len() >= 2
    });
    // A failure, then its fix.
    edit(
        &dir.join("stack.toml"),
        "image        = \"busybox\"\ncommand      = [\"sleep\", \"3600\"]\nenv",
        "image        = \"localhost/moor-test/missing:1\"\ncommand      = [\"sleep\", \"3600\"]\nenv",
    );
    wait_for("a failed event", Duration::from_secs(60), || {
        events_of(&good).iter().any(|e| e == "failed")
    });
    edit(
        &dir.join("stack.toml"),
        "image        = \"localhost/moor-test/missing:1\"",
        "image        = \"busybox\"",
    );
    wait_for("recovered and applied", Duration::from_secs(60), || {
        let seen = events_of(&good);
        seen.last().map(String::as_str) == Some("applied")
            && seen.iter().filter(|e| *e == "recovered").count()
                == seen.iter().filter(|e| *e == "failed").count()
    });
    // applied, applied, then each failed resource (app, and the image it
    // could not pull) failed and recovered, and the fix applied.
    let all = good.events();
    let seen = events_of(&good);
    assert_eq!(seen[..2], ["applied", "applied"], "{all:?}");
    let middle = &all[2..all.len() - 1];
    let of = |kind: &str| -> Vec<serde_json::Value> {
        middle
            .iter()
            .filter(|e| e["event"] == kind)
            .map(|e| e["resource"].clone())
            .collect()
    };
    let (failed, recovered) = (of("failed"), of("recovered"));
    assert!(
        failed.contains(&serde_json::json!("container/app")),
        "{all:?}"
    );
    for r in &failed {
        assert!(recovered.contains(r), "{r} never recovered: {all:?}");
    }
    let last_failed = middle.iter().rposition(|e| e["event"] == "failed");
    let first_recovered = middle.iter().position(|e| e["event"] == "recovered");
    assert!(last_failed < first_recovered, "{all:?}");
    let first = &good.events()[0];
    assert_eq!(first["source"], PROJECT);
    assert!(first["revision"].is_string(), "{first}");
    // Every request is signed with the secret.
    for r in good.requests() {
        let sig = r
            .headers
            .iter()
            .find(|(k, _)| k == "x-moor-signature-256")
            .map(|(_, v)| v.clone())
            .expect("signature header");
        assert_eq!(
            sig,
            format!("sha256={}", hmac_sha256(b"n0tify-s3cret", &r.body))
        );
    }
    // The slack target got text, retried on 500 and gave up; the metrics say so.
    wait_for("failures counted", Duration::from_secs(60), || {
        metrics(&host).contains("moor_notifications_total{result=\"failure\"}")
    });
    let slack: serde_json::Value =
        serde_json::from_slice(&failing.requests()[0].body).expect("slack json");
    assert!(
        slack["text"]
            .as_str()
            .is_some_and(|t| t.contains("gitops: applied")),
        "{slack}"
    );
    assert!(failing.requests().len() >= 2, "retried");
    assert!(
        metrics(&host).contains("moor_notifications_total{result=\"success\"}"),
        "{}",
        metrics(&host)
    );
    assert!(
        !hanging.requests().is_empty(),
        "the hanging receiver was tried"
    );
    // The URL is a secret: not in the log.
    assert!(
        !host
            .agent_log()
            .contains(&format!("127.0.0.1:{}", hanging.port)),
        "{}",
        host.agent_log()
    );
}
