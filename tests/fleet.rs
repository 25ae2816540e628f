//! Fleets: one manifest repository, many hosts. `moor validate`, `plan` and
//! `apply` act as the host given by `--host-name` / `--host-label` (this
//! machine by default) and see only what targets it.
//!
//! Several instances share one machine, and three agents pulling one git
//! repository each apply only what targets their host.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{self, git, link_exists, wait_for};

/// A fleet repository: edge proxies, a database for hosts labelled
/// role=db, a GPU job for hosts labelled gpu=yes, an exporter everywhere.
fn write_fleet(dir: &Path) {
    let files = [
        (
            "edge.toml",
            r#"
[target]
hosts = ["edge-*"]

[networks.flt-edge]

[containers.proxy]
image    = "busybox:1.36"
command  = ["sleep", "1000"]
networks = ["flt-edge"]

# Its own target replaces the file's: wherever there is a GPU.
[containers.trainer]
image  = "busybox:1.36"
target = { labels = { gpu = "yes" } }
"#,
        ),
        (
            "db/db.yaml",
            r#"
target:
  labels: {role: db}
volumes:
  pgdata: {}
containers:
  pg:
    image: busybox:1.36
    command: [sleep, "1000"]
    mounts: ["pgdata:/data"]
"#,
        ),
        (
            "common.toml",
            r#"
[containers.exporter]
image        = "busybox:1.36"
network_mode = "host"
"#,
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write manifest");
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\nstdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// `moor validate --json` as a host: (containers, networks, volumes) counts.
fn counts(dir: &Path, host: &[&str]) -> (u64, u64, u64) {
    let mut args = vec!["validate", "--json"];
    args.extend_from_slice(host);
    let dir = dir.to_str().expect("utf-8");
    args.push(dir);
    let out = common::moor(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = json(&out);
    let n = |k: &str| v["resources"][k].as_u64().expect("a count");
    (n("containers"), n("networks"), n("volumes"))
}

#[test]
fn validate_counts_only_what_targets_the_host() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_fleet(tmp.path());
    let d = tmp.path();
    assert_eq!(counts(d, &["--host-name", "edge-1"]), (2, 1, 0));
    assert_eq!(
        counts(d, &["--host-name", "edge-2", "--host-label", "gpu=yes"]),
        (3, 1, 0)
    );
    assert_eq!(
        counts(d, &["--host-name", "db-1", "--host-label", "role=db"]),
        (2, 0, 1)
    );
    assert_eq!(counts(d, &["--host-name", "elsewhere"]), (1, 0, 0));
    // The JSON names the host it acted as.
    let out = common::moor(&[
        "validate",
        "--json",
        "--host-name",
        "db-1",
        "--host-label",
        "role=db",
        d.to_str().expect("utf-8"),
    ]);
    let v = json(&out);
    assert_eq!(v["host"]["name"], "db-1");
    assert_eq!(v["host"]["labels"]["role"], "db");
}

#[test]
fn bad_host_flags_are_usage_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_fleet(tmp.path());
    let d = tmp.path().to_str().expect("utf-8");
    for (args, says) in [
        (vec!["--host-label", "role"], "must look like KEY=VALUE"),
        (vec!["--host-label", "ro le=db"], "label key \"ro le\""),
        (
            vec!["--host-name", "edge-*"],
            "host name \"edge-*\" contains '*'",
        ),
        (vec!["--host-name", ""], "must not be empty"),
    ] {
        let mut all = vec!["validate"];
        all.extend(args.iter().copied());
        all.push(d);
        let out = common::moor(&all);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = common::moor(&[
        "validate",
        "--host-label",
        "role=db",
        "--host-label",
        "role=web",
        d,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--host-label role is given twice"),
        "{}",
        text(&out.stderr)
    );
}

/// The (verb, kind, name) of each action `moor plan --json` shows.
fn plan(host: &Instance, dir: &Path, as_host: &[&str]) -> BTreeSet<(String, String, String)> {
    let mut args = vec!["plan", "--json", "-p", "fleet"];
    args.extend_from_slice(as_host);
    args.push(dir.to_str().expect("utf-8"));
    let out = host.moor(&args);
    assert_eq!(out.status.code(), Some(2), "changes: {}", text(&out.stderr));
    json(&out)["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().expect("a string").to_string();
            (s("verb"), s("kind"), s("name"))
        })
        .collect()
}

fn creates(plan: &BTreeSet<(String, String, String)>) -> Vec<String> {
    plan.iter()
        .filter(|(verb, ..)| verb == "create")
        .map(|(_, kind, name)| format!("{kind} {name}"))
        .collect()
}

#[test]
fn plan_shows_only_the_resources_of_the_host_it_acts_as() {
    if !common::require(&["nft"], true) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    write_fleet(tmp.path());
    let host = Instance::new();
    let edge = plan(&host, tmp.path(), &["--host-name", "edge-1"]);
    assert_eq!(
        creates(&edge),
        ["container exporter", "container proxy", "network flt-edge"],
        "{edge:?}"
    );
    let db = plan(
        &host,
        tmp.path(),
        &["--host-name", "db-1", "--host-label", "role=db"],
    );
    assert_eq!(
        creates(&db),
        ["container exporter", "container pg", "volume pgdata"],
        "{db:?}"
    );

    // A resource for this host that needs one for other hosts: plan refuses,
    // naming the reference and where the other resource is declared.
    std::fs::write(
        tmp.path().join("app.toml"),
        "[containers.app]\nimage = \"busybox:1.36\"\nnetworks = [\"flt-edge\"]\n",
    )
    .expect("write app.toml");
    let out = host.moor(&[
        "plan",
        "-p",
        "fleet",
        "--host-name",
        "db-1",
        tmp.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let want = format!(
        "{}:3:13: error: containers.app.networks[0]: network \"flt-edge\" does not target this host (it is declared at {}:5:11 for hosts = [\"edge-*\"])",
        tmp.path().join("app.toml").display(),
        tmp.path().join("edge.toml").display()
    );
    assert!(stderr.contains(&want), "want {want}\ngot:\n{stderr}");
}

/// The network both instances declare, under the same name.
const SHARED_NET: &str = "flnet";

/// One moor instance of several on this machine, with the same project,
/// network and container names as the others; its manifest directory.
fn member(sources: &Path) -> (Instance, std::path::PathBuf) {
    let host = Instance::new();
    host.import_busybox();
    let dir = sources.join(&host.tag);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let tag = &host.tag;
    let manifest = format!(
        r#"[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[networks.{SHARED_NET}]

[containers.web]
image    = "busybox"
command  = ["sh", "-c", "echo instance {tag} > /www/index.html && exec httpd -f -p 80 -h /www"]
networks = ["{SHARED_NET}"]
"#
    );
    std::fs::write(dir.join("stack.toml"), manifest).expect("write manifest");
    (host, dir)
}

/// The shared network as `moor networks --json` shows it.
fn shared_network(i: &Instance) -> serde_json::Value {
    i.network(SHARED_NET)
        .unwrap_or_else(|| panic!("{}: network {SHARED_NET} is not listed", i.tag))
}

/// The interfaces enslaved to `bridge`.
fn bridge_ports(bridge: &str) -> Vec<String> {
    std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
        .map(|it| {
            it.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /` from the host straight to a container's address.
fn get_from(addr: std::net::Ipv4Addr) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&(addr, 80).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Two moor instances on one machine, each with a network `flnet` and a
/// container `web` on it in a project `fleet`: both come up side by side,
/// each start-up's crash clean-up leaves the other's interfaces and rules
/// alone, and `moor down` of one leaves the other's bridge, veth, rules and
/// container exactly as they were.
#[test]
fn two_instances_on_one_machine_keep_apart() {
    if !common::require(&["busybox", "nft", "ip"], true) {
        return;
    }
    let sources = tempfile::tempdir().expect("sources");
    let (mut a, a_dir) = member(sources.path());
    let (mut b, b_dir) = member(sources.path());
    a.owns("fleet");
    b.owns("fleet");
    let (a_dir, b_dir) = (
        a_dir.to_str().expect("utf-8"),
        b_dir.to_str().expect("utf-8"),
    );
    let bridge = |i: &Instance| i.slot().bridge(SHARED_NET);
    let nft_rules = |i: &Instance| common::host::nft_table(&i.slot().nft_table());
    a.moor_ok(&["apply", "-p", "fleet", a_dir]);
    // B's start-up clean-up runs with A's bridge and veth on the host.
    b.moor_ok(&["apply", "-p", "fleet", b_dir]);
    // And A's again, with B's there: a plan opens the host too.
    let plan = a.moor(&["plan", "-p", "fleet", a_dir]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));

    for (i, other) in [(&a, &b), (&b, &a)] {
        let net = shared_network(i);
        assert_eq!(net["bridge"], bridge(i), "{}", i.tag);
        assert!(link_exists(&bridge(i)), "{} bridge", i.tag);
        let subnet: ipnet::Ipv4Net = net["subnet"]
            .as_str()
            .expect("subnet")
            .parse()
            .expect("subnet");
        let pool: ipnet::Ipv4Net = i.slot().pool().parse().expect("pool");
        assert!(
            pool.contains(&subnet),
            "{}: {subnet} from its own pool {pool}",
            i.tag
        );
        let addr = i.container_ipv4("web");
        assert!(subnet.contains(&addr), "{}: {addr} in {subnet}", i.tag);
        let body = get_from(addr).unwrap_or_default();
        assert!(
            body.contains(&format!("instance {}", i.tag)),
            "{}: {body:?}",
            i.tag
        );
        assert_eq!(
            bridge_ports(&bridge(i)).len(),
            1,
            "{}: one veth on its bridge",
            i.tag
        );
        let rules = nft_rules(i).unwrap_or_default();
        assert!(rules.contains(&bridge(i)), "{} rules: {rules}", i.tag);
        assert!(
            !rules.contains(&bridge(other)),
            "{} rules name the other's bridge: {rules}",
            i.tag
        );
    }
    let a_veth = bridge_ports(&bridge(&a));
    let b_veth = bridge_ports(&bridge(&b));
    assert_ne!(
        a_veth, b_veth,
        "the same container and network name, different veths"
    );
    let b_addr = b.container_ipv4("web");
    let b_rules = nft_rules(&b).expect("B's table");

    a.moor_ok(&["down", "-p", "fleet", a_dir]);
    assert!(!link_exists(&bridge(&a)), "A's bridge is gone");
    assert!(
        nft_rules(&a).is_none_or(|r| !r.contains(&bridge(&a))),
        "A's rules are gone"
    );
    assert!(!a.running("web"), "A's container is gone");

    assert!(link_exists(&bridge(&b)), "B's bridge is untouched");
    assert_eq!(bridge_ports(&bridge(&b)), b_veth, "B's veth is untouched");
    assert_eq!(
        nft_rules(&b).as_deref(),
        Some(b_rules.as_str()),
        "B's rules are untouched"
    );
    assert!(b.running("web"), "B's container still runs");
    assert_eq!(b.container_ipv4("web"), b_addr);
    let body = get_from(b_addr).unwrap_or_default();
    assert!(
        body.contains(&format!("instance {}", b.tag)),
        "B still serves: {body:?}"
    );
    // B's own view agrees: nothing to do.
    let plan = b.moor(&["plan", "-p", "fleet", b_dir]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));
}

/// A bad bridge prefix or pool is refused, not replaced by the default that
/// another instance may be using.
#[test]
fn a_bad_instance_setting_is_refused() {
    if !common::require(&[], true) {
        return;
    }
    let host = Instance::new();
    for (var, value, says) in [
        (
            "MOOR_BRIDGE_PREFIX",
            "Moor-",
            "bridge prefix \"Moor-\" must be",
        ),
        (
            "MOOR_BRIDGE_PREFIX",
            "toolong1-",
            "bridge prefix \"toolong1-\" must be",
        ),
        (
            "MOOR_NET_POOL",
            "10.83.0.0",
            "MOOR_NET_POOL=\"10.83.0.0\" is not",
        ),
    ] {
        // Were the setting taken, only the instance's slot is at stake.
        let out = host
            .command()
            .args(["down", "-p", "fleet"])
            .env(var, value)
            .output()
            .expect("run moor");
        assert_eq!(out.status.code(), Some(1), "{var}={value}");
        assert!(
            text(&out.stderr).contains(says),
            "{var}={value}: {}",
            text(&out.stderr)
        );
    }
}

/// The fleet repository of the three-agent test: an image and a network
/// `back` everywhere, a container `beacon` everywhere, a container `pg` for
/// hosts labelled role=db (its own target), and a file for hosts named
/// `edge-*` with a network `front` and a container `proxy` on it.
fn write_fleet_repo(dir: &Path, pg_version: &str) {
    let common = format!(
        r#"[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[networks.back]

[containers.beacon]
image    = "busybox"
command  = ["sleep", "3600"]
init     = true
networks = ["back"]

[containers.pg]
image    = "busybox"
command  = ["sleep", "3600"]
init     = true
networks = ["back"]
env      = {{ VERSION = "{pg_version}" }}
target   = {{ labels = {{ role = "db" }} }}
"#
    );
    let edge = r#"[target]
hosts = ["edge-*"]

[networks.front]

[containers.proxy]
image    = "busybox"
command  = ["sleep", "3600"]
init     = true
networks = ["front"]
"#;
    std::fs::write(dir.join("common.toml"), common).expect("write common.toml");
    std::fs::write(dir.join("edge.toml"), edge).expect("write edge.toml");
}

/// Commits everything in the work clone `dir` and pushes it; the commit id.
fn commit_and_push(dir: &Path, subject: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", subject]);
    git(dir, &["push", "-q", "origin", "HEAD:main"]);
    git(dir, &["rev-parse", "HEAD"])
}

/// The running containers of a member: name → (id, pid, started).
fn running(m: &Instance) -> BTreeMap<String, (String, String, String)> {
    m.containers()
        .into_iter()
        .filter(|c| c["state"] == "running")
        .map(|c| {
            let s = |k: &str| c[k].to_string();
            (
                c["name"].as_str().expect("a name").to_string(),
                (s("id"), s("pid"), s("started")),
            )
        })
        .collect()
}

/// The names and bridges of a member's networks, from `moor networks --json`.
fn networks(m: &Instance) -> BTreeMap<String, String> {
    let out = m.moor(&["networks", "--json"]);
    assert!(out.status.success(), "{}: {}", m.tag, text(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    list.iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().expect("a string").to_string();
            (s("name"), s("bridge"))
        })
        .collect()
}

/// The single source of a member's `/status`, if the agent answers.
fn source(m: &Instance) -> serde_json::Value {
    m.status()["sources"][0].clone()
}

/// The container names `/status` lists as resources, with their status.
fn status_containers(m: &Instance) -> BTreeMap<String, String> {
    m.status()["resources"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["kind"] == "container")
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One host of the three-agent test and what should end up on it.
struct HostPlan {
    name: &'static str,
    /// Its label `role`.
    role: &'static str,
    /// Its containers, sorted.
    containers: &'static [&'static str],
    /// Its networks, sorted, with the number of veths on each.
    networks: &'static [(&'static str, usize)],
}

/// Three agents on this machine, each a host of its own (state dir, bridge
/// prefix, address pool, nftables table, cgroup parent), with its own name
/// and labels, pull one git repository: each converges to exactly the
/// resources that target it; a push that changes only the db container
/// replaces it on the db host alone, while every host moves to the new commit.
#[test]
fn three_agents_pulling_one_repository_each_converge_to_their_own_subset() {
    if !common::require(&["busybox", "nft", "ip", "git"], true) {
        return;
    }
    // The repository: a bare one, pushed to from a work clone.
    let repos = tempfile::tempdir().expect("tempdir");
    let bare = repos.path().join("fleet.git");
    let work = repos.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(
        repos.path(),
        &["init", "-q", "--bare", "--initial-branch=main", "fleet.git"],
    );
    git(&work, &["init", "-q", "--initial-branch=main"]);
    git(
        &work,
        &["remote", "add", "origin", bare.to_str().expect("utf-8")],
    );
    write_fleet_repo(&work, "1");
    let first = commit_and_push(&work, "fleet: beacon everywhere, proxy on edges, pg on db");
    let url = format!("git+file://{}", bare.display());

    let hosts = [
        HostPlan {
            name: "edge-1",
            role: "web",
            containers: &["beacon", "proxy"],
            networks: &[("back", 1), ("front", 1)],
        },
        HostPlan {
            name: "edge-2",
            role: "web",
            containers: &["beacon", "proxy"],
            networks: &[("back", 1), ("front", 1)],
        },
        HostPlan {
            name: "db-1",
            role: "db",
            containers: &["beacon", "pg"],
            networks: &[("back", 2)],
        },
    ];
    let mut members: Vec<Instance> = Vec::new();
    for h in &hosts {
        let mut m = Instance::new();
        m.owns("fleet");
        m.import_busybox();
        m.start_agent(&[
            "--source",
            &url,
            "-p",
            "fleet",
            "--interval",
            "1s",
            "--resync",
            "2s",
            "--host-name",
            h.name,
            "--host-label",
            &format!("role={}", h.role),
        ]);
        members.push(m);
    }

    // Each host converges to exactly its own subset.
    for (m, h) in members.iter_mut().zip(&hosts) {
        let tag = m.tag.clone();
        wait_for(
            &format!("{tag}: {:?} running and /status ready", h.containers),
            Duration::from_secs(60),
            || {
                let names: Vec<String> = running(m).into_keys().collect();
                names == h.containers && m.status()["ready"] == true
            },
        );
        assert!(m.agent_alive(), "{tag}: agent died:\n{}", m.agent_log());
        let status = m.status();
        assert_eq!(status["host"]["name"], h.name, "{status:#}");
        assert_eq!(status["host"]["labels"]["role"], h.role, "{status:#}");
        assert_eq!(status["project"], "fleet", "{status:#}");
        let s = &status["sources"][0];
        assert_eq!(s["kind"], "git", "{s:#}");
        assert_eq!(s["revision"], first.as_str(), "{s:#}");
        assert_eq!(s["applied_revision"], first.as_str(), "{s:#}");
        assert!(s["error"].is_null(), "{s:#}");
        // /status names exactly this host's containers, all Ready.
        let listed = status_containers(m);
        assert_eq!(
            listed.keys().map(String::as_str).collect::<Vec<_>>(),
            h.containers,
            "{tag}: {status:#}"
        );
        assert!(listed.values().all(|st| st == "Ready"), "{tag}: {status:#}");
        // Its networks, each on a bridge with its own prefix, all up at once.
        let have = networks(m);
        assert_eq!(
            have.keys().map(String::as_str).collect::<Vec<_>>(),
            h.networks.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "{tag}"
        );
        for (net, bridge) in &have {
            assert_eq!(*bridge, m.slot().bridge(net), "{tag}");
        }
    }
    // All five bridges are up side by side, each with its own veths.
    for (m, h) in members.iter().zip(&hosts) {
        for (net, veths) in h.networks {
            let bridge = m.slot().bridge(net);
            assert!(link_exists(&bridge), "{bridge} is up alongside the others");
            assert_eq!(bridge_ports(&bridge).len(), *veths, "{bridge}: its veths");
        }
    }
    let db = &members[2];
    assert_eq!(db.container_env("pg", "VERSION").as_deref(), Some("1"));

    // A push that changes only pg's environment.
    let before: Vec<_> = members.iter().map(running).collect();
    write_fleet_repo(&work, "2");
    let second = commit_and_push(&work, "fleet: pg version 2");
    assert_ne!(first, second);

    // Every host moves to the new commit; then one more pass completes on
    // each with it in force, so whatever it would replace has been replaced.
    for m in &members {
        let mut seen: Option<u64> = None;
        wait_for(
            &format!("{}: a pass with {second} applied", m.tag),
            Duration::from_secs(60),
            || {
                let status = m.status();
                let s = &status["sources"][0];
                if s["applied_revision"] != second.as_str() || status["ready"] != true {
                    return false;
                }
                let n = status["reconciles"].as_u64().unwrap_or(0);
                let first_seen = *seen.get_or_insert(n);
                n > first_seen
            },
        );
    }
    wait_for("pg replaced on db-1", Duration::from_secs(60), || {
        db.container_env("pg", "VERSION").as_deref() == Some("2")
    });

    for (i, m) in members.iter().enumerate() {
        let s = source(m);
        assert_eq!(s["revision"], second.as_str(), "{}: {s:#}", m.tag);
        assert_eq!(s["applied_revision"], second.as_str(), "{}: {s:#}", m.tag);
        assert_eq!(s["subject"], "fleet: pg version 2", "{}: {s:#}", m.tag);
        assert!(s["error"].is_null(), "{}: {s:#}", m.tag);
        let after = running(m);
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before[i].keys().collect::<Vec<_>>(),
            "{}: the same containers",
            m.tag
        );
        for (name, was) in &before[i] {
            if hosts[i].name == "db-1" && name == "pg" {
                assert_ne!(&after[name], was, "pg on db-1 was replaced");
            } else {
                assert_eq!(
                    &after[name], was,
                    "{}: {name} was touched by a change to pg",
                    m.tag
                );
            }
        }
    }
    for m in &mut members {
        assert!(m.agent_alive(), "{}: agent died:\n{}", m.tag, m.agent_log());
    }
}
