//! Sources of desired state. Each turns what it watches into
//! [`moor_reconcile::Trigger::Source`] messages for its project's controller,
//! and keeps a [`SourceStatus`] for `/status`, `moor status` and metrics.

pub mod dir;
pub mod git;
pub mod poll;
pub mod webhook;
pub mod written;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use moor_spec::DesiredState;
use serde::Serialize;
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

/// Loads a manifest directory into the desired state of this host: only
/// what targets it (manifests' `target`; untargeted resources apply everywhere).
#[derive(Debug, Clone)]
pub struct Loader {
    /// Who this host is.
    pub host: moor_spec::HostIdentity,
    /// Limits (the size of a manifest file).
    pub options: moor_spec::LoadOptions,
}

/// Tests load as a host named `localhost`; the agent always says who it is.
#[cfg(test)]
impl Default for Loader {
    fn default() -> Self {
        Self {
            host: moor_spec::HostIdentity::new("localhost"),
            options: moor_spec::LoadOptions::default(),
        }
    }
}

impl Loader {
    /// The desired state in `dir` for this host, or every diagnostic as text.
    /// `dir` is the source's tree: relative paths in the manifests must not
    /// leave it.
    pub fn load(&self, dir: &Path) -> Result<DesiredState, String> {
        moor_spec::load_with(&[dir], Some(&self.host), &self.options).map_err(|d| d.to_string())
    }
}

/// What `/status` and `moor status` show about a source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// The source's name (its project).
    pub name: String,
    /// `directory` or `git`.
    pub kind: &'static str,
    /// The directory, or the URL without credentials.
    pub location: String,
    /// The git ref followed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The revision last fetched and loaded (a commit id, or a directory's content hash).
    pub revision: Option<String>,
    /// The commit's subject line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the source last synced successfully (Unix seconds).
    pub last_sync: Option<f64>,
    /// When a sync was last attempted (Unix seconds).
    pub last_attempt: Option<f64>,
    /// Why the last sync failed (fetch, verification or manifests), if it did.
    pub error: Option<String>,
    /// Failed syncs in a row.
    pub failures: u32,
    /// Whether `POST /hooks/git/<name>` is enabled.
    pub webhook: bool,
}

/// A source's status, shared between its task and the HTTP endpoint.
pub type SharedStatus = Arc<Mutex<SourceStatus>>;

impl SourceStatus {
    /// A source that has not synced yet: its name, kind (`directory` or
    /// `git`), location, git ref and whether its webhook is enabled.
    pub fn new(
        name: &str,
        kind: &'static str,
        location: String,
        reference: Option<String>,
        webhook: bool,
    ) -> Self {
        Self {
            name: name.to_string(),
            kind,
            location,
            reference,
            revision: None,
            subject: None,
            last_sync: None,
            last_attempt: None,
            error: None,
            failures: 0,
            webhook,
        }
    }

    /// Records a successful sync of `revision`.
    pub fn synced(&mut self, revision: &str, subject: Option<&str>) {
        let now = unix_now();
        self.revision = Some(revision.to_string());
        self.subject = subject.map(str::to_string);
        self.last_sync = Some(now);
        self.last_attempt = Some(now);
        self.error = None;
        self.failures = 0;
    }

    /// Records a failed sync; the last good revision stays.
    pub fn failed(&mut self, error: &str) {
        self.last_attempt = Some(unix_now());
        self.error = Some(error.to_string());
        self.failures = self.failures.saturating_add(1);
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
