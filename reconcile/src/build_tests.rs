//! Images built from manifests (`[images.X] build = …`): the diff builds
//! only when the inputs changed, containers follow the built image, and a
//! failed build leaves them alone. Against the fake runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use moor_spec::{BuildSpec, DesiredState, Kind};

use crate::fake::FakeRuntime;
use crate::*;

const PROJECT: &str = "demo";
const CONTEXT: &str = "/m/app";
const REF: &str = "localhost/app:dev";

fn desired() -> DesiredState {
    let toml = format!(
        "[images.app]\nref = \"{REF}\"\n\n\
         [containers.web]\nimage = \"app\"\ncommand = [\"httpd\", \"-f\"]\n"
    );
    let mut d = moor_spec::load_texts(&[(PathBuf::from("/m/stack.toml"), toml)])
        .unwrap_or_else(|d| panic!("test manifest invalid:\n{d}"));
    // Decoding a real `build` needs the context on disk (spec's tests do
    // that); here the spec is what decoding gives.
    let image = d.images.get_mut("app").unwrap();
    std::sync::Arc::make_mut(&mut image.spec).build = Some(BuildSpec {
        context: PathBuf::from(CONTEXT),
        dockerfile: PathBuf::from("Dockerfile"),
        args: BTreeMap::from([("VERSION".to_string(), "1".to_string())]),
        target: None,
    });
    image.hash = moor_spec::hash::image(&image.spec);
    d
}

/// Inputs with the context holding `files` (path, content) and `VERSION = version`.
fn inputs(files: &[(&str, &str)], version: &str) -> BuildInputs {
    let context: BTreeMap<String, String> = files
        .iter()
        .map(|(p, c)| (p.to_string(), format!("file:{c}")))
        .collect();
    let args = BTreeMap::from([("VERSION".to_string(), version.to_string())]);
    let digest = format!("{context:?}{args:?}");
    BuildInputs {
        digest: crate::fake::default_digest(&digest),
        dockerfile: "sha256:df".into(),
        args,
        target: None,
        bases: BTreeMap::from([(
            "docker.io/library/busybox:latest".to_string(),
            Some("sha256:base".to_string()),
        )]),
        context,
    }
}

fn opts() -> DiffOptions<'static> {
    DiffOptions {
        project: PROJECT,
        allow_empty: false,
        remove_volumes: false,
        now: SystemTime::now(),
    }
}

async fn plan(rt: &FakeRuntime, desired: &DesiredState) -> Plan {
    let observed = observe(rt, desired).await.expect("observe");
    diff(desired, &observed, &opts()).expect("diff")
}

async fn apply_once(rt: &FakeRuntime, desired: &DesiredState) -> Vec<Outcome> {
    let observed = observe(rt, desired).await.expect("observe");
    let p = diff(desired, &observed, &opts()).expect("diff");
    let apply_opts = ApplyOptions {
        health_poll: Duration::from_millis(10),
        ..ApplyOptions::new(PROJECT)
    };
    apply(rt, &p, desired, &observed, &apply_opts).await
}

fn lines(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| format!("{} {} {} ({})", a.verb, a.kind, a.name, a.reason))
        .collect()
}

fn mutations(rt: &FakeRuntime) -> Vec<String> {
    rt.calls()
        .into_iter()
        .filter(|c| !c.starts_with("build_inputs ") && !c.starts_with("health "))
        .collect()
}

#[tokio::test]
async fn builds_when_missing_then_only_when_the_inputs_change() {
    let rt = FakeRuntime::new();
    let desired = desired();
    rt.set_build_inputs(Path::new(CONTEXT), inputs(&[("main.py", "1")], "1"));

    let p = plan(&rt, &desired).await;
    assert_eq!(
        lines(&p),
        [
            format!("build image {REF} (not in the image store)"),
            "create container web (not on the host)".to_string(),
        ]
    );
    assert!(p.to_string().contains("Plan: 1 to build, 0 to pull"), "{p}");
    let out = apply_once(&rt, &desired).await;
    assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
    // The container was created after the build, on the built image.
    assert_eq!(
        mutations(&rt),
        [format!("build {REF}"), "create_container web".to_string()]
    );
    let built = rt.with_host(|h| h.images[REF].digest.clone());
    let on = |digest: &str| desired.containers["web"].hash.with_image_digest(digest);
    assert_eq!(
        rt.with_host(|h| h.containers["web"].hash.clone()),
        on(&built)
    );

    // Nothing changed: nothing to build, nothing to do.
    rt.clear_calls();
    assert!(plan(&rt, &desired).await.is_empty());
    assert!(mutations(&rt).is_empty(), "{:?}", rt.calls());

    // A file of the context changed: rebuilt, and the plan says which.
    rt.set_build_inputs(
        Path::new(CONTEXT),
        inputs(&[("main.py", "2"), ("static/a.css", "x")], "1"),
    );
    let p = plan(&rt, &desired).await;
    assert_eq!(
        lines(&p),
        [format!(
            "build image {REF} (build context changed: main.py, static/a.css)"
        )]
    );
    apply_once(&rt, &desired).await;
    // The next pass sees the new image and replaces the container.
    let p = plan(&rt, &desired).await;
    assert_eq!(p.actions.len(), 1, "{p}");
    let a = &p.actions[0];
    assert_eq!(
        (a.kind, a.verb, a.name.as_str()),
        (Kind::Container, Verb::Replace, "web")
    );
    assert!(
        matches!(a.reason, Reason::ImageChanged { .. }),
        "{}",
        a.reason
    );
    apply_once(&rt, &desired).await;
    let rebuilt = rt.with_host(|h| h.images[REF].digest.clone());
    assert_ne!(rebuilt, built);
    assert_eq!(
        rt.with_host(|h| h.containers["web"].hash.clone()),
        on(&rebuilt)
    );
    assert!(plan(&rt, &desired).await.is_empty());

    // The build arguments changed.
    rt.set_build_inputs(
        Path::new(CONTEXT),
        inputs(&[("main.py", "2"), ("static/a.css", "x")], "2"),
    );
    assert_eq!(
        lines(&plan(&rt, &desired).await),
        [format!("build image {REF} (build args changed: VERSION)")]
    );
}

#[tokio::test]
async fn a_failed_build_keeps_the_containers_on_the_previous_image() {
    let rt = FakeRuntime::new();
    let desired = desired();
    rt.set_build_inputs(Path::new(CONTEXT), inputs(&[("main.py", "1")], "1"));
    apply_once(&rt, &desired).await;
    let before = rt.with_host(|h| h.containers["web"].clone());
    let image = rt.with_host(|h| h.images[REF].digest.clone());

    rt.set_build_inputs(Path::new(CONTEXT), inputs(&[("main.py", "broken")], "1"));
    rt.fail_next(
        &format!("build {REF}"),
        "the command '/bin/sh -c false' returned a non-zero code: 1",
    );
    rt.clear_calls();
    let out = apply_once(&rt, &desired).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].action.verb, Verb::Build);
    let err = out[0].result.as_ref().unwrap_err();
    assert!(err.contains("returned a non-zero code: 1"), "{err}");
    // No container was touched; the image and the container are as before.
    assert_eq!(mutations(&rt), [format!("build {REF}")]);
    assert_eq!(rt.with_host(|h| h.containers["web"].clone()), before);
    assert_eq!(rt.with_host(|h| h.images[REF].digest.clone()), image);
    // The build is tried again by the next pass, and only it.
    let p = plan(&rt, &desired).await;
    assert_eq!(
        lines(&p),
        [format!(
            "build image {REF} (build context changed: main.py)"
        )]
    );
}

#[tokio::test]
async fn unreadable_inputs_block_the_image_and_leave_its_containers_alone() {
    let rt = FakeRuntime::new();
    let desired = desired();
    rt.set_build_inputs(Path::new(CONTEXT), inputs(&[("main.py", "1")], "1"));
    apply_once(&rt, &desired).await;
    rt.clear_calls();
    rt.fail_next(
        &format!("build_inputs {CONTEXT}"),
        "Dockerfile:3:1: unknown instruction: FORM",
    );
    let p = plan(&rt, &desired).await;
    assert!(p.actions.is_empty(), "{p}");
    // The image, and the container that runs it (left as it is).
    assert_eq!(p.blocked.len(), 2, "{p}");
    assert_eq!(
        p.blocked[1].reason.to_string(),
        format!("image {REF} is blocked")
    );
    assert_eq!(
        (p.blocked[0].kind, p.blocked[0].name.as_str()),
        (Kind::Image, REF)
    );
    assert_eq!(
        p.blocked[0].reason.to_string(),
        "cannot build: Dockerfile:3:1: unknown instruction: FORM"
    );
    assert_eq!(rt.calls(), [format!("build_inputs {CONTEXT}")]);
}

#[tokio::test]
async fn an_image_not_built_from_the_manifests_is_rebuilt() {
    let rt = FakeRuntime::new();
    let desired = desired();
    rt.set_build_inputs(Path::new(CONTEXT), inputs(&[("main.py", "1")], "1"));
    // Someone tagged another image with the reference by hand.
    rt.with_host(|h| {
        h.images.insert(
            REF.to_string(),
            ObservedImage {
                digest: "sha256:other".into(),
                remote_digest: None,
                built_from: None,
            },
        )
    });
    let p = plan(&rt, &desired).await;
    assert_eq!(
        lines(&p)[0],
        format!("build image {REF} (the image in the store was not built from the manifests)")
    );
}

#[test]
fn changes_name_files_dockerfile_args_target_and_bases() {
    let before = inputs(&[("a", "1"), ("b", "1"), ("gone", "1")], "1");
    let mut after = inputs(&[("a", "2"), ("b", "1"), ("new", "1")], "2");
    after.dockerfile = "sha256:other".into();
    after.target = Some("runtime".into());
    after
        .bases
        .insert("docker.io/library/debian:12".into(), None);
    after.bases.insert(
        "docker.io/library/busybox:latest".into(),
        Some("sha256:new".into()),
    );
    assert_eq!(
        after.changes_since(&before),
        [
            "build context changed: a, gone, new",
            "Dockerfile changed",
            "build args changed: VERSION",
            "target stage changed",
            "base image docker.io/library/busybox:latest changed",
            "base image docker.io/library/debian:12 is not in the image store",
        ]
    );
    let many: Vec<(String, String)> = (0..8).map(|i| (format!("f{i}"), "x".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let grown = inputs(&many, "1");
    assert_eq!(
        grown.changes_since(&inputs(&[], "1")),
        ["build context changed: f0, f1, f2, f3, f4 and 3 more"]
    );
    assert!(before.changes_since(&before).is_empty());
}

/// What the controller told its recorder about builds.
#[derive(Default)]
struct Builds(std::sync::Mutex<Vec<bool>>);

impl Recorder for Builds {
    fn build(&self, ok: bool, _duration: Duration) {
        self.0.lock().unwrap().push(ok);
    }
}

#[tokio::test(start_paused = true)]
async fn the_controller_replaces_at_once_and_reports_a_failed_build() {
    use std::sync::Arc;
    use tokio::sync::{mpsc, watch};

    let rt = Arc::new(FakeRuntime::new());
    rt.set_build_inputs(Path::new(CONTEXT), inputs(&[("main.py", "1")], "1"));
    let (tx, rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(Status::default());
    let recorder: &'static Builds = Box::leak(Box::default());
    let controller = Controller::new(rt.clone(), ControllerOptions::new(PROJECT));
    let task = tokio::spawn(async move { controller.run(rx, status_tx, recorder).await });
    let source = |rev: &str| Trigger::Source {
        revision: Some(rev.into()),
        result: Ok(desired()),
    };
    let count = |call: &str| rt.calls().iter().filter(|c| *c == call).count();

    tx.send(source("r1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(&format!("build {REF}")), 1);
    assert_eq!(count("create_container web"), 1);
    assert_eq!(*recorder.0.lock().unwrap(), [true]);

    // The context changed (a new revision of the source): built, and the
    // container replaced in the pass that follows at once, long before
    // the periodic one.
    rt.set_build_inputs(Path::new(CONTEXT), inputs(&[("main.py", "2")], "1"));
    tx.send(source("r2")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(&format!("build {REF}")), 2);
    assert_eq!(count("create_container web"), 2, "{:?}", rt.calls());
    let web = rt.with_host(|h| h.containers["web"].hash.clone());

    // A failed build: reported, and the container stays.
    rt.set_build_inputs(Path::new(CONTEXT), inputs(&[("main.py", "3")], "1"));
    rt.fail_next(
        &format!("build {REF}"),
        "the command '/bin/sh -c exit 7' returned a non-zero code: 7",
    );
    tx.send(source("r3")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*recorder.0.lock().unwrap(), [true, true, false]);
    let s = status.borrow().clone();
    let c = &s.conditions[&format!("image/{REF}")];
    assert_eq!(c.status, ConditionStatus::Failed);
    assert_eq!(c.reason, "BuildFailed");
    assert!(
        c.message.contains("returned a non-zero code: 7"),
        "{}",
        c.message
    );
    assert_eq!(rt.with_host(|h| h.containers["web"].hash.clone()), web);
    assert_eq!(count("create_container web"), 2);

    // Retried after its backoff: built, and the container follows.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(*recorder.0.lock().unwrap(), [true, true, false, true]);
    assert_eq!(count("create_container web"), 3);
    tx.send(Trigger::Shutdown).await.unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn an_image_built_on_another_is_built_after_it() {
    let rt = FakeRuntime::new();
    let mut desired = desired();
    // `base` is built too, and app's Dockerfile starts FROM it.
    let mut base = desired.images["app"].clone();
    base.name = "base".into();
    std::sync::Arc::make_mut(&mut base.spec).reference =
        moor_spec::reference::parse("localhost/base:dev").unwrap();
    std::sync::Arc::make_mut(&mut base.spec)
        .build
        .as_mut()
        .unwrap()
        .context = PathBuf::from("/m/base");
    desired.images.insert("base".into(), base);
    rt.set_build_inputs(Path::new("/m/base"), inputs(&[("base.txt", "1")], "1"));
    let mut app = inputs(&[("main.py", "1")], "1");
    app.bases = BTreeMap::from([("localhost/base:dev".to_string(), None)]);
    rt.set_build_inputs(Path::new(CONTEXT), app);
    // Sorted by name, app's build would come first.
    let out = apply_once(&rt, &desired).await;
    assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
    let builds: Vec<String> = rt
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("build "))
        .collect();
    assert_eq!(
        builds,
        ["build localhost/base:dev", format!("build {REF}").as_str()]
    );

    // A failed base build skips the build on it.
    rt.set_build_inputs(Path::new("/m/base"), inputs(&[("base.txt", "2")], "1"));
    let mut app = inputs(&[("main.py", "2")], "1");
    app.bases = BTreeMap::from([("localhost/base:dev".to_string(), Some("sha256:x".into()))]);
    rt.set_build_inputs(Path::new(CONTEXT), app);
    rt.fail_next("build localhost/base:dev", "exit 1");
    let out = apply_once(&rt, &desired).await;
    let app = out
        .iter()
        .find(|o| o.action.name == REF)
        .expect("app's build");
    assert_eq!(
        app.result,
        Err("skipped: build of image localhost/base:dev failed".to_string())
    );
}

#[tokio::test]
async fn a_build_on_a_blocked_base_is_blocked_and_leaves_the_container_alone() {
    let rt = FakeRuntime::new();
    let mut desired = desired();
    let base = "localhost/base:1";
    let mut entry = desired.images["app"].clone();
    entry.name = "base".into();
    std::sync::Arc::make_mut(&mut entry.spec).reference =
        moor_spec::reference::parse(base).unwrap();
    std::sync::Arc::make_mut(&mut entry.spec).build = None;
    std::sync::Arc::make_mut(&mut entry.spec).pull = moor_spec::PullPolicy::Never;
    desired.images.insert("base".into(), entry);
    let mut app = inputs(&[("main.py", "1")], "1");
    app.bases = BTreeMap::from([(base.to_string(), None)]);
    rt.set_build_inputs(Path::new(CONTEXT), app);
    let p = plan(&rt, &desired).await;
    assert!(p.actions.is_empty(), "{p}");
    let blocked: Vec<String> = p
        .blocked
        .iter()
        .map(|b| format!("{} {}: {}", b.kind, b.name, b.reason))
        .collect();
    assert_eq!(
        blocked,
        [
            format!("image {REF}: image {base} is blocked"),
            format!("image {base}: not in the image store and pull = \"never\""),
            format!("container web: image {REF} is blocked"),
        ]
    );
}

/// A build `FROM` an image whose `[images]` entry says `verify`: the pull
/// of the base is asked for the key, comes first, and when it is refused
/// (no valid signature) the build on it is skipped, nothing built.
#[tokio::test]
async fn a_build_on_a_base_whose_signature_is_refused_is_skipped() {
    let rt = FakeRuntime::new();
    let mut desired = desired();
    let base = "registry.example.com/team/base:1";
    let mut entry = desired.images["app"].clone();
    entry.name = "base".into();
    std::sync::Arc::make_mut(&mut entry.spec).reference =
        moor_spec::reference::parse(base).unwrap();
    std::sync::Arc::make_mut(&mut entry.spec).build = None;
    let key = PathBuf::from("/m/keys/cosign.pub");
    std::sync::Arc::make_mut(&mut entry.spec).verify = Some(moor_spec::VerifySpec {
        key: key.clone(),
        pem: "-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----\n".into(),
    });
    desired.images.insert("base".into(), entry);
    let mut app = inputs(&[("main.py", "1")], "1");
    app.bases = BTreeMap::from([(base.to_string(), None)]);
    rt.set_build_inputs(Path::new(CONTEXT), app);
    rt.fail_next(
        &format!("pull {base}"),
        &format!("{base} is not signed: no signature by {}", key.display()),
    );
    let out = apply_once(&rt, &desired).await;
    assert_eq!(rt.pull_keys(base), [key]);
    let build = out
        .iter()
        .find(|o| o.action.name == REF)
        .expect("app's build");
    assert_eq!(
        build.result,
        Err(format!("skipped: pull of image {base} failed"))
    );
    assert!(
        !rt.calls().iter().any(|c| c.starts_with("build ")),
        "{:?}",
        rt.calls()
    );
}
