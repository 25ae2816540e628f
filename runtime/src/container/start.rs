//! `start`: mounts the root filesystem, writes the bundle and hands the
//! container to a new shim, which reports back once it runs.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};

use moor_spec::NetworkMode;

use super::bundle::{self, BundleInput};
use super::cgroups::Hierarchies;
use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::executor;
use super::observe::Status;
use super::rootfs;
use super::state::{ContainerRecord, ShimState, read_json};

impl Engine {
    /// Starts container `name` and returns once its process runs (or with
    /// the reason it could not start). The container is supervised by its
    /// own shim and outlives the calling process.
    pub fn start(&self, name: &str) -> Result<ShimState> {
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
            .write_bundle(&record)
            .and_then(|()| self.spawn_shim(&record));
        if result.is_err() {
            executor::delete(&record);
            let _ = Hierarchies::detect()
                .remove(&record.cgroup_path(), std::time::Duration::from_secs(2));
            let _ = rootfs::unmount_all(&rootfs);
        }
        result
    }

    fn write_bundle(&self, record: &ContainerRecord) -> Result<()> {
        let paths = self.paths(&record.name);
        let join_netns = match &record.spec.network_mode {
            NetworkMode::Container(other) => match self
                .inspect(&crate::host::instances::resolve(self, other)?)?
                .status
            {
                Status::Running { pid, .. } => Some(format!("/proc/{pid}/ns/net").into()),
                _ => return Err(ContainerError::NotRunning(other.clone())),
            },
            _ => None,
        };
        let nofile_hard =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(_, hard)| hard)
                .unwrap_or(1024);
        let hierarchies = Hierarchies::detect();
        let spec = bundle::build(&BundleInput {
            record,
            rootfs: &paths.rootfs(),
            bundle_dir: &paths.dir,
            state_dir: &self.config.state_dir,
            hierarchies: &hierarchies,
            nofile_hard,
            init: self.config.init.as_deref(),
            join_netns,
        })?;
        super::state::write_json_replace(&paths.config(), &spec)
    }

    fn spawn_shim(&self, record: &ContainerRecord) -> Result<ShimState> {
        let paths = self.paths(&record.name);
        let shim_log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(paths.shim_log())
            .map_err(ContainerError::io("open", paths.shim_log()))?;
        let mut child = Command::new(&self.config.shim_exe)
            .arg("shim")
            .arg(&paths.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            .spawn()
            .map_err(|source| ContainerError::Spawn {
                program: self.config.shim_exe.clone(),
                source,
            })?;
        let mut report = String::new();
        let read = child
            .stdout
            .take()
            .map(|mut out| out.read_to_string(&mut report))
            .transpose();
        // The shim forks at once and its first process exits: reap it.
        let _ = child.wait();
        read.map_err(ContainerError::io("read the shim's report", &paths.dir))?;
        let report = report.trim();
        if let Some(msg) = report.strip_prefix("error: ") {
            return Err(ContainerError::Start {
                name: record.name.clone(),
                message: msg.to_string(),
            });
        }
        if report != "ok" {
            let log = fs::read_to_string(paths.shim_log()).unwrap_or_default();
            let last = log.lines().last().unwrap_or("no diagnostics");
            return Err(ContainerError::Start {
                name: record.name.clone(),
                message: format!("the shim exited without reporting ({last})"),
            });
        }
        read_json(&paths.shim_state())?.ok_or_else(|| ContainerError::Start {
            name: record.name.clone(),
            message: "the shim reported success but wrote no state".into(),
        })
    }
}
