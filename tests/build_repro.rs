//! Reproducible builds: with `SOURCE_DATE_EPOCH` (or `moor build
//! --reproducible`), the same context built on "two machines" — two state
//! dirs, other mtimes and atimes of the context's files, another umask,
//! another hostname, another time — gives the same image, byte for byte;
//! without it the image's times are the build's, as Docker's.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::instance::Instance;
use crate::common::text;

const BUSYBOX: &str = "localhost/moor-example/busybox:1";
const EPOCH: u64 = 1_700_000_000;
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20";

fn dockerfile() -> String {
    format!(
        r#"FROM {BUSYBOX}
COPY app/ /app/
COPY run.sh /usr/local/bin/
RUN echo built > /built && mkdir -p /var/out && echo x > /var/out/stamp && chmod 0755 /usr/local/bin/run.sh
WORKDIR /srv/new
ENV GREETING=hi
CMD ["/usr/local/bin/run.sh"]
"#
    )
}

/// A context with the same content as any other this makes, but files
/// written in `order` and given `mtime` (and an atime of their own).
fn context(order: &[&str], mtime: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("context dir");
    let files = [
        ("Dockerfile", dockerfile()),
        ("app/a.txt", "a\n".to_string()),
        ("app/sub/b.txt", "b\n".to_string()),
        ("run.sh", "#!/bin/sh\necho hi\n".to_string()),
    ];
    for name in order {
        let (path, content) = files
            .iter()
            .find(|(p, _)| p == name)
            .expect("a file of the context");
        let p = dir.path().join(path);
        let parent = p.parent().expect("parent");
        fs::create_dir_all(parent).expect("mkdir");
        fs::write(&p, content).expect("write context file");
        set_mode(&p, 0o644);
    }
    for d in ["app", "app/sub"] {
        set_mode(&dir.path().join(d), 0o755);
    }
    for p in walk(dir.path()) {
        let t = UNIX_EPOCH + Duration::from_secs(mtime);
        let a = UNIX_EPOCH + Duration::from_secs(mtime / 2);
        fs::File::open(&p)
            .expect("open")
            .set_times(fs::FileTimes::new().set_modified(t).set_accessed(a))
            .expect("set times");
    }
    dir
}

/// Gives every file of `dir` to `id`:`id`.
fn chown_all(dir: &Path, id: u32) {
    for p in walk(dir) {
        std::os::unix::fs::lchown(&p, Some(id), Some(id)).expect("chown");
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `moor build ARGS… CTX` on `host`, with `env` set, `SOURCE_DATE_EPOCH`
/// unset unless `env` sets it, under `umask` and, when `hostname` is
/// given, in a UTS namespace of its own with that hostname.
fn build(
    host: &Instance,
    ctx: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    umask: &str,
    hostname: Option<&str>,
) -> Output {
    let moor = host.command();
    let mut c = match hostname {
        Some(h) => {
            let mut c = Command::new("unshare");
            c.args(["--uts", "sh", "-c"])
                .arg(format!("hostname {h} && umask {umask} && exec \"$@\""));
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("umask {umask} && exec \"$@\""));
            c
        }
    };
    c.arg("sh").arg(moor.get_program()).arg("build");
    c.args(args).arg(ctx);
    c.env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in moor.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.envs(env.iter().copied());
    c.output().expect("run moor build")
}

#[track_caller]
fn build_ok(
    host: &Instance,
    ctx: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    umask: &str,
    hostname: Option<&str>,
) {
    let out = build(host, ctx, args, env, umask, hostname);
    assert!(
        out.status.success(),
        "moor build {args:?} {env:?} failed ({}):\n{}",
        out.status,
        text(&out)
    );
}

/// The stored image `reference`: (manifest digest, config digest).
fn image(host: &Instance, reference: &str) -> (String, String) {
    let image = host
        .image(reference)
        .unwrap_or_else(|| panic!("{reference} not in the image store"));
    (
        image["digest"].as_str().expect("digest").to_owned(),
        image["config"].as_str().expect("config").to_owned(),
    )
}

fn blob(host: &Instance, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    fs::read(host.dir().join("blobs/sha256").join(hex)).expect("blob")
}

fn json_blob(host: &Instance, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&blob(host, digest)).expect("JSON blob")
}

/// Seconds since the epoch of an RFC 3339 UTC time (`…Z`).
fn seconds(rfc3339: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 { rfc3339[r].parse().expect("a number") };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

#[test]
fn the_same_context_gives_the_same_image_on_two_hosts() {
    let Some(a) = Instance::with_busybox("repro", &["unshare", "hostname"]) else {
        return;
    };
    // The second host gets the first's base image (imported anew, busybox
    // images differ by their import time).
    let b = Instance::beside(&a);
    let saved = tempfile::tempdir().expect("temp dir");
    let base_tar = saved.path().join("base.tar");
    let base_tar = base_tar.to_str().expect("utf-8");
    a.moor_ok(&["image", "save", "-o", base_tar, BUSYBOX]);
    b.moor_ok(&["image", "import", base_tar]);
    assert_eq!(
        image(&a, BUSYBOX),
        image(&b, BUSYBOX),
        "the base images differ: the test proves nothing"
    );
    let epoch = EPOCH.to_string();
    let sde = [("SOURCE_DATE_EPOCH", epoch.as_str())];

    let ctx_a = context(
        &["Dockerfile", "app/a.txt", "app/sub/b.txt", "run.sh"],
        1_800_000_000,
    );
    build_ok(
        &a,
        ctx_a.path(),
        &["-t", "localhost/repro/app:1"],
        &sde,
        "022",
        None,
    );
    // Another host: another state dir, context, order, mtimes and atimes,
    // umask, hostname, and (a second later at least) another time.
    std::thread::sleep(Duration::from_millis(1100));
    let ctx_b = context(
        &["run.sh", "app/sub/b.txt", "app/a.txt", "Dockerfile"],
        1_900_000_000,
    );
    // A checkout another user owns.
    chown_all(ctx_b.path(), 1000);
    build_ok(
        &b,
        ctx_b.path(),
        &["-t", "localhost/repro/app:1"],
        &sde,
        "077",
        Some("moor-repro-other"),
    );
    let (digest, config) = image(&a, "localhost/repro/app:1");
    assert_eq!(
        (digest.clone(), config.clone()),
        image(&b, "localhost/repro/app:1"),
        "two reproducible builds of one context differ"
    );

    // Every time the build wrote is the epoch; the base's are kept.
    let cfg = json_blob(&a, &config);
    let created = cfg["created"].as_str().expect("created");
    assert!(created.starts_with(EPOCH_RFC3339), "{created}");
    let history = cfg["history"].as_array().expect("history");
    let base_history = json_blob(&a, &image(&a, BUSYBOX).1)["history"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(history.len(), base_history + 6, "{history:?}");
    for h in &history[base_history..] {
        let c = h["created"].as_str().expect("created");
        assert!(c.starts_with(EPOCH_RFC3339), "{h}");
    }

    // The layers the build wrote: no time later than the epoch, and the
    // file the RUN wrote (now) clamped to it.
    let manifest = json_blob(&a, &digest);
    let layers = manifest["layers"].as_array().expect("layers");
    let base_layers = json_blob(&a, &image(&a, BUSYBOX).0)["layers"]
        .as_array()
        .map_or(0, Vec::len);
    let built = &layers[base_layers..];
    assert_eq!(built.len(), 4, "COPY, COPY, RUN, WORKDIR: {built:?}");
    let mut saw_built = false;
    for l in built {
        let raw = blob(&a, l["digest"].as_str().expect("layer digest"));
        let mut archive = tar::Archive::new(raw.as_slice());
        for e in archive.entries().expect("entries") {
            let e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            let h = e.header();
            let mtime = h.mtime().expect("mtime");
            assert!(mtime <= EPOCH, "{path}: mtime {mtime} > {EPOCH}");
            assert!(
                h.as_gnu()
                    .is_none_or(|g| g.atime().unwrap_or(0) == 0 && g.ctime().unwrap_or(0) == 0),
                "{path}: an atime or ctime"
            );
            assert_eq!(h.username_bytes().unwrap_or_default(), b"", "{path}");
            assert_eq!(h.groupname_bytes().unwrap_or_default(), b"", "{path}");
            if path == "built" {
                assert_eq!(mtime, EPOCH, "the file RUN wrote");
                saw_built = true;
            }
            if path == "app/a.txt" {
                assert_eq!(mtime, EPOCH, "a context file newer than the epoch");
                assert_eq!(h.mode().expect("mode") & 0o7777, 0o644);
            }
        }
    }
    assert!(saw_built, "the RUN layer has no /built");

    // `--reproducible` is SOURCE_DATE_EPOCH=0 when it is unset.
    build_ok(
        &a,
        ctx_a.path(),
        &["--reproducible", "-t", "localhost/repro/zero:1"],
        &[],
        "022",
        None,
    );
    build_ok(
        &b,
        ctx_b.path(),
        &["-t", "localhost/repro/zero:1"],
        &[("SOURCE_DATE_EPOCH", "0")],
        "077",
        None,
    );
    let zero = image(&a, "localhost/repro/zero:1");
    assert_eq!(zero, image(&b, "localhost/repro/zero:1"));
    assert_ne!(zero.1, config, "another epoch, another image");
    let created = json_blob(&a, &zero.1)["created"]
        .as_str()
        .expect("created")
        .to_owned();
    assert!(created.starts_with("1970-01-01T00:00:00"), "{created}");
}

#[test]
fn without_source_date_epoch_times_are_the_builds() {
    let Some(host) = Instance::with_busybox("reprn", &[]) else {
        return;
    };
    let ctx = context(
        &["Dockerfile", "app/a.txt", "app/sub/b.txt", "run.sh"],
        1_000_000_000,
    );
    chown_all(ctx.path(), 4321);
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_secs() as i64
    };
    let before = now();
    build_ok(
        &host,
        ctx.path(),
        &["-t", "localhost/reprn/app:1"],
        &[],
        "022",
        None,
    );
    let after = now();
    let (_, config) = image(&host, "localhost/reprn/app:1");
    let cfg = json_blob(&host, &config);
    let created = seconds(cfg["created"].as_str().expect("created"));
    assert!(
        before - 2 <= created && created <= after + 2,
        "created {created} is not the build's time ({before}..{after})"
    );
    // Context files keep their times (older than now), as in Docker.
    let manifest = json_blob(&host, &image(&host, "localhost/reprn/app:1").0);
    let layers = manifest["layers"].as_array().expect("layers");
    let base_layers = json_blob(&host, &image(&host, BUSYBOX).0)["layers"]
        .as_array()
        .map_or(0, Vec::len);
    let raw = blob(
        &host,
        layers[base_layers]["digest"].as_str().expect("digest"),
    );
    let mut archive = tar::Archive::new(raw.as_slice());
    let a_txt = archive
        .entries()
        .expect("entries")
        .map(|e| e.expect("entry"))
        .find(|e| e.path().expect("path").display().to_string() == "app/a.txt")
        .expect("app/a.txt in the COPY layer");
    assert_eq!(a_txt.header().mtime().expect("mtime"), 1_000_000_000);
    // Owned by root in the image, as Docker writes context files, whoever
    // owns the checkout.
    assert_eq!(
        (
            a_txt.header().uid().expect("uid"),
            a_txt.header().gid().expect("gid")
        ),
        (0, 0)
    );
}

#[test]
fn a_hostile_source_date_epoch_is_refused_and_tags_nothing() {
    let Some(host) = Instance::with_busybox("reprh", &[]) else {
        return;
    };
    let ctx = context(
        &["Dockerfile", "app/a.txt", "app/sub/b.txt", "run.sh"],
        1_000_000_000,
    );
    for bad in [
        "-1",
        "1e9",
        "0x10",
        "soon",
        "99999999999999999999",
        "253402300800",
    ] {
        let out = build(
            &host,
            ctx.path(),
            &["--reproducible", "-t", "localhost/reprh/app:1"],
            &[("SOURCE_DATE_EPOCH", bad)],
            "022",
            None,
        );
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("SOURCE_DATE_EPOCH={bad}")),
            "{bad}: {}",
            text(&out)
        );
    }
    let images = host.moor_ok(&["images"]);
    assert!(!images.contains("localhost/reprh/app"), "{images}");
}
