//! `top`: the processes of a running container, read from its cgroup and
//! `/proc`: each with its PID on the host and in the container's PID
//! namespace, its parent, user (named from the container's own
//! `/etc/passwd`), CPU time, resident memory and command line.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use super::cgroups::Hierarchies;
use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::observe::Status;
use super::users;

/// One process of a container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Process {
    /// Its PID on the host.
    pub pid: i32,
    /// Its PID in the container (`None` when the kernel does not say).
    pub container_pid: Option<i32>,
    /// Its parent's PID on the host.
    pub ppid: i32,
    /// Its effective user ID.
    pub uid: u32,
    /// That user's name in the container, when it has one.
    pub user: Option<String>,
    /// CPU time used (user + system), in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// Its command line (`[comm]` when it has none).
    pub command: String,
}

impl Engine {
    /// The processes of running container `name`, by host PID.
    pub fn top(&self, name: &str) -> Result<Vec<Process>> {
        let info = self.inspect(name)?;
        let Status::Running { pid: init, .. } = info.status else {
            return Err(ContainerError::NotRunning(name.to_string()));
        };
        let names = users::names(&PathBuf::from(format!("/proc/{init}/root")));
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .unwrap_or(100) as f64;
        let mut out: Vec<Process> = Hierarchies::detect()
            .pids(&info.record.cgroup_path())
            .into_iter()
            .filter_map(|pid| process(pid, ticks, &names))
            .collect();
        out.sort_by_key(|p| p.pid);
        Ok(out)
    }
}

/// Process `pid` from `/proc`; `None` when it is gone.
fn process(pid: i32, ticks: f64, names: &HashMap<u32, String>) -> Option<Process> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    };
    let ppid = field("PPid")?.parse().ok()?;
    let uid: u32 = field("Uid")?.split_whitespace().nth(1)?.parse().ok()?;
    let container_pid = field("NSpid").and_then(|v| v.split_whitespace().last()?.parse().ok());
    let rss_bytes = field("VmRSS")
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let (comm, rest) = stat.split_at(stat.rfind(')')?);
    let comm = comm.split_once('(').map_or("", |(_, c)| c);
    let fields: Vec<&str> = rest[1..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state.
    let cpu = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_seconds = (cpu(11) + cpu(12)) as f64 / ticks;
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let command = if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    Some(Process {
        pid,
        container_pid,
        ppid,
        uid,
        user: names.get(&uid).cloned(),
        cpu_seconds,
        rss_bytes,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let p = process(me, 100.0, &HashMap::from([(0, "root".to_string())])).expect("self");
        assert_eq!(p.pid, me);
        assert!(p.rss_bytes > 0);
        assert!(p.command.contains("moor_runtime") || !p.command.is_empty());
        assert_eq!(p.container_pid, Some(me), "in the host's PID namespace");
        assert!(process(-1, 100.0, &HashMap::new()).is_none());
    }
}
