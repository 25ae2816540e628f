//! `moor image inspect REF...`: a JSON array, like `docker image inspect`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use moor_runtime::image::ImageError;

use crate::cli::ImageInspectArgs;

/// Runs `moor image inspect`; images that are not found are reported on
/// standard error and make the exit status 1, as in Docker.
pub fn run(state_dir: &std::path::Path, args: &ImageInspectArgs) -> anyhow::Result<ExitCode> {
    let images = super::image::open(state_dir, None)?;
    let mut all = Vec::new();
    let mut failed = false;
    for r in &args.references {
        let found = images
            .resolve(r)
            .and_then(|i| i.ok_or_else(|| ImageError::NotFound(r.clone())))
            .and_then(|i| images.inspect(&i));
        match found {
            Ok(v) => all.push(v),
            Err(e) => {
                eprintln!("error: inspect {r}: {e}");
                failed = true;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &all).context("write JSON")?;
    writeln!(out)?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
