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

/// A small multi-threaded async runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")
}
