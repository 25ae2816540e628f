//! `moor images` and `moor image pull|import|rm|prune`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use moor_runtime::image::events::Observer;
use moor_runtime::image::pull::{PullOptions, pull};
use moor_runtime::image::push::BlobPush;
use moor_runtime::image::{Event, Images, Removed, import};

use crate::cli::{ImageArgs, ImageCommand, ImagesArgs, LimitArgs};

pub(super) fn open(
    state_dir: &std::path::Path,
    limits: Option<&LimitArgs>,
) -> anyhow::Result<Images> {
    let mut images = Images::open(state_dir)
        .with_context(|| format!("open image store in {}", state_dir.display()))?;
    if let Some(max) = limits.and_then(|l| l.max_layer_size) {
        images.limits.max_bytes = max;
    }
    Ok(images)
}

/// Runs `moor images`.
pub fn list(state_dir: &std::path::Path, args: &ImagesArgs) -> anyhow::Result<ExitCode> {
    let images = open(state_dir, None)?;
    let list = images.list()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<50} {:<19} {:<14} {:>10} {:>6}",
        "REFERENCE", "DIGEST", "PLATFORM", "SIZE", "LAYERS"
    )?;
    for i in &list {
        let short = &i.digest[..19.min(i.digest.len())];
        let names: Vec<&str> = if i.refs.is_empty() {
            vec!["<none>"]
        } else {
            i.refs.iter().map(String::as_str).collect()
        };
        for n in names {
            writeln!(
                out,
                "{n:<50} {short:<19} {:<14} {:>10} {:>6}",
                i.platform,
                human(i.size),
                i.layers.len()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `moor image …`.
pub fn run(state_dir: &std::path::Path, args: &ImageArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ImageCommand::Pull {
            reference,
            insecure,
            registry_auth,
            concurrency,
            limits,
        } => {
            let images = open(state_dir, Some(limits))?;
            let opts = PullOptions {
                insecure: insecure.clone(),
                concurrency: *concurrency,
                auth_file: registry_auth.clone(),
                ..PullOptions::default()
            };
            let progress = Progress::new();
            let image = pull(&images, reference, &opts, &progress)
                .with_context(|| format!("pull {reference}"))?;
            println!("pulled {reference} {}", image.digest);
        }
        ImageCommand::Push {
            reference,
            insecure,
            registry_auth,
        } => {
            let images = open(state_dir, None)?;
            let opts = PullOptions {
                insecure: insecure.clone(),
                auth_file: registry_auth.clone(),
                ..PullOptions::default()
            };
            let pushed = moor_runtime::image::push::push(&images, reference, &opts)
                .with_context(|| format!("push {reference}"))?;
            for (digest, outcome) in &pushed.blobs {
                let short = &digest[..19.min(digest.len())];
                match outcome {
                    BlobPush::Present => println!("{short}: already exists"),
                    BlobPush::Mounted { from } => println!("{short}: mounted from {from}"),
                    BlobPush::Uploaded { bytes } => println!("{short}: pushed ({bytes} bytes)"),
                }
            }
            println!("pushed {} {}", pushed.reference, pushed.digest);
        }
        ImageCommand::Verify {
            reference,
            key,
            config,
            insecure,
            registry_auth,
        } => {
            let keys = match config {
                None => key
                    .iter()
                    .map(|k| moor_runtime::image::verify::Key::read(k))
                    .collect::<Result<Vec<_>, _>>()?,
                Some(file) => {
                    let r = moor_spec::reference::parse(reference).map_err(anyhow::Error::msg)?;
                    crate::config::read_verify_rules(file)?
                        .into_iter()
                        .find(|rule| rule.matches(&r))
                        .map(|rule| rule.keys)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "no [[verify]] rule of {} covers {}",
                                file.display(),
                                r.name()
                            )
                        })?
                }
            };
            let opts = PullOptions {
                insecure: insecure.clone(),
                auth_file: registry_auth.clone(),
                ..PullOptions::default()
            };
            match moor_runtime::image::pull::verify(reference, &keys, &opts) {
                Ok(v) => println!("verified {reference} {} (signed by {})", v.digest, v.key),
                Err(e) => {
                    eprintln!("moor: not verified: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        ImageCommand::Import {
            file,
            tag,
            changes,
            limits,
        } => {
            let images = open(state_dir, Some(limits))?;
            let progress = Progress::new();
            let imported =
                import::import_with_changes(&images, file, tag.as_deref(), changes, &progress)
                    .with_context(|| format!("import {}", file.display()))?;
            for i in &imported.images {
                let names = if i.refs.is_empty() {
                    "<none>".to_string()
                } else {
                    i.refs.join(", ")
                };
                println!("imported {} {names}", i.digest);
            }
        }
        ImageCommand::Rm { references } => {
            let images = open(state_dir, None)?;
            let mut failed = false;
            for r in references {
                match images.remove(r) {
                    Ok(Removed::Untagged(name)) => println!("untagged {name}"),
                    Ok(Removed::Deleted(digest)) => println!("deleted {digest}"),
                    Err(e) => {
                        eprintln!("error: remove {r}: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        ImageCommand::Tag(_)
        | ImageCommand::History(_)
        | ImageCommand::Save(_)
        | ImageCommand::Inspect(_) => {
            anyhow::bail!("internal: cmd::run dispatches this image verb to its own handler")
        }
        ImageCommand::Prune => {
            // The images a recorded healthy revision ran stay: a rollback
            // returns to them.
            let keep = crate::daemon::history::kept_digests(state_dir).context(
                "prune keeps the images of the revisions a rollback may return to, and cannot read which they are (nothing was removed)",
            )?;
            let images = open(state_dir, None)?;
            let (dangling, report) = images.prune(&keep)?;
            println!(
                "removed {} images, {} blobs ({}), {} snapshots, {} stale temporaries",
                dangling.len(),
                report.blobs,
                human(report.bytes),
                report.snapshots,
                report.temporaries
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Shows events: on a terminal, one line per layer redrawn in place;
/// otherwise plain lines.
struct Progress {
    tty: bool,
    /// Rows (layer, status) and how many of them are on screen.
    rows: Mutex<(Vec<(String, String)>, usize)>,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            rows: Mutex::new((Vec::new(), 0)),
        }
    }

    fn show(&self, layer: Option<String>, text: String) {
        let short = |d: &str| d.get(7..19).unwrap_or(d).to_string();
        let mut err = std::io::stderr().lock();
        match (self.tty, layer) {
            (true, Some(d)) => {
                let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
                match rows.0.iter_mut().find(|(k, _)| *k == d) {
                    Some(row) => row.1 = text,
                    None => rows.0.push((d, text)),
                }
                if rows.1 > 0 {
                    let _ = write!(err, "\x1b[{}A", rows.1);
                }
                for (d, t) in &rows.0 {
                    let _ = writeln!(err, "\x1b[2K{}  {t}", short(d));
                }
                rows.1 = rows.0.len();
            }
            (false, Some(d)) => {
                let _ = writeln!(err, "{}: {text}", short(&d));
            }
            (_, None) => {
                let _ = writeln!(err, "{text}");
            }
        }
    }
}

impl Observer for Progress {
    fn event(&self, event: Event) {
        match event {
            Event::Resolved { reference, digest } => {
                self.show(None, format!("{reference}: resolved to {digest}"))
            }
            Event::Verified {
                reference,
                digest: Some(digest),
                result: Ok(key),
            } => self.show(
                None,
                format!("{reference}: {digest} verified (signed by {key})"),
            ),
            // A refusal is the pull's error, printed once by main.
            Event::Verified { .. } => {}
            Event::LayerStarted { digest, size } => {
                self.show(Some(digest), format!("downloading {}", human(size)))
            }
            Event::LayerProgress {
                digest,
                bytes,
                size,
            } if self.tty => self.show(
                Some(digest),
                format!("downloading {} / {}", human(bytes), human(size)),
            ),
            Event::LayerProgress { .. } => {}
            Event::LayerDone {
                digest,
                bytes,
                cached,
                duration,
            } => {
                let text = if cached {
                    "already present".to_string()
                } else {
                    format!("done: {} in {:.2}s", human(bytes), duration.as_secs_f64())
                };
                self.show(Some(digest), text)
            }
            Event::Finished {
                bytes,
                duration,
                result: Ok(()),
                ..
            } => self.show(
                None,
                format!(
                    "finished: {} downloaded in {:.2}s",
                    human(bytes),
                    duration.as_secs_f64()
                ),
            ),
            // The error itself is returned and printed once by main.
            Event::Finished { result: Err(_), .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_for_people() {
        assert_eq!(human(1536), "1.5 KiB");
    }
}
