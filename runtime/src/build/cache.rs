//! The build cache: a step's key (from the plan) → the [`State`] after it
//! (its layers, by digest, and its config), one JSON file per key under
//! `<state>/build-cache/`, written atomically; the file's mtime is when the
//! entry was last used. The layers themselves stay in the blob store, kept
//! by every collection while an entry names them ([`Cache::blobs`]); an
//! entry whose blobs are gone anyway is a miss. [`prune`] removes entries
//! (`moor builder prune`, the agent's collection) and then the layers only
//! they held.
//!
//! The directory is only ever read through entries that are regular files
//! named `<64 hex>.json`, opened without following a symlink: an entry
//! planted as a link to a file elsewhere is never read, and pruning removes
//! the link, never its target.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use moor_store::{Digest, GcReport};

use super::error::BuildError;
use super::state::State;
use crate::image::{ImageError, Images};

/// An entry of the cache directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The file.
    pub path: PathBuf,
    /// When it was last used (written or read by a build).
    pub last_used: SystemTime,
    /// What it records; `None` for a file that is not an entry (a link, a
    /// directory, JSON that does not parse, a layer that is not a digest).
    pub state: Option<State>,
}

impl Entry {
    /// The blobs of its layers.
    fn blobs(&self) -> Vec<Digest> {
        self.state
            .iter()
            .flat_map(|s| &s.layers)
            .filter_map(|l| l.blob.parse().ok())
            .collect()
    }
}

/// Reads a regular file without following a symlink.
fn read_regular(path: &Path) -> Option<Vec<u8>> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut raw = Vec::new();
    // An entry is a few KiB; a huge file is not one.
    f.by_ref().take(16 << 20).read_to_end(&mut raw).ok()?;
    Some(raw)
}

fn parse_state(raw: &[u8]) -> Option<State> {
    let state: State = serde_json::from_slice(raw).ok()?;
    state
        .layers
        .iter()
        .all(|l| l.blob.parse::<Digest>().is_ok() && l.diff_id.parse::<Digest>().is_ok())
        .then_some(state)
}

/// The cache of one state dir.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache of the store at `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("build-cache"),
        }
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let hex = key.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(format!("{hex}.json")))
    }

    /// The state recorded for `key`; `None` when there is none, it does
    /// not parse, or it is not a regular file.
    pub fn get(&self, key: &str) -> Option<State> {
        parse_state(&read_regular(&self.path(key)?)?)
    }

    /// Records that the entry of `key` was used now (for `until` and
    /// `--keep-storage`, which prune the least recently used first).
    pub fn touch(&self, key: &str) {
        if let Some(p) = self.path(key)
            && let Ok(f) = fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&p)
            && f.metadata().is_ok_and(|m| m.is_file())
        {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Every file of the directory, entry or not.
    pub fn entries(&self) -> Vec<Entry> {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in dir.flatten() {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            let named = name
                .strip_suffix(".json")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            let state = if named && m.is_file() {
                read_regular(&path).and_then(|raw| parse_state(&raw))
            } else {
                None
            };
            out.push(Entry {
                path,
                last_used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                state,
            });
        }
        out
    }

    /// The blobs the entries name: kept by every collection.
    pub fn blobs(&self) -> HashSet<Digest> {
        self.entries().iter().flat_map(Entry::blobs).collect()
    }

    /// Records `state` for `key`.
    pub fn put(&self, key: &str, state: &State) -> Result<(), BuildError> {
        let path = self
            .path(key)
            .ok_or_else(|| BuildError::Invalid(format!("cache key {key} is not a digest")))?;
        std::fs::create_dir_all(&self.dir)
            .map_err(BuildError::io("create directory", &self.dir))?;
        crate::container::state::write_json_atomic(&path, state)?;
        Ok(())
    }
}

/// What [`prune`] removes.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Every entry, not only those no image contains (`--all`).
    pub all: bool,
    /// Only entries unused for this long (`--filter until=DURATION`).
    pub until: Option<Duration>,
    /// Keep the most recently used entries whose layers no image holds up
    /// to this many bytes, remove the rest (`--keep-storage SIZE`).
    pub keep_storage: Option<u64>,
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Entries removed (files that were not entries included).
    pub entries: usize,
    /// The collection that followed.
    pub gc: GcReport,
}

/// Removes build cache entries as `opts` says, then every blob and
/// snapshot that no image, container or remaining entry holds (the
/// store's collection, under its exclusive lock: never a layer an image or
/// a container uses, nor one a build running meanwhile made).
///
/// An entry whose layers are gone always goes; then, without `all`, an
/// entry goes when no image contains its result (its layers are not the
/// first layers of any image: a stage the image did not keep, an image
/// since removed); with `all`, every entry goes; with `keep_storage`, the
/// least recently used go until the rest hold no more than that many bytes
/// of layers no image holds. `until` spares every entry used more
/// recently. Files of the directory that are not entries (links, junk)
/// always go, without following them.
pub fn prune(images: &Images, opts: &PruneOptions) -> Result<PruneReport, BuildError> {
    // Exclusive from the first removal to the end of the collection, as
    // `moor image prune`: a build (which holds it shared) either finishes
    // before or starts after.
    let lock = images.store.lock_exclusive().map_err(ImageError::from)?;
    let entries = remove_entries(images, opts)?;
    Ok(PruneReport {
        entries,
        gc: collect(images, &lock)?,
    })
}

/// The store's collection under `lock` (exclusive), keeping the cache's
/// layers.
fn collect(images: &Images, lock: &moor_store::GcLock) -> Result<GcReport, BuildError> {
    let cache = Cache::new(images.store.root());
    images
        .store
        .gc_held_keeping(lock, &cache.blobs())
        .map_err(|e| BuildError::Image(ImageError::from(e)))
}

/// The entries [`prune`] removes, removed: how many. Call with the store's
/// lock held exclusively.
fn remove_entries(images: &Images, opts: &PruneOptions) -> Result<usize, BuildError> {
    let cache = Cache::new(images.store.root());
    let now = SystemTime::now();
    let image_layers: Vec<Vec<String>> = images
        .list()?
        .into_iter()
        .map(|i| i.layers.into_iter().map(|l| l.blob).collect())
        .collect();
    let in_images: HashSet<&str> = image_layers.iter().flatten().map(String::as_str).collect();
    let contained = |s: &State| {
        image_layers.iter().any(|layers| {
            layers.len() >= s.layers.len()
                && layers.iter().zip(&s.layers).all(|(a, b)| *a == b.blob)
        })
    };
    let mut removed = 0;
    let mut remove = |path: &Path| {
        // A link goes itself, never its target.
        if fs::remove_file(path).is_ok() {
            removed += 1;
        }
    };
    let mut kept: Vec<Entry> = Vec::new();
    for e in cache.entries() {
        let old_enough = opts
            .until
            .is_none_or(|u| now.duration_since(e.last_used).unwrap_or_default() >= u);
        match &e.state {
            None => remove(&e.path),
            // Layers gone: a miss forever.
            Some(s) if old_enough && !s.complete(images) => remove(&e.path),
            // `--keep-storage` alone removes by size only.
            Some(s) if old_enough && opts.keep_storage.is_none() && (opts.all || !contained(s)) => {
                remove(&e.path)
            }
            Some(_) => kept.push(e),
        }
    }
    if let Some(limit) = opts.keep_storage {
        // Newest first; an entry costs the bytes of the layers no image
        // and no newer entry holds.
        kept.sort_by_key(|e| std::cmp::Reverse(e.last_used));
        let mut counted: HashSet<Digest> = HashSet::new();
        let mut total = 0u64;
        let mut over = false;
        for e in &kept {
            let old_enough = opts
                .until
                .is_none_or(|u| now.duration_since(e.last_used).unwrap_or_default() >= u);
            let cost: u64 = e
                .blobs()
                .into_iter()
                .filter(|d| !in_images.contains(d.as_str()) && counted.insert(d.clone()))
                .map(|d| images.store.blobs.size(&d).unwrap_or(0))
                .sum();
            total = total.saturating_add(cost);
            if old_enough && (over || total > limit) {
                over = true;
                remove(&e.path);
            }
        }
    }
    Ok(removed)
}

/// Removes the entries unused for `max_age` (the agent's collection of the
/// build cache), then, when it removed any, what only they held.
pub fn prune_unused(images: &Images, max_age: Duration) -> Result<PruneReport, BuildError> {
    let lock = images.store.lock_exclusive().map_err(ImageError::from)?;
    let entries = remove_entries(
        images,
        &PruneOptions {
            all: true,
            until: Some(max_age),
            keep_storage: None,
        },
    )?;
    let gc = if entries > 0 {
        collect(images, &lock)?
    } else {
        GcReport::default()
    };
    Ok(PruneReport { entries, gc })
}

/// Sizes of the blobs only the cache holds, by entry file: what `moor
/// builder prune` may free.
pub fn usage(images: &Images) -> Result<(usize, u64), BuildError> {
    let cache = Cache::new(images.store.root());
    let in_images: HashSet<String> = images
        .list()?
        .into_iter()
        .flat_map(|i| i.layers.into_iter().map(|l| l.blob))
        .collect();
    let entries = cache.entries();
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    for d in entries.iter().flat_map(Entry::blobs) {
        if !in_images.contains(d.as_str()) {
            let size = images.store.blobs.size(&d).unwrap_or(0);
            sizes.insert(d, size);
        }
    }
    Ok((
        entries.iter().filter(|e| e.state.is_some()).count(),
        sizes.values().sum(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn entries_round_trip_and_odd_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let key = format!("sha256:{}", "ab".repeat(32));
        assert!(cache.get(&key).is_none());
        let state = State {
            layers: Vec::new(),
            config: serde_json::json!({"config": {"Env": ["A=1"]}}),
        };
        cache.put(&key, &state).unwrap();
        assert_eq!(cache.get(&key), Some(state.clone()));
        assert!(cache.put("sha256:../../etc", &state).is_err());
    }

    use crate::build::state::Layer;
    use moor_store::{ImageRecord, LayerRecord};

    fn layer(d: &Digest) -> Layer {
        Layer {
            blob: d.to_string(),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            size: 9,
            diff_id: d.to_string(),
        }
    }

    fn entry(cache: &Cache, n: u8, layers: &[&Digest], age: Duration) -> String {
        let key = format!("sha256:{}", format!("{n:02x}").repeat(32));
        let state = State {
            layers: layers.iter().map(|d| layer(d)).collect(),
            config: serde_json::json!({}),
        };
        cache.put(&key, &state).unwrap();
        let f = File::options()
            .write(true)
            .open(cache.path(&key).unwrap())
            .unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        key
    }

    /// A store with an image of one layer, `in_image`, and blobs only the
    /// cache names.
    fn store() -> (tempfile::TempDir, Images, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(dir.path()).unwrap();
        let in_image = images.store.blobs.put(b"image layer", None).unwrap();
        let config = images.store.blobs.put(b"{}", None).unwrap();
        let manifest = images.store.blobs.put(b"{\"m\":1}", None).unwrap();
        images
            .store
            .db
            .put_image(
                &ImageRecord {
                    digest: manifest.to_string(),
                    media_type: "m".into(),
                    config: config.to_string(),
                    index: None,
                    platform: "linux/amd64".into(),
                    size: 1,
                    created: 0,
                    layers: vec![LayerRecord {
                        blob: in_image.to_string(),
                        media_type: "l".into(),
                        size: 11,
                        diff_id: in_image.to_string(),
                        chain_id: in_image.to_string(),
                    }],
                    refs: vec![],
                },
                &["localhost/app:1".to_string()],
            )
            .unwrap();
        (dir, images, in_image)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn prune_removes_entries_no_image_contains_and_only_their_layers() {
        let (_dir, images, in_image) = store();
        let cache = Cache::new(images.store.root());
        let other = images.store.blobs.put(b"stage two", None).unwrap();
        let alone = images.store.blobs.put(b"stage one", None).unwrap();
        let kept = entry(&cache, 1, &[&in_image], Duration::ZERO);
        let longer = entry(&cache, 2, &[&in_image, &other], Duration::ZERO);
        let apart = entry(&cache, 3, &[&alone], Duration::ZERO);

        // `moor image prune` keeps what the cache names.
        let (_, gc) = images.prune(&Default::default()).unwrap();
        assert_eq!(gc.blobs, 0);
        assert!(images.store.blobs.contains(&other) && images.store.blobs.contains(&alone));

        let r = prune(&images, &PruneOptions::default()).unwrap();
        assert_eq!(r.entries, 2);
        assert!(cache.get(&kept).is_some());
        assert!(cache.get(&longer).is_none() && cache.get(&apart).is_none());
        assert!(images.store.blobs.contains(&in_image), "the image's layer");
        assert!(!images.store.blobs.contains(&other));
        assert!(!images.store.blobs.contains(&alone));
        assert_eq!(r.gc.blobs, 2);

        // --all: the rest, but never the image's layer.
        let r = prune(
            &images,
            &PruneOptions {
                all: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.entries, 1);
        assert!(cache.get(&kept).is_none());
        assert!(images.store.blobs.contains(&in_image));
        assert_eq!(images.list().unwrap().len(), 1);
    }

    #[test]
    fn until_and_keep_storage_remove_the_least_recently_used() {
        let (_dir, images, _) = store();
        let cache = Cache::new(images.store.root());
        let a = images.store.blobs.put(b"aaaaaaaaa", None).unwrap();
        let b = images.store.blobs.put(b"bbbbbbbbb", None).unwrap();
        let c = images.store.blobs.put(b"ccccccccc", None).unwrap();
        let new = entry(&cache, 1, &[&a], Duration::ZERO);
        let older = entry(&cache, 2, &[&b], 2 * HOUR);
        let oldest = entry(&cache, 3, &[&c], 3 * HOUR);
        let all_until = |h: u32| PruneOptions {
            all: true,
            until: Some(h * HOUR),
            keep_storage: None,
        };
        assert_eq!(prune(&images, &all_until(24)).unwrap().entries, 0);
        assert_eq!(usage(&images).unwrap(), (3, 27));
        let r = prune(&images, &all_until(1)).unwrap();
        assert_eq!(r.entries, 2);
        assert!(cache.get(&new).is_some());
        assert!(cache.get(&older).is_none() && cache.get(&oldest).is_none());
        assert!(images.store.blobs.contains(&a) && !images.store.blobs.contains(&b));

        // Nine bytes each: keeping 20 keeps the two most recently used,
        // and a hit makes an entry recent again.
        let b = images.store.blobs.put(b"bbbbbbbbb", None).unwrap();
        let c = images.store.blobs.put(b"ccccccccc", None).unwrap();
        let older = entry(&cache, 2, &[&b], 2 * HOUR);
        let oldest = entry(&cache, 3, &[&c], 3 * HOUR);
        cache.touch(&oldest);
        let keep = |limit, until| PruneOptions {
            all: false,
            until,
            keep_storage: Some(limit),
        };
        assert_eq!(
            prune(&images, &keep(0, Some(100 * HOUR))).unwrap().entries,
            0
        );
        let r = prune(&images, &keep(20, None)).unwrap();
        assert_eq!(r.entries, 1, "{r:?}");
        assert!(cache.get(&older).is_none());
        assert!(cache.get(&new).is_some() && cache.get(&oldest).is_some());
        assert!(!images.store.blobs.contains(&b));
        assert_eq!(usage(&images).unwrap(), (2, 18));
        assert_eq!(prune(&images, &keep(0, None)).unwrap().entries, 2);
        assert_eq!(usage(&images).unwrap(), (0, 0));
    }

    #[test]
    fn hostile_entries_are_never_followed_nor_kept() {
        let (dir, images, _) = store();
        let cache = Cache::new(images.store.root());
        let held = images
            .store
            .blobs
            .put(b"named by a planted link", None)
            .unwrap();
        // An entry outside the store, naming a blob in it, linked in.
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("entry.json");
        let state = State {
            layers: vec![layer(&held)],
            config: serde_json::json!({}),
        };
        fs::write(&target, serde_json::to_vec(&state).unwrap()).unwrap();
        fs::create_dir_all(dir.path().join("build-cache")).unwrap();
        let key = format!("sha256:{}", "ee".repeat(32));
        std::os::unix::fs::symlink(&target, cache.path(&key).unwrap()).unwrap();
        // A layer that is not a digest, and a directory named as an entry.
        let bad = format!("sha256:{}", "dd".repeat(32));
        fs::write(
            cache.path(&bad).unwrap(),
            r#"{"layers":[{"blob":"sha256:../../../etc/passwd","media_type":"x","size":1,"diff_id":"sha256:../x"}],"config":{}}"#,
        )
        .unwrap();
        fs::create_dir(
            dir.path()
                .join("build-cache")
                .join(format!("{}.json", "cc".repeat(32))),
        )
        .unwrap();

        assert!(cache.get(&key).is_none(), "a link is never read");
        assert!(cache.get(&bad).is_none(), "a layer that is not a digest");
        assert!(!cache.blobs().contains(&held), "a link keeps nothing");
        let old = SystemTime::now() - HOUR;
        File::options()
            .write(true)
            .open(&target)
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache.touch(&key);
        assert_eq!(
            fs::metadata(&target).unwrap().modified().unwrap(),
            old,
            "touched through the link"
        );
        let r = prune(&images, &PruneOptions::default()).unwrap();
        assert!(r.entries >= 2, "{r:?}");
        assert!(target.exists(), "the link's target is untouched");
        assert!(fs::symlink_metadata(cache.path(&key).unwrap()).is_err());
        assert!(!images.store.blobs.contains(&held), "collected");
        assert!(fs::metadata("/etc/passwd").is_ok());
    }

    #[test]
    fn the_agents_collection_drops_old_entries_and_collects_only_then() {
        let (_dir, images, _) = store();
        let cache = Cache::new(images.store.root());
        let stray = images.store.blobs.put(b"no one names this", None).unwrap();
        let a = images.store.blobs.put(b"recent layer", None).unwrap();
        let b = images.store.blobs.put(b"stale layer", None).unwrap();
        let recent = entry(&cache, 1, &[&a], HOUR);
        let r = prune_unused(&images, 24 * HOUR).unwrap();
        assert_eq!((r.entries, r.gc.blobs), (0, 0));
        assert!(
            images.store.blobs.contains(&stray),
            "no collection for nothing"
        );
        let stale = entry(&cache, 2, &[&b], 48 * HOUR);
        let r = prune_unused(&images, 24 * HOUR).unwrap();
        assert_eq!(r.entries, 1);
        assert!(cache.get(&recent).is_some() && cache.get(&stale).is_none());
        assert!(images.store.blobs.contains(&a) && !images.store.blobs.contains(&b));
    }
}
