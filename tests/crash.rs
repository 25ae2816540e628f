//! Crash safety (docs/ARCHITECTURE.md, invariants): `kill -9` of moor at random moments while it
//! creates and removes a stack of 10 containers on a network, then a normal
//! run: converged, no duplicate containers, and no leaked mounts, veths,
//! cgroups, nftables rules or shims; and containers that were fine are not
//! restarted by later interrupted runs.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{self, free_port};

const PROJECT: &str = "crash";
const BRIDGE_NET: &str = "crashnet";
const N: usize = 10;

/// An instance and the stack's manifest directory.
struct Env {
    host: Instance,
    dir: PathBuf,
}

impl Env {
    fn moor(&self, args: &[&str]) -> Output {
        self.host.moor(args)
    }

    /// Starts `moor ARGS` and kills it with SIGKILL after `after`.
    fn interrupted(&self, args: &[&str], after: Duration) {
        let mut child = self
            .host
            .command()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moor");
        std::thread::sleep(after);
        let _ = child.kill();
        let _ = child.wait();
    }

    fn apply(&self) -> Output {
        self.moor(&[
            "apply",
            "-p",
            PROJECT,
            "--timeout",
            "90s",
            self.dir.to_str().expect("utf-8"),
        ])
    }

    fn running(&self) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = self
            .host
            .containers()
            .iter()
            .map(|c| {
                assert_eq!(c["state"], "running", "every container runs: {c}");
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["pid"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// The container cgroups under the slot's parent (in the memory
    /// hierarchy on v1 and hybrid hosts, in the one tree on v2).
    fn cgroups(&self) -> Vec<PathBuf> {
        let parent = self.host.slot().cgroup_parent();
        let all = common::host::cgroup_children(&parent);
        let memory: Vec<PathBuf> = all
            .iter()
            .filter(|p| p.starts_with("/sys/fs/cgroup/memory"))
            .cloned()
            .collect();
        if memory.is_empty() { all } else { memory }
    }

    /// The slot's nftables rules.
    fn rules(&self) -> String {
        common::host::nft_table(&self.host.slot().nft_table()).unwrap_or_default()
    }
}

/// A small deterministic generator, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn count_lines(path: &Path, pred: impl Fn(&str) -> bool) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().filter(|l| pred(l)).count())
}

fn shims(state: &Path) -> usize {
    let needle = state.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains("moor-shim ") && text.contains(&needle)
        })
        .count()
}

#[test]
fn kill_nine_at_random_moments_then_converge_without_leaks() {
    let Some(host) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let src = tempfile::tempdir().expect("manifests");
    let dir = src.path().join("crash");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (port_a, port_b) = (free_port(), free_port());
    let mut text = format!(
        "[images.bb]\nref = \"localhost/moor-example/busybox:1\"\npull = \"never\"\n\n[networks.{BRIDGE_NET}]\nsubnet = \"{}\"\n\n[volumes.shared]\n\n",
        host.slot().subnet(66)
    );
    for i in 1..=N {
        text.push_str(&format!(
            "[containers.w{i:02}]\nimage = \"bb\"\ncommand = [\"sleep\", \"1000000\"]\nnetworks = [\"{BRIDGE_NET}\"]\nmounts = [\"shared:/data\"]\nrestart = \"always\"\nstop_grace_period = \"1s\"\n"
        ));
        match i {
            1 => text.push_str(&format!("ports = [\"127.0.0.1:{port_a}:80\"]\n")),
            2 => text.push_str(&format!("ports = [\"127.0.0.1:{port_b}:80\"]\n")),
            _ => {}
        }
        text.push('\n');
    }
    std::fs::write(dir.join("stack.toml"), text).expect("write manifest");
    let env = Env { host, dir };

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let dir = env.dir.to_str().expect("utf-8").to_string();
    for i in 0..30 {
        let after = Duration::from_millis(20 + rng.below(1500));
        if i % 3 == 2 {
            env.interrupted(&["down", "-p", PROJECT], after);
        } else {
            env.interrupted(&["apply", "-p", PROJECT, "--timeout", "90s", &dir], after);
        }
    }
    let out = env.apply();
    assert!(
        out.status.success(),
        "apply after the crashes: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Converged: exactly the ten containers, each once, running.
    let running = env.running();
    let names: Vec<&str> = running.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<String> = (1..=N).map(|i| format!("w{i:02}")).collect();
    assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());

    // No leaks.
    let state_dir = env.host.dir().to_string_lossy().into_owned();
    let overlays = count_lines(Path::new("/proc/mounts"), |l| {
        l.starts_with("overlay") && l.contains(&state_dir)
    });
    assert_eq!(overlays, N, "one root filesystem mount per container");
    assert_eq!(
        env.cgroups().len(),
        N,
        "one cgroup per container: {:?}",
        env.cgroups()
    );
    assert_eq!(shims(env.host.dir()), N, "one shim per container");
    let bridge = env.host.slot().bridge(BRIDGE_NET);
    let on_bridge = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", &bridge])
        .output()
        .expect("ip link");
    assert_eq!(
        String::from_utf8_lossy(&on_bridge.stdout).lines().count(),
        N,
        "one veth per container on the bridge"
    );
    let rules = env.rules();
    for port in [port_a, port_b] {
        let dnat = rules
            .lines()
            .filter(|l| l.contains("dnat") && l.contains(&format!("dport {port} ")))
            .count();
        assert!(dnat >= 1, "port {port} is published:\n{rules}");
    }
    let plan = env.moor(&["plan", "-p", PROJECT, &dir]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "nothing left to do: {}",
        String::from_utf8_lossy(&plan.stdout)
    );

    // Interrupted no-op runs restart nothing.
    for _ in 0..5 {
        env.interrupted(
            &["apply", "-p", PROJECT, "--timeout", "90s", &dir],
            Duration::from_millis(20 + rng.below(800)),
        );
    }
    assert_eq!(
        env.running(),
        running,
        "containers that were fine keep their processes"
    );
    assert_eq!(env.rules(), rules, "no duplicated rules");

    // The rules after all those crashes are exactly those of a clean start.
    let down = env.moor(&["down", "-p", PROJECT]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(shims(env.host.dir()), 0, "down leaves no shim");
    assert!(env.cgroups().is_empty(), "down leaves no cgroup");
    let out = env.apply();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = env.rules();
    for port in [port_a, port_b] {
        let needle = format!("dport {port} ");
        assert_eq!(
            rules.matches(&needle).count(),
            fresh.matches(&needle).count(),
            "rules for port {port}:\n{rules}\nfresh:\n{fresh}"
        );
    }
}
