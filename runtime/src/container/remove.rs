//! `remove`: unmount, delete the cgroups, the runtime state and the
//! container's directory (its upper dir with it). Volumes stay.

use std::fs;
use std::time::Duration;

use super::cgroups::Hierarchies;
use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::executor;
use super::{binds, rootfs};

impl Engine {
    /// Removes container `name`. A running container is refused unless
    /// `force`, which kills it first.
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        let info = self.inspect(name)?;
        if info.status.is_active() {
            if !force {
                return Err(ContainerError::Running(name.to_string()));
            }
            self.stop(name, Some(Duration::ZERO))?;
        } else if matches!(info.status, super::Status::Lost { .. }) {
            self.stop(name, Some(Duration::ZERO))?;
        }
        let record = info.record;
        executor::delete(&record);
        Hierarchies::detect()
            .remove(&record.cgroup_path(), Duration::from_secs(5))
            .map_err(|left| {
                ContainerError::Invalid(format!("cgroups of {name} could not be removed: {left:?}"))
            })?;
        let paths = self.paths(name);
        // A bind source staged by a start that crashed: detached, or the
        // removal stops here (it must never recurse into the source).
        binds::unstage(&paths.dir)?;
        let rootfs = paths.rootfs();
        rootfs::unmount_all(&rootfs)?;
        if rootfs::is_mount_point(&rootfs) {
            // Never recurse into a mounted root filesystem: that would
            // delete the image's layers.
            return Err(ContainerError::Invalid(format!(
                "{} is still mounted",
                rootfs.display()
            )));
        }
        super::secrets::remove(&self.config.state_dir, name)?;
        self.forget_record(name);
        fs::remove_dir_all(&paths.dir).map_err(ContainerError::io("remove", &paths.dir))
    }
}
