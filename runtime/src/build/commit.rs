//! `moor diff` and `moor commit`: what a container changed in its root
//! filesystem, read from its overlay upper directory, as `docker diff`
//! lists it and as `docker commit` makes a layer of it.
//!
//! The upper directory holds every change: a file written or created, a
//! whiteout (a character device 0/0) for one deleted, an opaque directory
//! for one replaced. The stubs moor itself put there for its mounts
//! (`/etc/hosts`, `/etc/resolv.conf`, a bind's or volume's target, the
//! secrets directory) are not the container's changes: an empty file or
//! directory at a mount target that no layer of the image has is left out
//! of both, as Docker leaves its mount points out.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::error::BuildError;
use super::layer::{self, LayerTar};
use super::state::State;
use super::{Built, config, now};
use crate::container::Engine;
use crate::container::state::ContainerRecord;
use crate::image::change::{self, ImportConfig};
use crate::image::oci::chain_ids;
use crate::image::{ImageError, Images};

/// Paths moor mounts over in every container (relative to the root).
const ALWAYS_MOUNTED: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    "run/secrets",
];

/// A kind of change, as `docker diff` letters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `A`: not in the image.
    Added,
    /// `C`: in the image, and changed (a directory: something under it).
    Changed,
    /// `D`: in the image, and deleted.
    Deleted,
}

impl Kind {
    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            Kind::Added => 'A',
            Kind::Changed => 'C',
            Kind::Deleted => 'D',
        }
    }
}

/// One changed path, absolute.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// The path inside the container.
    pub path: String,
    /// What happened to it.
    pub kind: Kind,
}

fn exists_below(lowers: &[PathBuf], rel: &str) -> bool {
    below(lowers, rel).is_some()
}

/// The metadata of `rel` in the topmost layer that has it.
fn below(lowers: &[PathBuf], rel: &str) -> Option<fs::Metadata> {
    lowers
        .iter()
        .rev()
        .find_map(|l| fs::symlink_metadata(l.join(rel)).ok())
}

/// The mount targets of a container, relative to its root.
fn mount_targets(record: &ContainerRecord) -> Vec<String> {
    let mut out: Vec<String> = ALWAYS_MOUNTED.iter().map(|s| s.to_string()).collect();
    for m in &record.spec.mounts {
        out.push(m.target.trim_start_matches('/').to_string());
    }
    for s in &record.spec.secrets {
        out.push(s.target.trim_start_matches('/').to_string());
    }
    out
}

/// Whether `rel` in the upper directory is only moor's doing, not the
/// container's: an empty file or directory at a mount target that no layer
/// of the image has, a directory made on the way to one, or a directory of
/// the image copied up (owner and mode unchanged) only to hold such stubs.
fn is_stub(
    targets: &[String],
    lowers: &[PathBuf],
    upper: &Path,
    rel: &str,
    m: &fs::Metadata,
) -> bool {
    let lower = below(lowers, rel);
    if !m.is_dir() {
        return lower.is_none() && m.is_file() && m.len() == 0 && targets.iter().any(|t| t == rel);
    }
    let prefix = format!("{rel}/");
    let holds_only_stubs = || {
        fs::read_dir(upper.join(rel)).is_ok_and(|entries| {
            entries.flatten().all(|e| {
                let child = format!("{rel}/{}", e.file_name().to_string_lossy());
                fs::symlink_metadata(e.path())
                    .is_ok_and(|cm| is_stub(targets, lowers, upper, &child, &cm))
            })
        })
    };
    match lower {
        None => (targets.iter().any(|t| t == rel || t.starts_with(&prefix))) && holds_only_stubs(),
        Some(lm) => {
            lm.is_dir()
                && lm.mode() == m.mode()
                && lm.uid() == m.uid()
                && lm.gid() == m.gid()
                && !layer::is_opaque(&upper.join(rel))
                && targets.iter().any(|t| t.starts_with(&prefix))
                && holds_only_stubs()
        }
    }
}

/// What container `name` changed, sorted by path.
pub fn diff(engine: &Engine, name: &str) -> Result<Vec<Change>, BuildError> {
    let record = engine.record(name)?;
    let upper = engine.paths(name).upper();
    let targets = mount_targets(&record);
    let mut out = Vec::new();
    walk(&upper, "", &record.lowers, &targets, &mut out)
        .map_err(BuildError::io("read the container's changes", &upper))?;
    out.sort();
    Ok(out)
}

fn walk(
    upper: &Path,
    rel: &str,
    lowers: &[PathBuf],
    targets: &[String],
    out: &mut Vec<Change>,
) -> std::io::Result<()> {
    let dir = if rel.is_empty() {
        upper.to_path_buf()
    } else {
        upper.join(rel)
    };
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let m = fs::symlink_metadata(entry.path())?;
        if is_stub(targets, lowers, upper, &child, &m) {
            continue;
        }
        let path = format!("/{child}");
        if m.file_type().is_char_device() && m.rdev() == 0 {
            out.push(Change {
                path,
                kind: Kind::Deleted,
            });
            continue;
        }
        let kind = if exists_below(lowers, &child) {
            Kind::Changed
        } else {
            Kind::Added
        };
        out.push(Change { path, kind });
        if m.is_dir() {
            walk(upper, &child, lowers, targets, out)?;
        }
    }
    Ok(())
}

/// How to commit.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Dockerfile instructions for the config (`--change`), as `docker
    /// commit` takes them.
    pub changes: Vec<String>,
    /// The history entry's comment (`--message`).
    pub message: Option<String>,
    /// The image's author (`--author`).
    pub author: Option<String>,
    /// Freeze the container while its changes are read (`--pause`, the
    /// default, as Docker's).
    pub pause: bool,
}

/// The image container `name` was created from: the stored image whose
/// layers are the container's lower directories.
fn base_image(
    images: &Images,
    record: &ContainerRecord,
) -> Result<moor_store::ImageRecord, BuildError> {
    let matches = |i: &moor_store::ImageRecord| {
        let diff_ids: Vec<String> = i.layers.iter().map(|l| l.diff_id.clone()).collect();
        let paths: Vec<PathBuf> = chain_ids(&diff_ids)
            .iter()
            .map(|c| images.store.snapshots.path(c))
            .collect();
        paths == record.lowers
    };
    if let Some(i) = images.resolve(&record.spec.image.to_string())?
        && matches(&i)
    {
        return Ok(i);
    }
    images.list()?.into_iter().find(matches).ok_or_else(|| {
        BuildError::Invalid(format!(
            "the image container {} was created from ({}) is no longer in the store",
            record.name, record.spec.image
        ))
    })
}

/// The run config the container ran with: its image's, with what its spec
/// overrides (as Docker's container config), without moor's own labels.
fn container_config(base: &Value, record: &ContainerRecord) -> ImportConfig {
    let run = &base["config"];
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
    };
    let keys = |v: &Value| -> BTreeMap<String, change::Empty> {
        v.as_object()
            .map(|o| o.keys().map(|k| (k.clone(), change::Empty {})).collect())
            .unwrap_or_default()
    };
    let spec = &record.spec;
    let mut env: Vec<String> = strings(&run["Env"]).unwrap_or_default();
    for (k, v) in &spec.env {
        let entry = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').is_some_and(|(ek, _)| ek == k))
        {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
    }
    let mut labels: BTreeMap<String, String> = run["Labels"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    labels.extend(
        spec.labels
            .iter()
            .filter(|(k, _)| !k.starts_with("moor."))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    // As Docker: an entrypoint given without a command clears the image's.
    let cmd = match (&spec.entrypoint, &spec.command) {
        (_, Some(c)) => Some(c.clone()),
        (Some(_), None) => None,
        (None, None) => strings(&run["Cmd"]),
    };
    ImportConfig {
        user: spec
            .user
            .clone()
            .or_else(|| run["User"].as_str().map(String::from))
            .filter(|u| !u.is_empty()),
        exposed_ports: keys(&run["ExposedPorts"]),
        env,
        cmd,
        entrypoint: spec
            .entrypoint
            .clone()
            .or_else(|| strings(&run["Entrypoint"])),
        volumes: keys(&run["Volumes"]),
        working_dir: spec
            .working_dir
            .clone()
            .or_else(|| run["WorkingDir"].as_str().map(String::from))
            .filter(|w| !w.is_empty()),
        on_build: strings(&run["OnBuild"]).unwrap_or_default(),
        labels,
        stop_signal: run["StopSignal"].as_str().map(String::from),
    }
}

/// Makes an image of container `name`: its image's layers and one more
/// holding what it changed, and the config it ran with (`--change`
/// applied), named `reference` when given.
pub fn commit(
    images: &Images,
    engine: &Engine,
    name: &str,
    reference: Option<&str>,
    opts: &CommitOptions,
) -> Result<Built, BuildError> {
    let tags: Vec<String> = reference
        .map(|r| {
            moor_spec::reference::parse(r)
                .map_err(|e| BuildError::Invalid(format!("{r}: {e}")))
                .and_then(|p| match p.digest {
                    Some(_) => Err(BuildError::Invalid(format!(
                        "{r}: an image is named by a tag, not a digest"
                    ))),
                    None => Ok(p.to_string()),
                })
        })
        .transpose()?
        .into_iter()
        .collect();
    let record = engine.record(name)?;
    // Checked before anything is written.
    let mut probe = ImportConfig::default();
    change::apply(&mut probe, &opts.changes).map_err(|e| BuildError::Invalid(e.to_string()))?;

    // Blobs and snapshots made from here on are not collected under us.
    let _lock = images.store.lock_shared().map_err(ImageError::from)?;
    let base = base_image(images, &record)?;
    let mut state = State::of_image(images, &base)?;

    let paused = opts.pause && !engine.is_paused(name) && engine.pause(name).is_ok();
    let scratch = engine.state_dir().join("commit");
    let written = (|| {
        fs::create_dir_all(&scratch).map_err(BuildError::io("create", &scratch))?;
        let tar = scratch.join(format!("layer-{}.tar", record.id));
        let upper = engine.paths(name).upper();
        let targets = mount_targets(&record);
        let lowers = record.lowers.clone();
        let write = || -> std::io::Result<()> {
            let file = File::create(&tar)?;
            let mut t = LayerTar::new(BufWriter::new(file));
            let skip = |rel: &str, m: &fs::Metadata| is_stub(&targets, &lowers, &upper, rel, m);
            layer::from_upper(&upper, &mut t, &skip)?;
            let mut w = t.finish()?;
            std::io::Write::flush(&mut w)?;
            w.get_ref().sync_all()
        };
        match write() {
            Ok(()) => Ok(tar),
            Err(e) => {
                let _ = fs::remove_file(&tar);
                Err(BuildError::io("write the layer", &tar)(e))
            }
        }
    })();
    if paused {
        let _ = engine.unpause(name);
    }
    let tar = written?;
    state.add_layer(images, &tar)?;

    let mut run = container_config(&state.config, &record);
    change::apply(&mut run, &opts.changes).map_err(|e| BuildError::Invalid(e.to_string()))?;
    let created = now();
    let mut cfg = state.config.clone();
    let section = cfg
        .as_object_mut()
        .ok_or_else(|| BuildError::Invalid("the image's config is not an object".into()))?;
    let mut run_json =
        serde_json::to_value(&run).map_err(|e| BuildError::Invalid(e.to_string()))?;
    // Fields of the base's run config that a change cannot set are kept.
    if let (Some(new), Some(old)) = (
        run_json.as_object_mut(),
        section.get("config").and_then(Value::as_object),
    ) {
        for key in ["Healthcheck", "Shell", "ArgsEscaped"] {
            if let Some(v) = old.get(key) {
                new.insert(key.into(), v.clone());
            }
        }
    }
    section.insert("config".into(), run_json);
    if let Some(a) = &opts.author {
        section.insert("author".into(), json!(a));
    }
    let created_by = match (&record.spec.entrypoint, &record.spec.command) {
        (Some(e), Some(c)) => format!("{} {}", e.join(" "), c.join(" ")),
        (Some(e), None) => e.join(" "),
        (None, Some(c)) => c.join(" "),
        (None, None) => String::new(),
    };
    config::history(&mut cfg, &created, &created_by, false);
    if let Some(m) = &opts.message
        && let Some(last) = cfg["history"].as_array_mut().and_then(|h| h.last_mut())
    {
        last["comment"] = json!(m);
        if let Some(a) = &opts.author {
            last["author"] = json!(a);
        }
    }
    let diff_ids: Vec<String> = state.layers.iter().map(|l| l.diff_id.clone()).collect();
    config::finish(&mut cfg, &diff_ids, &created);
    state.config = cfg;
    let (config_digest, image) = state.store(images, &tags)?;
    Ok(Built {
        id: config_digest.to_string(),
        image,
        ran: 0,
        cached: 0,
    })
}
