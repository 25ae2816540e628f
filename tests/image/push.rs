//! `moor image push` against a real registry (Debian's `docker-registry`):
//! what a pull then finds, what is sent once only, mounts between
//! repositories, and credentials.

use std::path::Path;

use super::auth::{HTPASSWD, PASSWORD, auth_file, basic};
use super::layers::{self, Layer, file, tar_of};
use super::registry::Registry;
use super::{moor_in, ok, stderr, stdout};

fn image() -> layers::TestImage {
    layers::image(vec![
        Layer::gzip(&tar_of(|b| file(b, "base", b"base layer\n"))),
        Layer::gzip(&tar_of(|b| file(b, "app", &[7u8; 200_000]))),
    ])
}

/// Lines of a push's output that say what happened to each blob.
fn said(out: &str, what: &str) -> usize {
    out.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn push_then_pull_gives_the_same_digest_and_sends_nothing_twice() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let img = image();
    registry.push("team/src", "1", &img);
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let src = format!("{}/team/src:1", registry.addr);
    ok(&moor_in(&a, &["image", "pull", &src]));

    // A name the image does not have yet is refused, with the way out.
    let dst = format!("{}/team/dst:2", registry.addr);
    let out = moor_in(&a, &["image", "push", &dst]);
    assert!(!out.status.success(), "pushed an image it does not have");
    assert!(
        stderr(&out).contains(&format!("moor image tag SRC {dst}")),
        "{}",
        stderr(&out)
    );
    // A digest is not a place to push to.
    let out = moor_in(
        &a,
        &[
            "image",
            "push",
            &format!("{}/team/dst@{}", registry.addr, img.manifest_digest),
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a digest"), "{}", stderr(&out));

    // Into another repository of the same registry: every blob is mounted
    // from the one the image came from, none sent.
    ok(&moor_in(&a, &["image", "tag", &src, &dst]));
    let out = ok(&moor_in(&a, &["image", "push", &dst]));
    assert_eq!(said(&out, "mounted from team/src"), 3, "{out}");
    assert_eq!(said(&out, "pushed ("), 0, "{out}");
    assert!(
        out.contains(&format!("pushed {dst} {}", img.manifest_digest)),
        "{out}"
    );

    // Again: the registry has everything.
    let out = ok(&moor_in(&a, &["image", "push", &dst]));
    assert_eq!(said(&out, "already exists"), 3, "{out}");

    // A fresh state dir pulls exactly that image.
    let b = tmp.path().join("b");
    let out = ok(&moor_in(&b, &["image", "pull", &dst]));
    assert!(out.contains(&img.manifest_digest), "{out}");
}

#[test]
fn push_sends_only_to_its_own_registry_and_with_its_own_credentials() {
    let Some(open) = Registry::start() else {
        return;
    };
    let Some(locked) = Registry::start_with_auth(HTPASSWD, basic()) else {
        return;
    };
    let img = image();
    open.push("team/src", "1", &img);
    let tmp = tempfile::tempdir().unwrap();
    for d in ["other", "own"] {
        std::fs::create_dir(tmp.path().join(d)).unwrap();
    }
    let state = tmp.path().join("s");
    let src = format!("{}/team/src:1", open.addr);
    ok(&moor_in(&state, &["image", "pull", &src]));
    let dst = format!("{}/team/app:1", locked.addr);
    ok(&moor_in(&state, &["image", "tag", &src, &dst]));

    let push = |auth: Option<&Path>| {
        let mut args = vec!["image", "push", &dst];
        let auth = auth.map(|a| a.to_str().unwrap().to_string());
        if let Some(a) = auth.as_deref() {
            args.extend(["--registry-auth", a]);
        }
        moor_in(&state, &args)
    };
    // No credentials for it: refused by the registry, and said so.
    let out = push(None);
    assert!(!out.status.success(), "pushed without credentials");
    assert!(stderr(&out).contains("authenticate to"), "{}", stderr(&out));

    // Credentials for another registry (the open one) are not sent to it.
    let other = auth_file(&tmp.path().join("other"), &open.addr);
    let out = push(Some(&other));
    assert!(
        !out.status.success(),
        "pushed with another registry's entry"
    );
    assert!(
        stderr(&out).contains(&format!(
            "the credentials file has none for {}",
            locked.addr
        )),
        "{}",
        stderr(&out)
    );

    // Its own: every blob sent (another registry: nothing to mount), the
    // password in no output.
    let own = auth_file(&tmp.path().join("own"), &locked.addr);
    let out = push(Some(&own));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}");
    assert_eq!(said(&text, "pushed ("), 3, "{text}");
    assert!(!text.contains(PASSWORD), "{text}");

    let fresh = tmp.path().join("fresh");
    let out = moor_in(
        &fresh,
        &[
            "image",
            "pull",
            "--registry-auth",
            own.to_str().unwrap(),
            &dst,
        ],
    );
    assert!(ok(&out).contains(&img.manifest_digest));
}
