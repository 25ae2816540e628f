//! `moor dev ...` (hidden): drive the container engine directly.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Create and start a container from a root filesystem directory.
    Run(DevRunArgs),
    /// Start a created or exited container again.
    Start(DevNameArgs),
    /// Stop a container: its stop signal, the grace period, then SIGKILL.
    Stop(DevStopArgs),
    /// Remove a container (`--force` kills a running one).
    Rm(DevRmArgs),
    /// Wait for a container to exit; print its exit record, exit with its code.
    Wait(DevWaitArgs),
}

#[derive(Debug, Args)]
pub struct DevRunArgs {
    /// The container's name.
    #[arg(long)]
    pub name: String,
    /// A root filesystem layer (repeat for more, bottom first).
    #[arg(long, required = true, value_name = "DIR")]
    pub rootfs: Vec<PathBuf>,
    /// Take the container's spec from `[containers.NAME]` in these manifests.
    #[arg(long, value_name = "PATH")]
    pub manifest: Vec<PathBuf>,
    /// What creates the container: `builtin` (youki's libcontainer), `runc`,
    /// or the path of an OCI runtime.
    #[arg(long, env = "MOOR_EXECUTOR", default_value = "builtin")]
    pub executor: String,
    /// The cgroup the container's cgroup is created under.
    #[arg(long, env = "MOOR_CGROUP_PARENT", default_value = "moor")]
    pub cgroup_parent: String,
    /// Log size at which the log is rotated, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub log_max_bytes: Option<u64>,
    /// The command (overrides the manifest's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DevNameArgs {
    /// The container.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct DevStopArgs {
    /// The container.
    pub name: String,
    /// Grace period in seconds (the spec's `stop_grace_period` by default).
    #[arg(short, long, value_name = "SECONDS")]
    pub time: Option<f64>,
}

#[derive(Debug, Args)]
pub struct DevRmArgs {
    /// The container.
    pub name: String,
    /// Kill it first if it runs.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DevWaitArgs {
    /// The container.
    pub name: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub timeout: f64,
}
