//! Resource usage of a container, read from its cgroup: CPU time, memory
//! (the working set, as cAdvisor reports it: usage less inactive file cache)
//! and processes, on v1, hybrid and v2 hosts.

use std::fs;
use std::path::Path;

use crate::container::cgroups::Hierarchies;

/// What a container uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time used, in seconds.
    pub cpu_seconds: f64,
    /// Working-set memory, in bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (`memory.stat`, `cpu.stat`).
fn stat(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Reads the usage of the cgroup at `path` (relative to each hierarchy's root).
pub fn read(h: &Hierarchies, path: &str) -> Option<Usage> {
    let rel = path.trim_start_matches('/');
    if h.is_v1() {
        let cpu_ns = h
            .v1_controller("cpuacct")
            .and_then(|d| read_u64(&d.join(rel).join("cpuacct.usage")));
        let memory = h.v1_controller("memory").and_then(|d| {
            let dir = d.join(rel);
            let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
            let inactive = stat(&dir.join("memory.stat"), "total_inactive_file").unwrap_or(0);
            Some(usage.saturating_sub(inactive))
        });
        let pids = h
            .v1_controller("pids")
            .and_then(|d| read_u64(&d.join(rel).join("pids.current")));
        if cpu_ns.is_none() && memory.is_none() && pids.is_none() {
            return None;
        }
        return Some(Usage {
            cpu_seconds: cpu_ns.unwrap_or(0) as f64 / 1e9,
            memory_bytes: memory.unwrap_or(0),
            pids: pids.unwrap_or(0),
        });
    }
    let dir = h.v2.as_ref()?.join(rel);
    if !dir.is_dir() {
        return None;
    }
    let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
    let inactive = stat(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
    Some(Usage {
        cpu_seconds: stat(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) as f64 / 1e6,
        memory_bytes: usage.saturating_sub(inactive),
        pids: read_u64(&dir.join("pids.current")).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v2_files() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("moor/c1");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("memory.current"), "1048576\n").expect("write");
        fs::write(
            dir.join("memory.stat"),
            "anon 1\ninactive_file 4096\nactive_file 2\n",
        )
        .expect("write");
        fs::write(dir.join("cpu.stat"), "usage_usec 2500000\nuser_usec 1\n").expect("write");
        fs::write(dir.join("pids.current"), "3\n").expect("write");
        let h = Hierarchies {
            v2: Some(root.path().to_path_buf()),
            ..Hierarchies::parse("")
        };
        let u = read(&h, "/moor/c1").expect("usage");
        assert_eq!(
            u,
            Usage {
                cpu_seconds: 2.5,
                memory_bytes: 1048576 - 4096,
                pids: 3
            }
        );
        assert!(read(&h, "/moor/missing").is_none());
    }
}
