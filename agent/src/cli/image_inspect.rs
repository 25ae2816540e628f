//! `moor image inspect`

use clap::Args;

// Arguments of `moor image inspect`.
#[derive(Debug, Args)]
pub struct ImageInspectArgs {
    /// The images: references, digests or unique digest prefixes.
    #[arg(required = true, value_name = "REF")]
    pub references: Vec<String>,
}
