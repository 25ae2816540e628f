//! What several handlers open: the container engine, the host, an async
//! runtime.

use std::path::Path;

use anyhow::Context;
use moor_runtime::container::{Engine, EngineConfig};
use moor_runtime::host::{Host, HostConfig};

/// The engine of `state_dir` with default settings.
pub fn engine(state_dir: &Path) -> anyhow::Result<Engine> {
    Engine::new(EngineConfig::new(state_dir))
        .with_context(|| format!("open the state dir {}", state_dir.display()))
}

/// The host of `state_dir`, locked for reconciling.
pub fn open_host(state_dir: &Path) -> anyhow::Result<Host> {
    Ok(Host::open(HostConfig::new(state_dir))?)
}

/// The async runtime of one command: a current-thread one. The host's
/// operations run on tokio's blocking pool, so actions still run side by
/// side; what a command does between them is small, and a no-op `moor
/// apply` then starts no thread at all (the host observes itself on this
/// one: see `moor_runtime::host`).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}
