//! `moor image tag|history|inspect|save|push`: Docker's image tools on moor's
//! store — a built image tagged, its history and config read back, saved
//! and imported into a fresh state dir where it runs, and loaded and run by
//! Docker Engine.

use std::fs;
use std::time::Duration;

use crate::build::Dockerd;
use crate::common::instance::Instance;
use crate::common::{text, wait_for};

const BUSYBOX: &str = "localhost/moor-example/busybox:1";

/// Builds a small image: one `RUN` layer of 100 000 bytes, an `ENV`.
fn built(host: &Instance, tag: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().expect("context");
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {BUSYBOX}\n\
             RUN head -c 100000 /dev/zero > /blob && echo saved-content > /marker\n\
             ENV TOOLS=yes\n\
             CMD [\"sh\", \"-c\", \"cat /marker; echo tools=$TOOLS; echo done; exec sleep 3600\"]\n"
        ),
    )
    .expect("Dockerfile");
    host.moor_ok(&[
        "build",
        "-q",
        "-t",
        tag,
        ctx.path().to_str().expect("utf-8"),
    ]);
    ctx
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn image_digest(host: &Instance, name: &str) -> Option<String> {
    let list = json(&host.moor_ok(&["images", "--json"]));
    list.as_array()
        .expect("array")
        .iter()
        .find(|i| {
            i["refs"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == name))
        })
        .map(|i| i["digest"].as_str().expect("digest").to_string())
}

#[test]
fn tag_adds_a_reference_and_refuses_digests_and_unknown_images() {
    let Some(host) = Instance::with_busybox("imtt", &[]) else {
        return;
    };
    let out = host.moor_ok(&["image", "tag", BUSYBOX, "localhost/imtt/copy:2"]);
    assert!(out.contains("tagged localhost/imtt/copy:2"), "{out}");
    let original = image_digest(&host, BUSYBOX).expect("busybox listed");
    assert_eq!(
        image_digest(&host, "localhost/imtt/copy:2").as_deref(),
        Some(original.as_str())
    );
    // A short name is normalised as Docker does.
    host.moor_ok(&["image", "tag", &original[..19], "short:1"]);
    assert!(image_digest(&host, "docker.io/library/short:1").is_some());

    for (src, dst) in [
        (
            BUSYBOX,
            "localhost/imtt/pinned@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (BUSYBOX, "Upper/Case:1"),
        (BUSYBOX, "bad name"),
        ("localhost/imtt/nothing:1", "localhost/imtt/x:1"),
    ] {
        let out = host.moor(&["image", "tag", src, dst]);
        assert!(
            !out.status.success(),
            "tag {src} {dst} succeeded: {}",
            text(&out)
        );
        let why = if dst.contains('@') {
            "a digest names content"
        } else if src.contains("nothing") {
            "no image named"
        } else {
            "image reference"
        };
        assert!(text(&out).contains(why), "tag {src} {dst}: {}", text(&out));
    }
    assert!(image_digest(&host, "localhost/imtt/x:1").is_none());

    // The copy keeps the image when the original name goes.
    host.moor_ok(&["image", "rm", BUSYBOX]);
    assert_eq!(
        image_digest(&host, "localhost/imtt/copy:2").as_deref(),
        Some(original.as_str())
    );
}

#[test]
fn history_and_inspect_read_the_built_config() {
    let Some(host) = Instance::with_busybox("imth", &[]) else {
        return;
    };
    let _ctx = built(&host, "localhost/imth/app:1");

    let rows = json(&host.moor_ok(&["image", "history", "--json", "localhost/imth/app:1"]));
    let rows = rows.as_array().expect("array");
    let by: Vec<&str> = rows
        .iter()
        .map(|r| r["created_by"].as_str().expect("created_by"))
        .collect();
    assert!(by[0].contains("CMD"), "newest first: {by:?}");
    let run = rows
        .iter()
        .find(|r| {
            r["created_by"]
                .as_str()
                .is_some_and(|b| b.contains("head -c 100000"))
        })
        .unwrap_or_else(|| panic!("no RUN step: {by:?}"));
    let size = run["size"].as_u64().expect("size");
    assert!((100_000..200_000).contains(&size), "RUN layer size {size}");
    let env = rows
        .iter()
        .find(|r| {
            r["created_by"]
                .as_str()
                .is_some_and(|b| b.contains("TOOLS"))
        })
        .expect("ENV step");
    assert_eq!(env["size"], 0, "ENV makes no layer");
    assert!(env["layer"].is_null());
    let table = host.moor_ok(&["image", "history", "localhost/imth/app:1"]);
    assert!(table.starts_with("CREATED "), "{table}");
    assert!(
        table.contains("CREATED BY") && table.contains("KiB"),
        "{table}"
    );

    let all = json(&host.moor_ok(&["image", "inspect", "localhost/imth/app:1", BUSYBOX]));
    let all = all.as_array().expect("array");
    assert_eq!(all.len(), 2);
    let app = &all[0];
    assert!(app["Id"].as_str().expect("Id").starts_with("sha256:"));
    assert_eq!(app["RepoTags"], serde_json::json!(["localhost/imth/app:1"]));
    let env = app["Config"]["Env"].as_array().expect("Env");
    assert!(env.iter().any(|e| e == "TOOLS=yes"), "{env:?}");
    let base_layers = all[1]["RootFS"]["Layers"].as_array().expect("layers").len();
    assert_eq!(
        app["RootFS"]["Layers"].as_array().expect("layers").len(),
        base_layers + 1,
        "one RUN layer on the base"
    );
    assert!(app["Size"].as_u64().expect("Size") >= 100_000);

    let out = host.moor(&[
        "image",
        "inspect",
        "localhost/imth/app:1",
        "localhost/imth/nothing:1",
    ]);
    assert!(!out.status.success(), "a missing image must fail");
    assert!(
        text(&out).contains("localhost/imth/nothing:1"),
        "{}",
        text(&out)
    );
}

#[test]
fn save_then_import_in_a_fresh_state_dir_runs_the_same_image() {
    let Some(host) = Instance::with_busybox("imts", &[]) else {
        return;
    };
    let _ctx = built(&host, "localhost/imts/app:1");
    let digest = image_digest(&host, "localhost/imts/app:1").expect("built");
    let dir = tempfile::tempdir().expect("dir");
    let archive = dir.path().join("app.tar");
    let archive_s = archive.to_str().expect("utf-8");

    // A failed save leaves nothing behind, not even a temporary.
    let out = host.moor(&[
        "image",
        "save",
        "-o",
        archive_s,
        "localhost/imts/app:1",
        "localhost/imts/nothing:1",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 0);

    host.moor_ok(&["image", "save", "-o", archive_s, "localhost/imts/app:1"]);
    // The same images saved twice give the same bytes.
    let again = dir.path().join("again.tar");
    host.moor_ok(&[
        "image",
        "save",
        "-o",
        again.to_str().expect("utf-8"),
        "localhost/imts/app:1",
    ]);
    assert_eq!(
        fs::read(&archive).expect("read"),
        fs::read(&again).expect("read")
    );

    let mut fresh = Instance::new();
    fresh.owns("imts");
    let out = fresh.moor_ok(&["image", "import", archive_s]);
    assert!(
        out.contains(&digest),
        "import keeps the manifest digest: {out}"
    );
    assert_eq!(
        image_digest(&fresh, "localhost/imts/app:1").as_deref(),
        Some(digest.as_str())
    );
    run_and_check(&fresh, "localhost/imts/app:1");
}

/// A built image pushed to a real registry and pulled into a fresh state
/// dir keeps its digest and runs; a second push sends nothing.
#[test]
fn push_then_pull_into_a_fresh_state_dir_runs_the_same_image() {
    let Some(host) = Instance::with_busybox("imtp", &["docker-registry"]) else {
        return;
    };
    let Some(registry) = crate::image::registry::Registry::start() else {
        return;
    };
    let _ctx = built(&host, "localhost/imtp/app:1");
    let digest = image_digest(&host, "localhost/imtp/app:1").expect("built");
    let remote = format!("{}/imtp/app:1", registry.addr);
    host.moor_ok(&["image", "tag", "localhost/imtp/app:1", &remote]);
    let out = host.moor_ok(&["image", "push", &remote]);
    assert!(out.contains(&format!("pushed {remote} {digest}")), "{out}");
    assert!(!out.contains("already exists"), "{out}");
    let again = host.moor_ok(&["image", "push", &remote]);
    assert!(!again.contains("pushed ("), "sent twice: {again}");

    let mut fresh = Instance::new();
    fresh.owns("imtp");
    let out = fresh.moor_ok(&["image", "pull", &remote]);
    assert!(out.contains(&digest), "pull keeps the digest: {out}");
    run_in(&fresh, "imtp", &remote);
}

fn run_and_check(host: &Instance, image: &str) {
    run_in(host, "imts", image);
}

fn run_in(host: &Instance, project: &str, image: &str) {
    let dir = tempfile::tempdir().expect("manifest dir");
    fs::write(
        dir.path().join("stack.toml"),
        format!("[containers.app]\nimage = \"{image}\"\nnetwork_mode = \"none\"\n"),
    )
    .expect("manifest");
    host.moor_ok(&["apply", "-p", project, dir.path().to_str().expect("utf-8")]);
    let mut log = String::new();
    wait_for("the container's report", Duration::from_secs(60), || {
        log = text(&host.moor(&["logs", "app"]));
        log.contains("done")
    });
    assert!(
        log.contains("saved-content") && log.contains("tools=yes"),
        "{log}"
    );
}

#[test]
fn docker_loads_and_runs_what_moor_saves() {
    let Some(host) = Instance::with_busybox("imtd", &["dockerd", "docker"]) else {
        return;
    };
    let _ctx = built(&host, "localhost/imtd/app:1");
    let dir = tempfile::tempdir().expect("dir");
    let archive = dir.path().join("app.tar");
    host.moor_ok(&[
        "image",
        "save",
        "-o",
        archive.to_str().expect("utf-8"),
        "localhost/imtd/app:1",
    ]);
    let docker = Dockerd::start();
    docker.docker_ok(&["load", "-i", archive.to_str().expect("utf-8")]);
    let out = docker.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/imtd/app:1",
        "sh",
        "-c",
        "cat /marker; echo tools=$TOOLS; wc -c < /blob",
    ]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("saved-content") && log.contains("tools=yes") && log.contains("100000"),
        "{log}"
    );
    // Docker's image ID is the config digest, as `moor image inspect` says.
    let inspect = json(&host.moor_ok(&["image", "inspect", "localhost/imtd/app:1"]));
    let id = inspect[0]["Id"].as_str().expect("Id").to_string();
    let out = docker.docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "localhost/imtd/app:1",
    ]);
    assert_eq!(text(&out).trim(), id);
}

/// `moor diff` lists what a container changed, as `docker diff`, leaving
/// out the files moor mounts; `moor commit` makes an image of it that keeps
/// ownership (a non-root user writes what root handed it), deletions and
/// the `--change`s, and leaves the container running, not paused.
#[test]
fn diff_and_commit_read_a_containers_changes() {
    let Some(mut host) = Instance::with_busybox("imtc", &[]) else {
        return;
    };
    host.owns("imtc-snap");
    let dir = tempfile::tempdir().expect("manifest dir");
    fs::write(
        dir.path().join("stack.toml"),
        format!(
            "[containers.app]\nimage = \"{BUSYBOX}\"\nnetwork_mode = \"none\"\n\
             command = [\"sh\", \"-c\", \"echo new > /added && echo extra:x:1:1::/:/bin/sh >> /etc/passwd \
             && rm /etc/group && mkdir -p /data/sub && echo d > /data/sub/f \
             && chown 65534:65534 /data/sub/f && echo ready && exec sleep 3600\"]\n\
             [containers.worker]\nimage = \"{BUSYBOX}\"\nnetwork_mode = \"none\"\nuser = \"nobody\"\n\
             command = [\"sh\", \"-c\", \"echo mine > /tmp/note && echo ready && exec sleep 3600\"]\n"
        ),
    )
    .expect("manifest");
    host.moor_ok(&["apply", "-p", "imtc", dir.path().to_str().expect("utf-8")]);
    for c in ["app", "worker"] {
        wait_for(&format!("{c} ready"), Duration::from_secs(60), || {
            text(&host.moor(&["logs", c])).contains("ready")
        });
    }

    let diff = host.moor_ok(&["diff", "app"]);
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(
        lines,
        [
            "A /added",
            "A /data",
            "A /data/sub",
            "A /data/sub/f",
            "C /etc",
            "D /etc/group",
            "C /etc/passwd",
        ],
        "{diff}"
    );
    let diff = host.moor_ok(&["diff", "worker"]);
    assert_eq!(
        diff.lines().collect::<Vec<_>>(),
        ["C /tmp", "A /tmp/note"],
        "{diff}"
    );

    // A change that is not a config instruction is refused; nothing is made.
    let before = json(&host.moor_ok(&["images", "--json"]))
        .as_array()
        .map(Vec::len);
    let out = host.moor(&["commit", "-c", "RUN true", "app", "localhost/imtc/bad:1"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        json(&host.moor_ok(&["images", "--json"]))
            .as_array()
            .map(Vec::len),
        before
    );

    let id = host.moor_ok(&[
        "commit",
        "-c",
        "ENV STAGE=committed",
        "-c",
        "USER nobody",
        "-c",
        r#"CMD ["sh", "-c", "cat /added; echo stage=$STAGE; echo more >> /data/sub/f && cat /data/sub/f; test -e /etc/group || echo group-gone; echo done; exec sleep 3600"]"#,
        "-m",
        "a snapshot",
        "-a",
        "moor tests",
        "app",
        "localhost/imtc/snap:1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let ps = json(&host.moor_ok(&["ps", "--json"]));
    let app = ps
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["name"] == "app")
        .cloned()
        .expect("app listed");
    assert_eq!(app["state"], "running", "left as it was: {app}");

    let inspect = json(&host.moor_ok(&["image", "inspect", "localhost/imtc/snap:1"]));
    let snap = &inspect[0];
    assert_eq!(snap["Id"].as_str(), Some(id.trim()));
    assert_eq!(snap["Author"], "moor tests");
    let env = snap["Config"]["Env"].as_array().expect("Env");
    assert!(env.iter().any(|e| e == "STAGE=committed"), "{env:?}");
    assert_eq!(snap["Config"]["User"], "nobody");
    assert!(
        !snap["Config"]["Labels"]
            .as_object()
            .is_some_and(|l| l.keys().any(|k| k.starts_with("moor."))),
        "moor's own labels stay out: {snap}"
    );

    let run = tempfile::tempdir().expect("manifest dir");
    fs::write(
        run.path().join("stack.toml"),
        "[containers.snap]\nimage = \"localhost/imtc/snap:1\"\nnetwork_mode = \"none\"\n",
    )
    .expect("manifest");
    host.moor_ok(&[
        "apply",
        "-p",
        "imtc-snap",
        run.path().to_str().expect("utf-8"),
    ]);
    let mut log = String::new();
    wait_for(
        "the committed image's report",
        Duration::from_secs(60),
        || {
            log = text(&host.moor(&["logs", "snap"]));
            log.contains("done")
        },
    );
    for want in ["new", "stage=committed", "d\nmore", "group-gone"] {
        assert!(log.contains(want), "{want:?} missing from:\n{log}");
    }
}
