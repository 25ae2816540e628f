//! `moor images` and `moor image pull|import|rm|prune`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use clap::{Args, Subcommand};
use moor_runtime::image::events::Observer;
use moor_runtime::image::pull::{PullOptions, pull};
use moor_runtime::image::{Event, Images, Removed, import};

/// Arguments of `moor images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print the images as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `moor image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// `moor image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry (plain HTTP only for loopback and --insecure-registry).
    Pull {
        /// The reference: `[registry/]repository[:tag][@digest]`.
        reference: String,
        /// A registry (`host:port`) that may be reached over plain HTTP.
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure: Vec<String>,
        /// Registry credentials, in the `auths` format of Docker's config.json
        /// [default: /etc/moor/auth.json, when it exists].
        #[arg(long, value_name = "FILE")]
        registry_auth: Option<PathBuf>,
        /// Layers downloaded at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Import a `docker save` tarball, an OCI archive or a root filesystem tar.
    Import {
        /// The file.
        file: PathBuf,
        /// A reference to name the image by.
        #[arg(long, value_name = "REF")]
        tag: Option<String>,
        /// A Dockerfile instruction for the image's config, as `docker import
        /// --change` takes it (`USER nobody`, `CMD ["python3","app.py"]`): CMD,
        /// ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME,
        /// WORKDIR; repeatable, applied in order; root filesystem tars only.
        #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
        changes: Vec<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Remove image references; an image goes with its last one.
    Rm {
        /// References, digests or digest prefixes.
        #[arg(required = true, value_name = "REF")]
        references: Vec<String>,
    },
    /// Remove unreferenced images and every blob and snapshot nothing uses.
    Prune,
}

/// Caps on unpacking.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Largest uncompressed size of one layer (bytes, or with k/m/g).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_layer_size: Option<u64>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.strip_suffix(['k', 'm', 'g']) {
        Some(n) => (
            n,
            match s.as_bytes()[s.len() - 1] {
                b'k' => 1u64 << 10,
                b'm' => 1 << 20,
                _ => 1 << 30,
            },
        ),
        None => (s.as_str(), 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("\"{s}\" is not a size"))
}

fn open(state_dir: &std::path::Path, limits: Option<&LimitArgs>) -> anyhow::Result<Images> {
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
        ImageCommand::Prune => {
            let images = open(state_dir, None)?;
            let (dangling, report) = images.prune()?;
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

fn human(bytes: u64) -> String {
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
    fn sizes_parse() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("lots").is_err());
        assert_eq!(human(1536), "1.5 KiB");
    }
}
