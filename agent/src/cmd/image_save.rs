//! `moor image save [-o FILE] REF...`: a tar that `docker load` and `moor
//! image import` read (see `moor_runtime::image::save`).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use moor_runtime::image::save;

use crate::cli::ImageSaveArgs;

/// Runs `moor image save`. A file is written beside its final name and
/// renamed over it once complete, so a failed save leaves no half archive.
pub fn run(state_dir: &std::path::Path, args: &ImageSaveArgs) -> anyhow::Result<ExitCode> {
    let images = super::image::open(state_dir, None)?;
    let saved = save::resolve(&images, &args.references).context("save")?;
    let Some(path) = &args.output else {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            anyhow::bail!(
                "refusing to write an archive to a terminal: use -o FILE or a redirection"
            );
        }
        save::save(&images, &saved, std::io::BufWriter::new(stdout.lock())).context("save")?;
        return Ok(ExitCode::SUCCESS);
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let temp = path.with_file_name(format!(
        ".{}.moor-save-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .with_context(|| format!("create {}", temp.display()))?;
        let mut w = std::io::BufWriter::new(&mut file);
        save::save(&images, &saved, &mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        std::fs::rename(&temp, path).with_context(|| format!("rename to {}", path.display()))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e.context(format!("save to {}", path.display())));
    }
    let names: Vec<String> = saved
        .iter()
        .map(|s| {
            if s.refs.is_empty() {
                s.image.digest.clone()
            } else {
                s.refs.join(", ")
            }
        })
        .collect();
    eprintln!("saved {} to {}", names.join("; "), path.display());
    Ok(ExitCode::SUCCESS)
}
