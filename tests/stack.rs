//! The example stack end to end: the real `moor agent` on the real kernel
//! brings up examples/manifests (imported busybox image, a network, a volume,
//! a published port, a health check, depends_on), then follows edits,
//! repairs drift, refuses a broken manifest, and `moor down` takes it away.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, free_port, http_get, wait_for};

const NET: &str = "stkfront";
const TABLE: &str = "moor_test_stack";

/// A state dir, a copy of the example, a running agent; everything torn down on drop.
struct Stack {
    state: tempfile::TempDir,
    dir: PathBuf,
    _src: tempfile::TempDir,
    agent: Option<Child>,
    metrics_port: u16,
    web_port: u16,
}

impl Stack {
    fn moor(&self, args: &[&str]) -> std::process::Output {
        Command::new(common::moor_bin())
            .args(args)
            .env("MOOR_STATE_DIR", self.state.path())
            .env("MOOR_NFT_TABLE", TABLE)
            .env("MOOR_NET_POOL", "10.88.0.0/16")
            .output()
            .expect("run moor")
    }

    fn start_agent(&mut self) {
        let log = std::fs::File::create(self.state.path().join("agent.log")).expect("agent log");
        let child = Command::new(common::moor_bin())
            .args(["agent", "--source"])
            .arg(&self.dir)
            .args([
                "-p",
                "stack",
                "--metrics-addr",
                &format!("127.0.0.1:{}", self.metrics_port),
                "--resync",
                "2s",
            ])
            .env("MOOR_STATE_DIR", self.state.path())
            .env("MOOR_NFT_TABLE", TABLE)
            .env("MOOR_NET_POOL", "10.88.0.0/16")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start moor agent");
        self.agent = Some(child);
    }

    fn stop_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &a.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while a.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("agent.log")).unwrap_or_default()
    }

    fn status(&self) -> serde_json::Value {
        let (_, body) = http_get(self.metrics_port, "/status").unwrap_or_default();
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    fn containers(&self) -> Vec<serde_json::Value> {
        let out = self.moor(&["ps", "--all", "--json"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default()
    }

    /// (state, pid) of a container as `moor ps --json` reports it.
    fn container(&self, name: &str) -> Option<serde_json::Value> {
        self.containers().into_iter().find(|c| c["name"] == name)
    }

    fn pid(&self, name: &str) -> Option<i64> {
        self.container(name).and_then(|c| c["pid"].as_i64())
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path).expect("read manifest");
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write manifest");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_agent();
        let out = self.moor(&["down", "-p", "stack", "--volumes"]);
        if !out.status.success() {
            eprintln!(
                "cleanup: moor down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", TABLE])
            .status();
        // Last resort when `down` failed: a bridge left behind would block the next run.
        let _ = Command::new("ip")
            .args(["link", "del", &format!("mo-{NET}")])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn setup() -> Option<Stack> {
    if !common::require(&["busybox", "nft", "ip"], true) {
        return None;
    }
    let state = tempfile::tempdir().expect("state dir");
    let src = tempfile::tempdir().expect("source dir");
    let dir = src.path().join("manifests");
    common::copy_tree(&common::repo_root().join("examples/manifests"), &dir);
    let web_port = free_port();
    let stack = Stack {
        state,
        dir,
        _src: src,
        agent: None,
        metrics_port: free_port(),
        web_port,
    };
    // Keep clear of other tests and of a real moor on this machine.
    stack.edit(
        "stack.toml",
        "[networks.front]",
        &format!("[networks.{NET}]"),
    );
    stack.edit(
        "stack.toml",
        "subnet = \"10.89.1.0/24\"",
        "subnet = \"10.88.77.0/24\"",
    );
    stack.edit(
        "stack.toml",
        "networks = [\"front\"]",
        &format!("networks = [\"{NET}\"]"),
    );
    stack.edit(
        "stack.toml",
        "127.0.0.1:8080:80",
        &format!("127.0.0.1:{web_port}:80"),
    );
    stack.edit(
        "fetcher.yaml",
        "networks: [front]",
        &format!("networks: [{NET}]"),
    );
    let import = Command::new("bash")
        .arg(common::repo_root().join("examples/busybox-image.sh"))
        .arg(common::moor_bin())
        .env("MOOR_STATE_DIR", stack.state.path())
        .output()
        .expect("run busybox-image.sh");
    assert!(
        import.status.success(),
        "image import failed: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    Some(stack)
}

#[test]
fn example_stack_follows_its_manifests() {
    let Some(mut s) = setup() else { return };
    let plan = s.moor(&["plan", "-p", "stack", s.dir.to_str().expect("utf-8")]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "plan shows changes: {}",
        String::from_utf8_lossy(&plan.stdout)
    );
    assert!(String::from_utf8_lossy(&plan.stdout).contains("+ container web (not on the host)"));

    s.start_agent();
    wait_for(
        "the web server on its published port",
        Duration::from_secs(60),
        || {
            http_get(s.web_port, "/")
                .is_some_and(|(c, b)| c == 200 && b.contains("hello from moor"))
        },
    );
    wait_for("/readyz", Duration::from_secs(30), || {
        http_get(s.metrics_port, "/readyz").is_some_and(|(c, _)| c == 200)
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
        .and_then(|n| n.iter().find(|n| n["name"] == NET))
        .expect("the network is listed");
    assert_eq!(net["project"], "stack");
    assert_eq!(net["subnet"], "10.88.77.0/24");
    assert_eq!(net["containers"], serde_json::json!(["fetcher", "web"]));
    let vols: serde_json::Value =
        serde_json::from_slice(&s.moor(&["volumes", "--json"]).stdout).expect("volumes json");
    assert!(
        vols.as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["name"] == "site" && v["project"] == "stack")),
        "{vols}"
    );
    let (_, metrics) = http_get(s.metrics_port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("moor_resources{kind=\"container\",state=\"observed\"} 2"),
        "{metrics}"
    );

    // Change web's environment: web is replaced, fetcher is not touched.
    let fetcher_pid = s.pid("fetcher").expect("fetcher runs");
    let web_pid = s.pid("web").expect("web runs");
    s.edit(
        "stack.toml",
        "GREETING = \"hello\"",
        "GREETING = \"bonjour\"",
    );
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
    s.edit("stack.toml", "init     = true", "init     = tru");
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
    s.edit("stack.toml", "init     = tru", "init     = true");

    // Remove fetcher from the manifests: it goes; the volume stays.
    std::fs::remove_file(s.dir.join("fetcher.yaml")).expect("remove fetcher.yaml");
    wait_for("fetcher to be removed", Duration::from_secs(60), || {
        s.container("fetcher").is_none()
    });
    assert!(
        s.state.path().join("volumes/site").exists(),
        "the volume is kept"
    );

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
    assert_eq!(http_get(s.web_port, "/").map(|(c, _)| c), Some(200));

    // down removes everything but the volume.
    let down = s.moor(&["down", "-p", "stack"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(s.containers().is_empty());
    assert!(
        s.state.path().join("volumes/site").exists(),
        "down keeps volumes"
    );
    assert!(
        http_get(s.web_port, "/").is_none(),
        "the published port is gone"
    );
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&format!("mo-{NET}")),
        "the bridge is gone"
    );
}
