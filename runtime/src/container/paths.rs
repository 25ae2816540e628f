//! Where a container's files live under the state dir.

use std::path::{Path, PathBuf};

/// The directory of every container: `<state>/containers`.
pub fn containers_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("containers")
}

/// The files of one container, all under `<state>/containers/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPaths {
    /// The container's directory; also the OCI bundle.
    pub dir: PathBuf,
}

impl ContainerPaths {
    /// The paths of container `name`.
    pub fn new(state_dir: &Path, name: &str) -> Self {
        Self {
            dir: containers_dir(state_dir).join(name),
        }
    }

    /// What was asked for at creation ([`super::ContainerRecord`]).
    pub fn record(&self) -> PathBuf {
        self.dir.join("container.json")
    }
    /// The OCI runtime spec.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// The mount point of the overlay root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// The overlay's upper dir: the container's writable layer.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// The overlay's work dir.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// Written by the shim once the container runs ([`super::ShimState`]).
    pub fn shim_state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// Written by the shim when the container has exited ([`super::ExitRecord`]).
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    /// The container's log; older lines in [`Self::log_rotated`].
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    /// The log file rotated away when the current one reached its cap.
    pub fn log_rotated(&self) -> PathBuf {
        self.dir.join("container.log.1")
    }
    /// The shim's own diagnostics.
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    /// The OCI runtime's log (runc `--log`).
    pub fn runtime_log(&self) -> PathBuf {
        self.dir.join("runtime.log")
    }
    /// The container's PID as the OCI runtime wrote it.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("container.pid")
    }
}
