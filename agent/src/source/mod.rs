//! Sources of desired state. Each turns what it watches into
//! [`moor_reconcile::Trigger::Source`] messages for the controller.

pub mod dir;
pub mod git;
pub mod webhook;

use moor_spec::DesiredState;
use sha2::{Digest, Sha256};

/// A revision for a desired state: sha256 over every resource's kind, name and
/// spec hash (which already covers env files and bind sources kept next to the
/// manifests). Equal states have equal revisions, whatever their spelling.
pub fn revision(state: &DesiredState) -> String {
    let mut h = Sha256::new();
    let mut feed = |kind: &str, name: &str, hash: &str| {
        for part in [kind, name, hash] {
            h.update(part.as_bytes());
            h.update([0]);
        }
    };
    for (n, r) in &state.images {
        feed("image", n, r.hash.as_str());
    }
    for (n, r) in &state.networks {
        feed("network", n, r.hash.as_str());
    }
    for (n, r) in &state.volumes {
        feed("volume", n, r.hash.as_str());
    }
    for (n, r) in &state.containers {
        // Fields left out of the hash (replicas, restart…) still change the state.
        let extra = serde_json::to_string(&(
            r.spec.replicas,
            &r.spec.restart,
            &r.spec.healthcheck,
            &r.spec.depends_on,
            &r.spec.stop_signal,
            r.spec.stop_grace_period,
            r.spec.update_order,
        ))
        .expect("plain data serialises");
        feed("container", n, &format!("{}{extra}", r.hash));
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}
