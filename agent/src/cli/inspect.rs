//! `moor inspect NAME`

use clap::Args;

// `moor inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The container.
    pub name: String,
}
