//! `moor images`

use clap::Args;

// Arguments of `moor images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print the images as JSON.
    #[arg(long)]
    pub json: bool,
}
