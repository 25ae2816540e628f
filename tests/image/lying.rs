//! Registries that lie, break or send bombs: each pull fails with an error
//! that says what was wrong, and nothing unverified is kept.

use super::fake::{FakeRegistry, Reply};
use super::layers::{self, Layer, digest, file, tar_of};
use super::{leftovers, moor_in, stderr};

fn small_image() -> layers::TestImage {
    layers::image(vec![
        Layer::gzip(&tar_of(|b| file(b, "one.txt", b"one"))),
        Layer::gzip(&tar_of(|b| file(b, "two.bin", &vec![2u8; 2_000_000]))),
    ])
}

/// Blobs in the store that are not the image's honest blobs.
fn assert_no_bad_blobs(state: &std::path::Path, image: &layers::TestImage) {
    let mut honest: Vec<String> = image.layers.iter().map(|l| digest(&l.blob)).collect();
    honest.push(digest(&image.config));
    honest.push(image.manifest_digest.clone());
    for l in leftovers(state) {
        if let Some(hex) = l.strip_prefix("blobs/sha256/") {
            assert!(
                honest.contains(&format!("sha256:{hex}")),
                "unexpected blob {l}"
            );
        }
        assert!(!l.starts_with("ingest/"), "ingest file left behind: {l}");
        assert!(
            !l.starts_with("snapshots/.tmp"),
            "temporary snapshot left behind: {l}"
        );
    }
}

#[test]
fn blob_whose_content_does_not_match_its_digest_is_rejected() {
    let image = small_image();
    let fake = FakeRegistry::start(0);
    fake.serve_image("lie/x", "1", &image);
    let layer = digest(&image.layers[0].blob);
    let mut forged = image.layers[0].blob.clone();
    let last = forged.len() - 10;
    forged[last] ^= 0xff;
    fake.route(
        &format!("/v2/lie/x/blobs/{layer}"),
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: forged,
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = moor_in(
        tmp.path(),
        &[
            "image",
            "pull",
            "--concurrency",
            "1",
            &format!("{}/lie/x:1", fake.host()),
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("does not match its digest") && err.contains(&layer),
        "{err}"
    );
    assert!(
        !tmp.path()
            .join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:"))
            .exists()
    );
    assert_no_bad_blobs(tmp.path(), &image);
}

#[test]
fn blob_longer_than_its_declared_size_is_rejected() {
    let image = small_image();
    let fake = FakeRegistry::start(0);
    fake.serve_image("lie/x", "1", &image);
    let layer = digest(&image.layers[1].blob);
    let mut longer = image.layers[1].blob.clone();
    longer.extend_from_slice(&[0u8; 4096]);
    fake.route(
        &format!("/v2/lie/x/blobs/{layer}"),
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: longer,
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = moor_in(
        tmp.path(),
        &["image", "pull", &format!("{}/lie/x:1", fake.host())],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("longer than its declared size") && err.contains(&layer),
        "{err}"
    );
    assert_no_bad_blobs(tmp.path(), &image);
}

#[test]
fn manifest_fetched_by_digest_that_hashes_differently_is_rejected() {
    let image = small_image();
    let other = layers::image(vec![Layer::gzip(&tar_of(|b| file(b, "evil", b"evil")))]);
    let fake = FakeRegistry::start(0);
    fake.serve_image("lie/x", "1", &image);
    fake.route(
        &format!("/v2/lie/x/manifests/{}", image.manifest_digest),
        Reply::Body {
            content_type: layers::OCI_MANIFEST.into(),
            body: other.manifest.clone(),
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = moor_in(
        tmp.path(),
        &[
            "image",
            "pull",
            &format!("{}/lie/x@{}", fake.host(), image.manifest_digest),
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("hashes to {}", other.manifest_digest))
            && err.contains(&image.manifest_digest),
        "{err}"
    );
    assert_eq!(
        leftovers(tmp.path()),
        Vec::<String>::new(),
        "nothing stored"
    );
}

#[test]
fn registry_stopped_mid_pull_fails_cleanly_and_the_retry_reuses_finished_layers() {
    let image = small_image();
    let first_layer = digest(&image.layers[0].blob);
    let big_layer = digest(&image.layers[1].blob);
    let fake = FakeRegistry::start(0);
    let port = fake.addr.port();
    fake.serve_image("flaky/x", "1", &image);
    fake.route(
        &format!("/v2/flaky/x/blobs/{big_layer}"),
        Reply::Cut {
            body: image.layers[1].blob.clone(),
            after: image.layers[1].blob.len() / 2,
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let reference = format!("127.0.0.1:{port}/flaky/x:1");
    let out = moor_in(tmp.path(), &["image", "pull", &reference]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&big_layer) || err.contains("read http"),
        "the error names the failed download: {err}"
    );
    assert_no_bad_blobs(tmp.path(), &image);
    assert!(
        tmp.path()
            .join("blobs/sha256")
            .join(first_layer.trim_start_matches("sha256:"))
            .exists(),
        "finished layer kept"
    );
    drop(fake);

    // The registry comes back on the same port.
    let fake = FakeRegistry::start(port);
    fake.serve_image("flaky/x", "1", &image);
    let out = moor_in(tmp.path(), &["image", "pull", &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    let requests = fake.requests();
    assert!(
        !requests.iter().any(|r| r.ends_with(&first_layer)),
        "finished layer not fetched again: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.ends_with(&big_layer)),
        "{requests:?}"
    );
}

#[test]
fn gzip_bomb_is_stopped_at_the_size_cap() {
    // 96 MiB of zeros in a tar, about 100 KiB compressed.
    let bomb_tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let size = 96u64 << 20;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(
            &mut h,
            "zeros",
            std::io::Read::take(std::io::repeat(0), size),
        )
        .unwrap();
        b.into_inner().unwrap()
    };
    let image = layers::image(vec![Layer::gzip(&bomb_tar)]);
    assert!(image.layers[0].blob.len() < 2 << 20);
    drop(bomb_tar);
    let fake = FakeRegistry::start(0);
    fake.serve_image("bomb/x", "1", &image);
    let tmp = tempfile::tempdir().unwrap();
    let out = moor_in(
        tmp.path(),
        &[
            "image",
            "pull",
            "--max-layer-size",
            "16m",
            &format!("{}/bomb/x:1", fake.host()),
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("beyond the limit of 16777216 bytes"), "{err}");
    assert!(
        !leftovers(tmp.path())
            .iter()
            .any(|l| l.starts_with("snapshots/")),
        "no snapshot left: {:?}",
        leftovers(tmp.path())
    );
}
