//! Import from files: a `docker save` tarball, an OCI image archive
//! (`oci-layout` + `index.json` + `blobs/`), or a plain root-filesystem tar
//! (plain, gzip or zstd), which becomes a one-layer image as `docker import`
//! makes it.
//!
//! Archives are first unpacked with the layer extractor into a temporary
//! directory (so a hostile archive is held to the same rules as a layer),
//! and their files read back with `openat2(RESOLVE_BENEATH)`, so a symlink
//! in the archive cannot make the import read a host file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Instant;

use moor_store::Digest;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::change::{self, ImportConfig};
use super::events::{Event, Observer};
use super::oci::{self, Descriptor, ImageConfig, Manifest, Parsed, Platform, RootFs, media};
use super::unpack::{Compression, unpack};
use super::{ImageError, Images};

/// What kind of file is being imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `docker save` output (`manifest.json`).
    DockerSave,
    /// An OCI image layout (`oci-layout`, `index.json`).
    Oci,
    /// A root filesystem.
    RootFs,
}

/// What an import made.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The kind of file it was.
    pub kind: ArchiveKind,
    /// Images recorded, with their references.
    pub images: Vec<moor_store::ImageRecord>,
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |e| ImageError::Invalid(format!("read {}: {e}", path.display()))
}

fn decompressed(file: File) -> Result<Box<dyn Read>, std::io::Error> {
    let mut r = BufReader::with_capacity(256 * 1024, file);
    let head = r.fill_buf()?;
    Ok(match Compression::sniff(head) {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    })
}

/// Tells an archive from a root filesystem by its top-level names.
pub fn detect(path: &Path) -> Result<ArchiveKind, ImageError> {
    let file = File::open(path).map_err(read_err(path))?;
    let mut archive = tar::Archive::new(decompressed(file).map_err(read_err(path))?);
    let mut kind = ArchiveKind::RootFs;
    // A tar that cannot be scanned to the end is treated as a root
    // filesystem: the extractor then says precisely what is wrong with it.
    for entry in archive.entries().map_err(read_err(path))? {
        let Ok(entry) = entry else { break };
        let name = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_string();
        match name.as_str() {
            "oci-layout" | "index.json" => kind = ArchiveKind::Oci,
            "manifest.json" if kind == ArchiveKind::RootFs => kind = ArchiveKind::DockerSave,
            _ => {}
        }
    }
    Ok(kind)
}

/// Imports `path`. `tag` (a reference) names the image in addition to any
/// names the archive carries; a root filesystem has only `tag`.
pub fn import(
    images: &Images,
    path: &Path,
    tag: Option<&str>,
    observer: &dyn Observer,
) -> Result<Imported, ImageError> {
    import_with_changes(images, path, tag, &[], observer)
}

/// [`import()`], with Dockerfile instructions (`USER nobody`, `CMD [...]`)
/// applied to the config of a root filesystem, as `docker import --change`
/// does (see [`change`](super::change)). Archives carry their own config:
/// changes to them are refused.
pub fn import_with_changes(
    images: &Images,
    path: &Path,
    tag: Option<&str>,
    changes: &[String],
    observer: &dyn Observer,
) -> Result<Imported, ImageError> {
    let started = Instant::now();
    let tag = tag
        .map(|t| {
            moor_spec::reference::parse(t)
                .map(|r| r.to_string())
                .map_err(ImageError::Invalid)
        })
        .transpose()?;
    // Checked before anything is read or stored.
    let mut run = ImportConfig::default();
    change::apply(&mut run, changes)?;
    let result = import_inner(
        images,
        path,
        tag.as_deref(),
        (!changes.is_empty()).then_some(run),
    );
    observer.event(Event::Finished {
        reference: tag.clone().unwrap_or_else(|| path.display().to_string()),
        digest: result
            .as_ref()
            .ok()
            .and_then(|i| i.images.first())
            .map(|i| i.digest.clone()),
        bytes: 0,
        duration: started.elapsed(),
        result: result.as_ref().map(drop).map_err(|e| error_chain(e)),
    });
    result
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn import_inner(
    images: &Images,
    path: &Path,
    tag: Option<&str>,
    changed: Option<ImportConfig>,
) -> Result<Imported, ImageError> {
    let kind = detect(path)?;
    if changed.is_some() && kind != ArchiveKind::RootFs {
        return Err(ImageError::Invalid(format!(
            "{} is {}, which carries its own config: changes apply only to a root filesystem tar",
            path.display(),
            if kind == ArchiveKind::Oci {
                "an OCI archive"
            } else {
                "a docker save archive"
            }
        )));
    }
    let _lock = images.store.lock_shared()?;
    let records = match kind {
        ArchiveKind::RootFs => vec![import_rootfs(
            images,
            path,
            tag,
            changed.unwrap_or_default(),
        )?],
        ArchiveKind::DockerSave | ArchiveKind::Oci => {
            let temp = images.store.snapshots.temp_dir()?;
            let result = (|| {
                let file = File::open(path).map_err(read_err(path))?;
                unpack(file, &temp, images.limits).map_err(|source| ImageError::Unpack {
                    layer: path.display().to_string(),
                    source,
                })?;
                let root = rustix::fs::open(
                    &temp,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| ImageError::Invalid(format!("open {}: {e}", temp.display())))?;
                let dir = Dir { root };
                if kind == ArchiveKind::Oci {
                    import_oci(images, &dir, tag)
                } else {
                    import_docker(images, &dir, tag)
                }
            })();
            let _ = images.store.snapshots.discard(&temp);
            result?
        }
    };
    Ok(Imported {
        kind,
        images: records,
    })
}

/// An unpacked archive, read without leaving it.
struct Dir {
    root: std::os::fd::OwnedFd,
}

impl Dir {
    fn open(&self, rel: &str) -> Result<File, ImageError> {
        let rel = rel.trim_start_matches("./");
        rustix::fs::openat2(
            &self.root,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map(File::from)
        .map_err(|e| ImageError::Invalid(format!("archive member \"{rel}\": {e}")))
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>, ImageError> {
        let mut buf = Vec::new();
        self.open(rel)?
            .read_to_end(&mut buf)
            .map_err(|e| ImageError::Invalid(format!("archive member \"{rel}\": {e}")))?;
        Ok(buf)
    }

    fn put_blob(
        &self,
        images: &Images,
        rel: &str,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Digest, ImageError> {
        let mut f = self.open(rel)?;
        Ok(images.store.blobs.put_reader(&mut f, expected, size)?)
    }
}

fn import_rootfs(
    images: &Images,
    path: &Path,
    tag: Option<&str>,
    run: ImportConfig,
) -> Result<moor_store::ImageRecord, ImageError> {
    let mut head = [0u8; 4];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(read_err(path))?;
    let layer_media = match Compression::sniff(&head[..n]) {
        Compression::None => media::OCI_LAYER,
        Compression::Gzip => media::OCI_LAYER_GZIP,
        Compression::Zstd => media::OCI_LAYER_ZSTD,
    };
    let mut file = File::open(path).map_err(read_err(path))?;
    let layer = images.store.blobs.put_reader(&mut file, None, None)?;
    let layer_size = images.store.blobs.size(&layer).unwrap_or(0);
    // The diff ID is the digest of the uncompressed tar: for a plain tar,
    // the blob's own digest, without reading it again.
    let diff_id = if layer_media == media::OCI_LAYER {
        layer.clone()
    } else {
        let mut hasher = Sha256::new();
        let mut reader =
            decompressed(images.store.blobs.open_blob(&layer)?).map_err(read_err(path))?;
        std::io::copy(&mut reader, &mut HashWriter(&mut hasher)).map_err(read_err(path))?;
        Digest::from_hasher(hasher)
    };
    let host = Platform::host();
    let config = ImageConfig {
        architecture: host.architecture.clone(),
        os: host.os.clone(),
        variant: host.variant.clone(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id.to_string()],
        },
        config: None,
        created: None,
    };
    // The run section has more fields than moor reads back (ports,
    // volumes, labels…): it is written from the import's own model.
    let mut config =
        serde_json::to_value(&config).map_err(|e| ImageError::Invalid(e.to_string()))?;
    config["config"] =
        serde_json::to_value(&run).map_err(|e| ImageError::Invalid(e.to_string()))?;
    let config_raw = serde_json::to_vec(&config).map_err(|e| ImageError::Invalid(e.to_string()))?;
    let config_digest = images.store.blobs.put(&config_raw, None)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config: descriptor(media::OCI_CONFIG, &config_digest, config_raw.len() as u64),
        layers: vec![descriptor(layer_media, &layer, layer_size)],
    };
    let raw = serde_json::to_vec(&manifest).map_err(|e| ImageError::Invalid(e.to_string()))?;
    let digest = images.store.blobs.put(&raw, None)?;
    let refs: Vec<String> = tag.map(String::from).into_iter().collect();
    images.commit(&digest, None, &refs)
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: digest.to_string(),
        size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn import_docker(
    images: &Images,
    dir: &Dir,
    tag: Option<&str>,
) -> Result<Vec<moor_store::ImageRecord>, ImageError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(&dir.read("manifest.json")?)
        .map_err(|e| ImageError::Invalid(format!("docker save manifest.json: {e}")))?;
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let config = dir.put_blob(images, &e.config, None, None)?;
        let config_size = images.store.blobs.size(&config).unwrap_or(0);
        let mut layers = Vec::new();
        for l in &e.layers {
            let digest = dir.put_blob(images, l, None, None)?;
            let mut head = [0u8; 4];
            let n = images
                .store
                .blobs
                .open_blob(&digest)?
                .read(&mut head)
                .unwrap_or(0);
            let media_type = match Compression::sniff(&head[..n]) {
                Compression::None => media::DOCKER_LAYER_TAR,
                Compression::Gzip => media::DOCKER_LAYER,
                Compression::Zstd => media::OCI_LAYER_ZSTD,
            };
            layers.push(descriptor(
                media_type,
                &digest,
                images.store.blobs.size(&digest).unwrap_or(0),
            ));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::DOCKER_MANIFEST.into()),
            config: descriptor(media::DOCKER_CONFIG, &config, config_size),
            layers,
        };
        let raw = serde_json::to_vec(&manifest).map_err(|e| ImageError::Invalid(e.to_string()))?;
        let digest = images.store.blobs.put(&raw, None)?;
        let mut refs = normalise(e.repo_tags.iter().flatten());
        if i == 0
            && let Some(t) = tag
        {
            refs.push(t.to_string());
        }
        out.push(images.commit(&digest, None, &refs)?);
    }
    Ok(out)
}

fn normalise<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    names
        .filter_map(|n| moor_spec::reference::parse(n).ok())
        .map(|r| r.to_string())
        .collect()
}

fn import_oci(
    images: &Images,
    dir: &Dir,
    tag: Option<&str>,
) -> Result<Vec<moor_store::ImageRecord>, ImageError> {
    let index_raw = dir.read("index.json")?;
    let Parsed::Index(index, _) =
        oci::parse_manifest(&index_raw, Some(media::OCI_INDEX)).map_err(ImageError::Invalid)?
    else {
        return Err(ImageError::Invalid(
            "index.json is not an image index".into(),
        ));
    };
    let host = Platform::host();
    let mut out = Vec::new();
    for (i, desc) in index.manifests.iter().enumerate() {
        let mut names: Vec<String> = Vec::new();
        for key in [
            "io.containerd.image.name",
            "org.opencontainers.image.ref.name",
        ] {
            if let Some(n) = desc.annotations.get(key)
                && n.contains(['/', ':'])
            {
                names.push(n.clone());
            }
        }
        let mut refs = normalise(names.iter());
        refs.dedup();
        if i == 0
            && let Some(t) = tag
        {
            refs.push(t.to_string());
        }
        let (manifest, parent) = oci_manifest(images, dir, desc, &host)?;
        out.push(images.commit(&manifest, parent.as_ref(), &refs)?);
    }
    Ok(out)
}

/// Stores the blobs of one index entry (verifying each against its
/// descriptor) and returns the manifest's digest and the index it came from.
fn oci_manifest(
    images: &Images,
    dir: &Dir,
    desc: &Descriptor,
    host: &Platform,
) -> Result<(Digest, Option<Digest>), ImageError> {
    let blob = |d: &Descriptor| -> Result<Digest, ImageError> {
        let digest: Digest = d.digest.parse()?;
        dir.put_blob(
            images,
            &format!("blobs/sha256/{}", digest.hex()),
            Some(&digest),
            Some(d.size),
        )
    };
    let digest = blob(desc)?;
    match oci::parse_manifest(&images.store.blobs.read(&digest)?, Some(&desc.media_type))
        .map_err(ImageError::Invalid)?
    {
        Parsed::Manifest(m, _) => {
            blob(&m.config)?;
            for l in &m.layers {
                blob(l)?;
            }
            Ok((digest, None))
        }
        Parsed::Index(index, _) => {
            let chosen = oci::select_platform(&index, host).ok_or_else(|| {
                ImageError::Invalid(format!("index {digest} has no image for {host}"))
            })?;
            let (m, _) = oci_manifest(images, dir, chosen, host)?;
            Ok((m, Some(digest)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn changes(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    /// A tag pinned to a digest (`name:tag@digest`, as a rollback pins an
    /// image) finds the image by its digest, though it was imported (no
    /// pull recorded that name) and its tag now names another image; a
    /// digest the store does not hold finds nothing.
    #[test]
    fn a_pinned_reference_finds_an_imported_image_by_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(&dir.path().join("state")).unwrap();
        let import = |content: &[u8]| {
            let tarball = dir.path().join("rootfs.tar");
            std::fs::write(&tarball, tar_of(&[("version", content)])).unwrap();
            import_with_changes(&images, &tarball, Some("localhost/app:1"), &[], &|_| {})
                .unwrap()
                .images[0]
                .digest
                .clone()
        };
        let (one, two) = (import(b"one"), import(b"two"));
        assert_ne!(one, two);
        let found = |name: &str| images.resolve(name).unwrap().map(|i| i.digest);
        assert_eq!(found("localhost/app:1"), Some(two.clone()));
        assert_eq!(found(&format!("localhost/app:1@{one}")), Some(one.clone()));
        assert_eq!(found(&format!("localhost/app:1@{two}")), Some(two));
        let absent = format!("sha256:{}", "e".repeat(64));
        assert_eq!(found(&format!("localhost/app:1@{absent}")), None);
    }

    /// A prune removes untagged images only while no writer (a pull, a
    /// tag: they hold the store's lock shared) is under way: it waits for
    /// the lock before its first removal, not only before collecting blobs.
    #[test]
    fn prune_waits_for_writers_before_removing_an_untagged_image() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(&dir.path().join("state")).unwrap();
        let tarball = dir.path().join("rootfs.tar");
        std::fs::write(&tarball, tar_of(&[("hello", b"hi\n")])).unwrap();
        // Untagged but recorded, as between a pull's commit and its tag.
        let imported = import_with_changes(&images, &tarball, None, &[], &|_| {}).unwrap();
        let digest = imported.images[0].digest.clone();
        assert!(imported.images[0].refs.is_empty());
        let writer = images.store.lock_shared().unwrap();
        let state = dir.path().join("state");
        let (tx, rx) = std::sync::mpsc::channel();
        let pruner = std::thread::spawn(move || {
            let images = Images::open(&state).unwrap();
            let out = images.prune(&Default::default()).map(|(gone, _)| gone);
            tx.send(()).unwrap();
            out
        });
        // Nothing goes while the writer holds the lock.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(500))
                .is_err(),
            "prune finished while a writer held the lock"
        );
        assert!(images.store.db.image(&digest).unwrap().is_some());
        drop(writer);
        let gone = pruner.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gone, std::slice::from_ref(&digest));
        assert!(images.store.db.image(&digest).unwrap().is_none());
        // A shared guard is refused by the collection itself.
        let shared = images.store.lock_shared().unwrap();
        assert!(images.store.gc_held(&shared).is_err());
    }

    #[test]
    fn changes_go_into_the_config_of_a_root_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(&dir.path().join("state")).unwrap();
        let tarball = dir.path().join("rootfs.tar");
        std::fs::write(
            &tarball,
            tar_of(&[("etc/passwd", b"nobody:x:65534:65534::/:/bin/false\n")]),
        )
        .unwrap();
        let imported = import_with_changes(
            &images,
            &tarball,
            Some("localhost/app:1"),
            &changes(&[
                "USER nobody",
                r#"CMD ["python3","/app/app.py"]"#,
                "EXPOSE 8000",
                "VOLUME /data",
            ]),
            &|_| {},
        )
        .unwrap();
        let record = &imported.images[0];
        let raw: serde_json::Value = serde_json::from_slice(
            &images
                .store
                .blobs
                .read(&record.config.parse().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(raw["config"]["User"], "nobody");
        assert_eq!(
            raw["config"]["Cmd"],
            serde_json::json!(["python3", "/app/app.py"])
        );
        assert_eq!(
            raw["config"]["ExposedPorts"],
            serde_json::json!({"8000/tcp": {}})
        );
        assert_eq!(raw["config"]["Volumes"], serde_json::json!({"/data": {}}));
        assert_eq!(
            raw["config"]["Env"],
            serde_json::json!([change::DEFAULT_PATH])
        );
        assert_eq!(raw["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
        // moor reads back what it uses.
        let config = images.config(record).unwrap().config.unwrap();
        assert_eq!(config.user.as_deref(), Some("nobody"));
        assert_eq!(config.cmd.unwrap(), ["python3", "/app/app.py"]);

        // The same tar without changes: the same layer, only a PATH.
        let plain = import(&images, &tarball, Some("localhost/app:plain"), &|_| {}).unwrap();
        let plain = &plain.images[0];
        assert_eq!(plain.layers, record.layers);
        let raw: serde_json::Value = serde_json::from_slice(
            &images
                .store
                .blobs
                .read(&plain.config.parse().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            raw["config"],
            serde_json::json!({"Env": [change::DEFAULT_PATH]})
        );
    }

    #[test]
    fn a_bad_change_stores_nothing_and_archives_refuse_changes() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(&dir.path().join("state")).unwrap();
        let tarball = dir.path().join("rootfs.tar");
        std::fs::write(&tarball, tar_of(&[("hello", b"hi")])).unwrap();
        let err = import_with_changes(&images, &tarball, None, &changes(&["RUN make"]), &|_| {})
            .unwrap_err();
        assert!(matches!(err, ImageError::Change(_)), "{err}");
        assert!(images.list().unwrap().is_empty());
        let blobs = std::fs::read_dir(dir.path().join("state/blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "a refused change stored blobs");

        let archive = dir.path().join("save.tar");
        std::fs::write(&archive, tar_of(&[("manifest.json", b"[]")])).unwrap();
        let err = import_with_changes(&images, &archive, None, &changes(&["USER nobody"]), &|_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is a docker save archive, which carries its own config"),
            "{err}"
        );
    }
}
