//! `pause` and `unpause`: the cgroup freezer (v1's `freezer` controller,
//! v2's `cgroup.freeze`), as `docker pause` does. Nothing is recorded: the
//! kernel's freezer state is the truth, so a paused container stays paused
//! across agent restarts and shows as paused to every process. The shim is
//! not in the container's cgroup and keeps running. A paused container is
//! still `Running` to the engine; [`Engine::is_paused`] tells it apart, and
//! `stop` and `remove` thaw what they kill.

use std::time::Duration;

use super::cgroups::Hierarchies;
use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::observe::Status;

/// How long the kernel may take to freeze or thaw a container.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

impl Engine {
    /// Freezes every process of running container `name`. Pausing a paused
    /// container is fine.
    pub fn pause(&self, name: &str) -> Result<()> {
        self.set_frozen(name, true)
    }

    /// Thaws container `name`. Unpausing a container that is not paused is
    /// an error, as in Docker.
    pub fn unpause(&self, name: &str) -> Result<()> {
        if !self.is_paused(name) {
            return Err(ContainerError::NotPaused(name.to_string()));
        }
        self.set_frozen(name, false)
    }

    /// True when container `name` runs and its cgroup is frozen.
    pub fn is_paused(&self, name: &str) -> bool {
        let Ok(record) = self.record(name) else {
            return false;
        };
        Hierarchies::detect().frozen(&record.cgroup_path())
    }

    /// Thaws a container that was just sent a signal, should it be paused
    /// (as `docker stop` and `docker kill` do): a frozen process does not
    /// handle a signal, not even SIGKILL on v1, until it is thawed.
    pub(crate) fn thaw_after_signal(&self, record: &super::state::ContainerRecord) {
        let h = Hierarchies::detect();
        if h.frozen(&record.cgroup_path()) {
            let _ = h.freeze(&record.cgroup_path(), false, FREEZE_TIMEOUT);
        }
    }

    fn set_frozen(&self, name: &str, frozen: bool) -> Result<()> {
        let info = self.inspect(name)?;
        if !matches!(info.status, Status::Running { .. }) {
            return Err(ContainerError::NotRunning(name.to_string()));
        }
        Hierarchies::detect()
            .freeze(&info.record.cgroup_path(), frozen, FREEZE_TIMEOUT)
            .map_err(|message| ContainerError::Freeze {
                action: if frozen { "pause" } else { "unpause" },
                name: name.to_string(),
                message,
            })
    }
}
