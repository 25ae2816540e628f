//! The agent with a configuration file: several sources, each its own project
//! on one host; `/status` and `moor status`; JSON logs with a span per
//! reconcile and per action.

use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::wait_for;

fn manifest(name: &str, greeting: &str) -> String {
    format!(
        r#"
[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[containers.{name}]
image        = "busybox"
command      = ["sleep", "3600"]
env          = {{ GREETING = "{greeting}" }}
network_mode = "none"
init         = true
"#
    )
}

fn started(i: &Instance, name: &str) -> Option<String> {
    let c = i.container(name)?;
    (c["state"] == "running").then(|| c["started"].to_string())
}

#[test]
fn two_sources_two_projects_json_logs_and_status() {
    let Some(mut host) = Instance::with_busybox("alpha", &[]) else {
        return;
    };
    host.owns("beta");
    let work = tempfile::tempdir().expect("tempdir");
    let (a, b) = (work.path().join("alpha"), work.path().join("beta"));
    for (dir, name) in [(&a, "a-web"), (&b, "b-web")] {
        std::fs::create_dir(dir).expect("mkdir");
        std::fs::write(dir.join("stack.toml"), manifest(name, "hello")).expect("write");
    }
    let config = work.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "resync = \"2s\"\n[host]\nname = \"edge-1\"\nlabels = {{ role = \"web\" }}\n\n\
             [[source]]\nurl = \"{}\"\n\n[[source]]\nname = \"beta\"\nurl = \"{}\"\n",
            a.display(),
            b.display()
        ),
    )
    .expect("write config");
    host.start_agent(&[
        "--config",
        config.to_str().expect("utf-8"),
        "--log-format",
        "json",
    ]);

    wait_for("both projects running", Duration::from_secs(60), || {
        started(&host, "a-web").is_some() && started(&host, "b-web").is_some()
    });
    wait_for("/status ready", Duration::from_secs(30), || {
        host.status()["ready"] == true
    });
    let status = host.status();
    assert_eq!(status["host"]["name"], "edge-1");
    assert_eq!(status["host"]["labels"]["role"], "web");
    let sources = status["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 2, "{status:#}");
    for s in sources {
        assert_eq!(s["kind"], "directory");
        assert!(
            s["revision"]
                .as_str()
                .is_some_and(|r| r.starts_with("sha256:"))
        );
        assert_eq!(s["revision"], s["applied_revision"]);
        assert!(s["error"].is_null(), "{s:#}");
    }
    let resources = status["resources"].as_array().expect("resources");
    for (project, name) in [("alpha", "a-web"), ("beta", "b-web")] {
        let r = resources
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in /status: {status:#}"));
        assert_eq!(r["project"], project);
        assert_eq!(r["status"], "Ready");
        assert_eq!(r["observed"]["state"], "running");
    }

    // `moor status` shows the same, for people.
    let out = host.moor(&["status", "--addr", &format!("127.0.0.1:{}", host.port)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "moor status: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("host edge-1 (role=web)   ready"), "{text}");
    for word in ["alpha", "beta", "a-web", "b-web", "running"] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }

    // A change in one project replaces only its container.
    let a_started = started(&host, "a-web").expect("running");
    std::fs::write(b.join("stack.toml"), manifest("b-web", "bonjour")).expect("write");
    wait_for("b-web replaced", Duration::from_secs(60), || {
        host.container_env("b-web", "GREETING").as_deref() == Some("bonjour")
    });
    assert_eq!(
        started(&host, "a-web"),
        Some(a_started),
        "a-web was touched"
    );

    // Every log line is a JSON object; actions carry their span fields inside
    // the reconcile span of their project.
    host.stop_agent();
    let log = host.agent_log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let replaced = lines
        .iter()
        .find(|l| {
            l["message"] == "done"
                && l["span"]["name"] == "action"
                && l["span"]["resource"] == "b-web"
                && l["span"]["verb"] == "replace"
        })
        .unwrap_or_else(|| panic!("no action event for the replacement in:\n{log}"));
    assert_eq!(replaced["span"]["kind"], "container");
    assert!(
        replaced["reason"]
            .as_str()
            .is_some_and(|r| r.contains("env.GREETING")),
        "{replaced}"
    );
    let spans = replaced["spans"].as_array().expect("span list");
    assert!(
        spans.iter().any(|s| s["name"] == "reconcile"
            && s["project"] == "beta"
            && s["revision"].is_string()),
        "{replaced}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{log}"
    );
}

/// A container's exit wakes the agent at once (the shims' pidfds), not at
/// the next periodic resync, which is an hour away here.
#[test]
fn a_container_exit_is_acted_on_without_waiting_for_the_resync() {
    let Some(mut host) = Instance::with_busybox("exits", &[]) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("exits");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(
        dir.join("stack.toml"),
        format!(
            "{}\nrestart = \"always\"\n",
            manifest("looper", "hello").trim_end()
        ),
    )
    .expect("write");
    host.start_agent(&["--source", dir.to_str().expect("utf-8"), "--resync", "1h"]);
    let pid = |h: &Instance| {
        h.container("looper")
            .filter(|c| c["state"] == "running")
            .and_then(|c| c["pid"].as_i64())
    };
    wait_for("looper running", Duration::from_secs(60), || {
        pid(&host).is_some()
    });
    for round in 0..3 {
        let before = pid(&host).expect("running");
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &before.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        // Generous for a loaded machine, and far below the resync.
        wait_for(
            &format!("looper restarted (round {round})"),
            Duration::from_secs(40),
            || pid(&host).is_some_and(|p| p != before),
        );
    }
    let status = host.status();
    assert!(
        status["reconciles"].as_u64().is_some_and(|n| n < 40),
        "idle passes should be rare with a 1 h resync: {status:#}"
    );
}
