//! Command-line arguments (DESIGN.md §6).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A declarative, GitOps-style agent and container engine: keeps a host's
/// images, networks, volumes and containers exactly as its manifests say.
#[derive(Debug, Parser)]
#[command(name = "moor", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Where moor keeps its state (images, containers, leases).
    #[arg(
        long,
        global = true,
        env = "MOOR_STATE_DIR",
        default_value = "/var/lib/moor",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,

    /// How diagnostics are written to stderr (`MOOR_LOG` sets the level).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "MOOR_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: crate::logging::LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the agent's arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests: exit 0 when valid, 1 with a diagnostic per problem.
    Validate(ValidateArgs),
    /// Show what apply would change: exit 0 no changes, 2 changes, 1 error.
    Plan(crate::cmd::stack::PlanArgs),
    /// Make the host match the manifests once, and wait until it does.
    Apply(crate::cmd::stack::ApplyArgs),
    /// Remove what a project created (volumes only with --volumes).
    Down(crate::cmd::stack::DownArgs),
    /// Run the agent: watch a manifest directory and reconcile forever.
    Agent(crate::cmd::agent::AgentArgs),
    /// Ask the running agent: sources, revisions, desired against observed state.
    Status(StatusArgs),
    /// List containers: running ones, or all with `--all`.
    Ps(PsArgs),
    /// Show a container's logs.
    Logs(LogsArgs),
    /// List images.
    Images(crate::cmd::image::ImagesArgs),
    /// List networks.
    Networks(crate::cmd::lists::ListArgs),
    /// List volumes.
    Volumes(crate::cmd::lists::ListArgs),
    /// Show a container in detail, as JSON.
    Inspect(InspectArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Show the processes of a container.
    Top(crate::cmd::top::TopArgs),
    /// Show containers' CPU, memory, network and disk use, live.
    Stats(crate::cmd::stats::StatsArgs),
    /// Copy files between a container and the host (`NAME:PATH` names the
    /// container's side; `-` is a tar stream on stdin or stdout).
    Cp(crate::cmd::cp::CpArgs),
    /// Stop containers on purpose: the agent leaves them stopped until
    /// `moor start` or a change of their spec.
    Stop(crate::cmd::lifecycle::StopArgs),
    /// Start stopped containers.
    Start(crate::cmd::lifecycle::NamesArgs),
    /// Stop and start containers.
    Restart(crate::cmd::lifecycle::StopArgs),
    /// Freeze every process of containers.
    Pause(crate::cmd::lifecycle::NamesArgs),
    /// Thaw paused containers.
    Unpause(crate::cmd::lifecycle::NamesArgs),
    /// The per-container supervisor (started by moor itself).
    #[command(hide = true)]
    Shim(ShimArgs),
    /// Developer commands that drive the container engine directly.
    #[command(hide = true, subcommand)]
    Dev(DevCommand),
    /// Manage images: pull, import, rm, prune.
    Image(crate::cmd::image::ImageArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Manifest files or directories (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print the result and the diagnostics as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

/// How manifests are loaded: which host of a fleet to act as (manifests may
/// `target` hosts by name and labels, and only what targets this host is
/// validated, planned or applied), and the size limit of a manifest file.
#[derive(Debug, Args, Default)]
pub struct HostArgs {
    /// Refuse manifest files larger than this (bytes, or with k/m/g) [default: 4m].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_manifest_size: Option<u64>,
    /// Act as the host with this name (default: this machine's host name).
    #[arg(long, value_name = "NAME", value_parser = parse_host_name)]
    pub host_name: Option<String>,
    /// Give the host a label, for `target = { labels = ... }` (repeatable).
    #[arg(long = "host-label", value_name = "KEY=VALUE", value_parser = moor_spec::target::parse_label)]
    pub host_labels: Vec<(String, String)>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    moor_spec::units::parse_size(s)
}

fn parse_host_name(s: &str) -> Result<String, String> {
    moor_spec::target::check_host_name(s).map(|()| s.to_string())
}

impl HostArgs {
    /// The load options these arguments ask for.
    pub fn load_options(&self) -> moor_spec::LoadOptions {
        let mut o = moor_spec::LoadOptions::default();
        if let Some(max) = self.max_manifest_size {
            o.max_file_size = max;
        }
        o
    }

    /// The identity to load manifests for.
    pub fn identity(&self) -> anyhow::Result<moor_spec::HostIdentity> {
        let mut host = match &self.host_name {
            Some(name) => moor_spec::HostIdentity::new(name),
            None => moor_spec::HostIdentity::from_hostname().map_err(|e| {
                anyhow::anyhow!("cannot read this machine's host name ({e}); pass --host-name")
            })?,
        };
        for (k, v) in &self.host_labels {
            if host.labels.insert(k.clone(), v.clone()).is_some() {
                anyhow::bail!("--host-label {k} is given twice");
            }
        }
        Ok(host)
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's HTTP address (its --metrics-addr).
    #[arg(long, env = "MOOR_AGENT_ADDR", default_value = moor_metrics::DEFAULT_ADDR)]
    pub addr: String,
    /// A file holding the token the agent's /status asks for (its status_token_file).
    #[arg(long, env = "MOOR_STATUS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the agent's /status document as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show every container, not only running ones.
    #[arg(short, long)]
    pub all: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The container.
    pub name: String,
    /// Keep printing new lines until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Print only the last N lines (of those `--since`/`--until` keep).
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<usize>,
    /// Only lines written at or after TIME: an RFC 3339 timestamp
    /// (2026-11-23T10:00:00Z), a Unix timestamp (1700000000.5) or a
    /// duration ago (45s, 10m, 1h30m).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only lines written at or before TIME (same forms as `--since`); with
    /// `--follow`, stop following once TIME has passed.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Print each line as stored: timestamp, stream, text (all on stdout).
    #[arg(short, long)]
    pub timestamps: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The container.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open (it always is; accepted for `docker exec -it` habits).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Run as this user: `name`, `uid`, `name:group` or `uid:gid`, looked
    /// up in the container's /etc/passwd and /etc/group (default: the
    /// container's own user).
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Run in this directory (absolute; default: the container's own).
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Set an environment variable (repeatable); `KEY` alone passes this
    /// terminal's value of KEY, if it has one.
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The container.
    pub name: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShimArgs {
    /// The container's directory.
    pub dir: PathBuf,
}

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
