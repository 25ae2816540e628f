//! [`State`]: an image being built, as layers and a config.

use std::fs::File;
use std::path::{Path, PathBuf};

use moor_store::{Digest, ImageRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::BuildError;
use std::collections::BTreeMap;

use crate::image::oci::{self, Descriptor, Manifest, media};
use crate::image::{ImageError, Images};

/// One layer of a [`State`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The blob.
    pub blob: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// The digest of the uncompressed tar.
    pub diff_id: String,
}

/// An image being built: its layers and its config (as JSON, every field
/// of the base kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Layers, base first.
    pub layers: Vec<Layer>,
    /// The config.
    pub config: Value,
}

impl State {
    pub(super) fn of_image(images: &Images, image: &ImageRecord) -> Result<State, BuildError> {
        let digest: Digest = image.config.parse().map_err(ImageError::from)?;
        let raw = images.store.blobs.read(&digest).map_err(ImageError::from)?;
        let config: Value = serde_json::from_slice(&raw)
            .map_err(|e| BuildError::Invalid(format!("config of {}: {e}", image.digest)))?;
        Ok(State {
            layers: image
                .layers
                .iter()
                .map(|l| Layer {
                    blob: l.blob.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    diff_id: l.diff_id.clone(),
                })
                .collect(),
            config,
        })
    }

    fn chain_ids(&self) -> Vec<String> {
        let diff_ids: Vec<String> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        oci::chain_ids(&diff_ids)
    }

    /// The snapshot directories of its layers, bottom first, unpacked
    /// where missing.
    pub(super) fn lowers(&self, images: &Images) -> Result<Vec<PathBuf>, BuildError> {
        let chains = self.chain_ids();
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let blob: Digest = l.blob.parse().map_err(ImageError::from)?;
            let parent = i.checked_sub(1).map(|p| chains[p].as_str());
            images.ensure_snapshot(&blob, &l.diff_id, &chains[i], parent)?;
            out.push(images.store.snapshots.path(&chains[i]));
        }
        Ok(out)
    }

    /// Whether every blob is still in the store.
    pub(super) fn complete(&self, images: &Images) -> bool {
        self.layers.iter().all(|l| {
            l.blob
                .parse::<Digest>()
                .is_ok_and(|d| images.store.blobs.contains(&d))
        })
    }

    /// Writes the config and an OCI manifest of the layers to the store and
    /// records the image under `tags`: the config's digest (the image ID)
    /// and the image.
    pub(super) fn store(
        &self,
        images: &Images,
        tags: &[String],
    ) -> Result<(Digest, ImageRecord), BuildError> {
        let invalid = |e: serde_json::Error| BuildError::Invalid(e.to_string());
        let raw = serde_json::to_vec(&self.config).map_err(invalid)?;
        let config = images
            .store
            .blobs
            .put(&raw, None)
            .map_err(ImageError::from)?;
        let descriptor = |media_type: &str, digest: &str, size: u64| Descriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: descriptor(media::OCI_CONFIG, config.as_str(), raw.len() as u64),
            layers: self
                .layers
                .iter()
                .map(|l| descriptor(&l.media_type, &l.blob, l.size))
                .collect(),
        };
        let manifest_raw = serde_json::to_vec(&manifest).map_err(invalid)?;
        let manifest_digest = images
            .store
            .blobs
            .put(&manifest_raw, None)
            .map_err(ImageError::from)?;
        let image = images.commit(&manifest_digest, None, tags)?;
        Ok((config, image))
    }

    /// Adds the uncompressed layer tar at `tar` (removed afterwards).
    pub(super) fn add_layer(&mut self, images: &Images, tar: &Path) -> Result<(), BuildError> {
        let result = (|| {
            let mut f = File::open(tar).map_err(BuildError::io("open layer", tar))?;
            let digest = images
                .store
                .blobs
                .put_reader(&mut f, None, None)
                .map_err(ImageError::from)?;
            let size = images.store.blobs.size(&digest).unwrap_or(0);
            self.layers.push(Layer {
                blob: digest.to_string(),
                media_type: media::OCI_LAYER.into(),
                size,
                diff_id: digest.to_string(),
            });
            // Unpacked now: the next step runs on it.
            self.lowers(images).map(drop)
        })();
        let _ = std::fs::remove_file(tar);
        result
    }
}
