//! [`HostConfig`]: how to open the host, with what the environment says.

use std::path::{Path, PathBuf};

use crate::container::EngineConfig;
use crate::image::pull::PullOptions;
use crate::net::NetConfig;

/// How to open the host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The state dir.
    pub state_dir: PathBuf,
    /// Registry settings for pulls.
    pub pull: PullOptions,
    /// Container engine settings.
    pub engine: EngineConfig,
    /// Network engine settings.
    pub net: NetConfig,
    /// Settings from the environment that could not be used: [`Host::open`]
    /// refuses to run with any, rather than fall back to a default another
    /// instance may be using.
    pub problems: Vec<String>,
}

impl HostConfig {
    /// Defaults under `state_dir`. Several moor instances on one machine
    /// (a test fleet) keep apart with their own state dirs and
    /// `MOOR_BRIDGE_PREFIX` (bridge names, default `mo-`: see
    /// [`crate::net::names::Naming`]), `MOOR_NFT_TABLE` (the nftables table,
    /// default `moor`), `MOOR_NET_POOL` (where subnets are allocated,
    /// default `10.89.0.0/16`) and `MOOR_CGROUP_PARENT` (default `moor`).
    /// `MOOR_EXECUTOR` picks what creates new containers: `builtin` (the
    /// default), `runc`, or the path of a runc-compatible runtime.
    /// Everything else an instance makes is keyed by its state dir: start-up
    /// clean-up removes only interfaces marked with this state dir's
    /// instance token, containers' cgroups have random ids, and the state
    /// dir's DNS resolver listens on its own networks' gateway addresses.
    pub fn new(state_dir: &Path) -> Self {
        let mut net = NetConfig::new(state_dir);
        if let Ok(table) = std::env::var("MOOR_NFT_TABLE") {
            net.table = table;
        }
        if let Ok(prefix) = std::env::var("MOOR_BRIDGE_PREFIX") {
            // Checked by Host::open, which refuses a bad one.
            net.bridge_prefix = prefix;
        }
        let mut problems = Vec::new();
        if let Ok(pool) = std::env::var("MOOR_NET_POOL") {
            match pool.parse::<ipnet::Ipv4Net>() {
                Ok(p) if p.trunc() == p => net.pool = p,
                _ => problems.push(format!(
                    "MOOR_NET_POOL=\"{pool}\" is not an IPv4 network such as 10.89.0.0/16"
                )),
            }
        }
        if let Err(e) = crate::net::names::Naming::new(&net.bridge_prefix) {
            problems.push(format!("MOOR_BRIDGE_PREFIX: {e}"));
        }
        let mut engine = EngineConfig::new(state_dir);
        if let Ok(parent) = std::env::var("MOOR_CGROUP_PARENT") {
            engine.cgroup_parent = parent;
        }
        // `EngineConfig::new` takes `MOOR_SHIM` as it is; the agent and
        // `apply` refuse one that is not absolute (a relative one would be
        // looked up on PATH, or in whatever directory moor was started in).
        if let Some(shim) = std::env::var_os(crate::container::SHIM_ENV)
            && !std::path::Path::new(&shim).is_absolute()
        {
            problems.push(format!(
                "MOOR_SHIM=\"{}\" is not an absolute path to the moor-shim binary",
                shim.to_string_lossy()
            ));
        }
        if let Ok(executor) = std::env::var("MOOR_EXECUTOR") {
            match crate::container::Executor::parse(&executor) {
                Ok(e) => engine.executor = e,
                Err(e) => problems.push(format!("MOOR_EXECUTOR: {e}")),
            }
        }
        // `moor dns` serves the containers' DNS: a long-lived process that
        // answers packets from containers, one per state dir, so it runs
        // from the position-independent `moor`, not from the shim binary.
        net.resolver = Some(engine.moor_exe.clone());
        Self {
            state_dir: state_dir.to_path_buf(),
            pull: PullOptions::default(),
            engine,
            net,
            problems,
        }
    }
}
