//! Starting a container: the peer whose network namespace it joins, its
//! networks (plugged in before its process runs), its health checks.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use moor_reconcile::RuntimeError;
use moor_spec::ContainerSpec;

use super::error::container;
use super::health::Probe;
use super::{Inner, instances};

impl Inner {
    pub(super) fn start(
        self: &Arc<Self>,
        name: &str,
        spec: &ContainerSpec,
    ) -> Result<(), RuntimeError> {
        // Plugged in between create and start: a process that exits at once
        // still had its interfaces, and its namespace is there to plug into.
        // `container:NAME` names an instance: its current container.
        let peer = |other: &str| {
            let id = instances::resolve(&self.engine, other)?;
            self.engine.running_pid(&id)
        };
        self.engine
            .start_joining(name, peer, |pid| {
                self.plug(name, spec, pid).map_err(|e| e.to_string())
            })
            .map_err(container)?;
        if let Some(check) = spec.healthcheck.clone() {
            self.health
                .watch(name, check, Arc::new(EngineProbe(self.clone())));
        }
        Ok(())
    }
}

/// Health checks run in the container through the engine.
pub(super) struct EngineProbe(pub(super) Arc<Inner>);

impl Probe for EngineProbe {
    fn exec(&self, name: &str, cmd: &[String], _timeout: Duration) -> Result<i32, String> {
        self.0
            .engine
            .exec(name, cmd, false)
            .map_err(|e| e.to_string())
    }

    fn paused(&self, name: &str) -> bool {
        self.0
            .engine
            .record(name)
            .is_ok_and(|r| self.0.hierarchies().frozen(&r.cgroup_path()))
    }

    fn address(&self, name: &str) -> Option<IpAddr> {
        let state = self.0.nets.state().ok()?;
        state
            .containers
            .get(name)
            .and_then(|c| c.leases.first())
            .map(|l| IpAddr::V4(l.address))
    }
}
