//! `moor image history REF`: the config's history, newest first, with the
//! size of the layer each step made, like `docker history`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use moor_runtime::image::ImageError;

use crate::cli::ImageHistoryArgs;

const WIDTH: usize = 45;

/// Runs `moor image history`.
pub fn run(state_dir: &std::path::Path, args: &ImageHistoryArgs) -> anyhow::Result<ExitCode> {
    let images = super::image::open(state_dir, None)?;
    let image = images
        .resolve(&args.reference)?
        .ok_or_else(|| ImageError::NotFound(args.reference.clone()))
        .with_context(|| format!("history of {}", args.reference))?;
    let rows = images
        .history(&image)
        .with_context(|| format!("history of {}", args.reference))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<21} {:<WIDTH$} {:>10}  COMMENT",
        "CREATED", "CREATED BY", "SIZE"
    )?;
    for r in &rows {
        // The config is the image author's: no control characters reach
        // the terminal.
        let by: String = r
            .created_by
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let by = if args.no_trunc || by.chars().count() <= WIDTH {
            by
        } else {
            let cut: String = by.chars().take(WIDTH - 1).collect();
            format!("{cut}…")
        };
        let created: String = r
            .created
            .as_deref()
            .unwrap_or("<missing>")
            .chars()
            .filter(|c| !c.is_control())
            .take(20)
            .collect();
        let comment: String = r.comment.chars().filter(|c| !c.is_control()).collect();
        writeln!(
            out,
            "{created:<21} {by:<WIDTH$} {:>10}  {comment}",
            super::image::human(r.size)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
