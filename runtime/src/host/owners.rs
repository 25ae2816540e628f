//! Who created each network and volume, with what spec: the record that lets
//! the reconciler remove only what a project created. (Containers carry the
//! same facts as labels in their own records.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use moor_spec::SpecHash;
use serde::{Deserialize, Serialize};

use crate::container::state::{read_json, write_json_atomic};

/// The owner of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The project that created it.
    pub project: String,
    /// The spec hash it was created from.
    pub spec_hash: SpecHash,
    /// Remove it (and its data) when it leaves the manifests.
    #[serde(default)]
    pub prune: bool,
}

/// Owners of networks and volumes, persisted as one JSON file (written
/// atomically; the agent's state-dir lock serialises writers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owners {
    /// Networks by name.
    pub networks: BTreeMap<String, Owner>,
    /// Volumes by name.
    pub volumes: BTreeMap<String, Owner>,
}

impl Owners {
    /// The file under `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("owners.json")
    }

    /// Reads the file (empty when there is none).
    pub fn load(state_dir: &Path) -> Result<Self, crate::container::ContainerError> {
        Ok(read_json(&Self::path(state_dir))?.unwrap_or_default())
    }

    /// Writes the file atomically.
    pub fn save(&self, state_dir: &Path) -> Result<(), crate::container::ContainerError> {
        write_json_atomic(&Self::path(state_dir), self)
    }
}
