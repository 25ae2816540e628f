//! Instances and their containers. The manifests' `web` is the container
//! `web` until its first start-first update, which starts the new instance
//! as `web--1a2b3c4d` beside the old one and then removes the old one: for a
//! moment (or, after a crash, until the next reconcile) one instance has two
//! containers. Each records its instance name in the `moor.instance` label;
//! whatever people or the reconciler name by instance name — `moor logs web`,
//! `depends_on`, DNS, `/status`, metrics — means the instance's current
//! container, chosen here: running before not, then healthy (or without a
//! check) before starting before unhealthy, then, among healthy ones, the
//! newest, and among those whose check has not passed, the oldest. So after
//! a crash in the middle of an update, when no check has run yet (the agent's
//! checks start afresh), the old container stays and the update is done
//! again, waiting for the new one's health, rather than the new one being
//! trusted unchecked.

use std::path::Path;

use moor_reconcile::Health;

use crate::container::{ContainerError, Engine};

/// How much a container is preferred as its instance's current container:
/// the greatest wins (see the module's doc).
pub fn preference(running: bool, health: Health, created_ms: u64) -> (bool, u8, u64) {
    match health {
        Health::Healthy | Health::None => (running, 2, created_ms),
        Health::Starting => (running, 1, u64::MAX - created_ms),
        Health::Unhealthy => (running, 0, u64::MAX - created_ms),
    }
}

/// The health a checker recorded for container `id` under `dir`.
pub fn recorded_health(dir: &Path, id: &str) -> Health {
    match super::read_health(dir, id).as_deref() {
        Some("healthy") => Health::Healthy,
        Some("starting") => Health::Starting,
        Some("unhealthy") => Health::Unhealthy,
        _ => Health::None,
    }
}

/// The container that `name` means: the current container of instance
/// `name`, or, when no container is an instance of that name, `name` itself
/// (a container's own id, such as `web--1a2b3c4d`, or a container moor did
/// not create from manifests).
pub fn resolve(engine: &Engine, name: &str) -> Result<String, ContainerError> {
    let candidates: Vec<(String, u64)> = engine
        .scan(|r| (r.instance() == name).then_some(r.created_ms))?
        .into_iter()
        .filter_map(|(id, created)| created.map(|c| (id, c)))
        .collect();
    if candidates.len() <= 1 {
        return Ok(candidates
            .into_iter()
            .next()
            .map_or_else(|| name.to_string(), |(id, _)| id));
    }
    let health_dir = engine.state_dir().join("health");
    let mut best: Option<((bool, u8, u64), String)> = None;
    for (id, created) in candidates {
        let Ok(info) = engine.inspect(&id) else {
            continue;
        };
        let running = info.status.is_active();
        let health = if running {
            recorded_health(&health_dir, &id)
        } else {
            Health::None
        };
        let p = preference(running, health, created);
        if best.as_ref().is_none_or(|(b, _)| p > *b) {
            best = Some((p, id));
        }
    }
    Ok(best.map_or_else(|| name.to_string(), |(_, id)| id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_then_healthy_then_newest() {
        let old_healthy = preference(true, Health::Healthy, 1);
        let new_starting = preference(true, Health::Starting, 2);
        let new_healthy = preference(true, Health::Healthy, 2);
        let new_exited = preference(false, Health::None, 3);
        assert!(
            old_healthy > new_starting,
            "the old one serves until the new is healthy"
        );
        assert!(new_healthy > old_healthy, "then the new one");
        assert!(
            old_healthy > new_exited,
            "a stopped one never wins over a running one"
        );
        assert!(preference(true, Health::None, 1) > preference(true, Health::Unhealthy, 2));
        assert!(
            preference(true, Health::Starting, 1) > new_starting,
            "unchecked, the old one stays (after an agent restart)"
        );
        assert!(preference(true, Health::None, 2) > preference(true, Health::None, 1));
    }
}
