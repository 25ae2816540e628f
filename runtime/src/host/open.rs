//! Opening the host, and the three ways to: with the state-dir lock (the
//! reconciler), or without it, beside an agent, to act on single containers
//! or only to read.

use std::fs::File;
use std::sync::{Arc, Mutex};

use super::health::Monitor;
use super::{Host, HostConfig, HostError, Inner};
use crate::container::Engine;
use crate::image::Images;
use crate::net::Networks;

/// How a process opened the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// With the state-dir lock: the reconciler (agent, apply, down).
    Exclusive,
    /// Without it, beside an agent: commands on single containers.
    Shared,
    /// Without it, observing only.
    ReadOnly,
}

impl Host {
    /// Opens the engine under `config.state_dir`, taking the state-dir lock.
    pub fn open(config: HostConfig) -> Result<Self, HostError> {
        Self::open_as(config, Access::Exclusive)
    }

    /// Opens the engine; with [`Access::Exclusive`], takes the state-dir
    /// lock, repairs the networks and runs health checks. Otherwise none
    /// of that: health is what the lock holder's checks recorded.
    pub(super) fn open_as(config: HostConfig, access: Access) -> Result<Self, HostError> {
        if !config.problems.is_empty() {
            return Err(HostError::Config {
                message: config.problems.join("; "),
            });
        }
        let dir = config.state_dir.clone();
        let open_err = |what: &'static str| {
            let dir = dir.clone();
            move |e: &dyn std::fmt::Display| HostError::Open {
                what,
                dir: dir.clone(),
                message: e.to_string(),
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| open_err("the state dir")(&e))?;
        let lock = if access == Access::Exclusive {
            let lock_path = dir.join("host.lock");
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| open_err("the lock file")(&e))?;
            if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_err()
            {
                return Err(HostError::Locked {
                    dir,
                    lock: lock_path,
                });
            }
            Some(lock)
        } else {
            // Names are served by the state dir's resolver, which whoever
            // creates a network (`moor start` making the default one, say)
            // makes sure runs: nothing to do here.
            None
        };
        let images = Images::open(&dir).map_err(|e| open_err("the image store")(&e))?;
        let engine =
            Engine::new(config.engine).map_err(|e| open_err("the container engine")(&e))?;
        let nets = Networks::open(config.net).map_err(|e| open_err("the network engine")(&e))?;
        // Repair what a crash left behind, and serve DNS for the recorded
        // networks. A network that cannot be repaired (its bridge name is
        // taken) is reported and left to the reconciler, which names it in
        // that network's condition; the rest of the host stays usable.
        if access == Access::Exclusive
            && let Err(e) = nets.cleanup()
        {
            eprintln!("warning: repairing networks in {}: {e}", dir.display());
        }
        let health_dir = dir.join("health");
        let health = match access {
            Access::Exclusive => Monitor::with_dir(health_dir),
            Access::Shared | Access::ReadOnly => Monitor::reader(health_dir),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                state_dir: dir,
                images: Mutex::new(images),
                engine,
                nets,
                owners: Mutex::new(()),
                health,
                pull: config.pull,
                usage: Mutex::default(),
                hierarchies: std::sync::OnceLock::new(),
                heads: Mutex::default(),
                _lock: lock,
            }),
        })
    }
}
