//! `start`: mounts the root filesystem, opens the bind sources that live
//! next to the manifests beneath their tree (`binds`), writes the bundle and
//! hands the container to a new shim, which reports back once it runs.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};

use moor_spec::NetworkMode;

use super::binds;
use super::bundle::{self, BundleInput};
use super::cgroups::Hierarchies;
use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::executor;
use super::observe::Status;
use super::paths::ContainerPaths;
use super::rootfs;
use super::state::{ContainerRecord, ShimState, read_json};

impl Engine {
    /// Starts container `name` and returns once its process runs (or with
    /// the reason it could not start). The container is supervised by its
    /// own shim and outlives the calling process. One with
    /// `network_mode = "container:NAME"` joins the network namespace of the
    /// container named exactly `NAME` (see [`Engine::start_joining`]).
    pub fn start(&self, name: &str) -> Result<ShimState> {
        self.start_with(name, |_| Ok(()))
    }

    /// [`Engine::start`], calling `prepare` with the container's PID 1 once
    /// the container is created — its namespaces and cgroups exist — and
    /// before its process runs: the place to plug it into networks through
    /// `/proc/PID/ns/net`, which a process that exits at once after its
    /// start would take away. When `prepare` fails the container is removed
    /// unstarted (it stays `Created`) and its error is returned.
    pub fn start_with(
        &self,
        name: &str,
        prepare: impl FnOnce(i32) -> std::result::Result<(), String>,
    ) -> Result<ShimState> {
        self.start_joining(name, |other| self.running_pid(other), prepare)
    }

    /// [`Engine::start_with`], with `peer` finding the container whose
    /// network namespace one with `network_mode = "container:NAME"` joins:
    /// called with `NAME` when the bundle is written, it returns that
    /// container's PID 1 while it runs, `None` when it does not. The engine
    /// knows its containers only by their own names; the host, which knows
    /// instances, resolves an instance name to its current container.
    pub fn start_joining(
        &self,
        name: &str,
        peer: impl FnOnce(&str) -> Result<Option<i32>>,
        prepare: impl FnOnce(i32) -> std::result::Result<(), String>,
    ) -> Result<ShimState> {
        let info = self.inspect(name)?;
        match info.status {
            Status::Running { .. } => return Err(ContainerError::Running(name.to_string())),
            Status::Lost { .. } => {
                self.stop(name, None)?;
            }
            Status::Created | Status::Exited(_) => {}
        }
        let record = info.record;
        let paths = self.paths(name);
        for f in [
            paths.shim_state(),
            paths.exit(),
            paths.pid_file(),
            paths.runtime_log(),
        ] {
            match fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ContainerError::io("remove", &f)(e));
                }
                _ => {}
            }
        }
        executor::delete(&record);

        let rootfs = paths.rootfs();
        if !rootfs::is_mount_point(&rootfs) {
            rootfs::mount_overlay(&record.lowers, &paths.upper(), &paths.work(), &rootfs)?;
        }
        let result = self
            .write_bundle(&record, peer)
            .and_then(|()| self.spawn_shim(&record, prepare));
        // Staged binds are the executor's to mount, in the container's own
        // mount namespace; done or failed, the host needs them no more.
        if let Err(e) = binds::unstage(&paths.dir) {
            tracing::warn!(container = name, "staged bind sources left mounted: {e}");
        }
        if result.is_err() {
            executor::delete(&record);
            let _ = Hierarchies::detect()
                .remove(&record.cgroup_path(), std::time::Duration::from_secs(2));
            let _ = rootfs::unmount_all(&rootfs);
        }
        result
    }

    /// The PID 1 of container `name` while it runs.
    pub fn running_pid(&self, name: &str) -> Result<Option<i32>> {
        Ok(match self.inspect(name)?.status {
            Status::Running { pid, .. } => Some(pid),
            _ => None,
        })
    }

    fn write_bundle(
        &self,
        record: &ContainerRecord,
        peer: impl FnOnce(&str) -> Result<Option<i32>>,
    ) -> Result<()> {
        let paths = self.paths(&record.name);
        let join_netns = match &record.spec.network_mode {
            NetworkMode::Container(other) => match peer(other)? {
                Some(pid) => Some(format!("/proc/{pid}/ns/net").into()),
                None => return Err(ContainerError::NotRunning(other.clone())),
            },
            _ => None,
        };
        let nofile_hard =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(_, hard)| hard)
                .unwrap_or(1024);
        let hierarchies = Hierarchies::detect();
        let staged = binds::stage(&paths.dir, &record.spec.mounts)?;
        let spec = bundle::build(&BundleInput {
            record,
            rootfs: &paths.rootfs(),
            bundle_dir: &paths.dir,
            state_dir: &self.config.state_dir,
            hierarchies: &hierarchies,
            nofile_hard,
            init: self.config.init.as_deref(),
            join_netns,
            staged: &staged,
        })?;
        super::state::write_json_replace(&paths.config(), &spec)
    }

    /// Runs the shim and walks it through its report: `created PID`, then
    /// (after `prepare`) `start` on its stdin, then `ok`; `error: …` at any
    /// point. Closing its stdin instead of sending `start` makes it remove
    /// the container and exit, which is waited for.
    fn spawn_shim(
        &self,
        record: &ContainerRecord,
        prepare: impl FnOnce(i32) -> std::result::Result<(), String>,
    ) -> Result<ShimState> {
        let paths = self.paths(&record.name);
        let shim_log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(paths.shim_log())
            .map_err(ContainerError::io("open", paths.shim_log()))?;
        let mut child = Command::new(&self.config.shim_exe)
            .arg(&paths.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            .spawn()
            .map_err(|source| ContainerError::Spawn {
                program: self.config.shim_exe.clone(),
                source,
            })?;
        let go = child.stdin.take();
        let out = child.stdout.take();
        // The shim forks at once and its first process exits: reap it.
        let _ = child.wait();
        let (Some(mut go), Some(out)) = (go, out) else {
            return Err(start_error(record, "the shim has no stdio pipes".into()));
        };
        let mut out = BufReader::new(out);
        let read_err = ContainerError::io("read the shim's report", &paths.dir);
        let first = read_line(&mut out).map_err(read_err)?;
        let pid = match first.strip_prefix("created ").map(str::parse::<i32>) {
            Some(Ok(pid)) => pid,
            _ => return Err(report_error(&paths, record, &first)),
        };
        // Created: the executor has made the container's mounts, staged
        // binds included. (Detached again by the caller if this fails.)
        let _ = binds::unstage(&paths.dir);
        if let Err(message) = prepare(pid) {
            // End of file on its stdin: the shim removes the container;
            // wait until it has (its stdout closes when it exits).
            drop(go);
            let mut rest = Vec::new();
            let _ = out.read_to_end(&mut rest);
            return Err(ContainerError::Prepare {
                name: record.name.clone(),
                message,
            });
        }
        // A shim that died meanwhile has closed its stdin: its report says why.
        let _ = go.write_all(b"start\n");
        drop(go);
        let last = read_line(&mut out)
            .map_err(ContainerError::io("read the shim's report", &paths.dir))?;
        if last != "ok" {
            return Err(report_error(&paths, record, &last));
        }
        read_json(&paths.shim_state())?.ok_or_else(|| {
            start_error(
                record,
                "the shim reported success but wrote no state".into(),
            )
        })
    }
}

fn start_error(record: &ContainerRecord, message: String) -> ContainerError {
    ContainerError::Start {
        name: record.name.clone(),
        message,
    }
}

/// The error a report line other than the expected one stands for.
fn report_error(paths: &ContainerPaths, record: &ContainerRecord, line: &str) -> ContainerError {
    if let Some(msg) = line.strip_prefix("error: ") {
        return start_error(record, msg.to_string());
    }
    let log = fs::read_to_string(paths.shim_log()).unwrap_or_default();
    let last = log.lines().last().unwrap_or("no diagnostics");
    start_error(
        record,
        format!("the shim exited without reporting ({last})"),
    )
}

/// One line of the shim's report, without its newline; empty at end of file.
fn read_line(out: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    out.read_line(&mut line)?;
    Ok(line.trim().to_string())
}
