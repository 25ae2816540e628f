//! A no-op `moor apply` of a converged stack, end to end: it only reads —
//! no thread started, no program run, nothing written or renamed, no link
//! changed, the DNS resolver not asked anything (`bench/stack.sh` measures
//! it) — and it still catches drift: a container that died, a bridge set
//! down, stripped of its address or deleted (its containers put back on
//! it), the nftables table deleted, the resolver killed.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::instance::Instance;
use crate::common::{self, moor_bin};

const PROJECT: &str = "noop";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A host with the busybox image and a manifest directory holding two
/// containers that keep running on one network (`None` when a prerequisite
/// is missing off CI).
fn stack() -> Option<(Instance, tempfile::TempDir)> {
    let host = Instance::with_busybox(PROJECT, &["strace"])?;
    let dir = tempfile::tempdir().expect("manifest dir");
    let mut body = String::from(
        "[images.busybox]\nref = \"localhost/moor-example/busybox:1\"\npull = \"never\"\n\n\
         [networks.front]\n",
    );
    for name in ["a", "b"] {
        body.push_str(&format!(
            "\n[containers.{name}]\nimage = \"busybox\"\ncommand = [\"sleep\", \"1000000\"]\n\
             networks = [\"front\"]\nrestart = \"always\"\ninit = true\n"
        ));
    }
    std::fs::write(dir.path().join("stack.toml"), body).expect("write manifest");
    Some((host, dir))
}

/// `moor apply -p PROJECT DIR`, which must succeed.
fn apply(host: &Instance, dir: &Path) -> String {
    let out = host.moor(&["apply", "-p", PROJECT, dir.to_str().expect("utf-8")]);
    assert!(out.status.success(), "moor apply failed:\n{}", text(&out));
    text(&out)
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Network front's bridge and gateway/prefix.
fn bridge(host: &Instance) -> (String, String) {
    let nets: serde_json::Value =
        serde_json::from_slice(&host.moor(&["networks", "--json"]).stdout).expect("networks json");
    let front = nets
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "front"))
        .expect("network front is listed");
    let subnet = front["subnet"].as_str().expect("subnet");
    let prefix = subnet.split_once('/').expect("a prefix").1;
    (
        front["bridge"].as_str().expect("bridge").to_string(),
        format!("{}/{prefix}", front["gateway"].as_str().expect("gateway")),
    )
}

fn pid(host: &Instance, name: &str) -> Option<i64> {
    host.container(name)
        .filter(|c| c["state"] == "running")
        .and_then(|c| c["pid"].as_i64())
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// What the second `moor apply` of an unchanged, running stack does, as
/// `strace -f` sees it: one program (itself), no thread, no file renamed or
/// synced, no socket connected (the resolver's control socket), and no
/// netlink request but dumps.
#[test]
fn a_no_op_apply_starts_nothing_and_writes_nothing() {
    let Some((host, dir)) = stack() else {
        return;
    };
    apply(&host, dir.path());
    let trace = host.dir().join("noop.strace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=execve,clone,clone3,fork,vfork,rename,renameat,renameat2,fsync,fdatasync,connect,sendto",
        ])
        .arg(moor_bin())
        .args(["apply", "-p", PROJECT])
        .arg(dir.path())
        .envs(host.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run strace");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("noop: up to date"), "{}", text(&out));
    let trace = std::fs::read_to_string(&trace).expect("read the trace");
    let calls = |name: &str| {
        trace
            .lines()
            .filter(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, call)| call.trim_start().starts_with(name))
            })
            .count()
    };
    assert_eq!(calls("execve("), 1, "no program run but moor:\n{trace}");
    for call in ["clone(", "clone3(", "fork(", "vfork("] {
        assert_eq!(calls(call), 0, "no thread or process started:\n{trace}");
    }
    for call in ["rename", "fsync(", "fdatasync("] {
        assert_eq!(calls(call), 0, "nothing written:\n{trace}");
    }
    assert_eq!(calls("connect("), 0, "the resolver is not asked:\n{trace}");
    for request in ["RTM_SETLINK", "RTM_NEWLINK", "RTM_NEWADDR", "RTM_DELLINK"] {
        assert!(
            !trace.contains(request),
            "no link changed ({request}):\n{trace}"
        );
    }
}

/// Drift that a no-op `moor apply` repairs, one kind at a time; after each
/// repair the next apply is a no-op again.
#[test]
fn a_no_op_apply_still_repairs_drift() {
    let Some((host, dir)) = stack() else {
        return;
    };
    apply(&host, dir.path());
    let (br, gateway) = bridge(&host);
    let ports = || ip(&["-o", "link", "show", "master", &br]).lines().count();
    assert_eq!(ports(), 2, "both containers on {br}");

    // A container that died is started again.
    let old = pid(&host, "a").expect("a runs");
    let _ = Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status();
    common::wait_for("a to exit", std::time::Duration::from_secs(30), || {
        pid(&host, "a") != Some(old)
    });
    apply(&host, dir.path());
    let new = pid(&host, "a").expect("a runs again");
    assert_ne!(new, old);

    // The bridge set down is set up again.
    ip(&["link", "set", "dev", &br, "down"]);
    apply(&host, dir.path());
    let link = ip(&["-o", "link", "show", "dev", &br]);
    assert!(link.contains(",UP"), "{link}");

    // The bridge stripped of its address gets it back.
    ip(&["addr", "flush", "dev", &br]);
    apply(&host, dir.path());
    let addr = ip(&["-o", "-4", "addr", "show", "dev", &br]);
    assert!(addr.contains(&gateway), "{addr}");

    // The bridge deleted is made again, and the containers' ends put back on it.
    ip(&["link", "del", &br]);
    apply(&host, dir.path());
    let addr = ip(&["-o", "-4", "addr", "show", "dev", &br]);
    assert!(addr.contains(&gateway), "{addr}");
    assert_eq!(ports(), 2, "both containers back on {br}");

    // The nftables table deleted is loaded again.
    let table = host
        .env
        .iter()
        .find(|(k, _)| k == "MOOR_NFT_TABLE")
        .map(|(_, v)| v.clone())
        .expect("the slot's table");
    let table = table.as_str();
    let deleted = Command::new("nft")
        .args(["delete", "table", "ip", table])
        .status()
        .expect("run nft");
    assert!(deleted.success());
    apply(&host, dir.path());
    let listed = Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .expect("run nft");
    assert!(listed.status.success(), "{}", text(&listed));

    // The resolver killed is started again.
    let resolver = moor_runtime::net::resolver::pid(host.dir()).expect("a resolver runs");
    let _ = Command::new("kill")
        .args(["-KILL", &resolver.to_string()])
        .status();
    common::wait_for(
        "the resolver to die",
        std::time::Duration::from_secs(30),
        || !alive(resolver),
    );
    apply(&host, dir.path());
    let again = moor_runtime::net::resolver::pid(host.dir()).expect("a resolver runs again");
    assert_ne!(again, resolver);
    assert!(alive(again));

    // Nothing left to do: the same containers run.
    apply(&host, dir.path());
    assert_eq!(pid(&host, "a"), Some(new));
}

/// The loader maps, relocates and binds every library `moor` links at the
/// start of every command. OpenSSL (libssl and libcrypto, some 4,000 symbol
/// bindings and 17,000 relocations: 0.9 ms of a 6 ms no-op) was linked for
/// git fetches alone; git's https now runs on rustls and its ssh on the
/// system's OpenSSH client, so no TLS or ssh library is linked, and this
/// fails if one comes back through a dependency's default features.
#[test]
fn moor_links_no_tls_or_ssh_library() {
    let out = Command::new("ldd")
        .arg(moor_bin())
        .output()
        .expect("run ldd");
    assert!(out.status.success(), "ldd: {}", text(&out));
    let libs = String::from_utf8_lossy(&out.stdout);
    let linked: Vec<&str> = libs
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(linked.iter().any(|l| l.starts_with("libc.so")), "{libs}");
    for lib in ["libssl", "libcrypto", "libssh2", "libgnutls", "libnss3"] {
        assert!(
            !linked.iter().any(|l| l.starts_with(lib)),
            "moor links {lib}:\n{libs}"
        );
    }
}
