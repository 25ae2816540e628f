//! Test images built from Debian's busybox-static.

use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A root filesystem: `/bin/busybox`, applets as symlinks, `/etc/passwd`.
pub fn busybox_rootfs_dir(dir: &Path) {
    let busybox = crate::common::which("busybox").expect("busybox-static installed (see .ci/run)");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "httpd", "wget", "sleep", "cat", "ls", "echo", "true"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/hostname"), "busybox\n").unwrap();
    std::fs::write(dir.join("www/index.html"), "hello from moor\n").unwrap();
}

/// A tar of a directory's contents.
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// A tar built by `f`.
pub fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

/// Appends a regular file.
pub fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// One layer: its blob, media type and diff ID.
#[derive(Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: String,
}

impl Layer {
    pub fn gzip(tar: &[u8]) -> Self {
        Self {
            blob: gzip(tar),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
            diff_id: digest(tar),
        }
    }
    pub fn zstd(tar: &[u8]) -> Self {
        Self {
            blob: zstd(tar),
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
            diff_id: digest(tar),
        }
    }
    pub fn plain(tar: &[u8]) -> Self {
        Self {
            blob: tar.to_vec(),
            media_type: "application/vnd.oci.image.layer.v1.tar",
            diff_id: digest(tar),
        }
    }
}

/// An image: config, manifest, layers.
#[derive(Clone)]
pub struct TestImage {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub layers: Vec<Layer>,
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An OCI image of `layers` for the host (or `arch`).
pub fn image_for(layers: Vec<Layer>, arch: &str) -> TestImage {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": digest(&l.blob), "size": l.blob.len()
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    TestImage {
        manifest_digest: digest(&manifest),
        config,
        manifest,
        layers,
    }
}

pub fn image(layers: Vec<Layer>) -> TestImage {
    image_for(layers, host_arch())
}

/// The busybox base layer (gzip).
pub fn base_layer() -> Layer {
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs_dir(dir.path());
    Layer::gzip(&tar_dir(dir.path()))
}

/// Three layers: busybox (gzip); a zstd layer adding files and whiting out
/// `/etc/hostname`; a plain layer making `/www` opaque with a new page.
pub fn standard_image() -> TestImage {
    let second = tar_of(|b| {
        file(b, "etc/motd", b"welcome\n");
        file(b, "etc/.wh.hostname", b"");
        file(b, "data/blob.bin", &vec![7u8; 300_000]);
    });
    let third = tar_of(|b| {
        file(b, "www/.wh..wh..opq", b"");
        file(b, "www/new.html", b"new page\n");
    });
    image(vec![
        base_layer(),
        Layer::zstd(&second),
        Layer::plain(&third),
    ])
}

/// An index listing `images` with their platforms.
pub fn index(images: &[(&TestImage, &str)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": images.iter().map(|(i, arch)| serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": i.manifest_digest, "size": i.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"}
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    file(b, path, data)
}

/// `docker save` output of `image` (layers as plain tars).
pub fn docker_save(image: &TestImage, tag: &str) -> Vec<u8> {
    tar_of(|b| {
        let config_name = format!(
            "{}.json",
            digest(&image.config).trim_start_matches("sha256:")
        );
        add(b, &config_name, &image.config);
        let mut names = Vec::new();
        for (i, l) in image.layers.iter().enumerate() {
            let tar = decompress(&l.blob);
            let name = format!("layer{i}/layer.tar");
            add(b, &name, &tar);
            names.push(name);
        }
        let manifest =
            serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": names}]);
        add(b, "manifest.json", &serde_json::to_vec(&manifest).unwrap());
    })
}

/// An OCI image archive of `image`.
pub fn oci_archive(image: &TestImage, name: &str) -> Vec<u8> {
    tar_of(|b| {
        add(b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "oci"}
        }]});
        add(b, "index.json", &serde_json::to_vec(&index).unwrap());
        let mut blobs = vec![image.manifest.clone(), image.config.clone()];
        blobs.extend(image.layers.iter().map(|l| l.blob.clone()));
        for blob in blobs {
            add(
                b,
                &format!(
                    "blobs/sha256/{}",
                    digest(&blob).trim_start_matches("sha256:")
                ),
                &blob,
            );
        }
    })
}

/// The uncompressed tar of a layer blob.
pub fn decompress(blob: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut out)
            .unwrap();
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        out = zstd::decode_all(blob).unwrap();
    } else {
        out = blob.to_vec();
    }
    out
}
