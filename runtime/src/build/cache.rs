//! The build cache: a step's key (from the plan) → the [`State`] after it
//! (its layers, by digest, and its config), one JSON file per key under
//! `<state>/build-cache/`, written atomically. The layers themselves stay
//! in the blob store; an entry whose blobs were pruned is a miss.

use std::path::{Path, PathBuf};

use super::error::BuildError;
use super::state::State;

/// The cache of one state dir.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache of the store at `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("build-cache"),
        }
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let hex = key.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(format!("{hex}.json")))
    }

    /// The state recorded for `key`; `None` when there is none or it does
    /// not parse.
    pub fn get(&self, key: &str) -> Option<State> {
        let raw = std::fs::read(self.path(key)?).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    /// Records `state` for `key`.
    pub fn put(&self, key: &str, state: &State) -> Result<(), BuildError> {
        let path = self
            .path(key)
            .ok_or_else(|| BuildError::Invalid(format!("cache key {key} is not a digest")))?;
        std::fs::create_dir_all(&self.dir)
            .map_err(BuildError::io("create directory", &self.dir))?;
        crate::container::state::write_json_atomic(&path, state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_odd_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let key = format!("sha256:{}", "ab".repeat(32));
        assert!(cache.get(&key).is_none());
        let state = State {
            layers: Vec::new(),
            config: serde_json::json!({"config": {"Env": ["A=1"]}}),
        };
        cache.put(&key, &state).unwrap();
        assert_eq!(cache.get(&key), Some(state.clone()));
        assert!(cache.put("sha256:../../etc", &state).is_err());
    }
}
