//! `moor image tag SRC DST`.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::ImageTagArgs;

/// Runs `moor image tag`.
pub fn run(state_dir: &std::path::Path, args: &ImageTagArgs) -> anyhow::Result<ExitCode> {
    let images = super::image::open(state_dir, None)?;
    let (image, name) = images
        .tag(&args.source, &args.target)
        .with_context(|| format!("tag {} as {}", args.source, args.target))?;
    println!("tagged {name} {}", image.digest);
    Ok(ExitCode::SUCCESS)
}
