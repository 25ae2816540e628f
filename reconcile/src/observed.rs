//! What the runtime reports is really on the host.
//!
//! The runtime builds this from the kernel (processes, bridges, directories)
//! checked against its store, so a dead process, a deleted bridge or a missing
//! volume directory shows up here as drift, not as what the store remembers.

use std::collections::BTreeMap;
use std::time::SystemTime;

use moor_spec::{ContainerSpec, SpecHash};
use serde::{Deserialize, Serialize};

/// Everything the runtime sees, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Images in the store, by normalised reference.
    pub images: BTreeMap<String, ObservedImage>,
    /// Networks, by name.
    pub networks: BTreeMap<String, ObservedNetwork>,
    /// Volumes, by name.
    pub volumes: BTreeMap<String, ObservedVolume>,
    /// Containers, by instance name (`web`, `web-2`): the current instance
    /// of each name (see [`ObservedContainer::id`]).
    pub containers: BTreeMap<String, ObservedContainer>,
    /// Other instances of a name, by id: what a start-first update left
    /// behind when it was interrupted between starting the new instance and
    /// removing the old one, or a new instance that never became current.
    /// The runtime reports the newest healthy, running instance of a name as
    /// its container and every other one here; the diff removes them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub superseded: BTreeMap<String, ObservedContainer>,
    /// What each image the manifests build would be built from now, by
    /// normalised reference (see [`crate::observe`]), or why that cannot
    /// be read (a Dockerfile that does not parse).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub builds: BTreeMap<String, Result<BuildInputs, String>>,
}

impl Observed {
    /// True when anything here belongs to `project`.
    pub fn owns_anything(&self, project: &str) -> bool {
        let mine = |p: &Option<String>| p.as_deref() == Some(project);
        self.networks.values().any(|n| mine(&n.project))
            || self.volumes.values().any(|v| mine(&v.project))
            || self.containers.values().any(|c| mine(&c.project))
            || self.superseded.values().any(|c| mine(&c.project))
    }

    /// The superseded instances of instance name `name`.
    pub fn superseded_of<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a ObservedContainer> + 'a {
        self.superseded
            .values()
            .filter(move |c| c.instance_name() == name)
    }
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedImage {
    /// The manifest digest the local tag points at.
    pub digest: String,
    /// The digest the registry's tag points at now, when the runtime checked
    /// (pull policy `always`); `None` when it did not.
    pub remote_digest: Option<String>,
    /// What the image was built from, when moor built it from manifests
    /// and its tag still points at what that build made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_from: Option<BuildInputs>,
}

/// What an image is built from: the inputs whose change, and only whose
/// change, rebuilds it. Plain data, computed by the runtime (it reads the
/// context and the image store); the diff compares two of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInputs {
    /// `sha256:<hex>` over everything below: equal digests, equal inputs.
    pub digest: String,
    /// `sha256:<hex>` of the Dockerfile's text.
    pub dockerfile: String,
    /// The build arguments.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// The target stage, when not the last.
    #[serde(default)]
    pub target: Option<String>,
    /// Each base image the target needs (`FROM`, `COPY --from`), by
    /// normalised reference: its image ID (config digest), `None` when it
    /// is not in the image store (the build pulls it).
    #[serde(default)]
    pub bases: BTreeMap<String, Option<String>>,
    /// The context after `.dockerignore`: each path (relative, `/`
    /// separated) and a digest of its type, mode and content.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

impl BuildInputs {
    /// What differs from `before` to `self`, for people (`build context
    /// changed: app.py`), in a fixed order; empty when nothing does.
    pub fn changes_since(&self, before: &BuildInputs) -> Vec<String> {
        let mut out = Vec::new();
        let mut files: Vec<&str> = self
            .context
            .iter()
            .filter(|(p, d)| before.context.get(*p) != Some(*d))
            .map(|(p, _)| p.as_str())
            .chain(
                before
                    .context
                    .keys()
                    .filter(|p| !self.context.contains_key(*p))
                    .map(String::as_str),
            )
            .collect();
        files.sort_unstable();
        if !files.is_empty() {
            const SHOWN: usize = 5;
            let more = files.len().saturating_sub(SHOWN);
            let mut text = files[..files.len().min(SHOWN)].join(", ");
            if more > 0 {
                text.push_str(&format!(" and {more} more"));
            }
            out.push(format!("build context changed: {text}"));
        }
        if self.dockerfile != before.dockerfile {
            out.push("Dockerfile changed".to_string());
        }
        let mut args: Vec<&str> = self
            .args
            .iter()
            .filter(|(k, v)| before.args.get(*k) != Some(*v))
            .map(|(k, _)| k.as_str())
            .chain(
                before
                    .args
                    .keys()
                    .filter(|k| !self.args.contains_key(*k))
                    .map(String::as_str),
            )
            .collect();
        args.sort_unstable();
        if !args.is_empty() {
            out.push(format!("build args changed: {}", args.join(", ")));
        }
        if self.target != before.target {
            out.push("target stage changed".to_string());
        }
        for (r, d) in &self.bases {
            match (d, before.bases.get(r)) {
                (None, _) => out.push(format!("base image {r} is not in the image store")),
                (Some(d), Some(Some(b))) if d == b => {}
                (Some(_), _) => out.push(format!("base image {r} changed")),
            }
        }
        if out.is_empty() && self.digest != before.digest {
            out.push("build inputs changed".to_string());
        }
        out
    }
}

/// A network on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNetwork {
    /// The project that created it; `None` when moor did not.
    pub project: Option<String>,
    /// The spec hash it was created from.
    pub spec_hash: Option<SpecHash>,
    /// What is wrong with it on the host (bridge missing, address wrong), if anything.
    pub fault: Option<String>,
}

/// A volume on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedVolume {
    /// The project that created it; `None` when moor did not.
    pub project: Option<String>,
    /// The spec hash it was created from.
    pub spec_hash: Option<SpecHash>,
    /// What is wrong with it on the host (directory missing), if anything.
    pub fault: Option<String>,
    /// It said `prune = true` when it was created: remove it with its manifest.
    pub prune: bool,
}

/// The lifecycle state of a container, as the kernel and its shim report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Its process runs.
    Running,
    /// Its process exited.
    Exited {
        /// Exit code, or 128 + signal.
        code: i32,
        /// Killed by the out-of-memory killer.
        oom: bool,
    },
    /// Its supervisor is gone and its state cannot be trusted.
    Dead,
}

impl ContainerState {
    /// A short word for tables and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited { .. } => "exited",
            ContainerState::Dead => "dead",
        }
    }
}

/// Health-check status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No health check.
    #[default]
    None,
    /// Checks have not passed yet (start period, or too few results).
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` consecutive checks failed.
    Unhealthy,
}

/// What a person did to a container with a command (`moor pause`,
/// `moor stop`), which the reconciler leaves alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hold {
    /// Its processes are frozen (`moor pause`); it still counts as running.
    Paused,
    /// Stopped on purpose (`moor stop`): not restarted, whatever its
    /// restart policy, until `moor start` or a change of its spec replaces
    /// it.
    Stopped,
}

/// A container on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedContainer {
    /// Its id on the host, which the runtime's container operations take.
    /// The instance name (`web`) for a container created stop-first (and for
    /// every container made before ids existed); `web--1a2b3c4d` for the new
    /// instance of a start-first update, which runs beside the old one for a
    /// while. Empty in data written before ids existed: the instance name.
    #[serde(default)]
    pub id: String,
    /// The project that created it; `None` when moor did not.
    pub project: Option<String>,
    /// The `[containers]` resource it is an instance of.
    pub resource: String,
    /// Its replica number, from 1.
    pub replica: u32,
    /// The instance hash it was created from (see [`crate::instance_hash`]).
    pub hash: SpecHash,
    /// The spec it was created from, when the store has it (used to say what changed).
    pub spec: Option<ContainerSpec>,
    /// Networks it is attached to.
    pub networks: Vec<String>,
    /// Named volumes it mounts.
    pub volumes: Vec<String>,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Health.
    pub health: Health,
    /// Restarts done by moor since it was created.
    pub restart_count: u32,
    /// When its process last started.
    pub started_at: Option<SystemTime>,
    /// When its process last exited.
    pub finished_at: Option<SystemTime>,
    /// What is wrong with it on the host although its process runs (say, it
    /// is not plugged into its networks after a crash), if anything.
    #[serde(default)]
    pub fault: Option<String>,
    /// Paused or stopped by a person, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
}

impl ObservedContainer {
    /// The instance name it is reported under (`web`, `web-2`).
    pub fn instance_name(&self) -> String {
        crate::diff::instance_name(&self.resource, self.replica)
    }

    /// Its id on the host: [`Self::id`], or the instance name when that is empty.
    pub fn host_id(&self) -> String {
        if self.id.is_empty() {
            self.instance_name()
        } else {
            self.id.clone()
        }
    }
}
