//! The image store: images as the runtime sees them, on top of
//! `moor_store`'s blobs, database and snapshots.

use std::path::{Path, PathBuf};

use moor_store::{Digest, GcReport, ImageRecord, LayerRecord, SnapshotRecord, Store};

use super::ImageError;
use super::oci::{self, ImageConfig, Parsed};
use super::unpack::{UnpackLimits, unpack};

/// Images in a state directory.
#[derive(Debug)]
pub struct Images {
    pub(crate) store: Store,
    /// Caps applied to every layer unpacked.
    pub limits: UnpackLimits,
}

/// What `remove` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// The reference was removed; the image keeps other references.
    Untagged(String),
    /// The image record went with its last reference (its blobs and
    /// snapshots go at the next prune).
    Deleted(String),
}

/// One line of `moor image history`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryRow {
    /// When the step ran (RFC 3339), if recorded.
    pub created: Option<String>,
    /// The instruction that made it (empty when not recorded).
    pub created_by: String,
    /// Uncompressed bytes of the layer it made; 0 for a step that made none.
    pub size: u64,
    /// The step's comment.
    pub comment: String,
    /// The diff ID of the layer it made, if it made one.
    pub layer: Option<String>,
}

/// The rows of an image's history, newest first: the config's `history`
/// entries, each that made a layer (no `empty_layer`) paired with the next
/// layer in order. Layers no entry accounts for (those of a base without
/// history, such as an imported root filesystem) get rows of their own at
/// the bottom.
pub fn history_rows(config: &serde_json::Value, layer_sizes: &[u64]) -> Vec<HistoryRow> {
    let diff_ids: Vec<String> = config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let entries: Vec<&serde_json::Value> = config
        .get("history")
        .and_then(|h| h.as_array())
        .into_iter()
        .flatten()
        .collect();
    let made_layer = |e: &serde_json::Value| {
        !e.get("empty_layer")
            .and_then(|b| b.as_bool())
            .unwrap_or(false)
    };
    // Layers no entry accounts for are the bottom ones: a base image
    // without history under steps that recorded theirs.
    let unrecorded = layer_sizes
        .len()
        .saturating_sub(entries.iter().filter(|e| made_layer(e)).count());
    let mut rows: Vec<HistoryRow> = (0..unrecorded)
        .map(|i| HistoryRow {
            created: None,
            created_by: String::new(),
            size: layer_sizes[i],
            comment: String::new(),
            layer: diff_ids.get(i).cloned(),
        })
        .collect();
    let mut layer = unrecorded;
    for e in entries {
        let (size, id) = if !made_layer(e) || layer >= layer_sizes.len() {
            (0, None)
        } else {
            layer += 1;
            (layer_sizes[layer - 1], diff_ids.get(layer - 1).cloned())
        };
        rows.push(HistoryRow {
            created: e.get("created").and_then(|c| c.as_str()).map(String::from),
            created_by: text(e, "created_by"),
            size,
            comment: text(e, "comment"),
            layer: id,
        });
    }
    rows.reverse();
    rows
}

impl Images {
    /// Opens the image store in the state directory `root`.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        Ok(Self {
            store: Store::open(root)?,
            limits: UnpackLimits::default(),
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.store.db.images()?)
    }

    /// The image a reference (normalised), a manifest digest or a unique
    /// digest prefix names.
    pub fn resolve(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        if let Some(i) = self.store.db.resolve(name)? {
            return Ok(Some(i));
        }
        let parsed = moor_spec::reference::parse(name).ok();
        if let Some(r) = &parsed
            && let Some(i) = self.store.db.resolve(&r.to_string())?
        {
            return Ok(Some(i));
        }
        // `name:tag@digest` (a reference a rollback or an image update
        // pins) names content: the image with that manifest digest, or
        // chosen from that index, whatever names it carries now, as for an
        // image imported or built here, which no registry named so.
        if let Some(d) = parsed.as_ref().and_then(|r| r.digest.as_deref()) {
            if let Some(i) = self.store.db.image(d)? {
                return Ok(Some(i));
            }
            if let Some(i) = self.store.db.image_from_index(d)? {
                return Ok(Some(i));
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            // A prefix names an image only when it is the only one.
            if let [digest] = self.store.db.digests_with_prefix(hex, 2)?.as_slice() {
                return Ok(self.store.db.image(digest)?);
            }
        }
        Ok(None)
    }

    /// The parsed config of an image.
    pub fn config(&self, image: &ImageRecord) -> Result<ImageConfig, ImageError> {
        let digest: Digest = image.config.parse()?;
        let raw = self.store.blobs.read(&digest)?;
        serde_json::from_slice(&raw)
            .map_err(|e| ImageError::Invalid(format!("config {digest}: {e}")))
    }

    /// The snapshot directories of an image's layers, bottom first (the
    /// order `container::Engine::create` takes; an overlay `lowerdir` lists
    /// them the other way round).
    pub fn layer_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .map(|l| self.store.snapshots.path(&l.chain_id))
            .collect()
    }

    /// The image's run configuration (entrypoint, command, environment,
    /// user, working directory) as `oci-spec` types, for runtime bundles.
    pub fn run_config(
        &self,
        image: &ImageRecord,
    ) -> Result<Option<oci_spec::image::Config>, ImageError> {
        let digest: Digest = image.config.parse()?;
        let raw = self.store.blobs.read(&digest)?;
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&raw)
            .map_err(|e| ImageError::Invalid(format!("config {digest}: {e}")))?;
        Ok(config.config().clone())
    }

    /// Makes `holder` (say `container:<id>`) a holder of the image's
    /// snapshots, so that removing the image and pruning keeps them until
    /// [`Images::release`].
    pub fn hold(&self, image: &ImageRecord, holder: &str) -> Result<(), ImageError> {
        for l in &image.layers {
            self.store.db.hold_snapshot(&l.chain_id, holder)?;
        }
        Ok(())
    }

    /// Drops every hold of `holder`.
    pub fn release(&self, holder: &str) -> Result<(), ImageError> {
        Ok(self.store.db.release_holder(holder)?)
    }

    /// Makes sure the snapshot of a layer exists, unpacking its blob if not.
    /// Call with the GC lock held shared.
    pub(crate) fn ensure_snapshot(
        &self,
        blob: &Digest,
        diff_id: &str,
        chain_id: &str,
        parent: Option<&str>,
    ) -> Result<SnapshotRecord, ImageError> {
        if let Some(s) = self.store.db.snapshot(chain_id)?
            && self.store.snapshots.exists(chain_id)
        {
            return Ok(s);
        }
        let temp = self.store.snapshots.temp_dir()?;
        let result = self
            .store
            .blobs
            .open_blob(blob)
            .map_err(ImageError::from)
            .and_then(|f| {
                unpack(f, &temp, self.limits).map_err(|source| ImageError::Unpack {
                    layer: blob.to_string(),
                    source,
                })
            });
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = self.store.snapshots.discard(&temp);
                return Err(e);
            }
        };
        if report.diff_id.as_str() != diff_id {
            let _ = self.store.snapshots.discard(&temp);
            return Err(ImageError::DiffIdMismatch {
                layer: blob.to_string(),
                expected: diff_id.to_string(),
                actual: report.diff_id.to_string(),
            });
        }
        self.store.snapshots.commit(&temp, chain_id)?;
        let record = SnapshotRecord {
            chain_id: chain_id.to_string(),
            parent: parent.map(Into::into),
            diff_id: diff_id.to_string(),
            size: report.size,
        };
        self.store.db.put_snapshot(&record)?;
        Ok(record)
    }

    /// Records an image whose manifest, config and layer blobs are all in the
    /// blob store: unpacks missing snapshots and points `refs` at it. Call
    /// with the GC lock held shared.
    pub(crate) fn commit(
        &self,
        manifest: &Digest,
        index: Option<&Digest>,
        refs: &[String],
    ) -> Result<ImageRecord, ImageError> {
        // Recorded already, as asked (a cached rebuild, a pull of what is
        // here): nothing to write, and no transaction to sync.
        if let Some(existing) = self.store.db.image(manifest.as_str())?
            && index.is_none_or(|i| existing.index.as_deref() == Some(i.as_str()))
            && refs.iter().all(|r| existing.refs.contains(r))
            && existing
                .layers
                .iter()
                .all(|l| self.store.snapshots.exists(&l.chain_id))
        {
            return Ok(existing);
        }
        let raw = self.store.blobs.read(manifest)?;
        let (m, media_type) = match oci::parse_manifest(&raw, None).map_err(ImageError::Invalid)? {
            Parsed::Manifest(m, media) => (m, media),
            Parsed::Index(..) => {
                return Err(ImageError::Invalid(format!(
                    "{manifest} is an index, not a manifest"
                )));
            }
        };
        let config_digest: Digest = m.config.digest.parse()?;
        let config_raw = self.store.blobs.read(&config_digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_raw)
            .map_err(|e| ImageError::Invalid(format!("config {config_digest}: {e}")))?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(ImageError::Invalid(format!(
                "manifest {manifest} has {} layers but its config lists {} diff IDs",
                m.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let chains = oci::chain_ids(&config.rootfs.diff_ids);
        let mut layers = Vec::new();
        for (i, l) in m.layers.iter().enumerate() {
            let blob: Digest = l.digest.parse()?;
            let parent = i.checked_sub(1).map(|p| chains[p].as_str());
            self.ensure_snapshot(&blob, &config.rootfs.diff_ids[i], &chains[i], parent)?;
            layers.push(LayerRecord {
                blob: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
                diff_id: config.rootfs.diff_ids[i].clone(),
                chain_id: chains[i].clone(),
            });
        }
        let platform = oci::Platform {
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            variant: config.variant.clone(),
        };
        let record = ImageRecord {
            digest: manifest.to_string(),
            media_type,
            config: config_digest.to_string(),
            index: index.map(|d| d.to_string()),
            platform: platform.to_string(),
            size: raw.len() as u64 + m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            layers,
            refs: Vec::new(),
        };
        self.store.db.put_image(&record, refs)?;
        Ok(self.store.db.image(manifest.as_str())?.unwrap_or(record))
    }

    /// Points the reference `target` at the image `source` names, as
    /// `docker tag` does (moving it off any image it named before). Returns
    /// the image and the normalised reference.
    pub fn tag(&self, source: &str, target: &str) -> Result<(ImageRecord, String), ImageError> {
        let r = moor_spec::reference::parse(target).map_err(ImageError::Invalid)?;
        if r.digest.is_some() {
            return Err(ImageError::Invalid(format!(
                "cannot tag with \"{target}\": a digest names content, not a tag"
            )));
        }
        let name = r.to_string();
        // Shared: a prune cannot remove the image between resolve and tag.
        let _lock = self.store.lock_shared()?;
        let image = self
            .resolve(source)?
            .ok_or_else(|| ImageError::NotFound(source.to_string()))?;
        if !self.store.db.put_ref(&name, &image.digest)? {
            return Err(ImageError::NotFound(source.to_string()));
        }
        let image = self.store.db.image(&image.digest)?.unwrap_or(image);
        Ok((image, name))
    }

    /// The raw config of an image, as JSON.
    pub fn config_json(&self, image: &ImageRecord) -> Result<serde_json::Value, ImageError> {
        let digest: Digest = image.config.parse()?;
        let raw = self.store.blobs.read(&digest)?;
        serde_json::from_slice(&raw)
            .map_err(|e| ImageError::Invalid(format!("config {digest}: {e}")))
    }

    /// Uncompressed bytes of each layer (its snapshot's size; the blob's
    /// size when the snapshot is gone), base first.
    pub fn layer_sizes(&self, image: &ImageRecord) -> Result<Vec<u64>, ImageError> {
        image
            .layers
            .iter()
            .map(|l| {
                Ok(self
                    .store
                    .db
                    .snapshot(&l.chain_id)?
                    .map_or(l.size, |s| s.size))
            })
            .collect()
    }

    /// The image's history, newest first, as `docker history` shows it.
    pub fn history(&self, image: &ImageRecord) -> Result<Vec<HistoryRow>, ImageError> {
        let config = self.config_json(image)?;
        Ok(history_rows(&config, &self.layer_sizes(image)?))
    }

    /// What `moor image inspect` shows: the shape of `docker image inspect`
    /// (`Id` is the config's digest, as in Docker), plus the manifest.
    pub fn inspect(&self, image: &ImageRecord) -> Result<serde_json::Value, ImageError> {
        let config = self.config_json(image)?;
        let repo_digests: Vec<String> = image
            .refs
            .iter()
            .filter_map(|r| moor_spec::reference::parse(r).ok())
            .map(|r| format!("{}@{}", r.name(), image.digest))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let tags: Vec<&String> = image.refs.iter().filter(|r| !r.contains('@')).collect();
        let field = |k: &str| config.get(k).cloned().unwrap_or(serde_json::Value::Null);
        Ok(serde_json::json!({
            "Id": image.config,
            "RepoTags": tags,
            "RepoDigests": repo_digests,
            "Created": field("created"),
            "Author": config.get("author").cloned().unwrap_or_else(|| "".into()),
            "Architecture": field("architecture"),
            "Variant": config.get("variant").cloned(),
            "Os": field("os"),
            "Config": field("config"),
            "Size": self.layer_sizes(image)?.iter().sum::<u64>(),
            "RootFS": {
                "Type": "layers",
                "Layers": image.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>(),
            },
            "Manifest": {
                "Digest": image.digest,
                "MediaType": image.media_type,
                "Platform": image.platform,
                "Layers": image.layers,
            },
        }))
    }

    /// Removes a reference; the image record goes with its last reference.
    pub fn remove(&self, name: &str) -> Result<Removed, ImageError> {
        let image = self
            .resolve(name)?
            .ok_or_else(|| ImageError::NotFound(name.to_string()))?;
        let matching: Vec<&String> = image
            .refs
            .iter()
            .filter(|r| {
                *r == name || moor_spec::reference::parse(name).is_ok_and(|p| p.to_string() == **r)
            })
            .collect();
        if let Some(r) = matching.first() {
            self.store.db.remove_ref(r)?;
            if image.refs.len() > 1 {
                return Ok(Removed::Untagged((*r).clone()));
            }
        }
        self.store.db.remove_image(&image.digest)?;
        Ok(Removed::Deleted(image.digest))
    }

    /// Removes images no reference names, but those whose manifest or
    /// index digest is in `keep` (the images a rollback may return to),
    /// then every blob and snapshot that no image holds, but the build
    /// cache's layers.
    pub fn prune(
        &self,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<(Vec<String>, GcReport), ImageError> {
        // Exclusive from the first removal to the end of the collection:
        // a pull or a tag (which hold it shared) either finishes before,
        // or starts after and finds the image gone.
        let lock = self.store.lock_exclusive()?;
        let kept: std::collections::HashSet<String> = self
            .list()?
            .into_iter()
            .filter(|i| {
                keep.contains(&i.digest) || i.index.as_ref().is_some_and(|x| keep.contains(x))
            })
            .map(|i| i.digest)
            .collect();
        let mut dangling = self.store.db.unreferenced_images()?;
        dangling.retain(|d| !kept.contains(d));
        for d in &dangling {
            self.store.db.remove_image(d)?;
        }
        // The build cache's layers stay: `moor builder prune` removes them.
        let cache = crate::build::cache::Cache::new(self.store.root());
        Ok((dangling, self.store.gc_held_keeping(&lock, &cache.blobs())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_pairs_layers_with_entries_that_made_them_newest_first() {
        let config = serde_json::json!({
            "rootfs": {"type": "layers", "diff_ids": ["sha256:a", "sha256:b"]},
            "history": [
                {"created": "2026-01-01T00:00:00Z", "created_by": "ADD rootfs /"},
                {"created_by": "ENV A=1", "empty_layer": true},
                {"created_by": "RUN make", "comment": "buildkit"},
            ]
        });
        let rows = history_rows(&config, &[100, 7]);
        let got: Vec<(&str, u64, Option<&str>)> = rows
            .iter()
            .map(|r| (r.created_by.as_str(), r.size, r.layer.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("RUN make", 7, Some("sha256:b")),
                ("ENV A=1", 0, None),
                ("ADD rootfs /", 100, Some("sha256:a")),
            ]
        );
        assert_eq!(rows[0].comment, "buildkit");
        assert_eq!(rows[2].created.as_deref(), Some("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn history_without_entries_still_shows_every_layer() {
        let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": ["sha256:a"]}});
        let rows = history_rows(&config, &[42]);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].size, rows[0].created_by.as_str()), (42, ""));
    }

    #[test]
    fn history_of_a_build_on_a_base_without_history_puts_the_base_at_the_bottom() {
        let config = serde_json::json!({
            "rootfs": {"type": "layers", "diff_ids": ["sha256:base", "sha256:run"]},
            "history": [{"created_by": "RUN x"}, {"created_by": "CMD y", "empty_layer": true}]
        });
        let rows = history_rows(&config, &[1000, 5]);
        let got: Vec<(&str, u64)> = rows
            .iter()
            .map(|r| (r.created_by.as_str(), r.size))
            .collect();
        assert_eq!(got, [("CMD y", 0), ("RUN x", 5), ("", 1000)]);
        assert_eq!(rows[2].layer.as_deref(), Some("sha256:base"));
    }

    #[test]
    fn history_with_more_entries_than_layers_does_not_invent_sizes() {
        // A hostile config claims layers it does not have.
        let config = serde_json::json!({
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{"created_by": "RUN a"}, {"created_by": "RUN b"}]
        });
        let rows = history_rows(&config, &[]);
        assert!(rows.iter().all(|r| r.size == 0 && r.layer.is_none()));
    }
}
