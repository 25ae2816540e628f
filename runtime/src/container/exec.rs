//! `exec`: runs another process in a running container, joining its
//! namespaces, cgroup and user (see [`super::executor::exec`]).

use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::executor::{self, Executor};
use super::observe::Status;

impl Engine {
    /// Runs `args` in container `name` with this process's stdio (a new
    /// pseudo-terminal when `tty`) and returns its exit code (128 + N for
    /// death by signal N). From a multi-threaded process the built-in
    /// executor's exec runs in a child `moor exec`.
    pub fn exec(&self, name: &str, args: &[String], tty: bool) -> Result<i32> {
        let info = self.inspect(name)?;
        if !matches!(info.status, Status::Running { .. }) {
            return Err(ContainerError::NotRunning(name.to_string()));
        }
        if args.is_empty() {
            return Err(ContainerError::Invalid("exec needs a command".into()));
        }
        if info.record.executor == Executor::Builtin && threads() != 1 {
            // libcontainer forks and clones: unsound in a multi-threaded
            // process (the agent). Run it from a fresh, single-threaded
            // `moor exec` instead.
            let status = std::process::Command::new(&self.config.shim_exe)
                .arg("--state-dir")
                .arg(&self.config.state_dir)
                .arg("exec")
                .args(tty.then_some("--tty"))
                .arg(name)
                .arg("--")
                .args(args)
                .status()
                .map_err(|source| ContainerError::Spawn {
                    program: self.config.shim_exe.clone(),
                    source,
                })?;
            use std::os::unix::process::ExitStatusExt;
            return Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
        }
        executor::exec(&info.record, &self.paths(name), args, tty)
    }
}

/// How many threads this process has (0 when unknown).
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Threads:")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(super::threads() >= 2, "this thread and the spawned one");
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
    }
}
