//! `exec`: runs another process in a running container, joining its
//! namespaces, cgroup and user (the OCI runtime's `exec`).

use std::process::Stdio;

use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::observe::Status;
use super::start::runc_of;

impl Engine {
    /// Runs `args` in container `name` with this process's stdio (a new
    /// pseudo-terminal when `tty`) and returns its exit code (128 + N for
    /// death by signal N).
    pub fn exec(&self, name: &str, args: &[String], tty: bool) -> Result<i32> {
        let info = self.inspect(name)?;
        if !matches!(info.status, Status::Running { .. }) {
            return Err(ContainerError::NotRunning(name.to_string()));
        }
        if args.is_empty() {
            return Err(ContainerError::Invalid("exec needs a command".into()));
        }
        let runc = runc_of(&info.record);
        let mut cmd = runc.command(&["exec"]);
        if tty {
            cmd.arg("--tty");
        }
        let status = cmd
            // runc takes everything after the id as the command: no `--`.
            .arg(&info.record.id)
            .args(args)
            .stdin(Stdio::inherit())
            .status()
            .map_err(|source| ContainerError::Spawn {
                program: runc.program.clone(),
                source,
            })?;
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
}
