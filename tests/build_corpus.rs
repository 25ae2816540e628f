//! The build corpus: every context under `tests/build/corpus/NN-name/` is
//! built by `moor build` and, where Docker Engine is installed (always on
//! CI), by Docker's classic builder (`DOCKER_BUILDKIT=0`) on a private
//! `dockerd` — from the same busybox root filesystem, imported once into
//! each — and the two images must be the same:
//!
//! - **per layer**, every layer the build made (the imported base layer
//!   aside): each entry's path, type, mode, owner, link target and content
//!   hash, whiteouts (`.wh.` entries, opaque directories) included — Docker
//!   writes the same entries for the same steps, so this is comparable and
//!   stricter than the final tree;
//! - **the flattened tree** of the final image (the layers applied in order,
//!   whiteouts honoured), the base's files included;
//! - **the config**: Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts,
//!   Labels, Volumes, Healthcheck, StopSignal, OnBuild, Shell, and which
//!   history entries are empty layers.
//!
//! Timestamps (`created`, file mtimes), history text and Docker's own
//! fields (`container`, `docker_version`, …) are not compared: they are the
//! build's time and the engine's identity, not what the Dockerfile says.
//!
//! A context may say more in files beside its Dockerfile:
//! - `build.json`: `{"args": {"K": "V"}, "target": "STAGE"}`, the
//!   `--build-arg`s and `--target` of both builds;
//! - `expected.json`: assertions on moor's image alone, `files` (path →
//!   type, octal mode, uid, gid, content or link), `absent` paths and
//!   `config` values; with `"docker": "why"` the context is one Docker's
//!   classic builder cannot build (heredocs, `--chmod`) and these are its
//!   only checks.
//!
//! Each image is tagged `localhost/corpus/NN-name:1` in both engines, so a
//! later context may build on an earlier one (`ONBUILD`, `HEALTHCHECK NONE`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::build::{Dockerd, Entry, layer_entries};
use crate::common::instance::Instance;
use crate::common::{on_ci, repo_root, require, text, which};

/// The base every context builds on, in both engines.
const BASE: &str = "localhost/corpus/busybox:1";

/// The config fields compared with Docker's.
const CONFIG_KEYS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Volumes",
    "Healthcheck",
    "StopSignal",
    "OnBuild",
    "Shell",
];

/// One build context of the corpus.
struct Case {
    name: String,
    dir: PathBuf,
    args: Vec<(String, String)>,
    target: Option<String>,
    expected: Option<Value>,
    /// Why Docker's classic builder cannot build it, if it cannot.
    moor_only: Option<String>,
}

impl Case {
    fn reference(&self) -> String {
        format!("localhost/corpus/{}:1", self.name)
    }

    /// `build` arguments after the command: tag, build args, target.
    fn build_args(&self) -> Vec<String> {
        let mut a = vec!["-t".to_string(), self.reference()];
        for (k, v) in &self.args {
            a.push("--build-arg".into());
            a.push(format!("{k}={v}"));
        }
        if let Some(t) = &self.target {
            a.push("--target".into());
            a.push(t.clone());
        }
        a.push(self.dir.to_str().expect("utf-8").into());
        a
    }
}

fn read_json(path: &Path) -> Option<Value> {
    let raw = fs::read(path).ok()?;
    Some(
        serde_json::from_slice(&raw)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display())),
    )
}

/// The corpus, in build order (by name).
fn cases() -> Vec<Case> {
    let root = repo_root().join("tests/build/corpus");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a UTF-8 name")
                .to_owned();
            assert!(
                dir.join("Dockerfile").is_file(),
                "{name}: a context without a Dockerfile"
            );
            let build = read_json(&dir.join("build.json")).unwrap_or(Value::Null);
            let args = build["args"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().expect("a string arg").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let target = build["target"].as_str().map(str::to_owned);
            let expected = read_json(&dir.join("expected.json"));
            let moor_only = expected
                .as_ref()
                .and_then(|e| e["docker"].as_str())
                .map(str::to_owned);
            Case {
                name,
                dir,
                args,
                target,
                expected,
                moor_only,
            }
        })
        .collect()
}

/// The busybox root filesystem of `examples/busybox-image.sh`, as a tar.
fn busybox_rootfs(work: &Path) -> PathBuf {
    let root = work.join("rootfs");
    for d in ["bin", "etc", "tmp", "www", "root", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    let busybox = which("busybox").expect("busybox");
    fs::copy(&busybox, root.join("bin/busybox")).expect("copy busybox");
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            symlink("busybox", root.join("bin").join(applet)).expect("applet link");
        }
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nwww-data:x:33:33:www-data:/www:/bin/false\n",
    )
    .expect("passwd");
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\n",
    )
    .expect("group");
    let tar = work.join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "-cf"])
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success(), "tar of the base failed");
    tar
}

/// Docker's layer tars write every whiteout after the first as a hard
/// link to it (they are one 0/0 device inode in its upper directory); the
/// link target of a `.wh.` entry is that encoding, not content.
fn normalise(mut layer: Vec<Entry>) -> Vec<Entry> {
    for e in &mut layer {
        if e.0
            .rsplit('/')
            .next()
            .is_some_and(|b| b.starts_with(".wh."))
        {
            e.1 = "Whiteout".into();
            e.5.clear();
        }
    }
    layer
}

/// What the comparison reads of one image.
#[derive(Debug)]
struct Image {
    /// The config's digest: the image ID in both engines.
    id: String,
    config: Value,
    /// Each layer's entries, bottom first.
    layers: Vec<Vec<Entry>>,
}

/// A tree: path → entry (the path repeated inside).
type Tree = BTreeMap<String, Entry>;

/// The layers applied in order: a `.wh.NAME` entry removes NAME (and what
/// is under it), a `.wh..wh..opq` entry empties its directory of what lower
/// layers put there, a non-directory replaces a directory and its contents.
fn flatten(layers: &[Vec<Entry>]) -> Tree {
    let mut tree = Tree::new();
    let remove_under = |tree: &mut Tree, dir: &str| {
        let prefix = format!("{dir}/");
        tree.retain(|p, _| !p.starts_with(&prefix));
    };
    for layer in layers {
        let mut added: Vec<&Entry> = Vec::new();
        // Whiteouts first: they remove what lower layers had, whatever
        // the entry order of the layer.
        for e in layer {
            let (dir, base) = match e.0.rsplit_once('/') {
                Some((d, b)) => (d, b),
                None => ("", e.0.as_str()),
            };
            if base == ".wh..wh..opq" {
                if dir.is_empty() {
                    tree.clear();
                } else {
                    remove_under(&mut tree, dir);
                }
            } else if let Some(name) = base.strip_prefix(".wh.") {
                let path = if dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{dir}/{name}")
                };
                tree.remove(&path);
                remove_under(&mut tree, &path);
            } else {
                added.push(e);
            }
        }
        for e in added {
            if e.1 != "Directory" {
                remove_under(&mut tree, &e.0);
            }
            tree.insert(e.0.clone(), e.clone());
        }
    }
    tree
}

/// `null`, a missing field, `[]`, `{}` and `""` all mean "not set" to both
/// engines; the rest is compared as is.
fn normal(v: &Value) -> Value {
    // `HEALTHCHECK NONE` disables the check whatever else is set: Docker
    // keeps the base's interval and retries beside it, moor drops them.
    if v["Test"] == serde_json::json!(["NONE"]) {
        return serde_json::json!({"Test": ["NONE"]});
    }
    match v {
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        Value::String(s) if s.is_empty() => Value::Null,
        other => other.clone(),
    }
}

fn empty_layers(config: &Value) -> Vec<bool> {
    config["history"]
        .as_array()
        .map(|h| h.iter().map(|h| h["empty_layer"] == true).collect())
        .unwrap_or_default()
}

fn show(e: &Entry) -> String {
    let (path, kind, mode, uid, gid, link, hash) = e;
    let link = if link.is_empty() {
        String::new()
    } else {
        format!(" -> {link}")
    };
    format!(
        "{path} {kind} {mode:o} {uid}:{gid}{link} {}",
        &hash[..12.min(hash.len())]
    )
}

/// The entries of `a` and `b` that differ, as `- moor` / `+ docker` lines.
fn diff_entries(a: &Tree, b: &Tree) -> Vec<String> {
    const MAX: usize = 40;
    let mut out = diff_all(a, b);
    if out.len() > MAX {
        let more = out.len() - MAX;
        out.truncate(MAX);
        out.push(format!("  … and {more} more"));
    }
    out
}

fn diff_all(a: &Tree, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, e) in a {
        if b.get(p) != Some(e) {
            out.push(format!("  - moor:   {}", show(e)));
        }
    }
    for (p, e) in b {
        if a.get(p) != Some(e) {
            out.push(format!("  + docker: {}", show(e)));
        }
    }
    out
}

fn as_tree(entries: &[Entry]) -> Tree {
    entries.iter().map(|e| (e.0.clone(), e.clone())).collect()
}

/// How moor's image differs from Docker's: empty when they are the same.
fn compare(moor: &Image, docker: &Image, base_layer: &[Entry]) -> Vec<String> {
    let mut problems = Vec::new();
    for key in CONFIG_KEYS {
        let (m, d) = (
            normal(&moor.config["config"][key]),
            normal(&docker.config["config"][key]),
        );
        if m != d {
            problems.push(format!("config {key}: moor {m}, docker {d}"));
        }
    }
    // `docker import` gives the base a history entry, moor's import none:
    // the build's entries are the last ones of both.
    let (m, d) = (empty_layers(&moor.config), empty_layers(&docker.config));
    if m.len() > d.len() || m != d[d.len() - m.len()..] {
        problems.push(format!(
            "history empty_layer flags: moor {m:?}, docker {d:?}"
        ));
    }
    if moor.layers.len() != docker.layers.len() {
        problems.push(format!(
            "{} layers in moor's image, {} in Docker's",
            moor.layers.len(),
            docker.layers.len()
        ));
    }
    // The imported base layer: each engine's import of the same tar,
    // compared below as part of the flattened tree.
    for (i, (m, d)) in moor.layers.iter().zip(&docker.layers).enumerate() {
        if i == 0 && m == base_layer {
            continue;
        }
        let lines = diff_entries(&as_tree(m), &as_tree(d));
        if !lines.is_empty() {
            problems.push(format!("layer {i}:\n{}", lines.join("\n")));
        }
    }
    let lines = diff_entries(&flatten(&moor.layers), &flatten(&docker.layers));
    if !lines.is_empty() {
        problems.push(format!("flattened tree:\n{}", lines.join("\n")));
    }
    problems
}

/// How moor's image fails the context's `expected.json`.
fn check_expected(expected: &Value, image: &Image) -> Vec<String> {
    let mut problems = Vec::new();
    let tree = flatten(&image.layers);
    for (path, want) in expected["files"].as_object().into_iter().flatten() {
        let Some((_, kind, mode, uid, gid, link, hash)) = tree.get(path) else {
            problems.push(format!("{path}: missing"));
            continue;
        };
        let mut check = |what: &str, got: String, want: Option<String>| {
            if let Some(want) = want
                && got != want
            {
                problems.push(format!("{path}: {what} {got}, expected {want}"));
            }
        };
        check(
            "type",
            kind.clone(),
            want["type"].as_str().map(str::to_owned),
        );
        check(
            "mode",
            format!("{mode:o}"),
            want["mode"].as_str().map(str::to_owned),
        );
        check(
            "uid",
            uid.to_string(),
            want["uid"].as_u64().map(|u| u.to_string()),
        );
        check(
            "gid",
            gid.to_string(),
            want["gid"].as_u64().map(|g| g.to_string()),
        );
        check(
            "link",
            link.clone(),
            want["link"].as_str().map(str::to_owned),
        );
        check(
            "content hash",
            hash.clone(),
            want["content"].as_str().map(|c| {
                use sha2::Digest as _;
                hex::encode(sha2::Sha256::digest(c.as_bytes()))
            }),
        );
    }
    for path in expected["absent"].as_array().into_iter().flatten() {
        let path = path.as_str().expect("a path");
        if tree.contains_key(path) {
            problems.push(format!("{path}: present, expected absent"));
        }
    }
    for (key, want) in expected["config"].as_object().into_iter().flatten() {
        let got = &image.config["config"][key];
        if normal(got) != normal(want) {
            problems.push(format!("config {key}: {got}, expected {want}"));
        }
    }
    problems
}

/// moor's images, read from its store: reference → image.
fn moor_images(host: &Instance, references: &[String]) -> HashMap<String, Image> {
    let images: Value =
        serde_json::from_str(&host.moor_ok(&["images", "--json"])).expect("images JSON");
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        fs::read(host.dir().join("blobs/sha256").join(hex)).expect("blob")
    };
    let mut out = HashMap::new();
    for image in images.as_array().expect("a list") {
        for r in image["refs"].as_array().into_iter().flatten() {
            let r = r.as_str().expect("a reference");
            if !references.iter().any(|x| x == r) {
                continue;
            }
            let config = serde_json::from_slice(&blob(image["config"].as_str().expect("config")))
                .expect("config JSON");
            let layers = image["layers"]
                .as_array()
                .expect("layers")
                .iter()
                .map(|l| normalise(layer_entries(&blob(l["blob"].as_str().expect("blob")))))
                .collect();
            let id = image["config"].as_str().expect("config").to_owned();
            out.insert(r.to_owned(), Image { id, config, layers });
        }
    }
    out
}

/// Docker's images, read from one `docker save` archive of them all.
fn docker_images(archive: &Path) -> HashMap<String, Image> {
    let mut members: HashMap<String, Vec<u8>> = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let mut tar = tar::Archive::new(fs::File::open(archive).expect("docker save output"));
    for e in tar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        if e.header().entry_type() == tar::EntryType::Symlink {
            // `docker save` writes a layer two images share once and links
            // the other's `ID/layer.tar` to it (`../ID2/layer.tar`).
            let target = e.link_name().expect("link").expect("a target");
            let dir = Path::new(&path).parent().unwrap_or(Path::new(""));
            let mut resolved = PathBuf::new();
            for c in dir.join(target).components() {
                match c {
                    std::path::Component::ParentDir => {
                        resolved.pop();
                    }
                    std::path::Component::Normal(n) => resolved.push(n),
                    _ => {}
                }
            }
            links.push((path, resolved.to_string_lossy().into_owned()));
            continue;
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read member");
        members.insert(path, data);
    }
    for (link, target) in links {
        let data = members
            .get(&target)
            .unwrap_or_else(|| panic!("docker save: {link} links to missing {target}"))
            .clone();
        members.insert(link, data);
    }
    let manifest: Value = serde_json::from_slice(&members["manifest.json"]).expect("manifest.json");
    let mut layers_of: HashMap<String, Vec<Entry>> = HashMap::new();
    let mut out = HashMap::new();
    for image in manifest.as_array().expect("a list") {
        let config_name = image["Config"].as_str().expect("Config");
        let config: Value = serde_json::from_slice(&members[config_name]).expect("config JSON");
        let id = format!("sha256:{}", config_name.trim_end_matches(".json"));
        let layers: Vec<Vec<Entry>> = image["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .map(|l| {
                let l = l.as_str().expect("a layer");
                layers_of
                    .entry(l.to_owned())
                    .or_insert_with(|| normalise(layer_entries(&members[l])))
                    .clone()
            })
            .collect();
        for tag in image["RepoTags"].as_array().into_iter().flatten() {
            out.insert(
                tag.as_str().expect("a tag").to_owned(),
                Image {
                    id: id.clone(),
                    config: config.clone(),
                    layers: layers.clone(),
                },
            );
        }
    }
    out
}

/// Builds every context with Docker, in order, and saves them all.
fn docker_side(docker: &Dockerd, base_tar: &Path, cases: &[Case], archive: &Path) {
    docker.docker_ok(&["import", base_tar.to_str().expect("utf-8"), BASE]);
    let mut refs = Vec::new();
    for case in cases.iter().filter(|c| c.moor_only.is_none()) {
        let mut args = vec!["build".to_string()];
        args.extend(case.build_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = docker.docker(&args);
        assert!(
            out.status.success(),
            "{}: docker build failed:\n{}",
            case.name,
            text(&out)
        );
        refs.push(case.reference());
    }
    let mut args = vec!["save", "-o", archive.to_str().expect("utf-8")];
    args.extend(refs.iter().map(String::as_str));
    docker.docker_ok(&args);
}

#[test]
fn corpus_builds_as_docker_builds_it() {
    let Some(host) = Instance::with_busybox("corpus", &["tar"]) else {
        return;
    };
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus has {} contexts", cases.len());
    let with_docker = require(&["dockerd", "docker"], true);
    if !with_docker {
        eprintln!(
            "NOT COMPARED WITH DOCKER: no Docker Engine here; moor's builds are checked against expected.json only"
        );
    }
    let started = Instant::now();
    let work = tempfile::tempdir().expect("work dir");
    let base_tar = busybox_rootfs(work.path());
    host.moor_ok(&[
        "image",
        "import",
        base_tar.to_str().expect("utf-8"),
        "--tag",
        BASE,
    ]);
    let archive = work.path().join("docker-save.tar");
    let docker = with_docker.then(Dockerd::start);

    let mut problems: Vec<String> = Vec::new();
    let mut failed: Vec<&str> = Vec::new();
    std::thread::scope(|s| {
        // Docker builds beside moor's: two builds at a time.
        let docker_thread = docker
            .as_ref()
            .map(|d| s.spawn(|| docker_side(d, &base_tar, &cases, &archive)));
        for case in &cases {
            let mut args = vec!["build".to_string()];
            args.extend(case.build_args());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = host.moor(&args);
            if !out.status.success() {
                problems.push(format!("{}: moor build failed:\n{}", case.name, text(&out)));
                failed.push(&case.name);
            }
        }
        if let Some(t) = docker_thread
            && let Err(e) = t.join()
        {
            std::panic::resume_unwind(e);
        }
    });

    let refs: Vec<String> = cases.iter().map(Case::reference).collect();
    let moor = moor_images(&host, &[refs.clone(), vec![BASE.to_owned()]].concat());
    let base_layer = moor[BASE].layers[0].clone();
    let theirs = docker.as_ref().map(|_| docker_images(&archive));
    let mut compared = 0;
    for case in cases.iter().filter(|c| !failed.contains(&c.name.as_str())) {
        let Some(mine) = moor.get(&case.reference()) else {
            problems.push(format!("{}: not in moor's images", case.name));
            continue;
        };
        if let Some(expected) = &case.expected {
            for p in check_expected(expected, mine) {
                problems.push(format!("{}: {p}", case.name));
            }
        }
        if case.moor_only.is_some() {
            continue;
        }
        if let Some(theirs) = &theirs {
            let Some(d) = theirs.get(&case.reference()) else {
                problems.push(format!("{}: not in docker save's output", case.name));
                continue;
            };
            let diff = compare(mine, d, &base_layer);
            if !diff.is_empty() {
                problems.push(format!(
                    "{} differs from Docker's build:\n{}",
                    case.name,
                    diff.join("\n")
                ));
            }
            compared += 1;
        }
    }
    eprintln!(
        "build corpus: {} contexts, {compared} compared with Docker, in {:.0?}",
        cases.len(),
        started.elapsed()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
    if on_ci() {
        assert!(compared > 0, "nothing compared with Docker on CI");
    }
    if let Some(theirs) = &theirs {
        runs_what_docker_saved(&host, &archive, theirs);
    }
}

/// `moor image import` of `docker save`'s archive (every image Docker
/// built) in a fresh state dir: the image IDs are Docker's, and the ONBUILD
/// child runs with what its triggers made.
fn runs_what_docker_saved(host: &Instance, archive: &Path, theirs: &HashMap<String, Image>) {
    let mut fresh = Instance::beside(host);
    fresh.owns("corpusd");
    fresh.moor_ok(&["image", "import", archive.to_str().expect("utf-8")]);
    let child = "localhost/corpus/30-onbuild-child:1";
    let inspect: Value =
        serde_json::from_str(&fresh.moor_ok(&["image", "inspect", child])).expect("inspect JSON");
    assert_eq!(
        inspect[0]["Id"].as_str(),
        Some(theirs[child].id.as_str()),
        "the imported image keeps Docker's ID"
    );
    let dir = tempfile::tempdir().expect("manifest dir");
    fs::write(
        dir.path().join("stack.toml"),
        format!(
            "[containers.child]\nimage = \"{child}\"\nnetwork_mode = \"none\"\n\
             command = [\"sh\", \"-c\", \"cat /seen; echo child=$CHILD; echo done; exec sleep 3600\"]\n"
        ),
    )
    .expect("write manifest");
    fresh.moor_ok(&[
        "apply",
        "-p",
        "corpusd",
        dir.path().to_str().expect("utf-8"),
    ]);
    let mut log = String::new();
    crate::common::wait_for(
        "the container of Docker's image to print done",
        std::time::Duration::from_secs(180),
        || {
            log = text(&fresh.moor(&["logs", "child"]));
            log.contains("done")
        },
    );
    for line in ["triggered", "child's file", "child=yes"] {
        assert!(log.lines().any(|l| l == line), "{line}: {log}");
    }
}
