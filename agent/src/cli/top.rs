//! `moor top NAME`

use clap::Args;

// `moor top`
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The container.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
