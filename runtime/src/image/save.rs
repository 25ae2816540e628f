//! `moor image save`: images written as one tar that is both an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/…`) and a `docker save`
//! archive (`manifest.json` pointing into the same blobs), as Docker 25 and
//! later write it. `docker load` reads the `manifest.json` side, OCI tools
//! and [`import`](super::import) the layout side, so a save → import round
//! trip keeps the manifest digest.
//!
//! Blobs are streamed from the store, each once however many images share
//! it; entries are sorted and timestamps zero, so saving the same images
//! twice gives the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use moor_store::{Digest, ImageRecord};
use serde_json::json;

use super::oci::media;
use super::{ImageError, Images};

/// One image to save and the names it is saved under.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The image.
    pub image: ImageRecord,
    /// The references (normalised) it is saved under; empty when it was
    /// named by digest.
    pub refs: Vec<String>,
}

/// Resolves the names given to `moor image save`: each reference names its
/// image under that reference; a digest or ID names it without one. Images
/// named twice are saved once.
pub fn resolve(images: &Images, names: &[String]) -> Result<Vec<Saved>, ImageError> {
    let mut out: Vec<Saved> = Vec::new();
    for n in names {
        let image = images
            .resolve(n)?
            .ok_or_else(|| ImageError::NotFound(n.clone()))?;
        let named = moor_spec::reference::parse(n)
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| r.to_string())
            .filter(|r| image.refs.contains(r));
        match out.iter_mut().find(|s| s.image.digest == image.digest) {
            Some(s) => s.refs.extend(named),
            None => out.push(Saved {
                image,
                refs: named.into_iter().collect(),
            }),
        }
    }
    for s in &mut out {
        s.refs.sort();
        s.refs.dedup();
    }
    Ok(out)
}

fn blob_path(d: &str) -> String {
    format!("blobs/{}", d.replacen(':', "/", 1))
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |e| ImageError::Invalid(format!("write {what}: {e}"))
}

/// Writes `saved` to `out` as a tar (see the module docs).
pub fn save(images: &Images, saved: &[Saved], out: impl Write) -> Result<(), ImageError> {
    // Shared: a prune cannot remove the blobs while they are written.
    let _lock = images.store.lock_shared()?;
    let mut blobs: BTreeSet<String> = BTreeSet::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for s in saved {
        let i = &s.image;
        blobs.insert(i.digest.clone());
        blobs.insert(i.config.clone());
        blobs.extend(i.layers.iter().map(|l| l.blob.clone()));
        let manifest: Digest = i.digest.parse()?;
        let size = images.store.blobs.size(&manifest).unwrap_or(0);
        let descriptor = |annotations: Option<BTreeMap<&str, String>>| {
            let mut d = json!({"mediaType": i.media_type, "digest": i.digest, "size": size});
            if let Some(a) = annotations {
                d["annotations"] = json!(a);
            }
            d
        };
        if s.refs.is_empty() {
            index.push(descriptor(None));
        }
        for r in &s.refs {
            let tag = moor_spec::reference::parse(r)
                .ok()
                .and_then(|p| p.tag)
                .unwrap_or_default();
            index.push(descriptor(Some(BTreeMap::from([
                ("io.containerd.image.name", r.clone()),
                ("org.opencontainers.image.ref.name", tag),
            ]))));
        }
        docker.push(json!({
            "Config": blob_path(&i.config),
            "RepoTags": s.refs,
            "Layers": i.layers.iter().map(|l| blob_path(&l.blob)).collect::<Vec<_>>(),
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": index,
    });
    let mut tar = tar::Builder::new(out);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, 0o755, tar::EntryType::Directory);
        tar.append_data(&mut h, dir, std::io::empty())
            .map_err(io_err(dir))?;
    }
    for d in &blobs {
        let digest: Digest = d.parse()?;
        let file = images.store.blobs.open_blob(&digest)?;
        let len = file.metadata().map_err(io_err(d))?.len();
        let mut h = header(len, 0o644, tar::EntryType::Regular);
        tar.append_data(&mut h, blob_path(d), file)
            .map_err(io_err(d))?;
    }
    let files = [
        (
            "index.json",
            serde_json::to_vec(&index).map_err(|e| ImageError::Invalid(e.to_string()))?,
        ),
        (
            "manifest.json",
            serde_json::to_vec(&docker).map_err(|e| ImageError::Invalid(e.to_string()))?,
        ),
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ];
    for (name, data) in files {
        let mut h = header(data.len() as u64, 0o644, tar::EntryType::Regular);
        tar.append_data(&mut h, name, data.as_slice())
            .map_err(io_err(name))?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err("archive"))?;
    Ok(())
}
