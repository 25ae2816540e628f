//! `moor plan DIR`

use clap::Args;

use super::{HostArgs, ProjectArgs};

// `moor plan`
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub host: HostArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Allow a manifest set with no resources to remove everything the project owns.
    #[arg(long)]
    pub allow_empty: bool,
}
