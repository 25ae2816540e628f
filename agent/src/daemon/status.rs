//! What the agent answers on `/status`, `/readyz` and before each scrape:
//! every source's sync and controller state, and each resource's condition
//! beside the container states read at request time.

use std::collections::BTreeMap;
use std::sync::Arc;

use moor_metrics::{Metrics, StatusSource};
use moor_reconcile::Status;
use moor_runtime::host::Host;
use moor_spec::HostIdentity;
use tokio::sync::{Notify, watch};

use crate::config::SourceConfig;
use crate::source::SharedStatus;

/// A source the agent runs.
pub struct Running {
    /// The source, as configured.
    pub config: SourceConfig,
    /// What its task last said (fetches, revisions, errors).
    pub status: SharedStatus,
    /// What its controller last said (passes, conditions).
    pub controller: watch::Receiver<Status>,
    /// Wakes a polled source at once (its webhook).
    pub wake: Arc<Notify>,
    /// Its images, and their updates.
    pub images: super::updates::Shared,
}

/// What `/status`, `/readyz` and the scrape hook read: the host and every
/// source the agent runs.
pub struct AgentStatus {
    /// The host, for container states and usage read at request time.
    pub host: Host,
    /// Who this host is.
    pub identity: HostIdentity,
    /// The sources.
    pub sources: Vec<Running>,
}

impl StatusSource for AgentStatus {
    fn before_scrape(&self, metrics: &Metrics) {
        for (name, u) in self.host.usage() {
            let usage = moor_metrics::ContainerUsage {
                cpu_seconds: u.cpu_seconds,
                memory_bytes: u.memory_bytes,
                pids: u.pids,
            };
            metrics.container_usage(&name, usage);
        }
        let digests = self.host.image_digests();
        let mut rows: Vec<(String, String, String)> = Vec::new();
        for s in &self.sources {
            for (name, v) in s.images.lock().expect("image view poisoned").iter() {
                if let Some(d) = moor_runtime::host::digest_of(&digests, &v.reference) {
                    rows.push((name.clone(), v.reference.clone(), d.clone()));
                }
            }
        }
        metrics.images(
            rows.iter()
                .map(|(n, r, d)| (n.as_str(), r.as_str(), d.as_str())),
        );
    }

    fn ready(&self) -> bool {
        self.sources.iter().all(|s| s.controller.borrow().ready)
    }

    fn status(&self) -> serde_json::Value {
        // Observed container states, read now (not at the last pass).
        // By instance name; of two containers of one instance (a start-first
        // update under way), the current one.
        let health_dir = self.host.engine().state_dir().join("health");
        let mut current: BTreeMap<String, ((bool, u8, u64), serde_json::Value)> = BTreeMap::new();
        for i in self.host.engine().list().unwrap_or_default() {
            let health = moor_runtime::host::read_health(&health_dir, &i.record.name);
            let rank = moor_runtime::host::instances::preference(
                i.status.is_active(),
                moor_runtime::host::instances::recorded_health(&health_dir, &i.record.name),
                i.record.created_ms,
            );
            let name = i.record.instance().to_string();
            if current.get(&name).is_none_or(|(r, _)| *r < rank) {
                let value = serde_json::json!({ "state": i.status.name(), "health": health });
                current.insert(name, (rank, value));
            }
        }
        let observed: BTreeMap<String, serde_json::Value> =
            current.into_iter().map(|(n, (_, v))| (n, v)).collect();
        let digests = self.host.image_digests();
        let mut sources = Vec::new();
        let mut resources = Vec::new();
        let mut last_reconcile: Option<f64> = None;
        for s in &self.sources {
            let st = s.status.lock().expect("status poisoned").clone();
            let c = s.controller.borrow();
            let finished = c
                .last_reconcile
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64());
            last_reconcile = match (last_reconcile, finished) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let mut source = serde_json::to_value(&st).expect("plain data");
            source["project"] = s.config.name.clone().into();
            source["applied_revision"] = c.revision.clone().into();
            source["manifest_error"] = c.source_error.clone().into();
            source["last_reconcile"] = finished.into();
            source["last_error"] = c.last_error.clone().into();
            source["reconciles"] = c.reconciles.into();
            source["ready"] = c.ready.into();
            source["suspended"] = c.suspended.into();
            source["pending_revision"] = c.pending_revision.clone().into();
            source["outcome"] = c.outcome().map(|o| o.as_str()).into();
            source["outcome_message"] = c
                .revision
                .as_deref()
                .and_then(|rev| c.history.iter().rev().find(|r| r.revision == rev))
                .and_then(|r| r.message.clone())
                .into();
            source["rolled_back"] = c.rolled_back.clone().into();
            source["refused_revision"] = c.refused_revision.clone().into();
            source["rollback"] = if s.config.rollback { "auto" } else { "off" }.into();
            source["deploy_timeout"] = s.config.limits.deploy_timeout.as_secs_f64().into();
            source["min_ready"] = s.config.limits.min_ready.as_secs_f64().into();
            source["drift_mode"] = serde_json::to_value(s.config.drift).expect("plain data");
            source["mode"] = serde_json::to_value(s.config.mode).expect("plain data");
            source["drift"] = c
                .drift
                .iter()
                .map(|a| serde_json::json!({"kind": a.kind, "name": a.name, "action": a.verb, "reason": a.reason}))
                .collect();
            if s.config.mode == moor_reconcile::SourceMode::Plan {
                source["plan"] = c
                    .planned
                    .iter()
                    .map(|a| serde_json::json!({"kind": a.kind, "name": a.name, "action": a.verb, "reason": a.reason}))
                    .collect();
            }
            source["images"] = s
                .images
                .lock()
                .expect("image view poisoned")
                .iter()
                .map(|(name, v)| {
                    let mut i = serde_json::to_value(v).expect("plain data");
                    i["name"] = name.clone().into();
                    i["digest"] = moor_runtime::host::digest_of(&digests, &v.reference)
                        .cloned()
                        .into();
                    i
                })
                .collect();
            sources.push(source);
            for cond in c.conditions.values() {
                let mut r = serde_json::to_value(cond).expect("plain data");
                r["project"] = s.config.name.clone().into();
                if cond.kind == moor_spec::Kind::Container {
                    r["observed"] = observed
                        .get(&cond.name)
                        .cloned()
                        .unwrap_or_else(|| serde_json::json!({"state": "absent"}));
                }
                resources.push(r);
            }
        }
        let last_error = self.sources.iter().find_map(|s| {
            let c = s.controller.borrow();
            c.last_error
                .clone()
                .or_else(|| c.source_error.clone())
                .map(|e| format!("{}: {e}", s.config.name))
        });
        serde_json::json!({
            "host": { "name": self.identity.name, "labels": self.identity.labels },
            // The single project when there is one source, as before.
            "project": (self.sources.len() == 1).then(|| self.sources[0].config.name.clone()),
            "ready": self.ready(),
            "last_reconcile": last_reconcile,
            "last_error": last_error,
            "reconciles": self.sources.iter().map(|s| s.controller.borrow().reconciles).sum::<u64>(),
            "sources": sources,
            "resources": resources,
        })
    }
}
