//! Network modes, the implicit default network, name resolution, isolation
//! and published ports, end to end through the real `moor` binary on the
//! real kernel (issue 5's tests that need whole containers).
//!
//! Each test has its own state dir, nftables table, address pool and cgroup
//! parent; a guard runs `moor down --volumes` and deletes the table.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, free_port, wait_for};

const PROJECT: &str = "netmodes";

fn http_get(port: u16) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.starts_with("HTTP/1.").then_some(buf)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The IPv4 addresses of every interface but `lo`, as `ip -o -4 addr` prints them.
fn ipv4_addresses(ip_output: &str) -> Vec<String> {
    ip_output
        .lines()
        .filter(|l| !l.contains(" lo "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|t| t == "inet")?;
            w.next().map(str::to_string)
        })
        .collect()
}

/// Interface names in a `/proc/net/dev` listing.
fn proc_net_dev(listing: &str) -> Vec<String> {
    let mut names: Vec<String> = listing
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .collect();
    names.sort();
    names
}

/// A private moor instance: state dir, manifests dir, optionally an agent.
struct Env {
    state: tempfile::TempDir,
    dir: PathBuf,
    _src: tempfile::TempDir,
    table: String,
    pool: String,
    cgroup: String,
    agent: Option<Child>,
}

impl Env {
    fn new(tag: &str, pool: &str) -> Option<Env> {
        if !common::require(&["busybox", "nft", "ip"], true) {
            return None;
        }
        let src = tempfile::tempdir().expect("source dir");
        let dir = src.path().join("manifests");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let env = Env {
            state: tempfile::tempdir().expect("state dir"),
            dir,
            _src: src,
            table: format!("moor_test_{tag}"),
            pool: pool.to_string(),
            cgroup: format!("moor-test-{tag}-{}", std::process::id()),
            agent: None,
        };
        let import = Command::new("bash")
            .arg(common::repo_root().join("examples/busybox-image.sh"))
            .arg(common::moor_bin())
            .env("MOOR_STATE_DIR", env.state.path())
            .output()
            .expect("run busybox-image.sh");
        assert!(import.status.success(), "image import: {}", text(&import));
        Some(env)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(common::moor_bin());
        c.env("MOOR_STATE_DIR", self.state.path())
            .env("MOOR_NFT_TABLE", &self.table)
            .env("MOOR_NET_POOL", &self.pool)
            .env("MOOR_CGROUP_PARENT", &self.cgroup);
        c
    }

    fn moor(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run moor")
    }

    fn write(&self, manifest: &str) {
        let body = format!(
            "[images.busybox]\nref = \"localhost/moor-example/busybox:1\"\npull = \"never\"\n\n{manifest}"
        );
        std::fs::write(self.dir.join("stack.toml"), body).expect("write manifest");
    }

    fn apply(&self) {
        let out = self.moor(&["apply", "-p", PROJECT, self.dir.to_str().expect("utf-8")]);
        assert!(out.status.success(), "moor apply: {}", text(&out));
    }

    fn start_agent(&mut self) {
        let log = std::fs::File::create(self.state.path().join("agent.log")).expect("agent log");
        let child = self
            .cmd()
            .args(["agent", "--source"])
            .arg(&self.dir)
            .args(["-p", PROJECT, "--resync", "1s", "--metrics-addr"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start moor agent");
        self.agent = Some(child);
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("agent.log")).unwrap_or_default()
    }

    /// `moor exec NAME -- sh -c SCRIPT`.
    fn exec(&self, name: &str, script: &str) -> Output {
        self.moor(&["exec", name, "--", "sh", "-c", script])
    }

    fn running(&self, name: &str) -> bool {
        let out = self.moor(&["ps", "--json"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap_or_default()
            .iter()
            .any(|c| c["name"] == name && c["state"] == "running")
    }

    fn network(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.moor(&["networks", "--json"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap_or_default()
            .into_iter()
            .find(|n| n["name"] == name)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
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
        let out = self.moor(&["down", "-p", PROJECT, "--volumes"]);
        if !out.status.success() {
            eprintln!("cleanup: moor down failed: {}", text(&out));
        }
        crate::common::remove_cgroup_parent(&self.cgroup);
        moor_runtime::net::resolver::stop(self.state.path());
        // The implicit default network outlives `down` (as docker0 does):
        // remove its bridge when it is this instance's.
        remove_default_bridge(self.state.path());
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .stderr(Stdio::null())
            .status();
        for d in [
            format!("/sys/fs/cgroup/{}", self.cgroup),
            format!("/sys/fs/cgroup/unified/{}", self.cgroup),
        ] {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Deletes the default network's bridge if this state dir's engine made it.
fn remove_default_bridge(state: &Path) {
    let recorded = std::fs::read_dir(state.join("net"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("\"mo-default\"")));
    if recorded {
        let _ = Command::new("ip")
            .args(["link", "del", "mo-default"])
            .status();
    }
}

const SLEEP: &str = r#"command = ["sleep", "3600"]"#;

/// `none` has only `lo`; `host` sees the host's interfaces; a container
/// naming no network is on the implicit default network with an address;
/// `container:NAME` shares that container's interfaces and address.
#[test]
fn network_modes_none_host_container_and_default() {
    let Some(env) = Env::new("modes", "10.87.0.0/16") else {
        return;
    };
    env.write(&format!(
        r#"
[containers.isolated]
image = "busybox"
network_mode = "none"
{SLEEP}

[containers.hostnet]
image = "busybox"
network_mode = "host"
{SLEEP}

[containers.base]
image = "busybox"
{SLEEP}

[containers.joiner]
image = "busybox"
network_mode = "container:base"
{SLEEP}
"#
    ));
    env.apply();

    // none: only the loopback interface.
    let out = env.exec("isolated", "cat /proc/net/dev");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        proc_net_dev(&String::from_utf8_lossy(&out.stdout)),
        vec!["lo"],
        "{}",
        text(&out)
    );
    let out = env.exec("isolated", "ip -o link");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    // host: the same interfaces as the host itself.
    let out = env.exec("hostnet", "cat /proc/net/dev");
    assert!(out.status.success(), "{}", text(&out));
    let inside = proc_net_dev(&String::from_utf8_lossy(&out.stdout));
    let outside = proc_net_dev(&std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev"));
    assert!(inside.len() > 1, "{inside:?}");
    // Interfaces of other tests come and go; the host's own stay.
    let stable: Vec<&String> = outside
        .iter()
        .filter(|n| !n.starts_with("mv-") && !n.starts_with("mo") && !n.starts_with("veth"))
        .collect();
    let missing: Vec<_> = stable.iter().filter(|n| !inside.contains(n)).collect();
    assert!(missing.is_empty(), "{missing:?} not seen: {inside:?}");

    // No network named: the implicit default network, with an address in it.
    let net = env
        .network("default")
        .expect("the default network is listed");
    let subnet = net["subnet"].as_str().expect("subnet").to_string();
    assert!(subnet.starts_with("10.87."), "{net}");
    assert_eq!(net["containers"], serde_json::json!(["base"]), "{net}");
    let base = env.exec("base", "ip -o -4 addr");
    assert!(base.status.success(), "{}", text(&base));
    let base_addrs = ipv4_addresses(&String::from_utf8_lossy(&base.stdout));
    assert_eq!(base_addrs.len(), 1, "{}", text(&base));
    let prefix = subnet.rsplit_once('.').expect("dotted subnet").0;
    assert!(
        base_addrs[0].starts_with(&format!("{prefix}.")),
        "{base_addrs:?} not in {subnet}"
    );
    let route = env.exec("base", "ip route");
    assert!(
        String::from_utf8_lossy(&route.stdout).contains("default via"),
        "{}",
        text(&route)
    );

    // container:base: the very same interfaces and address.
    let joiner = env.exec("joiner", "ip -o -4 addr");
    assert!(joiner.status.success(), "{}", text(&joiner));
    assert_eq!(
        ipv4_addresses(&String::from_utf8_lossy(&joiner.stdout)),
        base_addrs,
        "{}",
        text(&joiner)
    );
    let ns = |name: &str| {
        let out = env.moor(&["ps", "--json"]);
        let pid = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["pid"].as_i64())
            .unwrap_or_else(|| panic!("{name} has no pid: {}", text(&out)));
        std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("netns link")
    };
    assert_eq!(ns("joiner"), ns("base"), "one network namespace");
    assert_ne!(
        ns("isolated"),
        std::fs::read_link("/proc/self/ns/net").expect("own netns")
    );
    assert_eq!(
        ns("hostnet"),
        std::fs::read_link("/proc/self/ns/net").expect("own netns")
    );
}

/// Through `moor agent`'s DNS: two containers on one network reach each
/// other by name and by alias; a container on another network can neither
/// resolve nor reach them. A published port answers on 127.0.0.1 and stops
/// answering once its container is removed.
#[test]
fn names_aliases_isolation_and_published_port() {
    let Some(mut env) = Env::new("names", "10.86.0.0/16") else {
        return;
    };
    let port = free_port();
    let manifest = |with_web: bool| {
        let web = format!(
            r#"
[containers.web]
image = "busybox"
command = ["sh", "-c", "mkdir -p /srv && echo hello-from-web > /srv/index.html && exec httpd -f -p 80 -h /srv"]
networks = {{ nmback = {{ aliases = ["api"] }} }}
ports = ["127.0.0.1:{port}:80"]
"#
        );
        format!(
            r#"
[networks.nmback]
subnet = "10.86.10.0/24"

[networks.nmother]
subnet = "10.86.20.0/24"
{}
[containers.client]
image = "busybox"
networks = ["nmback"]
{SLEEP}

[containers.outsider]
image = "busybox"
networks = ["nmother"]
{SLEEP}
"#,
            if with_web { web } else { String::new() }
        )
    };
    env.write(&manifest(true));
    env.start_agent();
    wait_for("all three containers", Duration::from_secs(90), || {
        ["web", "client", "outsider"].iter().all(|n| env.running(n))
    });
    wait_for("web on its published port", Duration::from_secs(60), || {
        http_get(port).is_some_and(|b| b.contains("hello-from-web"))
    });

    // By name and by alias, through the network's DNS server.
    for name in ["web", "api"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = env.exec("client", &format!("timeout 5 wget -q -O - http://{name}/"));
            let last = text(&out);
            if out.status.success() && last.contains("hello-from-web") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "client cannot fetch http://{name}/: {last}\n{}\nagent log:\n{}",
                text(&env.exec("client", &format!("cat /etc/resolv.conf; ip -o -4 addr; nslookup {name}; wget -O - http://{name}/"))),
                env.agent_log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let lookup = env.exec("client", "nslookup web");
    assert!(
        String::from_utf8_lossy(&lookup.stdout).contains("10.86.10."),
        "{}",
        text(&lookup)
    );

    // Another network: no name, no route.
    for name in ["web", "api"] {
        let out = env.exec("outsider", &format!("nslookup {name}"));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("10.86.10."),
            "outsider resolved {name}: {}",
            text(&out)
        );
        let out = env.exec(
            "outsider",
            &format!("timeout 5 wget -q -O - http://{name}/"),
        );
        assert!(
            !out.status.success(),
            "outsider fetched {name}: {}",
            text(&out)
        );
    }
    let web_ip = env
        .network("nmback")
        .and_then(|_| {
            let out = env.exec("web", "ip -o -4 addr");
            ipv4_addresses(&String::from_utf8_lossy(&out.stdout))
                .into_iter()
                .next()
        })
        .expect("web's address");
    let web_ip = web_ip.split('/').next().expect("address").to_string();
    assert!(web_ip.starts_with("10.86.10."), "{web_ip}");
    let out = env.exec(
        "outsider",
        &format!("timeout 5 wget -q -O - http://{web_ip}/"),
    );
    assert!(
        !out.status.success(),
        "outsider reached {web_ip}: {}",
        text(&out)
    );
    let out = env.exec(
        "client",
        &format!("timeout 5 wget -q -O - http://{web_ip}/"),
    );
    assert!(out.status.success(), "client by address: {}", text(&out));

    // Remove web: the published port stops answering.
    env.write(&manifest(false));
    wait_for("web to be removed", Duration::from_secs(60), || {
        !env.running("web")
    });
    wait_for(
        "the published port to stop answering",
        Duration::from_secs(30),
        || http_get(port).is_none(),
    );
    let rules = Command::new("nft")
        .args(["list", "table", "ip", &env.table])
        .output()
        .expect("nft list");
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&format!("dport {port}")),
        "the DNAT rule is gone: {}",
        text(&rules)
    );
}
