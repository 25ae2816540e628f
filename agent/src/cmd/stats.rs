//! `moor stats`: a live table of containers' resource use, like
//! `docker stats`: CPU %, memory used and its limit, network and block
//! I/O, processes; read from the cgroups (v1, hybrid and v2) and each
//! container's network namespace. CPU % is measured over the interval
//! between two readings (a second), 100 % being one CPU.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use moor_runtime::container::Status;
use moor_runtime::container::cgroups::Hierarchies;
use moor_runtime::host::stats::{self, Stats};
use serde_json::json;

use crate::cli::StatsArgs;

/// How often the table is redrawn.
const INTERVAL: Duration = Duration::from_secs(1);

/// One container's reading.
struct Reading {
    name: String,
    stats: Stats,
    at: Instant,
}

pub fn run(state_dir: &Path, args: &StatsArgs) -> anyhow::Result<ExitCode> {
    let engine = super::common::engine(state_dir)?;
    let ids: Option<Vec<String>> = if args.names.is_empty() {
        None
    } else {
        Some(
            args.names
                .iter()
                .map(|n| moor_runtime::host::instances::resolve(&engine, n))
                .collect::<Result<_, _>>()?,
        )
    };
    let h = Hierarchies::detect();
    let read = || -> anyhow::Result<BTreeMap<String, Reading>> {
        let mut out = BTreeMap::new();
        for info in engine.list()? {
            let id = &info.record.name;
            if ids.as_ref().is_some_and(|ids| !ids.contains(id)) {
                continue;
            }
            let Status::Running { pid, .. } = info.status else {
                continue;
            };
            if let Some(s) = stats::read(&h, &info.record.cgroup_path(), pid) {
                out.insert(
                    id.clone(),
                    Reading {
                        name: info.record.instance().to_string(),
                        stats: s,
                        at: Instant::now(),
                    },
                );
            }
        }
        Ok(out)
    };
    if let Some(ids) = &ids {
        let running = read()?;
        if let Some(id) = ids.iter().find(|id| !running.contains_key(*id)) {
            anyhow::bail!("container \"{id}\" is not running");
        }
    }
    let mut before = read()?;
    let live =
        !args.no_stream && !args.json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        std::thread::sleep(INTERVAL);
        let now = read()?;
        let rows: Vec<serde_json::Value> = now
            .iter()
            .map(|(id, r)| row(id, r, before.get(id)))
            .collect();
        let mut out = std::io::stdout().lock();
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&rows)?)?;
        } else {
            if live {
                // Clear the screen and go home, as `docker stats` does.
                write!(out, "\x1b[2J\x1b[H")?;
            }
            table(&mut out, &rows)?;
        }
        out.flush()?;
        if args.no_stream {
            return Ok(ExitCode::SUCCESS);
        }
        before = now;
    }
}

fn row(id: &str, r: &Reading, before: Option<&Reading>) -> serde_json::Value {
    let s = &r.stats;
    let cpu = before.map_or(0.0, |b| {
        stats::cpu_percent(&b.stats, s, r.at.duration_since(b.at).as_secs_f64())
    });
    let mem_pct = if s.memory_limit_bytes > 0 {
        s.memory_bytes as f64 / s.memory_limit_bytes as f64 * 100.0
    } else {
        0.0
    };
    json!({
        "name": r.name,
        "id": id,
        "cpu_percent": (cpu * 100.0).round() / 100.0,
        "memory_bytes": s.memory_bytes,
        "memory_limit_bytes": s.memory_limit_bytes,
        "memory_percent": (mem_pct * 100.0).round() / 100.0,
        "net_rx_bytes": s.net_rx_bytes,
        "net_tx_bytes": s.net_tx_bytes,
        "block_read_bytes": s.block_read_bytes,
        "block_write_bytes": s.block_write_bytes,
        "pids": s.pids,
    })
}

fn table(out: &mut impl Write, rows: &[serde_json::Value]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<20} {:>8}   {:<22} {:>7}   {:<20} {:<20} {:>5}",
        "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"
    )?;
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    for r in rows {
        writeln!(
            out,
            "{:<20} {:>7.2}%   {:<22} {:>6.2}%   {:<20} {:<20} {:>5}",
            r["name"].as_str().unwrap_or_default(),
            r["cpu_percent"].as_f64().unwrap_or(0.0),
            format!(
                "{} / {}",
                binary(n(&r["memory_bytes"])),
                binary(n(&r["memory_limit_bytes"]))
            ),
            r["memory_percent"].as_f64().unwrap_or(0.0),
            format!(
                "{} / {}",
                decimal(n(&r["net_rx_bytes"])),
                decimal(n(&r["net_tx_bytes"]))
            ),
            format!(
                "{} / {}",
                decimal(n(&r["block_read_bytes"])),
                decimal(n(&r["block_write_bytes"]))
            ),
            n(&r["pids"]),
        )?;
    }
    Ok(())
}

/// Bytes in KiB, MiB, GiB (memory, as Docker shows it).
pub fn binary(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.2}{}", units[i])
    }
}

/// Bytes in kB, MB, GB (I/O, as Docker shows it).
fn decimal(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(binary(512), "512B");
        assert_eq!(binary(1536), "1.50KiB");
        assert_eq!(binary(64 << 20), "64.00MiB");
        assert_eq!(decimal(999), "999B");
        assert_eq!(decimal(1_234_567), "1.235MB");
    }
}
