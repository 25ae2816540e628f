//! The host without its lock, for commands that run beside an agent.
//!
//! The agent (or `moor apply`) holds `<state>/host.lock` for as long as it
//! runs. A command that only reads — `moor plan` — opens a [`HostView`]: no
//! lock taken or waited for, no network repair, no health checks run (the
//! health is what the lock holder's checks recorded), nothing written. It
//! observes the host exactly as the agent does, from the same files, each
//! written atomically, so it plans what the agent would.
//!
//! A person's command on one container — `moor stop`, `start`, `restart`,
//! `pause`, `unpause` — opens a [`SharedHost`]: the container engine and
//! the network engine (whose state has its own lock, taken for each
//! change), nothing more. What such a command decides is recorded where the
//! agent observes it: a deliberate stop in the container's directory
//! (`stopped-by-user.json`, see [`crate::container::Engine::manual_stop`]), a pause in the kernel's freezer. Starts
//! by the agent and by `moor start` are serialised by the container's start
//! lock.

use std::time::Duration;

use moor_reconcile::{Observed, RuntimeError};

use super::error::{container, network};
use super::open::Access;
use super::{Host, HostConfig, HostError};
use crate::container::{ContainerError, ExitRecord, Status};

/// The host, read-only.
#[derive(Debug, Clone)]
pub struct HostView(Host);

impl HostView {
    /// Opens the host under `config.state_dir` for reading, beside whatever
    /// holds its lock.
    pub fn open(config: HostConfig) -> Result<Self, HostError> {
        Host::open_as(config, Access::ReadOnly).map(Self)
    }

    /// What is on the host, as the reconciler sees it, with the inputs of
    /// the images `desired` builds (see [`moor_reconcile::observe`]).
    pub async fn observe(
        &self,
        desired: &moor_spec::DesiredState,
    ) -> Result<Observed, RuntimeError> {
        moor_reconcile::observe(&self.0, desired).await
    }
}

/// The host, for a person's commands on single containers (by their ids:
/// resolve instance names with [`super::instances::resolve`]).
#[derive(Debug, Clone)]
pub struct SharedHost(Host);

impl SharedHost {
    /// Opens the host under `config.state_dir` without its lock.
    pub fn open(config: HostConfig) -> Result<Self, HostError> {
        Host::open_as(config, Access::Shared).map(Self)
    }

    /// The container engine.
    pub fn engine(&self) -> &crate::container::Engine {
        self.0.engine()
    }

    /// Stops container `id` on purpose (`moor stop`): its stop signal, up to
    /// `grace` (its `stop_grace_period` when `None`), then SIGKILL. The stop
    /// is recorded first, so that the reconciler, which may observe the exit
    /// at any moment, leaves it stopped. Stopping a stopped container
    /// records the stop too (one restarting after a crash stays down).
    pub fn stop(
        &self,
        id: &str,
        grace: Option<Duration>,
    ) -> Result<Option<ExitRecord>, RuntimeError> {
        let inner = &self.0.inner;
        inner.engine.set_manual_stop(id, true).map_err(container)?;
        let exit = inner.engine.stop(id, grace).map_err(container)?;
        inner.nets.detach(id).map_err(network)?;
        Ok(exit)
    }

    /// Starts container `id` (`moor start`) and forgets a deliberate stop
    /// and its crash-loop restarts. Starting a running container does
    /// nothing; a paused one is refused. The stop stays recorded until the
    /// container runs, so that the reconciler never starts it at the same
    /// time.
    pub fn start(&self, id: &str) -> Result<bool, RuntimeError> {
        let inner = &self.0.inner;
        let record = inner.engine.record(id).map_err(container)?;
        let _lock = inner.engine.lock_container(id).map_err(container)?;
        let info = inner.engine.inspect(id).map_err(container)?;
        if matches!(info.status, Status::Running { .. }) {
            if inner.engine.is_paused(id) {
                return Err(container(ContainerError::Paused(id.to_string())));
            }
            inner.engine.set_manual_stop(id, false).map_err(container)?;
            return Ok(false);
        }
        let was_stopped = inner.engine.manual_stop(id).is_some();
        inner.engine.set_manual_stop(id, true).map_err(container)?;
        let started = inner
            .nets
            .detach(id)
            .map_err(network)
            .and_then(|()| inner.start(id, &record.spec));
        if let Err(e) = started {
            let _ = inner.engine.set_manual_stop(id, was_stopped);
            return Err(e);
        }
        inner.engine.set_manual_stop(id, false).map_err(container)?;
        inner.engine.set_restart_count(id, 0).map_err(container)?;
        Ok(true)
    }

    /// Stops and starts container `id` (`moor restart`); a paused one is
    /// thawed by the stop, as in Docker.
    pub fn restart(&self, id: &str, grace: Option<Duration>) -> Result<(), RuntimeError> {
        self.stop(id, grace)?;
        self.start(id).map(drop)
    }

    /// Freezes container `id` (`moor pause`).
    pub fn pause(&self, id: &str) -> Result<(), ContainerError> {
        self.0.inner.engine.pause(id)
    }

    /// Thaws container `id` (`moor unpause`).
    pub fn unpause(&self, id: &str) -> Result<(), ContainerError> {
        self.0.inner.engine.unpause(id)
    }
}
