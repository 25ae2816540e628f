//! The engine: where containers live and what runs them.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::error::{ContainerError, Result};
use super::executor::Executor;
use super::paths::{ContainerPaths, containers_dir};
use super::state::{ContainerRecord, read_json};

/// Settings of the container engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The state dir (`/var/lib/moor`).
    pub state_dir: PathBuf,
    /// What creates containers: youki's libcontainer (built in) or `runc`.
    pub executor: Executor,
    /// cgroup under which each container's cgroup is created (`moor`).
    pub cgroup_parent: String,
    /// The shim binary (`moor-shim`), started once per container to
    /// supervise it.
    pub shim_exe: PathBuf,
    /// The `moor` binary, run as `moor exec` when the built-in executor
    /// must exec from a multi-threaded process (see [`Engine::exec_with`]).
    pub moor_exe: PathBuf,
    /// Log size at which a container's log is rotated.
    pub log_max_bytes: u64,
    /// A static init binary for containers with `init = true`.
    pub init: Option<PathBuf>,
}

impl EngineConfig {
    /// Defaults for `state_dir`: the built-in executor, cgroup parent
    /// `moor`, `moor-shim` next to this executable as the shim (or
    /// `$MOOR_SHIM` when set), this executable as `moor`, 10 MiB logs, and
    /// `tini-static` as init when the host has it.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            executor: Executor::Builtin,
            cgroup_parent: "moor".into(),
            shim_exe: std::env::var_os(SHIM_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| beside_this_exe(SHIM_EXE)),
            moor_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("moor")),
            log_max_bytes: 10 * 1024 * 1024,
            init: ["/usr/bin/tini-static", "/usr/libexec/docker/docker-init"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
        }
    }
}

/// The shim binary's name; it is installed beside `moor`.
pub const SHIM_EXE: &str = "moor-shim";

/// The environment variable that names the shim binary (an absolute path)
/// when it is not installed beside `moor`.
pub const SHIM_ENV: &str = "MOOR_SHIM";

/// `name` in the directory of the running executable (its real path: a
/// `moor` reached through a symbolic link finds the shim installed beside
/// the real file), or `name` alone, looked up on `PATH`, when that
/// directory is unknown.
fn beside_this_exe(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The container engine of one state dir. Cheap to build; holds no live
/// state: everything is read from disk on each call. The one thing kept
/// between calls is a cache of parsed records, each checked against its
/// file (inode, size, modification and change times) before use: a record
/// is written once, at creation, so listing 100 containers reads no record
/// twice, and a record replaced on disk is always read again.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) config: EngineConfig,
    records: Arc<Mutex<HashMap<String, CachedRecord>>>,
}

/// A parsed `container.json` and what identified its file.
#[derive(Debug)]
struct CachedRecord {
    file: FileId,
    record: ContainerRecord,
}

/// What tells one version of a file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileId {
    fn of(m: &fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

impl Engine {
    /// An engine over `config.state_dir`, which is created (mode 0700) if missing.
    pub fn new(mut config: EngineConfig) -> Result<Self> {
        if config.state_dir.is_relative() {
            let cwd =
                std::env::current_dir().map_err(ContainerError::io("get current dir", "."))?;
            config.state_dir = cwd.join(&config.state_dir);
        }
        for dir in [config.state_dir.clone(), containers_dir(&config.state_dir)] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(ContainerError::io("create directory", &dir))?;
        }
        Ok(Self {
            config,
            records: Arc::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The state dir.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// The files of container `name` (which need not exist).
    pub fn paths(&self, name: &str) -> ContainerPaths {
        ContainerPaths::new(&self.config.state_dir, name)
    }

    /// The executor's state root: `<state>/runtime/{builtin,runc}`.
    pub fn runtime_root(&self) -> PathBuf {
        self.config
            .state_dir
            .join("runtime")
            .join(self.config.executor.state_subdir())
    }

    /// The record of container `name`.
    pub fn record(&self, name: &str) -> Result<ContainerRecord> {
        moor_spec::check_name(name).map_err(|_| ContainerError::NotFound(name.to_string()))?;
        let path = self.paths(name).record();
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => self.record_of(name, &path, &m),
            Ok(_) => Err(ContainerError::NotFound(name.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget_record(name);
                Err(ContainerError::NotFound(name.to_string()))
            }
            Err(e) => Err(ContainerError::io("read", &path)(e)),
        }
    }

    /// The record at `path` whose metadata is `meta`: the cached one when
    /// the file is the one it was read from, else read (and cached).
    fn record_of(&self, name: &str, path: &Path, meta: &fs::Metadata) -> Result<ContainerRecord> {
        self.with_record(name, path, meta, ContainerRecord::clone)
    }

    /// `f` of the record at `path` whose metadata is `meta` (see [`Self::record_of`]).
    fn with_record<T>(
        &self,
        name: &str,
        path: &Path,
        meta: &fs::Metadata,
        f: impl Fn(&ContainerRecord) -> T,
    ) -> Result<T> {
        let file = FileId::of(meta);
        if let Some(c) = self.cache().get(name)
            && c.file == file
        {
            return Ok(f(&c.record));
        }
        let record: ContainerRecord =
            read_json(path)?.ok_or_else(|| ContainerError::NotFound(name.to_string()))?;
        let out = f(&record);
        // Cache only what the file still is (it may have been replaced while read).
        if fs::metadata(path).is_ok_and(|m| FileId::of(&m) == file) {
            self.cache()
                .insert(name.to_string(), CachedRecord { file, record });
        }
        Ok(out)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the cached record of `name` (removed).
    pub(crate) fn forget_record(&self, name: &str) {
        self.cache().remove(name);
    }

    /// The names of every container, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self
            .names_and_records()?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Every container's name and record, sorted by name, each record file
    /// looked at once. Forgets the cached records of containers that are gone.
    pub(crate) fn names_and_records(&self) -> Result<Vec<(String, ContainerRecord)>> {
        self.scan(ContainerRecord::clone)
    }

    /// Every container's name and `f` of its record, sorted by name (see
    /// [`Self::names_and_records`]), without copying the records.
    pub(crate) fn scan<T>(&self, f: impl Fn(&ContainerRecord) -> T) -> Result<Vec<(String, T)>> {
        let dir = containers_dir(&self.config.state_dir);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir)
            .map_err(ContainerError::io("read directory", &dir))?
            .flatten()
        {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let path = e.path().join("container.json");
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() || moor_spec::check_name(&name).is_err() {
                continue;
            }
            match self.with_record(&name, &path, &meta, &f) {
                Ok(record) => out.push((name, record)),
                // Removed while we looked.
                Err(ContainerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        self.cache()
            .retain(|name, _| out.binary_search_by(|(n, _)| n.as_str().cmp(name)).is_ok());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::state::write_json_atomic;

    #[test]
    fn cached_records_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(EngineConfig::new(dir.path())).unwrap();
        let spec = |image: &str| {
            let text = format!("[containers.c1]\nimage = \"{image}\"\n");
            moor_spec::load_texts(&[(PathBuf::from("t.toml"), text)])
                .unwrap()
                .containers
                .remove("c1")
                .unwrap()
                .spec
                .as_ref()
                .clone()
        };
        let layer = dir.path().join("layer");
        fs::create_dir(&layer).unwrap();
        let created = engine
            .create("c1", spec("example.org/a:1"), None, vec![layer])
            .unwrap();
        assert_eq!(engine.record("c1").unwrap(), created);
        assert_eq!(engine.names().unwrap(), ["c1"]);
        // Replaced on disk (a new file): read again, not served from the cache.
        let mut changed = created.clone();
        changed.spec = spec("example.org/b:2");
        write_json_atomic(&engine.paths("c1").record(), &changed).unwrap();
        assert_eq!(engine.record("c1").unwrap(), changed);
        assert_eq!(engine.list().unwrap()[0].record, changed);
        // Gone: not listed, and forgotten.
        engine.remove("c1", false).unwrap();
        assert!(engine.names().unwrap().is_empty());
        assert!(engine.cache().is_empty());
    }
}
