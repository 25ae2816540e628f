//! `moor builder prune`: cached steps go (a rebuild runs them again), a
//! tagged image never breaks, `moor image prune` leaves the cache alone,
//! and a planted entry pointing outside the store is never followed.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::common::instance::Instance;
use crate::common::text;

const BUSYBOX: &str = "localhost/moor-example/busybox:1";

fn build(host: &Instance, ctx: &Path) -> String {
    let mut c = host.command();
    c.args([
        "build",
        "--progress",
        "plain",
        "-t",
        "localhost/bprune/app:1",
    ])
    .arg(ctx);
    let out = c.output().expect("run moor build");
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

fn prune(host: &Instance, args: &[&str]) -> Output {
    let mut a = vec!["builder", "prune"];
    a.extend_from_slice(args);
    host.moor(&a)
}

#[track_caller]
fn prune_ok(host: &Instance, args: &[&str]) -> String {
    let out = prune(host, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

fn cached(out: &str) -> usize {
    out.lines().filter(|l| l.ends_with(" CACHED")).count()
}

#[test]
fn builder_prune_empties_the_cache_and_never_an_image() {
    let Some(host) = Instance::with_busybox("bprune", &[]) else {
        return;
    };
    let ctx = tempfile::tempdir().expect("context");
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {BUSYBOX} AS tool\nRUN echo tool > /tool && echo build-only > /scratch\nFROM {BUSYBOX}\nCOPY --from=tool /tool /tool\nRUN echo final-ran > /final\n"
        ),
    )
    .expect("write Dockerfile");
    // The `tool` stage's RUN layer also holds `/scratch`, which the image
    // never gets: no layer of the image is that layer (a RUN layer of
    // `/tool` alone would be byte for byte the `COPY --from` layer, which
    // the image holds, and its cache entry would rightly stay).
    let first = build(&host, ctx.path());
    assert_eq!(cached(&first), 0, "{first}");
    assert_eq!(cached(&build(&host, ctx.path())), 3);

    // Hostile: an entry planted as a link to a file outside the store.
    let outside = tempfile::tempdir().expect("temp dir");
    let target = outside.path().join("precious.json");
    fs::write(&target, r#"{"layers":[],"config":{}}"#).expect("write");
    let link = host
        .dir()
        .join("build-cache")
        .join(format!("{}.json", "ab".repeat(32)));
    std::os::unix::fs::symlink(&target, &link).expect("plant a link");

    // Recently used: `until` spares everything; a bad filter is refused.
    let out = prune_ok(&host, &["--filter", "until=1h"]);
    assert!(
        out.contains("removed 1 build cache entries"),
        "the link only: {out}"
    );
    assert!(target.exists(), "the link's target went: {out}");
    assert!(fs::symlink_metadata(&link).is_err(), "the link stayed");
    assert_eq!(cached(&build(&host, ctx.path())), 3);
    for bad in [
        &["--filter", "label=x"][..],
        &["--filter", "until"],
        &["--keep-storage", "lots"],
    ] {
        let out = prune(&host, bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }

    // `moor image prune` leaves the cache alone.
    host.moor_ok(&["image", "prune"]);
    assert_eq!(cached(&build(&host, ctx.path())), 3);

    // By default, what no image contains: the `tool` stage's step reruns,
    // the image's own steps stay cached.
    prune_ok(&host, &[]);
    let again = build(&host, ctx.path());
    assert_eq!(cached(&again), 2, "{again}");
    assert!(
        again.contains("[tool 2/2] RUN echo tool > /tool && echo build-only > /scratch"),
        "{again}"
    );

    // --all: every step runs again, and the image still works meanwhile.
    let out = prune_ok(&host, &["--all"]);
    assert!(out.contains("keeps 0 entries"), "{out}");
    let saved = tempfile::tempdir().expect("temp dir");
    let archive = saved.path().join("app.tar");
    host.moor_ok(&[
        "image",
        "save",
        "-o",
        archive.to_str().expect("utf-8"),
        "localhost/bprune/app:1",
    ]);
    let rebuilt = build(&host, ctx.path());
    assert_eq!(cached(&rebuilt), 0, "{rebuilt}");
    assert_eq!(
        rebuilt.lines().filter(|l| l.contains(" DONE ")).count(),
        6,
        "two FROMs, three steps and the export: {rebuilt}"
    );
}
