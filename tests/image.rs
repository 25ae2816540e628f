//! The image store end to end: `moor image import|pull|rm|prune` and
//! `moor images` against a real registry (Debian's `docker-registry`), a
//! lying fake registry, and hostile layers fed to the extractor.

mod auth;
mod fake;
mod hostile;
mod layers;
mod lying;
mod pull;
mod push;
pub(crate) mod registry;
mod update;
mod verify;

use std::path::Path;
use std::process::Output;

use crate::common::moor;

/// Runs `moor --state-dir STATE ARGS...`.
pub fn moor_in(state: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--state-dir", state.to_str().expect("utf-8 temp path")];
    all.extend_from_slice(args);
    moor(&all)
}

/// Text of a command's stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Text of a command's stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a command succeeded, showing its output when not.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "moor failed: {}\nstdout: {}",
        stderr(o),
        stdout(o)
    );
    stdout(o)
}

/// Files (not directories) under a state dir's `blobs/`, `snapshots/` and
/// `ingest/`.
pub fn leftovers(state: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["blobs/sha256", "snapshots", "ingest"] {
        if let Ok(entries) = std::fs::read_dir(state.join(sub)) {
            out.extend(
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| format!("{sub}/{}", e.file_name().to_string_lossy())),
            );
        }
    }
    out.sort();
    out
}

#[test]
fn import_rootfs_then_images_rm_and_prune_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let rootfs = tmp.path().join("rootfs");
    layers::busybox_rootfs_dir(&rootfs);
    let tarball = tmp.path().join("rootfs.tar.gz");
    std::fs::write(&tarball, layers::gzip(&layers::tar_dir(&rootfs))).unwrap();
    let out = ok(&moor_in(
        &state,
        &[
            "image",
            "import",
            tarball.to_str().unwrap(),
            "--tag",
            "local/busybox:1",
        ],
    ));
    assert!(out.contains("docker.io/local/busybox:1"), "{out}");
    let list = ok(&moor_in(&state, &["images", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let image = &v[0];
    assert_eq!(image["refs"][0], "docker.io/local/busybox:1");
    assert_eq!(image["layers"].as_array().unwrap().len(), 1);
    let chain = image["layers"][0]["chain_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let busybox = state.join("snapshots").join(&chain).join("bin/busybox");
    assert!(busybox.is_file(), "busybox unpacked into the snapshot");
    assert_eq!(
        std::fs::read_link(state.join("snapshots").join(&chain).join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(state.join("moor.db"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let table = ok(&moor_in(&state, &["images"]));
    assert!(
        table.contains("docker.io/local/busybox:1") && table.contains("sha256:"),
        "{table}"
    );
    ok(&moor_in(&state, &["image", "rm", "local/busybox:1"]));
    ok(&moor_in(&state, &["image", "prune"]));
    assert_eq!(leftovers(&state), Vec::<String>::new());
    assert_eq!(ok(&moor_in(&state, &["images", "--json"])).trim(), "[]");
}

#[test]
fn import_docker_save_and_oci_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let image = layers::standard_image();
    let docker = tmp.path().join("docker.tar");
    std::fs::write(&docker, layers::docker_save(&image, "example.com/app:2")).unwrap();
    let out = ok(&moor_in(
        &state,
        &["image", "import", docker.to_str().unwrap()],
    ));
    assert!(out.contains("example.com/app:2"), "{out}");
    let oci = tmp.path().join("oci.tar");
    std::fs::write(&oci, layers::oci_archive(&image, "example.com/app:oci")).unwrap();
    let out = ok(&moor_in(
        &state,
        &[
            "image",
            "import",
            oci.to_str().unwrap(),
            "--tag",
            "example.com/app:also",
        ],
    ));
    assert!(
        out.contains(&image.manifest_digest),
        "the OCI archive keeps the manifest digest: {out}"
    );
    assert!(
        out.contains("example.com/app:oci") && out.contains("example.com/app:also"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(&moor_in(&state, &["images", "--json"]))).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    // Both imports share every layer: three snapshots in all.
    let snapshots = leftovers(&state)
        .into_iter()
        .filter(|l| l.starts_with("snapshots/"))
        .count();
    assert_eq!(snapshots, 3);
}

#[test]
fn held_snapshots_survive_rm_and_prune_until_released() {
    use moor_runtime::image::{Images, import};
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let tarball = tmp.path().join("layer.tar");
    std::fs::write(
        &tarball,
        layers::tar_of(|b| layers::file(b, "hello.txt", b"hello")),
    )
    .unwrap();
    let images = Images::open(&state).unwrap();
    let imported = import::import(&images, &tarball, Some("held:1"), &|_| {}).unwrap();
    let image = &imported.images[0];
    let dirs = images.layer_dirs(image);
    assert_eq!(std::fs::read(dirs[0].join("hello.txt")).unwrap(), b"hello");
    let run = images
        .run_config(image)
        .unwrap()
        .expect("imported images have a run config");
    assert!(
        run.env()
            .as_ref()
            .is_some_and(|e| e.iter().any(|v| v.starts_with("PATH=")))
    );
    images.hold(image, "container:c1").unwrap();
    ok(&moor_in(&state, &["image", "rm", "held:1"]));
    ok(&moor_in(&state, &["image", "prune"]));
    assert!(
        dirs[0].join("hello.txt").is_file(),
        "a held snapshot survives prune"
    );
    images.release("container:c1").unwrap();
    ok(&moor_in(&state, &["image", "prune"]));
    assert_eq!(leftovers(&state), Vec::<String>::new());
}
