//! The directories a project's containers mount read-write: never read as
//! manifests again (see `moor_spec::writes`), even after the container is
//! gone, until the directory itself is.
//!
//! A directory source skips the files under a read-write bind of the load
//! that declares it; this record carries that across loads and restarts,
//! so what a container wrote is not even decoded, and a manifest it left
//! behind does not come to life when the operator removes the container.
//! Kept in `<state>/sources/<project>/written.json` (a JSON list of real
//! paths), written atomically; `moor apply` and the agent share it.

use std::io::Write;
use std::path::{Path, PathBuf};

use moor_spec::{DesiredState, MountSource};

/// The record of one project.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Where it is kept; None: in memory only.
    file: Option<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Written {
    /// The record of `project` under `state_dir` (empty when there is none
    /// yet, or it cannot be read: the load then skips what it finds itself).
    pub fn open(state_dir: &Path, project: &str) -> Self {
        let file = state_dir.join("sources").join(project).join("written.json");
        let dirs = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            file: Some(file),
            dirs,
        }
    }

    /// A record kept in memory only.
    #[cfg(test)]
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// The directories (and files) to skip.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Adds the read-write bind sources of `state` and forgets what no
    /// longer exists; saves when that changed anything. Returns whether it did.
    pub fn remember(&mut self, state: &DesiredState) -> std::io::Result<bool> {
        let mut dirs: Vec<PathBuf> = self
            .dirs
            .iter()
            .filter(|d| std::fs::symlink_metadata(d).is_ok())
            .cloned()
            .collect();
        for c in state.containers.values() {
            for m in c.spec.mounts.iter().filter(|m| !m.read_only) {
                if let MountSource::Bind { source, .. } = &m.source
                    && let Ok(real) = std::fs::canonicalize(source)
                {
                    dirs.push(real);
                }
            }
        }
        dirs.sort();
        dirs.dedup();
        if dirs == self.dirs {
            return Ok(false);
        }
        self.dirs = dirs;
        if let Some(file) = &self.file {
            save(file, &self.dirs)?;
        }
        Ok(true)
    }
}

/// Writes `dirs` to `file` through a temporary file, synced and renamed.
fn save(file: &Path, dirs: &[PathBuf]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(dirs).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_the_directory_is_gone() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (state, site) = (tmp.path().join("state"), tmp.path().join("site"));
        std::fs::create_dir_all(site.join("data")).expect("mkdir");
        std::fs::write(
            site.join("app.toml"),
            "[containers.app]\nimage = \"busybox\"\nmounts = [\"./data:/data\", \"./app.toml:/ro:ro\"]\n",
        )
        .expect("write");
        let loaded = moor_spec::load(&[&site]).expect("valid");
        let mut w = Written::open(&state, "site");
        assert!(w.dirs().is_empty());
        assert!(w.remember(&loaded).expect("saved"));
        let data = std::fs::canonicalize(site.join("data")).expect("real");
        assert_eq!(
            w.dirs(),
            std::slice::from_ref(&data),
            "read-only binds are not written"
        );
        assert!(!w.remember(&loaded).expect("unchanged"));
        // Kept across restarts, and after the container is gone.
        let mut again = Written::open(&state, "site");
        assert_eq!(again.dirs(), std::slice::from_ref(&data));
        assert!(!again.remember(&DesiredState::default()).expect("kept"));
        assert_eq!(again.dirs(), std::slice::from_ref(&data));
        // Until the directory is.
        std::fs::remove_dir(&data).expect("rmdir");
        assert!(again.remember(&DesiredState::default()).expect("saved"));
        assert!(Written::open(&state, "site").dirs().is_empty());
    }
}
