//! One moor "host" for end-to-end tests: a state dir in a [`Slot`] of its
//! own (bridge prefix, nftables table, address pool, cgroup parent), an
//! optional running agent, and everything torn down on drop (agent stopped,
//! projects downed, the state dir's DNS resolver and processes stopped,
//! then what the slot owns removed), so that tests — and whole test runs —
//! can run side by side and clean up when they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::slot::Slot;
use super::{free_port, host, http_get, moor_bin};

/// A moor instance.
pub struct Instance {
    /// Dropped before `state`: what the slot owns goes before the dir.
    slot: Arc<Slot>,
    /// The state dir.
    state: tempfile::TempDir,
    /// The slot's tag (`t7`), for messages and names.
    pub tag: String,
    /// Where its agent serves HTTP.
    pub port: u16,
    /// The environment of every moor command (the slot's settings and the
    /// state dir); a test may add to it or change it.
    pub env: Vec<(String, String)>,
    agent: Option<Child>,
    projects: Vec<String>,
}

impl Instance {
    /// A fresh instance in a slot of its own.
    pub fn new() -> Self {
        Self::in_slot(Arc::new(Slot::claim()))
    }

    /// The usual start of an end-to-end test: an instance that owns
    /// `project` and has the example's busybox image, when busybox, nft, ip,
    /// `tools` and root are there (see [`super::require`]).
    pub fn with_busybox(project: &str, tools: &[&str]) -> Option<Self> {
        let all: Vec<&str> = ["busybox", "nft", "ip"]
            .iter()
            .chain(tools)
            .copied()
            .collect();
        if !super::require(&all, true) {
            return None;
        }
        let mut host = Self::new();
        host.owns(project);
        host.import_busybox();
        Some(host)
    }

    /// A second state dir in `other`'s slot: the same bridge prefix, table,
    /// pool and cgroup parent (two moors that would collide).
    pub fn beside(other: &Instance) -> Self {
        Self::in_slot(other.slot.clone())
    }

    fn in_slot(slot: Arc<Slot>) -> Self {
        let state = Self::state_dir(&slot);
        let mut env = slot.env();
        env.push(("MOOR_STATE_DIR".into(), state.path().display().to_string()));
        Self {
            tag: slot.tag(),
            slot,
            state,
            port: free_port(),
            env,
            agent: None,
            projects: Vec::new(),
        }
    }

    /// Replaces the state dir with a new, empty one in the same slot (the
    /// same bridge prefix, table and pool), removing the old one the way an
    /// operator resets a host: `rm -rf`, whatever still runs on it.
    pub fn replace_state_dir(&mut self) {
        assert!(self.agent.is_none(), "stop the agent first");
        let fresh = Self::state_dir(&self.slot);
        for (k, v) in &mut self.env {
            if k == "MOOR_STATE_DIR" {
                *v = fresh.path().display().to_string();
            }
        }
        drop(std::mem::replace(&mut self.state, fresh));
    }

    /// A new state dir, recorded in `slot`.
    fn state_dir(slot: &Slot) -> tempfile::TempDir {
        let state = tempfile::Builder::new()
            .prefix(&format!("moor-{}-", slot.tag()))
            .tempdir()
            .expect("state dir");
        slot.adopt(state.path());
        state
    }

    /// The slot: names, pool and subnets this instance may use.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// The state dir.
    pub fn dir(&self) -> &Path {
        self.state.path()
    }

    /// A `moor` command with this instance's environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(moor_bin());
        c.env_remove("MOOR_LOG").env_remove("MOOR_LOG_FORMAT");
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs `moor ARGS…` and returns its output.
    pub fn moor(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run moor")
    }

    /// Runs `moor ARGS…`, asserts that it succeeded, and returns its stdout.
    #[track_caller]
    pub fn moor_ok(&self, args: &[&str]) -> String {
        let out = self.moor(args);
        assert!(
            out.status.success(),
            "{}: moor {args:?} failed ({}):\n{}",
            self.tag,
            out.status,
            super::text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Remembers `project` so that drop runs `moor down -p project --volumes`.
    pub fn owns(&mut self, project: &str) {
        if !self.projects.iter().any(|p| p == project) {
            self.projects.push(project.to_string());
        }
    }

    /// Imports the example's busybox image (`localhost/moor-example/busybox:1`).
    pub fn import_busybox(&self) {
        let out = Command::new("bash")
            .arg(super::repo_root().join("examples/busybox-image.sh"))
            .arg(moor_bin())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run busybox-image.sh");
        assert!(
            out.status.success(),
            "image import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `moor agent ARGS… --metrics-addr 127.0.0.1:PORT`, logging to
    /// `<state>/agent.log`.
    pub fn start_agent(&mut self, args: &[&str]) {
        self.start_agent_env(args, &[]);
    }

    /// [`Instance::start_agent`] with extra environment.
    pub fn start_agent_env(&mut self, args: &[&str], env: &[(&str, &str)]) {
        assert!(self.agent.is_none(), "agent already running");
        let log = std::fs::File::create(self.log_path()).expect("agent log");
        let mut c = self.command();
        c.arg("agent")
            .args(args)
            .args(["--metrics-addr", &format!("127.0.0.1:{}", self.port)])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        self.agent = Some(c.spawn().expect("start moor agent"));
    }

    /// SIGTERM, then SIGKILL after 20 s.
    pub fn stop_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let pid = rustix::process::Pid::from_child(&a);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while a.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    /// Whether the agent process is still alive.
    pub fn agent_alive(&mut self) -> bool {
        self.agent
            .as_mut()
            .is_some_and(|a| a.try_wait().ok().flatten().is_none())
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("agent.log")
    }

    /// What the agent wrote to stderr so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The agent's `/status` document (Null when it does not answer).
    pub fn status(&self) -> serde_json::Value {
        let (_, body) = http_get(self.port, "/status").unwrap_or_default();
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// `moor ps --all --json`.
    pub fn containers(&self) -> Vec<serde_json::Value> {
        let out = self.moor(&["ps", "--all", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// The image of the store that reference `reference` names (an entry
    /// of `moor images --json`), if any.
    pub fn image(&self, reference: &str) -> Option<serde_json::Value> {
        let images: serde_json::Value =
            serde_json::from_str(&self.moor_ok(&["images", "--json"])).expect("images JSON");
        images
            .as_array()?
            .iter()
            .find(|i| {
                i["refs"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r == reference))
            })
            .cloned()
    }

    /// One container from `moor ps --all --json`.
    pub fn container(&self, name: &str) -> Option<serde_json::Value> {
        self.containers().into_iter().find(|c| c["name"] == name)
    }

    /// The pid of a container, from `moor ps --all --json`.
    pub fn pid(&self, name: &str) -> Option<i64> {
        self.container(name).and_then(|c| c["pid"].as_i64())
    }

    /// True while `name` runs, as `moor ps` says.
    pub fn running(&self, name: &str) -> bool {
        self.container(name)
            .is_some_and(|c| c["state"] == "running")
    }

    /// One network from `moor networks --json`.
    pub fn network(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.moor(&["networks", "--json"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap_or_default()
            .into_iter()
            .find(|n| n["name"] == name)
    }

    /// The running container's environment variable, read through `moor exec`.
    pub fn container_env(&self, name: &str, var: &str) -> Option<String> {
        let out = self.moor(&["exec", name, "--", "sh", "-c", &format!("echo \"${var}\"")]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The IPv4 address of a running container's `eth0`, through `moor exec`.
    pub fn container_ipv4(&self, name: &str) -> std::net::Ipv4Addr {
        let out = self.moor_ok(&["exec", name, "--", "ip", "-4", "-o", "addr", "show", "eth0"]);
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{}: no address of {name} in {out:?}", self.tag))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop_agent();
        for p in self.projects.clone() {
            let out = self.moor(&["down", "-p", &p, "--volumes"]);
            if !out.status.success() {
                eprintln!(
                    "cleanup: moor down -p {p} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        // `down` keeps the default network, and with it the resolver; a
        // failed test may leave anything. The slot removes the rest.
        host::stop_state_dir(self.dir());
    }
}
