//! `moor image tag`

use clap::Args;

// Arguments of `moor image tag`.
#[derive(Debug, Args)]
pub struct ImageTagArgs {
    /// The image: a reference, a digest or a unique digest prefix.
    #[arg(value_name = "SRC")]
    pub source: String,
    /// The new reference, `[registry/]repository[:tag]`.
    #[arg(value_name = "DST")]
    pub target: String,
}
