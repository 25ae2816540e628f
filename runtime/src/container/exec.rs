//! `exec`: runs another process in a running container, joining its
//! namespaces and cgroup, as `docker exec` does. By default the process
//! runs as the container's own does — its bundle's `process`: user and
//! groups, working dir, environment, capabilities, rlimits,
//! `no_new_privs` — with [`ExecOptions`] on top: another user (resolved in
//! the container's own `/etc/passwd` and `/etc/group`, as it is now),
//! working dir, or environment variables. The executor is handed the
//! process whole (see [`super::executor::exec`]).

use std::path::PathBuf;

use oci_spec::runtime::{Process, UserBuilder};

use super::bundle;
use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::executor::{self, Executor};
use super::observe::Status;
use super::state::ContainerRecord;
use super::users;

/// `TERM` for a terminal exec whose container sets none (Docker's value).
const DEFAULT_TERM: &str = "TERM=xterm";

/// How `exec` differs from the container's own process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// `user`, `uid`, `user:group` or `uid:gid`, resolved in the
    /// container's `/etc/passwd` and `/etc/group`; the container's own
    /// user when `None`.
    pub user: Option<String>,
    /// The working directory (absolute); the container's own when `None`.
    pub workdir: Option<String>,
    /// `KEY=VALUE` pairs set on top of the container's environment.
    pub env: Vec<String>,
    /// Give the process a new pseudo-terminal.
    pub tty: bool,
}

impl ExecOptions {
    /// Refuses what no process could run with.
    fn check(&self) -> Result<()> {
        if let Some(w) = &self.workdir
            && !w.starts_with('/')
        {
            return Err(ContainerError::Invalid(format!(
                "the working directory \"{w}\" is not an absolute path"
            )));
        }
        if let Some(u) = &self.user
            && (u.is_empty() || u.contains('\0'))
        {
            return Err(ContainerError::Invalid(format!("user \"{u}\" is empty")));
        }
        for kv in &self.env {
            match kv.split_once('=') {
                Some((k, _)) if !k.is_empty() && !kv.contains('\0') => {}
                _ => {
                    return Err(ContainerError::Invalid(format!(
                        "environment variable \"{kv}\" is not KEY=VALUE"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `base` with each of `extra` set: a variable already there takes the new
/// value in place, a new one is appended (Docker's rule for `exec -e`).
pub fn merge_env(mut base: Vec<String>, extra: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    for kv in extra {
        let k = key(kv);
        match base.iter_mut().find(|e| key(e) == k) {
            Some(slot) => slot.clone_from(kv),
            None => base.push(kv.clone()),
        }
    }
    base
}

impl Engine {
    /// Runs `args` in container `name` as its own process runs, with this
    /// process's stdio (a new pseudo-terminal when `tty`); see
    /// [`Engine::exec_with`].
    pub fn exec(&self, name: &str, args: &[String], tty: bool) -> Result<i32> {
        self.exec_with(
            name,
            args,
            &ExecOptions {
                tty,
                ..ExecOptions::default()
            },
        )
    }

    /// Runs `args` in container `name` with `opts` and returns its exit code
    /// (128 + N for death by signal N). From a multi-threaded process the
    /// built-in executor's exec runs in a child `moor exec`.
    pub fn exec_with(&self, name: &str, args: &[String], opts: &ExecOptions) -> Result<i32> {
        let info = self.inspect(name)?;
        let Status::Running { pid, .. } = info.status else {
            return Err(ContainerError::NotRunning(name.to_string()));
        };
        if self.is_paused(name) {
            return Err(ContainerError::Paused(name.to_string()));
        }
        if args.is_empty() {
            return Err(ContainerError::Invalid("exec needs a command".into()));
        }
        opts.check()?;
        if info.record.executor == Executor::Builtin && threads() != 1 {
            // libcontainer forks and clones: unsound in a multi-threaded
            // process (the agent). Run it from a fresh, single-threaded
            // `moor exec` instead.
            let mut cmd = std::process::Command::new(&self.config.moor_exe);
            cmd.arg("--state-dir")
                .arg(&self.config.state_dir)
                .arg("exec")
                .args(opts.tty.then_some("--tty"));
            if let Some(u) = &opts.user {
                cmd.arg("--user").arg(u);
            }
            if let Some(w) = &opts.workdir {
                cmd.arg("--workdir").arg(w);
            }
            for kv in &opts.env {
                cmd.arg("--env").arg(kv);
            }
            let status = cmd
                .arg(name)
                .arg("--")
                .args(args)
                .status()
                .map_err(|source| ContainerError::Spawn {
                    program: self.config.moor_exe.clone(),
                    source,
                })?;
            use std::os::unix::process::ExitStatusExt;
            return Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
        }
        let process = self.exec_process(&info.record, pid, args, opts)?;
        executor::exec(&info.record, &self.paths(name), &process)
    }

    /// The process an exec runs: the bundle's, with `args` and `opts`.
    fn exec_process(
        &self,
        record: &ContainerRecord,
        pid: i32,
        args: &[String],
        opts: &ExecOptions,
    ) -> Result<Process> {
        let mut process = executor::bundle_process(&self.paths(&record.name))?;
        let mut env = process.env().clone().unwrap_or_default();
        if let Some(user) = &opts.user {
            // The container's view of its files (its /etc may be a volume).
            let root = PathBuf::from(format!("/proc/{pid}/root"));
            let id = users::resolve(&root, Some(user))?;
            let mut u = UserBuilder::default()
                .uid(id.uid)
                .gid(id.gid)
                .additional_gids(id.additional_gids.clone());
            if let Some(umask) = process.user().umask() {
                u = u.umask(umask);
            }
            process.set_user(u.build()?);
            // HOME follows the user unless the image or the spec sets it.
            env = bundle::environment(
                &record.spec,
                record.image_config.as_ref(),
                &bundle::hostname(record),
                id.home.as_deref(),
            );
        }
        if let Some(w) = &opts.workdir {
            process.set_cwd(PathBuf::from(w));
        }
        let mut env = merge_env(env, &opts.env);
        if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            // As `docker exec -t` does, unless the container sets one.
            env.push(DEFAULT_TERM.into());
        }
        process
            .set_args(Some(args.to_vec()))
            .set_terminal(Some(opts.tty))
            .set_env(Some(env));
        Ok(process)
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
    use super::*;

    #[test]
    fn counts_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(super::threads() >= 2, "this thread and the spawned one");
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn env_is_replaced_in_place_or_appended() {
        let base = vec!["PATH=/bin".to_string(), "A=1".into(), "B=2".into()];
        let got = merge_env(base, &["A=x".into(), "C=3".into(), "B=".into()]);
        assert_eq!(got, ["PATH=/bin", "A=x", "B=", "C=3"]);
    }

    #[test]
    fn options_are_checked() {
        let bad = [
            ExecOptions {
                workdir: Some("tmp".into()),
                ..ExecOptions::default()
            },
            ExecOptions {
                env: vec!["NOEQUALS".into()],
                ..ExecOptions::default()
            },
            ExecOptions {
                env: vec!["=value".into()],
                ..ExecOptions::default()
            },
            ExecOptions {
                user: Some(String::new()),
                ..ExecOptions::default()
            },
        ];
        for o in bad {
            assert!(o.check().is_err(), "{o:?}");
        }
        let good = ExecOptions {
            user: Some("1000:1000".into()),
            workdir: Some("/tmp".into()),
            env: vec!["A=B=C".into(), "E=".into()],
            tty: false,
        };
        good.check().unwrap();
    }
}
