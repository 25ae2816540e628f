//! Network modes, the implicit default network, name resolution, isolation
//! and published ports, end to end through the real `moor` binary on the
//! real kernel (issue 5's tests that need whole containers).
//!
//! Each test runs on an [`Instance`] of its own, which takes everything
//! down when it is dropped.

use std::time::{Duration, Instant};

use crate::common::instance::Instance;
use crate::common::{self, free_port, text, wait_for};

const PROJECT: &str = "netmodes";

/// `GET /` on a loopback port: the body, if it answers.
fn http_get(port: u16) -> Option<String> {
    common::http_get(port, "/").map(|(_, body)| body)
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

/// An instance with the busybox image, and a manifest directory.
struct Env {
    host: Instance,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Option<Env> {
        let host = Instance::with_busybox(PROJECT, &[])?;
        let dir = tempfile::tempdir().expect("manifest dir");
        Some(Env { host, dir })
    }

    fn moor(&self, args: &[&str]) -> std::process::Output {
        self.host.moor(args)
    }

    fn write(&self, manifest: &str) {
        let body = format!(
            "[images.busybox]\nref = \"localhost/moor-example/busybox:1\"\npull = \"never\"\n\n{manifest}"
        );
        std::fs::write(self.dir.path().join("stack.toml"), body).expect("write manifest");
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("utf-8")
    }

    fn apply(&self) {
        let out = self.moor(&["apply", "-p", PROJECT, self.path()]);
        assert!(out.status.success(), "moor apply: {}", text(&out));
    }

    /// `moor exec NAME -- sh -c SCRIPT`.
    fn exec(&self, name: &str, script: &str) -> std::process::Output {
        self.moor(&["exec", name, "--", "sh", "-c", script])
    }
}

const SLEEP: &str = r#"command = ["sleep", "3600"]"#;

/// `none` has only `lo`; `host` sees the host's interfaces; a container
/// naming no network is on the implicit default network with an address;
/// `container:NAME` shares that container's interfaces and address.
#[test]
fn network_modes_none_host_container_and_default() {
    let Some(env) = Env::new() else {
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
    let outside =
        || proc_net_dev(&std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev"));
    let before = outside();
    let out = env.exec("hostnet", "cat /proc/net/dev");
    assert!(out.status.success(), "{}", text(&out));
    let inside = proc_net_dev(&String::from_utf8_lossy(&out.stdout));
    let after = outside();
    assert!(inside.len() > 1, "{inside:?}");
    // Interfaces of other tests come and go; those there before and after
    // were there all along.
    let stable: Vec<&String> = before.iter().filter(|n| after.contains(n)).collect();
    let missing: Vec<_> = stable.iter().filter(|n| !inside.contains(n)).collect();
    assert!(missing.is_empty(), "{missing:?} not seen: {inside:?}");

    // No network named: the implicit default network, with an address in it.
    let net = env
        .host
        .network("default")
        .expect("the default network is listed");
    let subnet = net["subnet"].as_str().expect("subnet").to_string();
    assert!(
        env.host.slot().in_pool(&subnet),
        "{net} not in {}",
        env.host.slot().pool()
    );
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
        let pid = env
            .host
            .pid(name)
            .unwrap_or_else(|| panic!("{name} has no pid: {:?}", env.host.containers()));
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
    let Some(mut env) = Env::new() else {
        return;
    };
    let (back, other) = (env.host.slot().subnet(10), env.host.slot().subnet(20));
    let back_net = format!("{}.10.", env.host.slot().net());
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
subnet = "{back}"

[networks.nmother]
subnet = "{other}"
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
    let path = env.path().to_string();
    env.host
        .start_agent(&["--source", &path, "-p", PROJECT, "--resync", "1s"]);
    wait_for("all three containers", Duration::from_secs(90), || {
        ["web", "client", "outsider"]
            .iter()
            .all(|n| env.host.running(n))
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
                env.host.agent_log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let lookup = env.exec("client", "nslookup web");
    assert!(
        String::from_utf8_lossy(&lookup.stdout).contains(&back_net),
        "{}",
        text(&lookup)
    );

    // Another network: no name, no route.
    for name in ["web", "api"] {
        let out = env.exec("outsider", &format!("nslookup {name}"));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(&back_net),
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
    assert!(env.host.network("nmback").is_some(), "nmback is listed");
    let web_ip = env.host.container_ipv4("web").to_string();
    assert!(web_ip.starts_with(&back_net), "{web_ip} not in {back}");
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
        !env.host.running("web")
    });
    wait_for(
        "the published port to stop answering",
        Duration::from_secs(30),
        || http_get(port).is_none(),
    );
    // The rules follow within the same pass (after the container is gone,
    // so under load a moment later).
    wait_for("the DNAT rule to go", Duration::from_secs(30), || {
        !common::host::nft_table(&env.host.slot().nft_table())
            .unwrap_or_default()
            .contains(&format!("dport {port}"))
    });
}
