//! `moor commit CONTAINER [REF]` and `moor diff CONTAINER`: a container's
//! changes to its image, made into an image or listed, as `docker commit`
//! and `docker diff` (see `moor_runtime::build::commit`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use moor_runtime::build::commit::{self, CommitOptions};

use crate::cli::{CommitArgs, DiffArgs};

/// Runs `moor diff`: `A`, `C` or `D` and the path, one per line.
pub fn diff(state_dir: &Path, args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let engine = super::common::engine(state_dir)?;
    let id = moor_runtime::host::instances::resolve(&engine, &args.name)?;
    let changes = commit::diff(&engine, &id).with_context(|| format!("diff {}", args.name))?;
    let mut out = std::io::stdout().lock();
    for c in &changes {
        std::io::Write::write_all(
            &mut out,
            format!("{} {}\n", c.kind.letter(), c.path).as_bytes(),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `moor commit`: prints the new image's ID.
pub fn run(state_dir: &Path, args: &CommitArgs) -> anyhow::Result<ExitCode> {
    let engine = super::common::engine(state_dir)?;
    let id = moor_runtime::host::instances::resolve(&engine, &args.name)?;
    let images = super::image::open(state_dir, None)?;
    let opts = CommitOptions {
        changes: args.changes.clone(),
        message: args.message.clone(),
        author: args.author.clone(),
        pause: args.pause,
    };
    let built = commit::commit(&images, &engine, &id, args.reference.as_deref(), &opts)
        .with_context(|| format!("commit {}", args.name))?;
    println!("{}", built.id);
    Ok(ExitCode::SUCCESS)
}
