//! `moor image save`

use std::path::PathBuf;

use clap::Args;

// Arguments of `moor image save`.
#[derive(Debug, Args)]
pub struct ImageSaveArgs {
    /// Write the archive here (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The images: references, digests or unique digest prefixes.
    #[arg(required = true, value_name = "REF")]
    pub references: Vec<String>,
}
