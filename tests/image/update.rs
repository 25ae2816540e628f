//! Image updates (`[images.X] update`) end to end: an agent following a
//! tag of a real registry on loopback (Debian's `docker-registry`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::layers::{self, Layer, TestImage, digest, file, tar_of};
use super::registry::Registry;
use crate::common::instance::Instance;
use crate::common::{http_get, wait_for};
use crate::gitops::{Answer, Receiver};

/// Long enough for a check, a pull and a replacement on a loaded machine,
/// well within a few intervals (the interval is 10 s, the shortest allowed).
const WITHIN: Duration = Duration::from_secs(90);

/// A busybox image whose `/version` says `version`.
fn app(version: &str) -> TestImage {
    let v = version.to_string();
    static BASE: std::sync::OnceLock<Layer> = std::sync::OnceLock::new();
    layers::image(vec![
        BASE.get_or_init(layers::base_layer).clone(),
        Layer::plain(&tar_of(|b| file(b, "version", v.as_bytes()))),
    ])
}

/// An image for another platform (never pulled here).
fn foreign(version: &str) -> TestImage {
    let v = version.to_string();
    layers::image_for(
        vec![Layer::plain(&tar_of(|b| file(b, "version", v.as_bytes())))],
        "riscv64",
    )
}

/// Pushes `image`'s blobs and manifest by digest.
fn push_by_digest(registry: &Registry, repo: &str, image: &TestImage) {
    for l in &image.layers {
        registry.push_blob(repo, &l.blob);
    }
    registry.push_blob(repo, &image.config);
    registry.push_manifest(
        repo,
        &image.manifest_digest,
        layers::OCI_MANIFEST,
        &image.manifest,
    );
}

/// Pushes an index of `ours` (this host's platform) and `theirs` under
/// `tag`; returns the index's digest.
fn push_index(
    registry: &Registry,
    repo: &str,
    tag: &str,
    ours: &TestImage,
    theirs: &TestImage,
) -> String {
    push_by_digest(registry, repo, ours);
    push_by_digest(registry, repo, theirs);
    let index = layers::index(&[(ours, layers::host_arch()), (theirs, "riscv64")]);
    registry.push_manifest(repo, tag, layers::OCI_INDEX, &index);
    digest(&index)
}

/// What every test here starts from: a host with busybox, a registry on
/// loopback (`None`: skipped, which only happens off CI), and a
/// directory for the manifests.
fn setup(project: &str) -> Option<(Instance, Registry, tempfile::TempDir)> {
    let host = Instance::with_busybox(project, &["docker-registry"])?;
    let registry = Registry::start()?;
    Some((host, registry, tempfile::tempdir().expect("tempdir")))
}

/// `work/<project>/stack.toml` with an image `app` following `reference`
/// under `update`, and a container `web` printing its `/version`.
fn manifests(work: &Path, project: &str, reference: &str, update: &str) -> PathBuf {
    let dir = work.join(project);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("stack.toml"),
        format!(
            "[images.app]\nref = \"{reference}\"\nupdate = {update}\n\n\
             [containers.web]\nimage = \"app\"\nnetwork_mode = \"none\"\n\
             command = [\"sh\", \"-c\", \"exec sleep 3600\"]\n"
        ),
    )
    .expect("write");
    dir
}

/// What `/version` says in the running `web`.
fn version(host: &Instance) -> Option<String> {
    let out = host.moor(&["exec", "web", "--", "cat", "/version"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `/status`'s entry for image `app` of the one source.
fn app_status(host: &Instance) -> serde_json::Value {
    host.status()["sources"][0]["images"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "app").cloned())
        .unwrap_or_default()
}

fn image_of(host: &Instance) -> String {
    host.container("web")
        .and_then(|c| c["image"].as_str().map(String::from))
        .unwrap_or_default()
}

/// A re-pushed tag (a multi-platform index) replaces the container with
/// the new image within an interval; a new index whose image for this
/// platform is the same replaces nothing; `/status` and `moor_image_info`
/// name the digest; and a plain `moor apply` afterwards keeps the new image.
#[test]
fn a_re_pushed_tag_replaces_the_container_and_apply_keeps_it() {
    let Some((mut host, registry, work)) = setup("imup") else {
        return;
    };
    let repo = "imup/app";
    let reference = format!("{}/{repo}:1", registry.addr);
    let (v1, v2) = (app("one"), app("two"));
    let first = push_index(&registry, repo, "1", &v1, &foreign("a"));
    let dir = manifests(work.path(), "imup", &reference, "{ interval = \"10s\" }");
    host.start_agent(&["--source", dir.to_str().expect("utf-8"), "--resync", "1h"]);

    wait_for("web runs image one", WITHIN, || {
        version(&host).as_deref() == Some("one")
    });
    // Twice the usual bound: this wait timed out twice in CI's full run
    // (never alone); the message says what the agent saw.
    let deadline = std::time::Instant::now() + 2 * WITHIN;
    loop {
        let s = app_status(&host);
        if s["reference"] == format!("{reference}@{first}") && s["digest"] == first.as_str() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first check did not pin the index {first}: {s:#}\n{:#}\n{}",
            host.status()["sources"],
            host.agent_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let pid = host.pid("web").expect("running");

    // Another platform's image changes: a new index, the same image here.
    let second = push_index(&registry, repo, "1", &v1, &foreign("b"));
    assert_ne!(first, second);
    wait_for("the new index is pinned and pulled", WITHIN, || {
        let s = app_status(&host);
        s["reference"] == format!("{reference}@{second}") && s["digest"] == second.as_str()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        host.pid("web"),
        Some(pid),
        "the same image replaced nothing"
    );

    // This platform's image changes: replaced within an interval.
    let third = push_index(&registry, repo, "1", &v2, &foreign("b"));
    wait_for("web runs image two", WITHIN, || {
        version(&host).as_deref() == Some("two")
            && image_of(&host) == format!("{reference}@{third}")
    });
    assert_ne!(host.pid("web"), Some(pid));
    let s = app_status(&host);
    assert_eq!(s["digest"], third.as_str(), "{s:#}");
    assert_eq!(s["written"], reference.as_str(), "{s:#}");
    assert!(s["update"]["last_update"].is_number(), "{s:#}");
    assert_eq!(s["update"]["error"], serde_json::Value::Null, "{s:#}");
    let (_, metrics) = http_get(host.port, "/metrics").expect("metrics");
    let info = format!(
        "moor_image_info{{digest=\"{third}\",image=\"app\",reference=\"{reference}@{third}\"}} 1"
    );
    assert!(metrics.lines().any(|l| l == info), "{info} in\n{metrics}");
    assert!(
        metrics.contains("moor_image_update_checks_total{result=\"updated\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(&first), "a stale series: {metrics}");

    // A plain `moor apply` of the same manifests keeps the new image.
    host.stop_agent();
    let pid = host.pid("web").expect("running");
    let project = ["-p", "imup", dir.to_str().expect("utf-8")];
    let plan = host.moor(&[&["plan"][..], &project[..]].concat());
    assert_eq!(
        plan.status.code(),
        Some(0),
        "nothing to change: {}",
        String::from_utf8_lossy(&plan.stdout)
    );
    host.moor_ok(&[&["apply"][..], &project[..]].concat());
    assert_eq!(host.pid("web"), Some(pid));
    assert_eq!(version(&host).as_deref(), Some("two"));
}

/// An update is a revision of its own: a re-pushed tag whose new image
/// fails its health check is rolled back to the digest before it, which
/// stays pinned; the bad digest is not pulled again while the registry
/// offers it, `moor history` shows both revisions, and the next digest the
/// registry offers is applied.
#[test]
fn an_update_that_fails_its_health_check_is_rolled_back_and_not_retried() {
    let Some((mut host, registry, work)) = setup("imrb") else {
        return;
    };
    let repo = "imrb/app";
    let reference = format!("{}/{repo}:1", registry.addr);
    let one = app("one");
    registry.push(repo, "1", &one);
    let dir = work.path().join("imrb");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("stack.toml"),
        format!(
            "[images.app]\nref = \"{reference}\"\nupdate = {{ interval = \"10s\" }}\n\n\
             [containers.web]\nimage = \"app\"\nnetwork_mode = \"none\"\n\
             command = [\"sh\", \"-c\", \"exec sleep 3600\"]\n\
             healthcheck = {{ cmd = [\"sh\", \"-c\", \"! grep -q broken /version\"], interval = \"1s\", retries = 1 }}\n"
        ),
    )
    .expect("write");
    host.start_agent(&[
        "--source",
        dir.to_str().expect("utf-8"),
        "--resync",
        "1h",
        "--deploy-timeout",
        "30s",
        "--min-ready",
        "1s",
    ]);
    let source = |host: &Instance| host.status()["sources"][0].clone();
    let pinned_one = format!("{reference}@{}", one.manifest_digest);
    wait_for("web runs image one, pinned and healthy", WITHIN, || {
        let s = source(&host);
        version(&host).as_deref() == Some("one")
            && app_status(&host)["reference"] == pinned_one.as_str()
            && s["outcome"] == "healthy"
            && s["applied_revision"]
                .as_str()
                .is_some_and(|r| r.contains("+img:"))
    });
    let good = source(&host)["applied_revision"]
        .as_str()
        .expect("revision")
        .to_string();

    // The tag re-pushed with an image that fails the health check.
    let broken = app("broken");
    registry.push(repo, "1", &broken);
    wait_for("the update rolled back", WITHIN, || {
        source(&host)["rolled_back"].is_string()
    });
    let s = source(&host);
    let bad = s["refused_revision"].as_str().expect("refused").to_string();
    assert!(bad.contains("+img:") && bad != good, "{s:#}");
    let msg = s["rolled_back"].as_str().expect("message");
    assert!(
        msg.contains("because container web failed its health check"),
        "{msg}"
    );
    assert_eq!(s["applied_revision"], good.as_str(), "{s:#}");
    wait_for("web runs image one again", WITHIN, || {
        version(&host).as_deref() == Some("one") && image_of(&host) == pinned_one
    });

    // Not retried while the registry offers it (two more checks), and the
    // pin is the old digest again.
    std::thread::sleep(Duration::from_secs(22));
    assert_eq!(version(&host).as_deref(), Some("one"));
    assert_eq!(image_of(&host), pinned_one);
    assert_eq!(app_status(&host)["reference"], pinned_one.as_str());
    let pins =
        std::fs::read_to_string(host.dir().join("sources/imrb/image-updates.json")).expect("pins");
    let pins: serde_json::Value = serde_json::from_str(&pins).expect("json");
    assert_eq!(
        pins["images"][&reference]["digest"],
        one.manifest_digest.as_str(),
        "{pins:#}"
    );
    assert_eq!(
        pins["refused"][&reference],
        broken.manifest_digest.as_str(),
        "{pins:#}"
    );
    assert!(
        host.agent_log().contains("image update rolled back"),
        "{}",
        host.agent_log()
    );

    // `moor history` shows the update as a revision, rolled back.
    let out = host.moor_ok(&["history", "imrb"]);
    let short = |r: &str| {
        let (base, images) = r.split_once("+img:").expect("an update's revision");
        let base = base.strip_prefix("sha256:").unwrap_or(base);
        format!("{}+img:{}", &base[..12], &images[..8])
    };
    assert!(
        out.lines()
            .any(|l| l.starts_with(&short(&bad)) && l.contains("rolled_back")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&short(&good)) && l.contains("healthy")),
        "{out}"
    );
    assert!(out.contains("container web: replace"), "{out}");

    // The registry offers another digest: applied.
    let three = app("three");
    registry.push(repo, "1", &three);
    wait_for("web runs image three, healthy", WITHIN, || {
        let s = source(&host);
        version(&host).as_deref() == Some("three")
            && s["outcome"] == "healthy"
            && s["rolled_back"].is_null()
    });
    assert_eq!(
        image_of(&host),
        format!("{reference}@{}", three.manifest_digest)
    );
}

/// `semver:^1.4` runs the highest tag in range among 1.4.0, 1.4.2, 1.10.0,
/// 2.0.0, latest and v1.5.0 (1.10.0), and follows a new one (1.11.0).
#[test]
fn semver_runs_the_highest_tag_in_range_and_follows_a_new_one() {
    let Some((mut host, registry, work)) = setup("imsv") else {
        return;
    };
    let repo = "imsv/app";
    let mut images = std::collections::BTreeMap::new();
    for tag in ["1.4.0", "1.4.2", "1.10.0", "2.0.0", "latest", "v1.5.0"] {
        let image = app(tag);
        registry.push(repo, tag, &image);
        images.insert(tag, image);
    }
    let reference = format!("{}/{repo}:1.4.0", registry.addr);
    let dir = manifests(
        work.path(),
        "imsv",
        &reference,
        "{ interval = \"10s\", policy = \"semver:^1.4\" }",
    );
    host.start_agent(&["--source", dir.to_str().expect("utf-8"), "--resync", "1h"]);
    let picked = format!(
        "{}/{repo}:1.10.0@{}",
        registry.addr, images["1.10.0"].manifest_digest
    );
    wait_for("web runs 1.10.0", WITHIN, || {
        version(&host).as_deref() == Some("1.10.0") && image_of(&host) == picked
    });
    let s = app_status(&host);
    assert_eq!(s["update"]["policy"], "semver:^1.4", "{s:#}");
    assert_eq!(s["written"], reference.as_str(), "{s:#}");

    registry.push(repo, "1.11.0", &app("1.11.0"));
    wait_for("web runs 1.11.0", WITHIN, || {
        version(&host).as_deref() == Some("1.11.0")
    });
    let s = app_status(&host);
    assert!(
        s["update"]["latest"]
            .as_str()
            .is_some_and(|l| l.starts_with("1.11.0@sha256:")),
        "{s:#}"
    );
}

/// `notify` reports a re-pushed tag — in `/status`, the log and one
/// `update_available` notification — and changes nothing.
#[test]
fn notify_reports_and_replaces_nothing() {
    let Some((mut host, registry, work)) = setup("imnt") else {
        return;
    };
    let repo = "imnt/app";
    registry.push(repo, "1", &app("one"));
    let reference = format!("{}/{repo}:1", registry.addr);
    let dir = manifests(
        work.path(),
        "imnt",
        &reference,
        "{ interval = \"10s\", policy = \"notify\" }",
    );
    let receiver = Receiver::start(Answer::Ok);
    let url_file = work.path().join("notify.url");
    std::fs::write(
        &url_file,
        format!("http://127.0.0.1:{}/hook\n", receiver.port),
    )
    .expect("url file");
    let config = work.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "resync = \"1h\"\n[[source]]\nname = \"imnt\"\nurl = \"{}\"\n\n\
             [[notify]]\nkind = \"webhook\"\nurl_file = \"{}\"\nevents = [\"update_available\"]\n",
            dir.display(),
            url_file.display()
        ),
    )
    .expect("config");
    host.start_agent(&["--config", config.to_str().expect("utf-8")]);
    wait_for("web runs image one", WITHIN, || {
        version(&host).as_deref() == Some("one")
    });
    let pid = host.pid("web").expect("running");
    let two = app("two");
    registry.push(repo, "1", &two);
    wait_for("the update is reported", WITHIN, || {
        let s = app_status(&host);
        s["update"]["update_available"] == true
            && s["update"]["latest"] == format!("1@{}", two.manifest_digest)
    });
    assert!(
        host.agent_log().contains("image update available"),
        "{}",
        host.agent_log()
    );
    wait_for("the notification", WITHIN, || !receiver.events().is_empty());
    // A few more checks change nothing, and say it once.
    std::thread::sleep(Duration::from_secs(22));
    let events = receiver.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["event"], "update_available");
    assert_eq!(events[0]["source"], "imnt");
    assert_eq!(events[0]["resource"], format!("image/{reference}"));
    assert!(
        events[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&two.manifest_digest)),
        "{events:#?}"
    );
    assert_eq!(host.pid("web"), Some(pid));
    assert_eq!(version(&host).as_deref(), Some("one"));
    assert_eq!(image_of(&host), reference);
    assert_eq!(app_status(&host)["reference"], reference.as_str());
}

/// A registry that goes away is reported, retried, and leaves the
/// container running as it was.
#[test]
fn a_registry_that_is_down_leaves_the_container_running() {
    let Some((mut host, registry, work)) = setup("imdn") else {
        return;
    };
    let repo = "imdn/app";
    registry.push(repo, "1", &app("one"));
    let reference = format!("{}/{repo}:1", registry.addr);
    let dir = manifests(work.path(), "imdn", &reference, "{ interval = \"10s\" }");
    host.start_agent(&["--source", dir.to_str().expect("utf-8"), "--resync", "1h"]);
    wait_for("web runs image one", WITHIN, || {
        version(&host).as_deref() == Some("one")
    });
    wait_for("the first check", WITHIN, || {
        app_status(&host)["update"]["last_check"].is_number()
    });
    let pid = host.pid("web").expect("running");
    drop(registry);
    wait_for("two failed checks reported", WITHIN, || {
        let s = app_status(&host);
        s["update"]["failures"].as_u64().is_some_and(|n| n >= 2) && s["update"]["error"].is_string()
    });
    assert!(
        host.agent_log().contains("image update check failed"),
        "{}",
        host.agent_log()
    );
    assert_eq!(host.pid("web"), Some(pid));
    assert!(host.running("web"));
    assert_eq!(version(&host).as_deref(), Some("one"));
    let (_, metrics) = http_get(host.port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("moor_image_update_checks_total{result=\"failure\"}"),
        "{metrics}"
    );
    assert_eq!(
        host.status()["sources"][0]["last_error"],
        serde_json::Value::Null
    );
}

/// A rollback runs the image the good revision ran, by its digest, not
/// what the tag names by then: `app:1` (image one) runs healthy; the tag
/// is re-pushed (image two) and pulled again by hand, the old image is
/// left with no name; a bad edit fails; `moor image prune` runs meanwhile
/// and keeps the old image (a recorded healthy revision ran it), and the
/// registry no longer has it: the rollback runs image one from the store.
#[test]
fn a_rollback_runs_the_digest_the_good_revision_ran_even_after_prune() {
    let Some((mut host, registry, work)) = setup("rbim") else {
        return;
    };
    let repo = "rbim/app";
    let reference = format!("{}/{repo}:1", registry.addr);
    let (v1, v2) = (app("one"), app("two"));
    registry.push(repo, "1", &v1);
    let d1 = v1.manifest_digest.clone();
    let dir = work.path().join("rbim");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // `ready` false: a check that fails, its failures not counted for an
    // hour, so the edit fails only at the deploy timeout (time for the
    // prune in between).
    let write = |greeting: &str, ready: bool| {
        let check = if ready {
            "healthcheck = { cmd = [\"true\"], interval = \"1s\", retries = 1 }\n"
        } else {
            "healthcheck = { cmd = [\"false\"], interval = \"1s\", retries = 1, start_period = \"1h\" }\n"
        };
        let text = format!(
            "[images.app]\nref = \"{reference}\"\n\n\
             [containers.web]\nimage = \"app\"\nnetwork_mode = \"none\"\n\
             command = [\"sh\", \"-c\", \"exec sleep 3600\"]\n\
             env = {{ GREETING = \"{greeting}\" }}\n{check}"
        );
        let tmp = dir.join(".stack.toml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join("stack.toml")).expect("rename");
    };
    write("hello", true);
    host.start_agent(&[
        "--source",
        dir.to_str().expect("utf-8"),
        "--resync",
        "1h",
        "--deploy-timeout",
        "30s",
        "--min-ready",
        "1s",
    ]);
    wait_for("web runs image one, healthy", WITHIN, || {
        version(&host).as_deref() == Some("one")
            && host.status()["sources"][0]["outcome"] == "healthy"
    });
    let good = host.status()["sources"][0]["applied_revision"].clone();

    // The tag moves, and is pulled again by hand: `app:1` names image two
    // on this host, image one no name at all.
    registry.push(repo, "1", &v2);
    host.moor_ok(&["image", "pull", &reference]);
    write("broken", false);
    wait_for("the bad edit runs image two", WITHIN, || {
        version(&host).as_deref() == Some("two")
            && host.container_env("web", "GREETING").as_deref() == Some("broken")
    });
    assert_eq!(host.status()["sources"][0]["outcome"], "pending");
    let pruned = host.moor_ok(&["image", "prune"]);
    host.moor_ok(&["image", "inspect", &d1]);
    // Gone from the registry: only the store has it now.
    let deleted = ureq::delete(&format!(
        "http://{}/v2/{repo}/manifests/{d1}",
        registry.addr
    ))
    .call()
    .expect("delete the manifest");
    assert_eq!(deleted.status(), 202);

    wait_for("the rollback", WITHIN, || {
        host.status()["sources"][0]["rolled_back"].is_string()
    });
    let pinned = format!("{reference}@{d1}");
    wait_for("web runs image one again, by its digest", WITHIN, || {
        version(&host).as_deref() == Some("one") && image_of(&host) == pinned
    });
    let s = host.status()["sources"][0].clone();
    assert_eq!(s["applied_revision"], good, "{s:#}");
    assert!(
        s["rolled_back"]
            .as_str()
            .is_some_and(|m| m.contains("not ready within deploy_timeout")),
        "{s:#}"
    );
    assert_eq!(
        host.container_env("web", "GREETING").as_deref(),
        Some("hello")
    );
    wait_for("the rollback healthy", WITHIN, || {
        host.status()["sources"][0]["outcome"] == "healthy"
    });
    assert!(pruned.contains("removed"), "{pruned}");
    host.stop_agent();
}
