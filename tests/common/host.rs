//! Looking at and clearing away what tests leave on the host: cgroups,
//! mounts, network interfaces and namespaces, processes. [`super::slot`]
//! uses these to remove exactly what one slot owns.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where every cgroup hierarchy is mounted (each v1 controller, and v2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

/// The cgroup directories directly under `parent`, in every hierarchy.
pub fn cgroup_children(parent: &str) -> Vec<PathBuf> {
    cgroup_mounts()
        .iter()
        .map(|m| m.join(parent))
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Kills every process in the cgroup `parent` and below, in every
/// hierarchy, and removes the cgroups (frozen ones are thawed first, or a
/// paused container would never die).
pub fn remove_cgroup_tree(parent: &str) {
    for mount in cgroup_mounts() {
        kill_and_remove(&mount.join(parent));
    }
}

fn kill_and_remove(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            kill_and_remove(&e.path());
        }
    }
    for _ in 0..250 {
        let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
        let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
        for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|p| p.parse().ok())
        {
            kill(pid);
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("cleanup: cannot remove cgroup {}", dir.display());
}

/// SIGKILL to `pid`.
pub fn kill(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// True while `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// True when `path` is `dir` or inside it.
fn within(path: &[u8], dir: &[u8]) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

/// The processes (not this one) that work on the state dir `dir`: an
/// argument names it or a path inside it (the shims, `moor dns`,
/// `moor --state-dir`), or their `MOOR_STATE_DIR` is it (an agent).
pub fn processes_of(dir: &Path) -> Vec<i32> {
    let dir = dir.as_os_str().as_encoded_bytes();
    let me = std::process::id() as i32;
    let env_var = [b"MOOR_STATE_DIR=".as_slice(), dir].concat();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|a| within(a, dir))
                || environ.split(|b| *b == 0).any(|v| v == env_var)
        })
        .collect()
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let root = dir.as_os_str().as_encoded_bytes();
    let mut v: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| within(m.as_bytes(), root))
        .map(str::to_string)
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

/// Lazily unmounts everything at or under `dir`.
pub fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = Command::new("umount")
            .args(["-l", &m])
            .stderr(Stdio::null())
            .status();
    }
}

/// The names of the host's network interfaces.
pub fn links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// True when the host has an interface `name`.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// `ip link del NAME`, quietly.
pub fn delete_link(name: &str) {
    let _ = Command::new("ip")
        .args(["link", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// The names of the network namespaces `ip netns` knows.
pub fn netns_names() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// `ip netns del NAME`, and its `/etc/netns/NAME` files.
pub fn delete_netns(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
}

/// `nft delete table ip NAME`, quietly.
pub fn delete_nft_table(name: &str) {
    let _ = Command::new("nft")
        .args(["delete", "table", "ip", name])
        .stderr(Stdio::null())
        .status();
}

/// The ruleset of the nftables table `ip NAME`, if it exists.
pub fn nft_table(name: &str) -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", name])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Everything of the state dir `dir` that outlives its moor commands:
/// its DNS resolver, agent, shims and other processes, then its mounts.
/// Containers themselves die with their slot's cgroups.
pub fn stop_state_dir(dir: &Path) {
    moor_runtime::net::resolver::stop(dir);
    for _ in 0..50 {
        let pids = processes_of(dir);
        if pids.is_empty() {
            break;
        }
        pids.into_iter().for_each(kill);
        std::thread::sleep(Duration::from_millis(20));
    }
    unmount_under(dir);
}
