//! `moor shim DIR` (hidden; started by moor itself)

use std::path::PathBuf;

use clap::Args;

/// `moor shim`
#[derive(Debug, Args)]
pub struct ShimArgs {
    /// The container's directory.
    pub dir: PathBuf,
}
