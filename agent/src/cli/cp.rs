//! `moor cp SRC DEST`

use clap::Args;

// `moor cp`
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Keep the source's owners (and setuid bits).
    #[arg(short, long)]
    pub archive: bool,
    /// Follow a symlink that is the source itself.
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// `NAME:PATH`, a host path, or `-` (a tar stream on stdin).
    #[arg(value_name = "SRC")]
    pub src: String,
    /// `NAME:PATH`, a host path, or `-` (a tar stream on stdout).
    #[arg(value_name = "DEST")]
    pub dest: String,
}
