//! Rollback to the last good revision, end to end: a revision whose
//! container fails its health check is rolled back within `deploy_timeout`
//! (5 s here) + 10 s, the previous container runs again, the bad revision
//! is not applied again until the source moves, and the next one applies —
//! for a git source and for a directory; `moor rollback --to` by hand;
//! `moor history`; what `/status`, `moor status` and the metrics say.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::instance::Instance;
use crate::common::{commit_and_push, fleet_repo, http_get, text, wait_for};

/// Passes its health check when `healthy`, fails it at once otherwise.
/// `user` runs it (and its check) as another user than root.
fn manifest(greeting: &str, healthy: bool, user: Option<&str>) -> String {
    manifest_with(greeting, healthy, user, "")
}

/// [`manifest`], with `extra` lines in the container's table.
fn manifest_with(greeting: &str, healthy: bool, user: Option<&str>, extra: &str) -> String {
    let check = if healthy { "true" } else { "false" };
    let user = user
        .map(|u| format!("user = \"{u}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[containers.gweb]
image        = "busybox"
command      = ["sleep", "3600"]
env          = {{ GREETING = "{greeting}" }}
network_mode = "none"
init         = true
healthcheck  = {{ cmd = ["{check}"], interval = "1s", retries = 1 }}
{user}{extra}"#
    )
}

struct Repo {
    _tmp: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new() -> Self {
        let (tmp, bare, work) = fleet_repo();
        Self {
            _tmp: tmp,
            bare,
            work,
        }
    }

    /// Commits the manifest `text` and `site/index.txt` holding `page`.
    fn commit(&self, text: &str, page: &str, subject: &str) -> String {
        std::fs::write(self.work.join("stack.toml"), text).expect("write");
        std::fs::create_dir_all(self.work.join("site")).expect("mkdir");
        std::fs::write(self.work.join("site/index.txt"), page).expect("write");
        commit_and_push(&self.work, subject, &[])
    }
}

fn source(host: &Instance) -> serde_json::Value {
    host.status()["sources"][0].clone()
}

fn greeting(host: &Instance) -> Option<String> {
    host.container_env("gweb", "GREETING")
}

#[track_caller]
fn wait_greeting(host: &Instance, want: &str) {
    wait_for(&format!("GREETING={want}"), Duration::from_secs(60), || {
        greeting(host).as_deref() == Some(want)
    });
}

#[track_caller]
fn wait_outcome(host: &Instance, revision: Option<&str>, outcome: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = source(host);
        if s["outcome"] == outcome && revision.is_none_or(|r| s["applied_revision"] == r) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "test timeout expired waiting for outcome {outcome} of {revision:?}: {s:#}\nresources: {:#}\n{}",
            host.status()["resources"],
            host.agent_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Starts the agent on the directory `dir` (a deploy timeout of 5 s,
/// `min_ready`, and `extra` arguments), waits until it serves `hello`
/// and judged that revision healthy, and returns the revision.
#[track_caller]
fn start_on_dir(host: &mut Instance, dir: &Path, min_ready: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "--source",
        dir.to_str().expect("utf-8"),
        "--deploy-timeout",
        "5s",
        "--min-ready",
        min_ready,
    ];
    args.extend_from_slice(extra);
    host.start_agent(&args);
    wait_greeting(host, "hello");
    wait_outcome(host, None, "healthy");
    source(host)["applied_revision"]
        .as_str()
        .expect("revision")
        .to_string()
}

fn rollbacks_metric(host: &Instance, source: &str) -> Option<f64> {
    let (_, body) = http_get(host.port, "/metrics")?;
    let prefix = format!("moor_rollbacks_total{{source=\"{source}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

fn short(rev: &str) -> &str {
    let r = rev.strip_prefix("sha256:").unwrap_or(rev);
    &r[..12]
}

/// Waits for the rollback from `bad` and checks it came within
/// `deploy_timeout + 10 s` of the bad revision being applied.
#[track_caller]
fn expect_rollback(
    host: &Instance,
    bad_applied: Instant,
    bad: &str,
    good: &str,
    greeting_now: &str,
) {
    wait_for("the rollback", Duration::from_secs(60), || {
        source(host)["rolled_back"].is_string()
    });
    let took = bad_applied.elapsed();
    assert!(
        took < Duration::from_secs(5 + 10),
        "rolled back after {took:?}, more than deploy_timeout + 10 s"
    );
    let s = source(host);
    let msg = s["rolled_back"].as_str().expect("message");
    assert!(
        msg.starts_with(&format!(
            "rolled back from {} to {} because container gweb failed its health check",
            short(bad),
            short(good)
        )),
        "{msg}"
    );
    assert_eq!(s["applied_revision"], good);
    assert_eq!(s["refused_revision"], bad);
    wait_greeting(host, greeting_now);
    wait_outcome(host, Some(good), "healthy");
    // A rolled-back deploy is no success: `moor status` says so and exits 2.
    let out = host.moor(&["status", "--addr", &format!("127.0.0.1:{}", host.port)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(msg), "{}", text(&out));
}

#[test]
fn a_git_commit_that_fails_its_health_check_is_rolled_back() {
    let Some(mut host) = Instance::with_busybox("fleet", &["git"]) else {
        return;
    };
    let repo = Repo::new();
    // The container bind-mounts a file of the commit.
    let git_manifest = |greeting: &str, healthy: bool| {
        manifest_with(greeting, healthy, None, "mounts = [\"./site:/srv:ro\"]\n")
    };
    let page = |host: &Instance| {
        let out = host.moor(&["exec", "gweb", "--", "cat", "/srv/index.txt"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let good = repo.commit(&git_manifest("hello", true), "page one", "hello");
    let url = format!("git+file://{}", repo.bare.display());
    let agent_args = [
        "--source",
        &url,
        "--interval",
        "1s",
        "--deploy-timeout",
        "5s",
        "--min-ready",
        "1s",
    ];
    host.start_agent(&agent_args);
    wait_greeting(&host, "hello");
    wait_outcome(&host, Some(&good), "healthy");
    assert_eq!(page(&host), "page one");
    assert_eq!(rollbacks_metric(&host, "fleet"), Some(0.0));

    // A commit whose container fails its health check.
    let bad = repo.commit(&git_manifest("broken", false), "page two", "break it");
    wait_for("the bad commit applied", Duration::from_secs(60), || {
        greeting(&host).as_deref() == Some("broken") || source(&host)["rolled_back"].is_string()
    });
    let applied = Instant::now();
    expect_rollback(&host, applied, &bad, &good, "hello");
    assert_eq!(rollbacks_metric(&host, "fleet"), Some(1.0));
    // The bind-mounted file is the good commit's again.
    assert_eq!(page(&host), "page one");

    // Not retried while the source stays on it (a dozen polls).
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert_eq!(
            greeting(&host).as_deref(),
            Some("hello"),
            "the bad commit was applied again"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(source(&host)["applied_revision"], good.as_str());

    // An agent restart keeps the rollback: the good commit in force with
    // its files, the bad one still refused.
    host.stop_agent();
    host.start_agent(&agent_args);
    wait_outcome(&host, Some(&good), "healthy");
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            greeting(&host).as_deref(),
            Some("hello"),
            "the bad commit was applied after a restart"
        );
        assert_eq!(page(&host), "page one");
        std::thread::sleep(Duration::from_millis(300));
    }
    let s = source(&host);
    assert_eq!(s["refused_revision"], bad.as_str(), "{s}");
    assert!(
        s["rolled_back"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("rolled back from {}", short(&bad)))),
        "the rollback is still said after a restart: {s}"
    );
    assert_eq!(host.status()["ready"], true);
    let out = host.moor(&["status", "--addr", &format!("127.0.0.1:{}", host.port)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // The source moves: the new commit applies.
    let next = repo.commit(&git_manifest("hola", true), "page three", "hola");
    wait_greeting(&host, "hola");
    wait_outcome(&host, Some(&next), "healthy");
    assert_eq!(page(&host), "page three");
    let s = source(&host);
    assert!(s["rolled_back"].is_null(), "{s}");
    assert!(s["refused_revision"].is_null(), "{s}");

    // `moor history`: newest first, with outcomes and what changed.
    let out = host.moor_ok(&["history", "fleet"]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    let row = |rev: &str, outcome: &str| format!("{}  {outcome}", short(rev));
    assert!(lines[0].starts_with("REVISION"), "{out}");
    assert!(lines[1].starts_with(&row(&next, "healthy")), "{out}");
    // Applied at the restart, applied as the rollback, rolled back, applied.
    assert!(lines[2].starts_with(&row(&good, "healthy")), "{out}");
    assert!(lines[3].starts_with(&row(&good, "healthy")), "{out}");
    assert!(lines[4].starts_with(&row(&bad, "rolled_back")), "{out}");
    assert!(lines[5].starts_with(&row(&good, "healthy")), "{out}");
    assert!(
        out.contains("container gweb: replace (spec changed"),
        "{out}"
    );
    assert!(
        out.contains("because container gweb failed its health check"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&host.moor_ok(&["history", "fleet", "--json"])).expect("json");
    let last = &json.as_array().expect("list")[json.as_array().unwrap().len() - 1];
    assert_eq!(last["revision"], next.as_str());
    assert!(
        last["images"]["localhost/moor-example/busybox:1"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{last}"
    );
    assert!(last["specs"]["container/gweb"].is_string(), "{last}");

    // By hand, to a named revision; the one in force is then refused.
    let out = host.moor_ok(&["rollback", "fleet", "--to", short(&good)]);
    assert!(
        out.contains(&format!(
            "rolled back from {} to {} by hand",
            short(&next),
            short(&good)
        )),
        "{out}"
    );
    wait_greeting(&host, "hello");
    assert_eq!(page(&host), "page one");
    assert_eq!(source(&host)["refused_revision"], next.as_str());
    // Counted since this agent started.
    assert_eq!(rollbacks_metric(&host, "fleet"), Some(1.0));

    // Hostile and mistaken requests change nothing and say why.
    for (args, says) in [
        (
            vec!["rollback", "fleet", "--to", "../../etc/passwd"],
            "is not a revision",
        ),
        (vec!["rollback", "fleet", "--to", "ab"], "is not a revision"),
        (
            vec!["rollback", "fleet", "--to", "0000000000"],
            "is not one of the healthy revisions kept",
        ),
        (vec!["rollback", "nosuch"], "no source named \"nosuch\""),
        (vec!["history", "../../etc"], "source \"../../etc\""),
        (
            vec!["history", "nosuch"],
            "no revision history for source \"nosuch\"",
        ),
    ] {
        let out = host.moor(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    assert_eq!(greeting(&host).as_deref(), Some("hello"));
    host.stop_agent();
}

/// `moor rollback --to` a commit applied before the agent's start: the
/// agent keeps the desired states of those applied since in memory, and
/// checks an earlier healthy commit of its history out again and loads it.
#[test]
fn by_hand_to_a_commit_from_before_a_restart() {
    let Some(mut host) = Instance::with_busybox("fleet", &["git"]) else {
        return;
    };
    let repo = Repo::new();
    let git_manifest =
        |greeting: &str| manifest_with(greeting, true, None, "mounts = [\"./site:/srv:ro\"]\n");
    let page = |host: &Instance| {
        let out = host.moor(&["exec", "gweb", "--", "cat", "/srv/index.txt"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first = repo.commit(&git_manifest("hello"), "page one", "hello");
    let url = format!("git+file://{}", repo.bare.display());
    let agent_args = [
        "--source",
        &url,
        "--interval",
        "1s",
        "--deploy-timeout",
        "5s",
        "--min-ready",
        "1s",
    ];
    host.start_agent(&agent_args);
    wait_outcome(&host, Some(&first), "healthy");
    let second = repo.commit(&git_manifest("hola"), "page two", "hola");
    wait_outcome(&host, Some(&second), "healthy");
    assert_eq!(page(&host), "page two");

    host.stop_agent();
    host.start_agent(&agent_args);
    wait_outcome(&host, Some(&second), "healthy");
    let out = host.moor_ok(&["rollback", "fleet", "--to", short(&first)]);
    assert!(
        out.contains(&format!(
            "rolled back from {} to {} by hand",
            short(&second),
            short(&first)
        )),
        "{out}"
    );
    wait_greeting(&host, "hello");
    wait_outcome(&host, Some(&first), "healthy");
    assert_eq!(page(&host), "page one");
    assert_eq!(source(&host)["refused_revision"], second.as_str());
    // The remote stays on the commit rolled back from: not applied again.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(greeting(&host).as_deref(), Some("hello"));
    assert_eq!(page(&host), "page one");
    host.stop_agent();
}

#[test]
fn a_directory_edit_that_fails_is_rolled_back_until_the_files_change_again() {
    let Some(mut host) = Instance::with_busybox("site", &[]) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("site");
    std::fs::create_dir(&dir).expect("mkdir");
    let file = dir.join("stack.toml");
    // Not root: the container and its health check run as nobody. A job
    // beside it, changed with it, exits 0 each time: no failure. The
    // container serves a file of the directory (bind-mounted read-only).
    let dir_manifest = |greeting: &str, healthy: bool| {
        manifest_with(
            greeting,
            healthy,
            Some("65534:65534"),
            &format!("mounts = [\"./site:/srv:ro\"]\n{}", job(greeting)),
        )
    };
    let site = dir.join("site");
    std::fs::create_dir(&site).expect("mkdir");
    std::fs::write(site.join("index.txt"), "page one").expect("write");
    // A link inside the served directory to a host secret: a snapshot
    // copies the link, never what it points at.
    std::os::unix::fs::symlink("/etc/shadow", site.join("shadow")).expect("symlink");
    let page = |host: &Instance| {
        let out = host.moor(&["exec", "gweb", "--", "cat", "/srv/index.txt"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    std::fs::write(&file, dir_manifest("hello", true)).expect("write");
    let good = start_on_dir(&mut host, &dir, "1s", &[]);
    assert_eq!(page(&host), "page one");
    // The healthy revision's files are kept: copied, links as links.
    let snapshot = host
        .dir()
        .join("snapshots/site")
        .join(good.strip_prefix("sha256:").expect("a directory revision"));
    wait_for("the snapshot", Duration::from_secs(30), || {
        snapshot.join("0/site/index.txt").exists()
    });
    assert_eq!(
        std::fs::read_to_string(snapshot.join("0/site/index.txt")).expect("read"),
        "page one"
    );
    assert_eq!(
        std::fs::read_link(snapshot.join("0/site/shadow")).expect("a link"),
        Path::new("/etc/shadow")
    );

    // The served file edited in place and the manifest broken, together.
    std::fs::write(site.join("index.txt"), "page two").expect("edit in place");
    write(&file, &dir_manifest("broken", false));
    wait_for("the bad edit applied", Duration::from_secs(60), || {
        greeting(&host).as_deref() == Some("broken") || source(&host)["rolled_back"].is_string()
    });
    let applied = Instant::now();
    let bad = source(&host)["revision"]
        .as_str()
        .expect("revision")
        .to_string();
    assert_ne!(bad, good);
    expect_rollback(&host, applied, &bad, &good, "hello");
    let uid = host.moor_ok(&["exec", "gweb", "--", "id", "-u"]);
    assert_eq!(uid.trim(), "65534");
    // The good revision's file, from its snapshot, though the directory
    // holds the new one.
    assert_eq!(page(&host), "page one");
    assert_eq!(
        std::fs::read_to_string(site.join("index.txt")).expect("read"),
        "page two"
    );

    // Written again unchanged (an editor's save), and a comment added: the
    // same desired state, the same revision: still refused.
    write(&file, &dir_manifest("broken", false));
    write(
        &file,
        &format!("# still broken\n{}", dir_manifest("broken", false)),
    );
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            greeting(&host).as_deref(),
            Some("hello"),
            "the bad edit was applied again"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // A real change applies, with the directory's files as they are now.
    write(&file, &dir_manifest("hola", true));
    wait_greeting(&host, "hola");
    wait_outcome(&host, None, "healthy");
    assert!(source(&host)["rolled_back"].is_null());
    assert_eq!(page(&host), "page two");
    host.stop_agent();
}

/// A one-shot job (restart = "no") that exits 0, changed with `greeting`.
fn job(greeting: &str) -> String {
    format!(
        "\n[containers.seed]\nimage = \"busybox\"\ncommand = [\"true\"]\nenv = {{ GREETING = \"{greeting}\" }}\nnetwork_mode = \"none\"\n"
    )
}

#[test]
fn rollback_off_leaves_a_failed_edit_in_force_and_reports_it() {
    let Some(mut host) = Instance::with_busybox("keep", &[]) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("keep");
    std::fs::create_dir(&dir).expect("mkdir");
    let file = dir.join("stack.toml");
    std::fs::write(&file, manifest("hello", true, None)).expect("write");
    start_on_dir(&mut host, &dir, "1s", &["--rollback", "off"]);
    write(&file, &manifest("broken", false, None));
    wait_greeting(&host, "broken");
    wait_outcome(&host, None, "failed");
    let s = source(&host);
    let m = s["outcome_message"].as_str().expect("why");
    assert!(
        m.contains(
            "failed: container gweb failed its health check (rollback = \"off\": left in force)"
        ),
        "{m}"
    );
    assert!(s["rolled_back"].is_null(), "{s}");
    let out = host.moor(&["status", "--addr", &format!("127.0.0.1:{}", host.port)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(m), "{}", text(&out));
    let (_, metrics) = http_get(host.port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("moor_source_revision_outcome{outcome=\"failed\",source=\"keep\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("moor_rollbacks_total{source=\"keep\"} 0"),
        "{metrics}"
    );
    // Still in force a while later: nothing rolled it back.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(greeting(&host).as_deref(), Some("broken"));
    write(&file, &manifest("fixed", true, None));
    wait_greeting(&host, "fixed");
    wait_outcome(&host, None, "healthy");
    host.stop_agent();
}

#[test]
fn a_crash_looping_edit_is_rolled_back_within_the_deploy_timeout() {
    let Some(mut host) = Instance::with_busybox("loop", &[]) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("loop");
    std::fs::create_dir(&dir).expect("mkdir");
    let file = dir.join("stack.toml");
    // No health check: running for min_ready is what ready means.
    let plain = |greeting: &str, command: &str| {
        format!(
            "[images.busybox]\nref = \"localhost/moor-example/busybox:1\"\npull = \"never\"\n\n\
             [containers.gweb]\nimage = \"busybox\"\ncommand = {command}\nrestart = \"always\"\n\
             env = {{ GREETING = \"{greeting}\" }}\nnetwork_mode = \"none\"\ninit = true\n"
        )
    };
    std::fs::write(&file, plain("hello", r#"["sleep", "3600"]"#)).expect("write");
    let good = start_on_dir(&mut host, &dir, "2s", &[]);
    // Exits 3 at once, every time it is restarted.
    write(&file, &plain("loop", r#"["sh", "-c", "exit 3"]"#));
    let edited = Instant::now();
    wait_for("the rollback", Duration::from_secs(60), || {
        source(&host)["rolled_back"].is_string()
    });
    // Its debounce and first start, then deploy_timeout, then 10 s.
    assert!(
        edited.elapsed() < Duration::from_secs(5 + 10),
        "rolled back after {:?}",
        edited.elapsed()
    );
    let s = source(&host);
    let m = s["rolled_back"].as_str().expect("message");
    assert!(
        m.contains(&format!("to {}", short(&good)))
            && (m.contains("container gweb exited with code 3")
                || m.contains("container gweb is crash-looping")),
        "{m}"
    );
    wait_greeting(&host, "hello");
    wait_outcome(&host, Some(&good), "healthy");
    assert!(host.running("gweb"));
    host.stop_agent();
}

/// Writes `text` to `path` by renaming a new file over it, as editors do.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// An image the operator imports (`pull = "never"`): a revision that runs
/// a new import under the same tag, and fails, is rolled back to the image
/// the good revision ran, found by its digest, though its tag now names
/// the new one.
#[test]
fn an_imported_image_is_rolled_back_to_the_digest_that_ran() {
    let Some(mut host) = Instance::with_busybox("rbimg", &[]) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let import = |host: &Instance, version: &str| {
        let root = work.path().join(format!("rootfs-{version}"));
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        let busybox = crate::common::which("busybox").expect("busybox-static installed");
        std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "sleep", "cat", "grep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("link");
        }
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
        std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
        std::fs::write(root.join("version"), version).expect("version");
        let tar = work.path().join(format!("{version}.tar"));
        let status = std::process::Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(status.success());
        host.moor_ok(&[
            "image",
            "import",
            tar.to_str().expect("utf-8"),
            "--tag",
            "localhost/rbimg/app:1",
        ]);
    };
    let dir = work.path().join("rbimg");
    std::fs::create_dir(&dir).expect("mkdir");
    let file = dir.join("stack.toml");
    // Healthy only on the image whose /version says "one".
    let manifest = |greeting: &str| {
        format!(
            "[images.app]\nref = \"localhost/rbimg/app:1\"\npull = \"never\"\n\n\
             [containers.gweb]\nimage = \"app\"\ncommand = [\"sleep\", \"3600\"]\n\
             env = {{ GREETING = \"{greeting}\" }}\nnetwork_mode = \"none\"\nstop_grace_period = \"1s\"\n\
             healthcheck = {{ cmd = [\"grep\", \"-q\", \"one\", \"/version\"], interval = \"1s\", retries = 1 }}\n"
        )
    };
    let version = |host: &Instance| {
        let out = host.moor(&["exec", "gweb", "--", "cat", "/version"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    import(&host, "one");
    std::fs::write(&file, manifest("hello")).expect("write");
    let good = start_on_dir(&mut host, &dir, "2s", &[]);
    assert_eq!(version(&host), "one");

    // The tag now names another image, which the next revision runs.
    import(&host, "two");
    write(&file, &manifest("bye"));
    wait_for("the rollback", Duration::from_secs(60), || {
        source(&host)["rolled_back"].is_string()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while greeting(&host).as_deref() != Some("hello") {
        assert!(
            Instant::now() < deadline,
            "{:#}\n{}",
            host.status(),
            host.agent_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_outcome(&host, Some(&good), "healthy");
    assert_eq!(version(&host), "one", "{}", host.agent_log());
    let image = host
        .container("gweb")
        .and_then(|c| c["image"].as_str().map(String::from))
        .unwrap_or_default();
    assert!(
        image.starts_with("localhost/rbimg/app:1@sha256:"),
        "pinned: {image}"
    );
    // The tag is left as the operator set it.
    let tagged = host.image("localhost/rbimg/app:1").expect("the tag");
    assert!(!image.ends_with(tagged["digest"].as_str().expect("digest")));
    host.stop_agent();
}
