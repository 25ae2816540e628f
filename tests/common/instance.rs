//! One moor "host" for end-to-end tests: its own state dir, nftables table,
//! address pool and cgroup parent, an optional running agent, and everything
//! torn down on drop (agent stopped, projects downed, DNS resolver stopped,
//! table and cgroups removed), so tests can run several side by side and
//! clean up when they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, http_get, moor_bin, remove_cgroup_parent};

/// A moor instance. `tag` keeps its host-wide names apart from other tests'.
pub struct Instance {
    /// The state dir.
    pub state: tempfile::TempDir,
    /// Short, unique among tests running at once (≤ 6 characters).
    pub tag: String,
    /// Where its agent serves HTTP.
    pub port: u16,
    /// Extra environment for every moor command.
    pub env: Vec<(String, String)>,
    agent: Option<Child>,
    projects: Vec<String>,
}

impl Instance {
    /// A fresh instance; `pool` is its address pool (a /16 nothing else uses).
    pub fn new(tag: &str, pool: &str) -> Self {
        assert!(tag.len() <= 6, "tag {tag:?} too long for interface names");
        let state = tempfile::tempdir().expect("state dir");
        let env = vec![
            ("MOOR_STATE_DIR".into(), state.path().display().to_string()),
            ("MOOR_NFT_TABLE".into(), format!("moor_t_{tag}")),
            ("MOOR_NET_POOL".into(), pool.into()),
            ("MOOR_CGROUP_PARENT".into(), format!("moor-t-{tag}")),
            ("MOOR_BRIDGE_PREFIX".into(), format!("m{tag}-")),
        ];
        Self {
            state,
            tag: tag.into(),
            port: free_port(),
            env,
            agent: None,
            projects: Vec::new(),
        }
    }

    /// The state dir.
    pub fn dir(&self) -> &Path {
        self.state.path()
    }

    /// A `moor` command with this instance's environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(moor_bin());
        c.env_remove("MOOR_LOG").env_remove("MOOR_LOG_FORMAT");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `moor ARGS…` and returns its output.
    pub fn moor(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run moor")
    }

    /// Remembers `project` so that drop runs `moor down -p project --volumes`.
    pub fn owns(&mut self, project: &str) {
        if !self.projects.iter().any(|p| p == project) {
            self.projects.push(project.to_string());
        }
    }

    /// Imports the example's busybox image (`localhost/moor-example/busybox:1`).
    pub fn import_busybox(&self) {
        let mut c = Command::new("bash");
        c.arg(super::repo_root().join("examples/busybox-image.sh"))
            .arg(moor_bin());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let out = c.output().expect("run busybox-image.sh");
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
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        self.agent = Some(c.spawn().expect("start moor agent"));
    }

    /// SIGTERM, then SIGKILL after 20 s.
    pub fn stop_agent(&mut self) {
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

    /// One container from `moor ps --all --json`.
    pub fn container(&self, name: &str) -> Option<serde_json::Value> {
        self.containers().into_iter().find(|c| c["name"] == name)
    }

    /// The running container's environment variable, read through `moor exec`.
    pub fn container_env(&self, name: &str, var: &str) -> Option<String> {
        let out = self.moor(&["exec", name, "--", "sh", "-c", &format!("echo \"${var}\"")]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
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
        // `down` keeps the default network, and with it the state dir's
        // DNS resolver (which would also stop once the dir is removed).
        moor_runtime::net::resolver::stop(self.dir());
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &format!("moor_t_{}", self.tag)])
            .stderr(Stdio::null())
            .status();
        // Bridges `down` could not remove would block the next run.
        if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
            let prefix = format!("m{}-", self.tag);
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(name) = line.split(": ").nth(1)
                    && let Some(name) = name.split('@').next()
                    && name.starts_with(&prefix)
                {
                    let _ = Command::new("ip").args(["link", "del", name]).status();
                }
            }
        }
        remove_cgroup_parent(&format!("moor-t-{}", self.tag));
    }
}

/// `POST path` with `headers` and `body` on 127.0.0.1:port: the status code and the body.
pub fn http_post(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}
