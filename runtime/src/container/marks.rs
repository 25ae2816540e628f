//! What is recorded about a container beside its record, in its own
//! directory (so it goes when the container is removed or replaced):
//!
//! - `stopped-by-user.json`: it was stopped on purpose (`moor stop`); the
//!   reconciler does not restart it until `moor start` or `moor restart`
//!   removes the mark, or a change of its spec replaces the container.
//! - `restarts`: how many times the reconciler restarted it, so that its
//!   crash-loop backoff survives an agent restart and `moor plan` in
//!   another process sees what the agent sees.
//!
//! - `start.lock`: held while the reconciler or `moor start` starts it.
//!
//! The files are written atomically; a reader never sees half a file.

use serde::{Deserialize, Serialize};

use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::paths::ContainerPaths;
use super::state::{now_ms, read_json, write_json_atomic, write_replace};

/// A deliberate stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualStop {
    /// When (ms since the epoch).
    pub at_ms: u64,
}

impl ContainerPaths {
    /// Written by `moor stop` ([`ManualStop`]).
    pub fn manual_stop(&self) -> std::path::PathBuf {
        self.dir.join("stopped-by-user.json")
    }

    /// The reconciler's restart count.
    pub fn restarts(&self) -> std::path::PathBuf {
        self.dir.join("restarts")
    }

    /// Locked around a start by whoever starts the container outside the
    /// engine's own calls (the reconciler, `moor start`).
    pub fn start_lock(&self) -> std::path::PathBuf {
        self.dir.join("start.lock")
    }
}

impl Engine {
    /// The deliberate stop of container `name`, if it has one.
    pub fn manual_stop(&self, name: &str) -> Option<ManualStop> {
        read_json(&self.paths(name).manual_stop()).ok().flatten()
    }

    /// Records (or, with `false`, forgets) that container `name` was
    /// stopped on purpose.
    pub fn set_manual_stop(&self, name: &str, stopped: bool) -> Result<()> {
        self.record(name)?;
        let path = self.paths(name).manual_stop();
        if stopped {
            write_json_atomic(&path, &ManualStop { at_ms: now_ms() })
        } else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(ContainerError::io("remove", &path)(e))
                }
                _ => Ok(()),
            }
        }
    }

    /// Takes container `name`'s start lock (blocking) until the returned
    /// file is dropped: the agent restarting a container and `moor start`
    /// never start it both at once.
    pub fn lock_container(&self, name: &str) -> Result<std::fs::File> {
        self.record(name)?;
        let path = self.paths(name).start_lock();
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ContainerError::io("open", &path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| ContainerError::io("lock", &path)(e.into()))?;
        Ok(file)
    }

    /// How many times the reconciler restarted container `name`.
    pub fn restart_count(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.paths(name).restarts())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Records the reconciler's restart count of container `name`.
    pub fn set_restart_count(&self, name: &str, count: u32) -> Result<()> {
        let path = self.paths(name).restarts();
        if count == 0 {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(ContainerError::io("remove", &path)(e))
                }
                _ => Ok(()),
            };
        }
        write_replace(&path, format!("{count}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::EngineConfig;
    use std::path::PathBuf;

    #[test]
    fn marks_live_and_die_with_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(EngineConfig::new(dir.path())).unwrap();
        let text = "[containers.c1]\nimage = \"example.org/a:1\"\n".to_string();
        let spec = moor_spec::load_texts(&[(PathBuf::from("t.toml"), text)])
            .unwrap()
            .containers
            .remove("c1")
            .unwrap()
            .spec
            .as_ref()
            .clone();
        assert!(
            engine.set_manual_stop("c1", true).is_err(),
            "no such container"
        );
        let layer = dir.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        engine.create("c1", spec, None, vec![layer]).unwrap();
        assert_eq!(engine.manual_stop("c1"), None);
        engine.set_manual_stop("c1", true).unwrap();
        assert!(engine.manual_stop("c1").is_some());
        engine.set_manual_stop("c1", false).unwrap();
        engine.set_manual_stop("c1", false).unwrap();
        assert_eq!(engine.manual_stop("c1"), None);
        assert_eq!(engine.restart_count("c1"), 0);
        engine.set_restart_count("c1", 3).unwrap();
        assert_eq!(engine.restart_count("c1"), 3);
        engine.set_manual_stop("c1", true).unwrap();
        engine.remove("c1", false).unwrap();
        assert_eq!(engine.manual_stop("c1"), None);
        assert_eq!(engine.restart_count("c1"), 0);
    }
}
