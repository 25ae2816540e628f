//! Command-line arguments (DESIGN.md §6).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A declarative, GitOps-style agent and container engine: keeps a host's
/// images, networks, volumes and containers exactly as its manifests say.
#[derive(Debug, Parser)]
#[command(name = "moor", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Where moor keeps its state (images, containers, leases).
    #[arg(long, global = true, env = "MOOR_STATE_DIR", default_value = "/var/lib/moor", value_name = "DIR")]
    pub state_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests: exit 0 when valid, 1 with a diagnostic per problem.
    Validate(ValidateArgs),
    /// Show what apply would change (not built yet).
    Plan(Unbuilt),
    /// Make the host match the manifests once (not built yet).
    Apply(Unbuilt),
    /// Remove what a project created (not built yet).
    Down(Unbuilt),
    /// Run the agent: watch sources and reconcile forever (not built yet).
    Agent(Unbuilt),
    /// List containers (not built yet).
    Ps(Unbuilt),
    /// Show a container's logs (not built yet).
    Logs(Unbuilt),
    /// List images (not built yet).
    Images(Unbuilt),
    /// List networks (not built yet).
    Networks(Unbuilt),
    /// List volumes (not built yet).
    Volumes(Unbuilt),
    /// Show one resource in detail (not built yet).
    Inspect(Unbuilt),
    /// Manage images: pull, import, rm, prune (not built yet).
    Image(Unbuilt),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Manifest files or directories (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print the result and the diagnostics as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of a command that is not built yet: accepted so that `--help`
/// lists it, refused when run.
#[derive(Debug, Args)]
pub struct Unbuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}
