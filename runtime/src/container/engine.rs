//! The engine: where containers live and what runs them.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

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
    /// The `moor` binary, re-executed as each container's shim.
    pub shim_exe: PathBuf,
    /// Log size at which a container's log is rotated.
    pub log_max_bytes: u64,
    /// A static init binary for containers with `init = true`.
    pub init: Option<PathBuf>,
}

impl EngineConfig {
    /// Defaults for `state_dir`: the built-in executor, cgroup
    /// parent `moor`, this executable as the shim, 10 MiB logs, and
    /// `tini-static` as init when the host has it.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            executor: Executor::Builtin,
            cgroup_parent: "moor".into(),
            shim_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("moor")),
            log_max_bytes: 10 * 1024 * 1024,
            init: ["/usr/bin/tini-static", "/usr/libexec/docker/docker-init"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
        }
    }
}

/// A program's full path, from PATH or the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The container engine of one state dir. Cheap to build; holds no live
/// state: everything is read from disk on each call.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) config: EngineConfig,
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
        Ok(Self { config })
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
        read_json(&self.paths(name).record())?
            .ok_or_else(|| ContainerError::NotFound(name.to_string()))
    }

    /// The names of every container, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        let dir = containers_dir(&self.config.state_dir);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(ContainerError::io("read directory", &dir))?
            .flatten()
            .filter(|e| e.path().join("container.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }
}
