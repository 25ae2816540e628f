//! Name resolution in real workloads, end to end through the `moor` binary:
//! containers running as a non-root user read the files moor writes for
//! them and resolve their peers; names keep resolving after `moor apply`
//! has exited (the state dir's detached resolver); a bridge left by a
//! state dir that is gone is replaced, while a live one is refused.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{self, alive, text, wait_for};

const PROJECT: &str = "dnsp";

fn ready() -> bool {
    common::require(&["busybox", "nft", "ip"], true)
}

/// A manifest directory holding `body` (after the busybox image).
fn manifests(body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("manifest dir");
    std::fs::write(
        dir.path().join("stack.toml"),
        format!(
            "[images.busybox]\nref = \"localhost/moor-example/busybox:1\"\npull = \"never\"\n\n{body}"
        ),
    )
    .expect("write manifest");
    dir
}

/// `moor apply -p PROJECT DIR`.
fn apply(host: &Instance, dir: &Path) -> Output {
    host.moor(&["apply", "-p", PROJECT, dir.to_str().expect("utf-8")])
}

fn logs(host: &Instance, name: &str) -> String {
    text(&host.moor(&["logs", name]))
}

const WEB: &str = r#"
[containers.web]
image = "busybox"
command = ["sh", "-c", "mkdir -p /srv && echo hello-from-web > /srv/index.html && exec httpd -f -p 80 -h /srv"]
networks = ["front"]
"#;

/// The client runs as nobody: it reports whether it can read the files
/// moor wrote for it, then fetches http://web/ by name every half second
/// (bounded: a fetch caught by web's replacement would otherwise wait on
/// a connection to the old one for ever).
const CLIENT: &str = r#"
[containers.client]
image = "busybox"
user = "65534"
networks = ["front"]
command = ["sh", "-c", """
echo "uid $(id -u)"
for f in /etc/hosts /etc/hostname /etc/resolv.conf; do
  if cat $f > /dev/null; then echo "readable $f"; else echo "unreadable $f"; fi
done
i=0
while true; do
  i=$((i+1))
  if timeout 5 nslookup web > /dev/null 2>&1 && timeout 5 wget -q -O - http://web/ 2>/dev/null | grep -q hello-from-web; then
    echo "resolved $i"
  else
    echo "failed $i"
  fi
  sleep 0.5
done
"""]
"#;

fn network(subnet: &str) -> String {
    format!("[networks.front]\nsubnet = \"{subnet}\"\n")
}

/// The highest attempt number the client logged as `word` (`resolved`, `failed`).
fn last(log: &str, word: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix(word)?.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// Waits until the client has logged a successful attempt numbered `n` or more.
fn wait_resolved(host: &Instance, n: u64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let log = logs(host, "client");
        if last(&log, "resolved") >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what} (attempt {n}):\n{log}\n{}\nresolver log:\n{}",
            text(&host.moor(&["ps", "--all"])),
            std::fs::read_to_string(host.dir().join("net/dns.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Issue 14, defects 1 and 2: a container running as a non-root user reads
/// /etc/hosts, /etc/hostname and /etc/resolv.conf and resolves its peer by
/// name, with no moor process left running but the state dir's resolver —
/// also after the peer was replaced and after an agent came and went
/// (which uses the same resolver).
#[test]
fn non_root_container_resolves_its_peer_after_apply_exits() {
    if !ready() {
        return;
    }
    let mut host = Instance::new();
    host.owns(PROJECT);
    host.import_busybox();
    let subnet = host.slot().subnet(1);
    let dir = manifests(&format!("{}{WEB}{CLIENT}", network(&subnet)));
    let out = apply(&host, dir.path());
    assert!(out.status.success(), "moor apply: {}", text(&out));

    // moor apply has exited; the resolver it started serves on.
    let resolver = moor_runtime::net::resolver::pid(host.dir()).expect("a resolver runs");
    assert!(alive(resolver));
    wait_resolved(&host, 2, "the client to resolve web");
    let log = logs(&host, "client");
    assert!(log.contains("uid 65534"), "{log}");
    for f in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
        assert!(log.contains(&format!("readable {f}\n")), "{f}: {log}");
    }
    let state = host.dir().to_path_buf();
    for file in [
        state.join("resolv/client.conf"),
        state.join("containers/client/hosts"),
        state.join("containers/client/hostname"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o644,
            "{}",
            file.display()
        );
    }

    // Replace the peer (a changed environment): once the new apply has
    // exited too, the client resolves and reaches the new web.
    let changed = WEB.replace(
        "networks = [\"front\"]",
        "networks = [\"front\"]\nenv = { V = \"2\" }",
    );
    std::fs::write(
        dir.path().join("stack.toml"),
        format!(
            "[images.busybox]\nref = \"localhost/moor-example/busybox:1\"\npull = \"never\"\n\n{}{changed}{CLIENT}",
            network(&subnet)
        ),
    )
    .expect("rewrite manifest");
    let out = apply(&host, dir.path());
    assert!(out.status.success(), "moor apply: {}", text(&out));
    let log = logs(&host, "client");
    let after = last(&log, "failed").max(last(&log, "resolved"));
    wait_resolved(&host, after + 2, "the client to resolve the replaced web");
    assert_eq!(
        moor_runtime::net::resolver::pid(host.dir()),
        Some(resolver),
        "one resolver serves the state dir throughout"
    );

    // An agent on the same state dir uses the same resolver, and leaves it
    // running when it stops.
    host.start_agent(&[
        "--source",
        dir.path().to_str().expect("utf-8"),
        "-p",
        PROJECT,
    ]);
    wait_for(
        "the agent to take the state dir",
        Duration::from_secs(60),
        || host.status()["ready"] == true,
    );
    assert_eq!(moor_runtime::net::resolver::pid(host.dir()), Some(resolver));
    host.stop_agent();
    let after = last(&logs(&host, "client"), "resolved");
    wait_resolved(
        &host,
        after + 2,
        "the client to resolve web after the agent stopped",
    );
    assert!(alive(resolver));
}

/// Issue 14, defect 6: `moor down` keeps the default network, so its bridge
/// outlives the state dir when that is removed (the usual reset). A fresh
/// state dir with the same bridge prefix replaces the stale bridge and says
/// so; the removed state dir's resolver has stopped by itself.
#[test]
fn a_bridge_left_by_a_removed_state_dir_is_replaced() {
    if !ready() {
        return;
    }
    let stack = r#"
[containers.web]
image = "busybox"
command = ["sh", "-c", "mkdir -p /srv && echo hello-from-web > /srv/index.html && exec httpd -f -p 80 -h /srv"]

[containers.client]
image = "busybox"
command = ["sleep", "3600"]
"#;
    let dir = manifests(stack);
    let old = Instance::new();
    old.import_busybox();
    let out = apply(&old, dir.path());
    assert!(out.status.success(), "moor apply: {}", text(&out));
    let out = old.moor(&["down", "-p", PROJECT]);
    assert!(out.status.success(), "moor down: {}", text(&out));
    let bridge = &old.slot().bridge("default");
    assert!(
        link_alias(bridge).is_some(),
        "down keeps the default network"
    );
    let resolver = moor_runtime::net::resolver::pid(old.dir()).expect("a resolver runs");
    let old_dir = old.dir().canonicalize().expect("state dir");
    std::fs::remove_dir_all(old.dir()).expect("remove the state dir");
    wait_for(
        "the removed state dir's resolver to stop",
        Duration::from_secs(30),
        || !alive(resolver),
    );

    // The same slot: the same bridge prefix, table and pool.
    let mut fresh = Instance::beside(&old);
    fresh.owns(PROJECT);
    fresh.import_busybox();
    let out = apply(&fresh, dir.path());
    assert!(out.status.success(), "moor apply: {}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "replacing bridge {bridge} left by another moor instance: its state dir {} no longer exists",
            old_dir.display()
        )),
        "{}",
        text(&out)
    );
    let alias = link_alias(bridge).expect("the bridge is there");
    let canonical = fresh.dir().canonicalize().expect("state dir");
    assert!(
        alias.ends_with(&format!(":network:default:{}", canonical.display())),
        "{alias}"
    );
    let out = fresh.moor(&[
        "exec",
        "client",
        "--",
        "sh",
        "-c",
        "timeout 5 wget -q -O - http://web/",
    ]);
    assert!(text(&out).contains("hello-from-web"), "{}", text(&out));
}

/// Two live state dirs with the same bridge prefix and network name: the
/// second is refused with an error naming the first, which keeps working.
#[test]
fn a_live_instances_bridge_is_refused() {
    if !ready() {
        return;
    }
    let stack = r#"
[containers.web]
image = "busybox"
command = ["sh", "-c", "mkdir -p /srv && echo hello-from-web > /srv/index.html && exec httpd -f -p 80 -h /srv"]

[containers.client]
image = "busybox"
command = ["sleep", "3600"]
"#;
    let dir = manifests(stack);
    let mut first = Instance::new();
    first.owns(PROJECT);
    first.import_busybox();
    let out = apply(&first, dir.path());
    assert!(out.status.success(), "moor apply: {}", text(&out));

    // Another slot, but the first one's bridge prefix.
    let mut second = Instance::new();
    let prefix = first.slot().bridge_prefix();
    for (k, v) in second.env.iter_mut() {
        if k == "MOOR_BRIDGE_PREFIX" {
            v.clone_from(&prefix);
        }
    }
    let bridge = first.slot().bridge("default");
    second.owns(PROJECT);
    second.import_busybox();
    let out = apply(&second, dir.path());
    assert!(!out.status.success(), "{}", text(&out));
    let canonical = first.dir().canonicalize().expect("state dir");
    assert!(
        text(&out).contains(&format!(
            "bridge {bridge} belongs to another moor (state dir {}, network default)",
            canonical.display()
        )),
        "{}",
        text(&out)
    );
    assert!(moor_runtime::net::resolver::pid(second.dir()).is_none());
    let out = first.moor(&[
        "exec",
        "client",
        "--",
        "sh",
        "-c",
        "timeout 5 wget -q -O - http://web/",
    ]);
    assert!(text(&out).contains("hello-from-web"), "{}", text(&out));
    assert!(
        link_alias(&bridge).is_some_and(|a| a.ends_with(&canonical.display().to_string())),
        "the first instance's bridge is untouched"
    );
}

/// The alias of the link `name`, if it exists.
fn link_alias(name: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        line.split_once(" alias ")
            .map(|(_, a)| a.trim().to_string())
            .unwrap_or_default(),
    )
}
