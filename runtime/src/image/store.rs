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
        if let Ok(r) = moor_spec::reference::parse(name)
            && let Some(i) = self.store.db.resolve(&r.to_string())?
        {
            return Ok(Some(i));
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let found: Vec<_> = self
                .list()?
                .into_iter()
                .filter(|i| i.digest["sha256:".len()..].starts_with(hex))
                .collect();
            if found.len() == 1 {
                return Ok(found.into_iter().next());
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

    /// Removes images no reference names, then every blob and snapshot that
    /// no image holds.
    pub fn prune(&self) -> Result<(Vec<String>, GcReport), ImageError> {
        let dangling = self.store.db.unreferenced_images()?;
        for d in &dangling {
            self.store.db.remove_image(d)?;
        }
        Ok((dangling, self.store.gc()?))
    }
}
