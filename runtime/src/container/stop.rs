//! `stop`: the stop signal, the grace period, then SIGKILL. Also cleans up
//! after a lost shim.

use std::time::{Duration, Instant};

use moor_spec::linux::SIGNALS;

use super::cgroups::Hierarchies;
use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::executor;
use super::observe::Status;
use super::rootfs;
use super::state::{ExitRecord, now_ms, wait_process_exit, write_json_atomic};

/// How long a SIGKILLed container may take to be reported exited.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The number of a signal name as normalised by the spec (`SIGTERM`, `15`,
/// `SIGRTMIN+3`).
pub fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    let bare = name.strip_prefix("SIG").unwrap_or(name);
    if let Some(off) = bare
        .strip_prefix("RTMIN+")
        .and_then(|n| n.parse::<i32>().ok())
    {
        return Some(libc::SIGRTMIN() + off);
    }
    SIGNALS.iter().find(|(n, _)| *n == bare).map(|(_, v)| *v)
}

impl Engine {
    /// Stops container `name`: its stop signal, up to `grace` (the spec's
    /// `stop_grace_period` when `None`) for it to exit, then SIGKILL.
    /// Returns how it exited; `None` for a container that never ran.
    pub fn stop(&self, name: &str, grace: Option<Duration>) -> Result<Option<ExitRecord>> {
        let info = self.inspect(name)?;
        match info.status {
            Status::Created => Ok(None),
            Status::Exited(exit) => Ok(Some(exit)),
            Status::Lost { pid, started_ms } => self.clean_up_lost(name, pid, started_ms).map(Some),
            Status::Running { pid, .. } => {
                let spec = &info.record.spec;
                let grace = grace.unwrap_or(spec.stop_grace_period);
                let sig = signal_number(&spec.stop_signal).unwrap_or(libc::SIGTERM);
                if !grace.is_zero() {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(pid, sig) };
                    // A paused container handles the signal once thawed.
                    self.thaw_after_signal(&info.record);
                    if let Some(exit) = self.wait_exit(name, grace)? {
                        return Ok(Some(exit));
                    }
                }
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                self.thaw_after_signal(&info.record);
                match self.wait_exit(name, KILL_WAIT)? {
                    Some(exit) => Ok(Some(exit)),
                    None => Err(ContainerError::StopTimeout(name.to_string())),
                }
            }
        }
    }

    /// Waits up to `timeout` for container `name` to have exited. While its
    /// shim runs, this blocks on the shim's pidfd (the shim exits right
    /// after writing the exit record), so it returns as soon as the exit is
    /// recorded; otherwise (a start under way, no pidfds) it looks every 10 ms.
    pub fn wait_exit(&self, name: &str, timeout: Duration) -> Result<Option<ExitRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.inspect(name)?;
            let left = deadline.saturating_duration_since(Instant::now());
            match info.status {
                Status::Exited(exit) => return Ok(Some(exit)),
                Status::Lost { .. } => return Ok(None),
                _ if left.is_zero() => return Ok(None),
                Status::Running { .. }
                    if info.shim.as_ref().is_some_and(|s| {
                        wait_process_exit(s.shim_pid, s.shim_start_ticks, left)
                    }) => {}
                _ => std::thread::sleep(left.min(Duration::from_millis(10))),
            }
        }
    }

    /// Kills what is left of a container whose shim died, releases its
    /// runtime state, cgroups and root filesystem, and records the exit.
    fn clean_up_lost(&self, name: &str, pid: Option<i32>, started_ms: u64) -> Result<ExitRecord> {
        let record = self.record(name)?;
        let hierarchies = Hierarchies::detect();
        let oom_killed = hierarchies.oom_kills(&record.cgroup_path()) > 0;
        if let Some(pid) = pid {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        executor::delete(&record);
        hierarchies
            .remove(&record.cgroup_path(), KILL_WAIT)
            .map_err(|left| {
                ContainerError::Invalid(format!("cgroups of {name} could not be removed: {left:?}"))
            })?;
        rootfs::unmount_all(&self.paths(name).rootfs())?;
        let exit = ExitRecord {
            exit_code: if pid.is_some() { 137 } else { -1 },
            signal: pid.map(|_| libc::SIGKILL),
            oom_killed,
            started_ms: Some(started_ms),
            finished_ms: now_ms(),
            reason: Some(
                if pid.is_some() {
                    "supervisor lost; killed"
                } else {
                    "supervisor lost; exit status unknown"
                }
                .into(),
            ),
        };
        write_json_atomic(&self.paths(name).exit(), &exit)?;
        Ok(exit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_numbers() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("SIGKILL"), Some(9));
        assert_eq!(signal_number("10"), Some(10));
        assert_eq!(signal_number("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(signal_number("SIGNOPE"), None);
    }
}
