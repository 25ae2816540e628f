//! What `moor stats` shows of a container, read from its cgroup and its
//! network namespace: CPU time, memory used (the working set, see
//! [`super::usage`]) and its limit, processes, bytes read and written by
//! block devices, and bytes received and sent on its interfaces. On v1,
//! hybrid and v2 hosts. CPU percentages are made of two readings
//! ([`cpu_percent`]).

use std::fs;

use serde::Serialize;

use super::usage;
use crate::container::cgroups::Hierarchies;

/// A container's resource use at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    /// CPU time used, in seconds.
    pub cpu_seconds: f64,
    /// Working-set memory, in bytes.
    pub memory_bytes: u64,
    /// Its memory limit, or the host's memory when it has none, in bytes.
    pub memory_limit_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
    /// Bytes received on its interfaces (loopback aside).
    pub net_rx_bytes: u64,
    /// Bytes sent on its interfaces (loopback aside).
    pub net_tx_bytes: u64,
    /// Bytes read from block devices.
    pub block_read_bytes: u64,
    /// Bytes written to block devices.
    pub block_write_bytes: u64,
}

/// The resource use of the cgroup at `path` whose PID 1 (on the host) is
/// `pid`; `None` when the cgroup is gone.
pub fn read(h: &Hierarchies, path: &str, pid: i32) -> Option<Stats> {
    let u = usage::read(h, path)?;
    let rel = path.trim_start_matches('/');
    let host_memory = host_memory();
    let (limit, (read, write)) = if h.is_v1() {
        let limit = h
            .v1_controller("memory")
            .and_then(|m| fs::read_to_string(m.join(rel).join("memory.limit_in_bytes")).ok())
            .and_then(|t| t.trim().parse::<u64>().ok());
        let io = h.v1_controller("blkio").map_or((0, 0), |b| {
            let dir = b.join(rel);
            [
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
            ]
            .iter()
            .find_map(|f| fs::read_to_string(dir.join(f)).ok())
            .map_or((0, 0), |t| blkio_v1(&t))
        });
        (limit, io)
    } else {
        let dir = h.v2.as_ref().map(|v| v.join(rel));
        let limit = dir
            .as_ref()
            .and_then(|d| fs::read_to_string(d.join("memory.max")).ok())
            .and_then(|t| t.trim().parse::<u64>().ok());
        let io = dir
            .and_then(|d| fs::read_to_string(d.join("io.stat")).ok())
            .map_or((0, 0), |t| io_stat_v2(&t));
        (limit, io)
    };
    let (rx, tx) =
        fs::read_to_string(format!("/proc/{pid}/net/dev")).map_or((0, 0), |t| net_dev(&t));
    Some(Stats {
        cpu_seconds: u.cpu_seconds,
        memory_bytes: u.memory_bytes,
        // "No limit" is a huge number on v1 and `max` on v2.
        memory_limit_bytes: limit.map_or(host_memory, |l| l.min(host_memory)),
        pids: u.pids,
        net_rx_bytes: rx,
        net_tx_bytes: tx,
        block_read_bytes: read,
        block_write_bytes: write,
    })
}

/// CPU use between two readings `seconds` apart, in percent of one CPU
/// (as `docker stats`: 200 % is two CPUs busy).
pub fn cpu_percent(before: &Stats, after: &Stats, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    ((after.cpu_seconds - before.cpu_seconds).max(0.0) / seconds) * 100.0
}

/// The host's memory, in bytes (`MemTotal`).
fn host_memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

/// Bytes read and written, from v1's `blkio.throttle.io_service_bytes`
/// (`MAJ:MIN Read N` lines; `Total` lines skipped).
fn blkio_v1(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [dev, op, n] = f[..]
            && dev.contains(':')
            && let Ok(n) = n.parse::<u64>()
        {
            match op {
                "Read" => r += n,
                "Write" => w += n,
                _ => {}
            }
        }
    }
    (r, w)
}

/// Bytes read and written, from v2's `io.stat` (`MAJ:MIN rbytes=N wbytes=N …`).
fn io_stat_v2(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in text.lines() {
        for kv in l.split_whitespace().skip(1) {
            match kv.split_once('=') {
                Some(("rbytes", n)) => r += n.parse::<u64>().unwrap_or(0),
                Some(("wbytes", n)) => w += n.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    (r, w)
}

/// Bytes received and sent on every interface but loopback, from a
/// `/proc/PID/net/dev`.
fn net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for l in text.lines().skip(2) {
        let Some((iface, counters)) = l.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_files() {
        let v1 = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 1\n8:0 Total 12288\n\
                  8:16 Read 1\n8:16 Write 2\nTotal 12291\n";
        assert_eq!(blkio_v1(v1), (4097, 8194));
        let v2 =
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n259:0 rbytes=1 wbytes=2\n";
        assert_eq!(io_stat_v2(v2), (101, 202));
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n\
                   lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n\
                   eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n\
                   eth1:  7 1 0 0 0 0 0 0 3 1 0 0 0 0 0 0\n";
        assert_eq!(net_dev(dev), (1007, 2003));
        let a = Stats {
            cpu_seconds: 1.0,
            ..Stats::default()
        };
        let b = Stats {
            cpu_seconds: 1.5,
            ..Stats::default()
        };
        assert!((cpu_percent(&a, &b, 0.5) - 100.0).abs() < 1e-9);
        assert_eq!(cpu_percent(&b, &a, 1.0), 0.0);
        assert_eq!(cpu_percent(&a, &b, 0.0), 0.0);
    }

    #[test]
    fn reads_a_v2_cgroup() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("moor/c1");
        fs::create_dir_all(&dir).expect("mkdir");
        for (f, v) in [
            ("memory.current", "4096\n"),
            ("memory.stat", "inactive_file 0\n"),
            ("cpu.stat", "usage_usec 1000000\n"),
            ("pids.current", "2\n"),
            ("memory.max", "1048576\n"),
            ("io.stat", "8:0 rbytes=5 wbytes=6\n"),
        ] {
            fs::write(dir.join(f), v).expect("write");
        }
        let h = Hierarchies {
            v2: Some(root.path().to_path_buf()),
            ..Hierarchies::parse("")
        };
        let me = std::process::id() as i32;
        let s = read(&h, "/moor/c1", me).expect("stats");
        assert_eq!(
            (s.memory_bytes, s.memory_limit_bytes, s.pids),
            (4096, 1048576, 2)
        );
        assert_eq!((s.block_read_bytes, s.block_write_bytes), (5, 6));
        fs::write(dir.join("memory.max"), "max\n").expect("write");
        assert_eq!(
            read(&h, "/moor/c1", me).expect("stats").memory_limit_bytes,
            host_memory()
        );
    }
}
