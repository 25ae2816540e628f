//! Pulls from a real registry.

use std::os::unix::fs::FileTypeExt;

use super::layers::{self, Layer, file, tar_of};
use super::registry::Registry;
use super::{leftovers, moor_in, ok, stderr};

fn snapshot_of(state: &std::path::Path, chain_id: &str) -> std::path::PathBuf {
    state
        .join("snapshots")
        .join(chain_id.trim_start_matches("sha256:"))
}

#[test]
fn pull_multi_layer_image_then_again_downloads_nothing_then_rm_prune_leave_nothing() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let image = layers::standard_image();
    registry.push("test/busybox", "1.36", &image);
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let reference = format!("{}/test/busybox:1.36", registry.addr);

    let first = moor_in(&state, &["image", "pull", &reference]);
    let out = ok(&first);
    assert!(out.contains(&image.manifest_digest), "{out}");
    assert!(
        !stderr(&first).contains("finished: 0 B"),
        "{}",
        stderr(&first)
    );

    let v: serde_json::Value =
        serde_json::from_str(&ok(&moor_in(&state, &["images", "--json"]))).unwrap();
    let rec = &v[0];
    assert_eq!(rec["digest"], image.manifest_digest.as_str());
    assert_eq!(rec["refs"][0], reference.as_str());
    let expected_size: usize = image.manifest.len()
        + image.config.len()
        + image.layers.iter().map(|l| l.blob.len()).sum::<usize>();
    assert_eq!(rec["size"], expected_size as u64);
    let table = ok(&moor_in(&state, &["images"]));
    assert!(
        table.contains(&reference) && table.contains(&image.manifest_digest[..19]),
        "{table}"
    );

    // Layers unpacked in overlay form: whiteout and opaque directory.
    let chains: Vec<String> = rec["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["chain_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        snapshot_of(&state, &chains[0])
            .join("bin/busybox")
            .is_file()
    );
    let wh =
        std::fs::symlink_metadata(snapshot_of(&state, &chains[1]).join("etc/hostname")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "whiteout became a 0/0 character device"
    );
    assert_eq!(
        std::fs::read(snapshot_of(&state, &chains[1]).join("data/blob.bin"))
            .unwrap()
            .len(),
        300_000
    );
    let www = snapshot_of(&state, &chains[2]).join("www");
    assert_eq!(
        xattr(&www, "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );

    let before = leftovers(&state);
    let second = moor_in(&state, &["image", "pull", &reference]);
    ok(&second);
    let err = stderr(&second);
    assert!(
        err.contains("finished: 0 B downloaded"),
        "second pull downloads nothing: {err}"
    );
    assert_eq!(err.matches("already present").count(), 3, "{err}");
    assert_eq!(leftovers(&state), before);

    // By digest too, from the store without downloading.
    let by_digest = format!("{}/test/busybox@{}", registry.addr, image.manifest_digest);
    let third = moor_in(&state, &["image", "pull", &by_digest]);
    ok(&third);
    assert!(
        stderr(&third).contains("finished: 0 B downloaded"),
        "{}",
        stderr(&third)
    );

    ok(&moor_in(&state, &["image", "rm", &reference]));
    let table = ok(&moor_in(&state, &["images"]));
    assert!(
        table.contains("@sha256:"),
        "the digest reference still names the image: {table}"
    );
    ok(&moor_in(&state, &["image", "rm", &by_digest]));
    let out = ok(&moor_in(&state, &["image", "prune"]));
    assert!(out.contains("3 snapshots"), "{out}");
    assert_eq!(leftovers(&state), Vec::<String>::new());
}

#[test]
fn two_images_sharing_a_base_layer_store_it_once() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let base = layers::base_layer();
    let a = layers::image(vec![
        base.clone(),
        Layer::gzip(&tar_of(|b| file(b, "a.txt", b"a"))),
    ]);
    let b = layers::image(vec![
        base.clone(),
        Layer::gzip(&tar_of(|b| file(b, "b.txt", b"b"))),
    ]);
    registry.push("test/a", "1", &a);
    registry.push("test/b", "1", &b);
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    ok(&moor_in(
        &state,
        &["image", "pull", &format!("{}/test/a:1", registry.addr)],
    ));
    let second = moor_in(
        &state,
        &["image", "pull", &format!("{}/test/b:1", registry.addr)],
    );
    ok(&second);
    assert_eq!(
        stderr(&second).matches("already present").count(),
        1,
        "base reused: {}",
        stderr(&second)
    );
    let left = leftovers(&state);
    assert_eq!(
        left.iter().filter(|l| l.starts_with("snapshots/")).count(),
        3,
        "{left:?}"
    );
    // 2 manifests + 2 configs + base + 2 tops.
    assert_eq!(
        left.iter().filter(|l| l.starts_with("blobs/")).count(),
        7,
        "{left:?}"
    );
    // Removing one image keeps the shared base for the other.
    ok(&moor_in(
        &state,
        &["image", "rm", &format!("{}/test/a:1", registry.addr)],
    ));
    ok(&moor_in(&state, &["image", "prune"]));
    let left = leftovers(&state);
    assert_eq!(
        left.iter().filter(|l| l.starts_with("snapshots/")).count(),
        2,
        "{left:?}"
    );
    assert!(left.contains(&format!(
        "blobs/sha256/{}",
        layers::digest(&base.blob).trim_start_matches("sha256:")
    )));
}

#[test]
fn pull_resolves_an_index_to_the_host_platform() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let host = layers::image(vec![Layer::gzip(&tar_of(|b| {
        file(b, "arch", layers::host_arch().as_bytes())
    }))]);
    let other_arch = if layers::host_arch() == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let other = layers::image_for(
        vec![Layer::gzip(&tar_of(|b| {
            file(b, "arch", other_arch.as_bytes())
        }))],
        other_arch,
    );
    registry.push("test/multi", "other", &other);
    registry.push("test/multi", "host", &host);
    let index = layers::index(&[(&other, other_arch), (&host, layers::host_arch())]);
    registry.push_manifest("test/multi", "1", layers::OCI_INDEX, &index);
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let out = ok(&moor_in(
        &state,
        &["image", "pull", &format!("{}/test/multi:1", registry.addr)],
    ));
    assert!(out.contains(&host.manifest_digest), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&moor_in(&state, &["images", "--json"]))).unwrap();
    assert_eq!(v[0]["index"], layers::digest(&index).as_str());
    assert_eq!(
        v[0]["platform"],
        format!("linux/{}", layers::host_arch()).as_str()
    );
}

fn xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64];
    let n = rustix::fs::getxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// `pull = "always"` follows its tag on every `moor apply`, as
/// `docker compose up` with `pull_policy: always` does: a re-pushed tag is
/// pulled and its container replaced; an unmoved one replaces nothing; a
/// registry that cannot be reached leaves the container on the image it
/// runs (the apply succeeds, with a warning).
#[test]
fn pull_always_follows_a_re_pushed_tag_on_each_apply() {
    let Some(host) =
        crate::common::instance::Instance::with_busybox("pullal", &["docker-registry"])
    else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let app = |version: &str| {
        let v = version.to_string();
        layers::image(vec![
            layers::base_layer(),
            Layer::plain(&tar_of(|b| file(b, "version", v.as_bytes()))),
        ])
    };
    let reference = format!("{}/pullal/app:1", registry.addr);
    registry.push("pullal/app", "1", &app("one"));
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("pullal");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("stack.toml"),
        format!(
            "[images.app]\nref = \"{reference}\"\npull = \"always\"\n\n\
             [containers.web]\nimage = \"app\"\nnetwork_mode = \"none\"\n\
             command = [\"sh\", \"-c\", \"exec sleep 3600\"]\n"
        ),
    )
    .expect("write");
    let dir = dir.to_str().expect("utf-8");
    let version = || {
        host.moor_ok(&["exec", "web", "--", "cat", "/version"])
            .trim()
            .to_string()
    };

    host.moor_ok(&["apply", "-p", "pullal", dir]);
    assert_eq!(version(), "one");
    let pid = host.pid("web").expect("running");

    // Nothing moved: nothing to do.
    let plan = host.moor(&["plan", "-p", "pullal", dir]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    host.moor_ok(&["apply", "-p", "pullal", dir]);
    assert_eq!(host.pid("web"), Some(pid), "an unmoved tag replaced web");

    // The tag is pushed again: the plan says so, apply pulls and replaces.
    let two = app("two");
    registry.push("pullal/app", "1", &two);
    let plan = host.moor(&["plan", "-p", "pullal", dir]);
    let said = String::from_utf8_lossy(&plan.stdout).to_string();
    assert_eq!(plan.status.code(), Some(2), "{said}{}", stderr(&plan));
    assert!(said.contains("tag moved to"), "{said}");
    host.moor_ok(&["apply", "-p", "pullal", dir]);
    assert_eq!(version(), "two");
    assert_ne!(host.pid("web"), Some(pid));
    let pid = host.pid("web").expect("running");

    // The registry is gone: the apply keeps web on what it runs.
    drop(registry);
    let out = host.moor(&["apply", "-p", "pullal", dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pull = \"always\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(host.pid("web"), Some(pid));
    assert_eq!(version(), "two");
}
