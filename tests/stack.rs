//! The example stack end to end: the real `moor agent` on the real kernel
//! brings up examples/manifests (imported busybox image, a network, a volume,
//! a published port, a health check, depends_on), then follows edits,
//! repairs drift, refuses a broken manifest, and `moor down` takes it away.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{self, edit, free_port, http_get, wait_for};

const PROJECT: &str = "stack";

/// A copy of examples/manifests in `src`, on the instance's own subnet and
/// a free port for web: the example's directory and web's port.
pub fn example(host: &Instance, src: &Path) -> (PathBuf, u16) {
    let dir = src.join("manifests");
    common::copy_tree(&common::repo_root().join("examples/manifests"), &dir);
    let web_port = free_port();
    let stack = dir.join("stack.toml");
    edit(
        &stack,
        "subnet = \"10.89.1.0/24\"",
        &format!("subnet = \"{}\"", host.slot().subnet(77)),
    );
    edit(
        &stack,
        "127.0.0.1:8080:80",
        &format!("127.0.0.1:{web_port}:80"),
    );
    (dir, web_port)
}

#[test]
fn example_stack_follows_its_manifests() {
    let Some(mut s) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let src = tempfile::tempdir().expect("source dir");
    let (dir, web_port) = example(&s, src.path());
    let stack = dir.join("stack.toml");
    let plan = s.moor(&["plan", "-p", PROJECT, dir.to_str().expect("utf-8")]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "plan shows changes: {}",
        String::from_utf8_lossy(&plan.stdout)
    );
    assert!(String::from_utf8_lossy(&plan.stdout).contains("+ container web (not on the host)"));

    s.start_agent(&[
        "--source",
        dir.to_str().expect("utf-8"),
        "-p",
        PROJECT,
        "--resync",
        "2s",
    ]);
    wait_for(
        "the web server on its published port",
        Duration::from_secs(60),
        || http_get(web_port, "/").is_some_and(|(c, b)| c == 200 && b.contains("hello from moor")),
    );
    wait_for("/readyz", Duration::from_secs(30), || {
        http_get(s.port, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    // The fetcher reaches web by name through the network's DNS server.
    wait_for(
        "fetcher to fetch web by name",
        Duration::from_secs(60),
        || {
            let logs = s.moor(&["logs", "fetcher"]);
            String::from_utf8_lossy(&logs.stdout).contains("hello from moor")
        },
    );
    // The agent's health checks show in `moor ps` (another process).
    wait_for("web healthy in moor ps", Duration::from_secs(30), || {
        s.container("web").is_some_and(|c| c["health"] == "healthy")
    });
    assert_eq!(
        s.container("fetcher").map(|c| c["health"].clone()),
        Some(serde_json::Value::Null),
        "fetcher has no check"
    );
    let nets: serde_json::Value =
        serde_json::from_slice(&s.moor(&["networks", "--json"]).stdout).expect("networks json");
    let net = nets
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "front"))
        .expect("the network is listed");
    assert_eq!(net["project"], "stack");
    assert_eq!(net["subnet"], s.slot().subnet(77));
    assert_eq!(net["containers"], serde_json::json!(["fetcher", "web"]));
    let vols: serde_json::Value =
        serde_json::from_slice(&s.moor(&["volumes", "--json"]).stdout).expect("volumes json");
    assert!(
        vols.as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["name"] == "site" && v["project"] == "stack")),
        "{vols}"
    );
    let (_, metrics) = http_get(s.port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("moor_resources{kind=\"container\",state=\"observed\"} 2"),
        "{metrics}"
    );

    // Change web's environment: web is replaced, fetcher is not touched.
    let fetcher_pid = s.pid("fetcher").expect("fetcher runs");
    let web_pid = s.pid("web").expect("web runs");
    edit(&stack, "GREETING = \"hello\"", "GREETING = \"bonjour\"");
    wait_for("web to be replaced", Duration::from_secs(60), || {
        s.pid("web").is_some_and(|p| p != web_pid)
    });
    assert_eq!(
        s.pid("fetcher"),
        Some(fetcher_pid),
        "fetcher must not be restarted"
    );

    // Kill web's process by hand: restart = "always" brings it back.
    let web_pid = s.pid("web").expect("web runs");
    let _ = Command::new("kill")
        .args(["-KILL", &web_pid.to_string()])
        .status();
    wait_for("web to be restarted", Duration::from_secs(60), || {
        s.container("web")
            .is_some_and(|c| c["state"] == "running" && c["pid"].as_i64() != Some(web_pid))
    });

    // A broken manifest changes nothing, and the error names file and line.
    let web_pid = s.pid("web").expect("web runs");
    edit(&stack, "init     = true", "init     = tru");
    wait_for(
        "the source error in /status",
        Duration::from_secs(30),
        || {
            s.status()["sources"][0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("stack.toml:"))
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        s.pid("web"),
        Some(web_pid),
        "an invalid manifest must not touch the host"
    );
    edit(&stack, "init     = tru", "init     = true");

    // Remove fetcher from the manifests: it goes; the volume stays.
    std::fs::remove_file(dir.join("fetcher.yaml")).expect("remove fetcher.yaml");
    wait_for("fetcher to be removed", Duration::from_secs(60), || {
        s.container("fetcher").is_none()
    });
    assert!(s.dir().join("volumes/site").exists(), "the volume is kept");

    // SIGTERM stops the agent and leaves containers running.
    s.stop_agent();
    assert!(
        s.agent_log().contains("stopping (containers keep running)"),
        "{}",
        s.agent_log()
    );
    assert_eq!(
        s.container("web").map(|c| c["state"].clone()),
        Some("running".into())
    );
    assert_eq!(http_get(web_port, "/").map(|(c, _)| c), Some(200));

    // down removes everything but the volume.
    let down = s.moor(&["down", "-p", PROJECT]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(s.containers().is_empty());
    assert!(s.dir().join("volumes/site").exists(), "down keeps volumes");
    assert!(
        http_get(web_port, "/").is_none(),
        "the published port is gone"
    );
    assert!(
        !common::link_exists(&s.slot().bridge("front")),
        "the bridge is gone"
    );
}
