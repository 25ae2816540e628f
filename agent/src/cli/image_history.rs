//! `moor image history`

use clap::Args;

// Arguments of `moor image history`.
#[derive(Debug, Args)]
pub struct ImageHistoryArgs {
    /// The image: a reference, a digest or a unique digest prefix.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Show whole instructions instead of cutting them at 45 characters.
    #[arg(long)]
    pub no_trunc: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
