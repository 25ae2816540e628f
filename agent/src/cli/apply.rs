//! `moor apply DIR`

use std::time::Duration;

use clap::Args;

use super::{HostArgs, ProjectArgs};

// `moor apply`
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub host: HostArgs,
    /// Give up waiting for convergence (running and healthy) after this long.
    #[arg(long, default_value = "120s", value_parser = moor_spec::units::parse_duration)]
    pub timeout: Duration,
    /// Allow a manifest set with no resources to remove everything the project owns.
    #[arg(long)]
    pub allow_empty: bool,
    /// Check image signatures as the agent does: by the `[[verify]]` rules
    /// of this file (the agent's configuration, or a file of `[[verify]]`
    /// tables alone), besides the manifests' own `[images] verify`.
    #[arg(long, value_name = "FILE")]
    pub verify_config: Option<std::path::PathBuf>,
}
