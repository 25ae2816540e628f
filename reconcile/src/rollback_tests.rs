//! Rollback on a paused clock, against the fake runtime: a revision whose
//! containers do not become ready is rolled back to the last healthy one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moor_spec::DesiredState;
use tokio::sync::{mpsc, oneshot, watch};

use crate::fake::FakeRuntime;
use crate::rollout::{Limits, Outcome};
use crate::*;

static NO_RECORDER: NoRecorder = NoRecorder;

fn stack(greeting: &str, healthcheck: bool) -> DesiredState {
    let check = if healthcheck {
        "healthcheck = { cmd = [\"true\"], interval = \"1s\" }\n"
    } else {
        ""
    };
    let toml = format!(
        "[containers.web]\nimage = \"localhost:5000/busybox:1\"\nrestart = \"always\"\nenv = {{ GREETING = \"{greeting}\" }}\n{check}\
         [containers.job]\nimage = \"localhost:5000/busybox:1\"\nenv = {{ GREETING = \"{greeting}\" }}\n"
    );
    moor_spec::load_texts(&[(PathBuf::from("/m/stack.toml"), toml)]).expect("valid manifest")
}

struct Harness {
    rt: Arc<FakeRuntime>,
    tx: mpsc::Sender<Trigger>,
    status: watch::Receiver<Status>,
}

fn start(rollback: bool) -> Harness {
    start_with(rollback, None)
}

fn start_with(rollback: bool, snapshots: Option<Arc<dyn Snapshots>>) -> Harness {
    start_opts(rollback, |o| o.snapshots = snapshots)
}

fn start_opts(rollback: bool, set: impl FnOnce(&mut ControllerOptions)) -> Harness {
    let rt = Arc::new(FakeRuntime::new());
    let (tx, rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(Status::default());
    let mut opts = ControllerOptions::new("demo");
    opts.apply.health_poll = Duration::from_millis(10);
    opts.rollback = rollback;
    opts.limits = Limits {
        deploy_timeout: Duration::from_secs(5),
        min_ready: Duration::from_secs(1),
    };
    set(&mut opts);
    let controller = Controller::new(rt.clone(), opts);
    tokio::spawn(async move { controller.run(rx, status_tx, &NO_RECORDER).await });
    Harness { rt, tx, status }
}

impl Harness {
    async fn source(&self, revision: &str, state: DesiredState) {
        self.tx
            .send(Trigger::Source {
                revision: Some(revision.into()),
                result: Ok(state),
            })
            .await
            .expect("controller alive");
    }

    fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    fn outcomes(&self) -> Vec<(String, Outcome)> {
        self.status()
            .history
            .iter()
            .map(|r| (r.revision.clone(), r.outcome))
            .collect()
    }

    fn greeting(&self) -> Option<String> {
        self.rt.with_host(|h| {
            h.containers
                .get("web")
                .and_then(|c| c.spec.as_ref())
                .and_then(|s| s.env.get("GREETING").cloned())
        })
    }

    fn make_unhealthy(&self) {
        self.rt.with_host(|h| {
            if let Some(c) = h.containers.get_mut("web") {
                c.health = Health::Unhealthy;
            }
        });
    }

    async fn rollback(&self, to: Option<&str>) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Trigger::Rollback {
                to: to.map(str::to_string),
                reply,
            })
            .await
            .expect("controller alive");
        answer.await.expect("answered")
    }
}

async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_revision_is_rolled_back_and_not_retried_until_the_source_moves() {
    let h = start(true);
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    assert_eq!(h.outcomes(), [("r1".to_string(), Outcome::Healthy)]);

    h.source("r2", stack("two", true)).await;
    run_for(Duration::from_millis(500)).await;
    assert_eq!(h.greeting().as_deref(), Some("two"));
    assert_eq!(h.status().outcome(), Some(Outcome::Pending));
    h.make_unhealthy();
    run_for(Duration::from_secs(3)).await;
    let s = h.status();
    assert_eq!(s.revision.as_deref(), Some("r1"), "{:?}", s.history);
    assert_eq!(
        h.greeting().as_deref(),
        Some("one"),
        "the good revision runs again"
    );
    let msg = s.rolled_back.clone().expect("a rollback message");
    assert!(
        msg.starts_with("rolled back from r2 to r1 because container web failed its health check"),
        "{msg}"
    );
    assert_eq!(s.refused_revision.as_deref(), Some("r2"));
    let outcomes = h.outcomes();
    assert_eq!(outcomes[1], ("r2".to_string(), Outcome::RolledBack));
    assert_eq!(outcomes[2].0, "r1");
    assert!(
        s.history[1]
            .changes
            .iter()
            .any(|c| c.starts_with("container web: replace")),
        "{:?}",
        s.history[1]
    );

    // The failed revision again (a directory watcher's event): ignored, and
    // said so.
    h.rt.clear_calls();
    h.source("r2", stack("two", true)).await;
    run_for(Duration::from_secs(3)).await;
    assert_eq!(
        h.status().source_error.as_deref(),
        Some("revision r2 was rolled back: not applied again until the source moves on")
    );
    assert_eq!(h.greeting().as_deref(), Some("one"));
    assert_eq!(h.status().revision.as_deref(), Some("r1"));
    assert!(
        !h.rt
            .calls()
            .iter()
            .any(|c| c.starts_with("create_container")),
        "{:?}",
        h.rt.calls()
    );

    // Back to the revision in force (a revert, an agent restart): the
    // failed one stays refused.
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(2)).await;
    assert_eq!(h.status().refused_revision.as_deref(), Some("r2"));
    h.source("r2", stack("two", true)).await;
    run_for(Duration::from_secs(2)).await;
    assert_eq!(h.greeting().as_deref(), Some("one"));

    // The source moves on: applied.
    h.source("r3", stack("three", false)).await;
    run_for(Duration::from_secs(3)).await;
    let s = h.status();
    assert_eq!(h.greeting().as_deref(), Some("three"));
    assert_eq!(s.outcome(), Some(Outcome::Healthy));
    assert_eq!(s.rolled_back, None);
    assert_eq!(s.refused_revision, None);
    assert_eq!(s.source_error, None);
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_is_rolled_back_within_the_deploy_timeout() {
    let h = start(true);
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    h.source("r2", stack("two", false)).await;
    // The new container exits at once, every time it is started.
    let rt = h.rt.clone();
    let crasher = tokio::spawn(async move {
        loop {
            let now = std::time::SystemTime::now();
            rt.exit("web", 1, now);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    run_for(Duration::from_secs(7)).await;
    crasher.abort();
    let s = h.status();
    assert_eq!(s.revision.as_deref(), Some("r1"), "{:?}", s.history);
    let msg = s.rolled_back.expect("rolled back");
    assert!(msg.contains("container web"), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn rollback_off_leaves_the_failed_revision_and_says_so() {
    let h = start(false);
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    h.source("r2", stack("two", true)).await;
    run_for(Duration::from_millis(500)).await;
    h.make_unhealthy();
    run_for(Duration::from_secs(3)).await;
    let s = h.status();
    assert_eq!(s.revision.as_deref(), Some("r2"));
    assert_eq!(s.outcome(), Some(Outcome::Failed));
    assert_eq!(h.greeting().as_deref(), Some("two"));
    let m = s
        .history
        .last()
        .and_then(|r| r.message.clone())
        .unwrap_or_default();
    assert!(m.contains("rollback = \"off\""), "{m}");
    assert_eq!(s.rolled_back, None);
}

#[tokio::test(start_paused = true)]
async fn a_first_revision_that_fails_has_nothing_to_roll_back_to() {
    let h = start(true);
    h.source("r1", stack("one", true)).await;
    run_for(Duration::from_millis(500)).await;
    h.make_unhealthy();
    run_for(Duration::from_secs(2)).await;
    let s = h.status();
    assert_eq!(s.outcome(), Some(Outcome::Failed));
    let m = s
        .history
        .last()
        .and_then(|r| r.message.clone())
        .unwrap_or_default();
    assert!(m.contains("no earlier healthy revision"), "{m}");
}

#[tokio::test(start_paused = true)]
async fn a_job_that_exits_zero_is_no_failure() {
    let h = start(true);
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(1)).await;
    h.rt.exit("job", 0, std::time::SystemTime::now());
    run_for(Duration::from_secs(3)).await;
    assert_eq!(h.status().outcome(), Some(Outcome::Healthy));
}

#[tokio::test(start_paused = true)]
async fn by_hand_to_a_named_revision_and_hostile_names_refused() {
    let h = start(true);
    h.source("aaaa1111", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    h.source("bbbb2222", stack("two", false)).await;
    run_for(Duration::from_secs(3)).await;
    h.source("cccc3333", stack("three", false)).await;
    run_for(Duration::from_secs(3)).await;
    assert_eq!(h.status().outcome(), Some(Outcome::Healthy));

    for bad in ["", "a", "../../etc", "aaaa1111; rm -rf /", "zzzz9999"] {
        let e = h.rollback(Some(bad)).await.expect_err(bad);
        assert!(
            e.contains("revision") || e.contains("not a revision"),
            "{bad}: {e}"
        );
    }
    assert_eq!(
        h.greeting().as_deref(),
        Some("three"),
        "refusals change nothing"
    );
    let e = h.rollback(Some("cccc")).await.expect_err("in force");
    assert!(e.contains("already in force"), "{e}");

    let m = h.rollback(Some("aaaa")).await.expect("rolled back");
    assert_eq!(
        m,
        "rolled back from cccc3333 to aaaa1111 by hand (moor rollback)"
    );
    run_for(Duration::from_secs(3)).await;
    let s = h.status();
    assert_eq!(s.revision.as_deref(), Some("aaaa1111"));
    assert_eq!(h.greeting().as_deref(), Some("one"));
    assert_eq!(s.refused_revision.as_deref(), Some("cccc3333"));
    // Without --to: the newest healthy revision before the one in force.
    let m = h.rollback(None).await.expect("rolled back");
    assert!(
        m.contains("to cccc3333") || m.contains("to bbbb2222"),
        "{m}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_container_crash_looping_since_before_is_not_the_new_revisions_failure() {
    let h = start(true);
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    // The job (unchanged by r2) is made to crash-loop: restart = "always".
    let crashing = |greeting: &str| {
        let mut d = stack(greeting, false);
        let job = d.containers.get_mut("job").expect("job");
        Arc::make_mut(&mut job.spec).restart = moor_spec::RestartPolicy::Always;
        d
    };
    h.source("r1b", crashing("one")).await;
    run_for(Duration::from_secs(3)).await;
    let rt = h.rt.clone();
    let crasher = tokio::spawn(async move {
        loop {
            rt.exit("job", 1, std::time::SystemTime::now());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    run_for(Duration::from_secs(8)).await;
    // r2 changes only web's greeting: job's crash loop is not its doing.
    let mut r2 = crashing("two");
    r2.containers
        .insert("job".into(), crashing("one").containers["job"].clone());
    h.source("r2", r2).await;
    run_for(Duration::from_secs(4)).await;
    crasher.abort();
    let s = h.status();
    assert_eq!(s.revision.as_deref(), Some("r2"), "{:?}", s.history);
    assert_eq!(s.outcome(), Some(Outcome::Healthy), "{:?}", s.history);
}

#[tokio::test(start_paused = true)]
async fn by_hand_is_refused_while_suspended_or_plan_only() {
    let h = start(true);
    h.source("aaaa1111", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    h.source("bbbb2222", stack("two", false)).await;
    run_for(Duration::from_secs(3)).await;
    h.tx.send(Trigger::Suspend).await.expect("alive");
    let e = h.rollback(Some("aaaa")).await.expect_err("suspended");
    assert!(e.contains("suspended"), "{e}");
    assert_eq!(h.greeting().as_deref(), Some("two"));

    let rt = Arc::new(FakeRuntime::new());
    let (tx, rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(Status::default());
    let mut opts = ControllerOptions::new("demo");
    opts.mode = SourceMode::Plan;
    let controller = Controller::new(rt.clone(), opts);
    tokio::spawn(async move { controller.run(rx, status_tx, &NO_RECORDER).await });
    let plan = Harness { rt, tx, status };
    plan.source("aaaa1111", stack("one", false)).await;
    run_for(Duration::from_secs(1)).await;
    let e = plan.rollback(None).await.expect_err("plan only");
    assert!(e.contains("mode = \"plan\""), "{e}");
    assert!(
        plan.status().history.is_empty(),
        "a plan-only source applies no revision"
    );
}

#[test]
fn after_a_restart_the_rolled_back_revision_is_still_refused() {
    let rec = |rev: &str, outcome, message: Option<&str>| rollout::RevisionRecord {
        revision: rev.into(),
        outcome,
        applied_at: 0,
        decided_at: None,
        message: message.map(str::to_string),
        changes: Vec::new(),
        images: Default::default(),
        specs: Default::default(),
    };
    let mut opts = ControllerOptions::new("demo");
    opts.history = vec![
        rec("r1", Outcome::Healthy, None),
        rec(
            "r2",
            Outcome::RolledBack,
            Some("rolled back from r2 to r1 because …"),
        ),
        rec("r1", Outcome::Healthy, Some("a rollback from r2")),
    ];
    let c = Controller::new(Arc::new(FakeRuntime::new()), opts);
    assert_eq!(c.status_for_tests().refused_revision.as_deref(), Some("r2"));
    assert_eq!(
        c.status_for_tests().rolled_back.as_deref(),
        Some("rolled back from r2 to r1 because …")
    );
}

#[tokio::test(start_paused = true)]
async fn the_source_puts_its_files_back_before_the_rollback_applies() {
    let calls: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let rt = Arc::new(FakeRuntime::new());
    let (tx, rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(Status::default());
    let mut opts = ControllerOptions::new("demo");
    opts.limits = Limits {
        deploy_timeout: Duration::from_secs(5),
        min_ready: Duration::from_secs(1),
    };
    let seen = calls.clone();
    opts.restore = Some(Restore(Arc::new(move |from: &str, to: &str| {
        seen.lock().unwrap().push((from.into(), to.into()));
        Err("commit r1 is not in the local clone".into())
    })));
    let controller = Controller::new(rt.clone(), opts);
    tokio::spawn(async move { controller.run(rx, status_tx, &NO_RECORDER).await });
    let h = Harness { rt, tx, status };
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    h.source("r2", stack("two", true)).await;
    run_for(Duration::from_millis(500)).await;
    h.make_unhealthy();
    run_for(Duration::from_secs(3)).await;
    assert_eq!(
        *calls.lock().unwrap(),
        [("r2".to_string(), "r1".to_string())]
    );
    // It could not: the rollback still happens, and says so.
    let s = h.status();
    assert_eq!(s.revision.as_deref(), Some("r1"));
    let m = s.rolled_back.unwrap_or_default();
    assert!(
        m.ends_with(
            "(the source's files of r1 could not be put back: commit r1 is not in the local clone)"
        ),
        "{m}"
    );
}

/// A rollback runs the image digests the good revision ran, not what its
/// tag names by then: the tag moved, and the image it named left the host.
#[tokio::test(start_paused = true)]
async fn a_rollback_runs_the_digests_the_good_revision_ran() {
    let h = start(true);
    let d1 = format!("sha256:{}", "1".repeat(64));
    let d2 = format!("sha256:{}", "2".repeat(64));
    h.rt.set_registry_digest("localhost:5000/busybox:1", &d1);
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    assert_eq!(h.outcomes(), [("r1".to_string(), Outcome::Healthy)]);
    assert_eq!(
        h.status().history[0].images["localhost:5000/busybox:1"],
        d1,
        "the digest it ran is recorded"
    );

    // The tag is re-pushed, and the image it named leaves the host (a
    // prune); the next revision runs another image and fails.
    h.rt.set_registry_digest("localhost:5000/busybox:1", &d2);
    let bad = moor_spec::load_texts(&[(
        PathBuf::from("/m/stack.toml"),
        "[containers.web]\nimage = \"localhost:5000/busybox:2\"\nrestart = \"always\"\n\
         healthcheck = { cmd = [\"true\"], interval = \"1s\" }\n"
            .to_string(),
    )])
    .expect("valid manifest");
    h.source("r2", bad).await;
    run_for(Duration::from_millis(500)).await;
    h.rt.with_host(|host| {
        host.images.remove("localhost:5000/busybox:1");
    });
    h.rt.clear_calls();
    h.make_unhealthy();
    run_for(Duration::from_secs(3)).await;
    let s = h.status();
    assert_eq!(s.revision.as_deref(), Some("r1"), "{:?}", s.history);
    let pinned = format!("localhost:5000/busybox:1@{d1}");
    let calls = h.rt.calls();
    assert!(calls.contains(&format!("pull {pinned}")), "{calls:?}");
    assert!(
        !calls.iter().any(|c| c == "pull localhost:5000/busybox:1"),
        "the tag is not resolved again: {calls:?}"
    );
    let running = h.rt.with_host(|host| {
        ["web", "job"].map(|n| {
            host.containers
                .get(n)
                .and_then(|c| c.spec.as_ref())
                .map(|s| s.image.to_string())
        })
    });
    assert_eq!(running, [Some(pinned.clone()), Some(pinned.clone())]);
    assert_eq!(h.greeting().as_deref(), Some("one"));
    // The rollback's own record names the digest it ran.
    let last = s.history.last().expect("a record");
    assert_eq!(last.images.get(&pinned), Some(&d1), "{last:?}");
}

/// `stack` whose web container reads `/m/site` from the source's tree `/m`.
fn with_site(greeting: &str, healthcheck: bool) -> DesiredState {
    let mut state = stack(greeting, healthcheck);
    let web = state.containers.get_mut("web").expect("web");
    Arc::make_mut(&mut web.spec).mounts.push(moor_spec::Mount {
        target: "/srv".into(),
        source: moor_spec::MountSource::Bind {
            source: "/m/site".into(),
            content_digest: Some(format!("sha256:{}", "a".repeat(64))),
            tree: Some("/m".into()),
        },
        read_only: true,
    });
    state
}

/// A snapshot taken: the revision and its `(tree, source)` pairs.
type Taken = (String, Vec<(PathBuf, PathBuf)>);

/// Snapshots that copy nothing: each revision's tree is `/snap/<revision>`.
#[derive(Debug, Default)]
struct FakeSnapshots {
    fail: bool,
    taken: std::sync::Mutex<Vec<Taken>>,
    kept: std::sync::Mutex<Vec<String>>,
}

impl Snapshots for FakeSnapshots {
    fn take(
        &self,
        revision: &str,
        sources: &std::collections::BTreeSet<crate::rollout::SnapshotSource>,
    ) -> Result<std::collections::BTreeMap<PathBuf, PathBuf>, String> {
        self.taken.lock().expect("lock").push((
            revision.into(),
            sources
                .iter()
                .map(|s| (s.tree.clone(), s.source.clone()))
                .collect(),
        ));
        if self.fail {
            return Err("larger than the 64 MiB snapshot limit".into());
        }
        Ok(sources
            .iter()
            .map(|s| (s.tree.clone(), PathBuf::from(format!("/snap/{revision}"))))
            .collect())
    }

    fn keep(&self, keep: &[&str]) {
        *self.kept.lock().expect("lock") = keep.iter().map(|r| r.to_string()).collect();
    }
}

impl Harness {
    fn site(&self) -> Option<PathBuf> {
        self.rt.with_host(|h| {
            h.containers
                .get("web")
                .and_then(|c| c.spec.as_ref())
                .and_then(|s| {
                    s.mounts.iter().find_map(|m| match &m.source {
                        moor_spec::MountSource::Bind { source, .. } => Some(source.clone()),
                        _ => None,
                    })
                })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_rollback_reads_the_files_of_the_good_revision_from_its_snapshot() {
    let snaps = Arc::new(FakeSnapshots::default());
    let h = start_with(true, Some(snaps.clone()));
    h.source("r1", with_site("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    assert_eq!(h.outcomes(), [("r1".to_string(), Outcome::Healthy)]);
    assert_eq!(
        *snaps.taken.lock().expect("lock"),
        [(
            "r1".to_string(),
            vec![(PathBuf::from("/m"), PathBuf::from("/m/site"))]
        )]
    );
    assert_eq!(*snaps.kept.lock().expect("lock"), ["r1"]);
    // The revision in force reads the tree itself.
    assert_eq!(h.site(), Some(PathBuf::from("/m/site")));

    h.source("r2", with_site("two", true)).await;
    run_for(Duration::from_millis(500)).await;
    h.make_unhealthy();
    run_for(Duration::from_secs(3)).await;
    let s = h.status();
    assert_eq!(s.revision.as_deref(), Some("r1"), "{:?}", s.history);
    assert_eq!(h.greeting().as_deref(), Some("one"));
    assert_eq!(h.site(), Some(PathBuf::from("/snap/r1/site")));
    let msg = s.rolled_back.expect("rolled back");
    assert!(!msg.contains("manifests only"), "{msg}");
    // The rollback, healthy again, is kept as it was: no snapshot of the
    // snapshot.
    assert_eq!(snaps.taken.lock().expect("lock").len(), 1);

    // Only the newest healthy revisions keep theirs.
    for i in 3..10 {
        h.source(&format!("r{i}"), with_site(&format!("g{i}"), false))
            .await;
        run_for(Duration::from_secs(3)).await;
    }
    let kept = snaps.kept.lock().expect("lock").clone();
    assert_eq!(kept, ["r5", "r6", "r7", "r8", "r9"]);
}

#[tokio::test(start_paused = true)]
async fn without_a_snapshot_a_rollback_puts_back_the_manifests_and_says_so() {
    let snaps = Arc::new(FakeSnapshots {
        fail: true,
        ..FakeSnapshots::default()
    });
    let h = start_with(true, Some(snaps.clone()));
    h.source("r1", with_site("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    let s = h.status();
    let note = s.history[0].message.clone().expect("a note");
    assert!(
        note.contains("no snapshot") && note.contains("64 MiB") && note.contains("manifests only"),
        "{note}"
    );
    h.source("r2", with_site("two", true)).await;
    run_for(Duration::from_millis(500)).await;
    h.make_unhealthy();
    run_for(Duration::from_secs(3)).await;
    let s = h.status();
    assert_eq!(s.revision.as_deref(), Some("r1"));
    assert_eq!(h.greeting().as_deref(), Some("one"));
    assert_eq!(h.site(), Some(PathBuf::from("/m/site")));
    let msg = s.rolled_back.expect("rolled back");
    assert!(
        msg.contains(
            "its manifests only: its files have no snapshot, larger than the 64 MiB snapshot limit"
        ),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn by_hand_to_a_revision_from_before_the_start_loads_it_again() {
    let before = crate::rollout::RevisionRecord {
        revision: "r0aaaa".into(),
        outcome: Outcome::Healthy,
        applied_at: 1,
        decided_at: Some(2),
        message: None,
        changes: Vec::new(),
        images: Default::default(),
        specs: Default::default(),
    };
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let h = start_opts(true, |o| {
        o.history = vec![before.clone()];
        o.load_revision = Some(LoadRevision(Arc::new(move |from: &str, to: &str| {
            seen.lock()
                .expect("lock")
                .push((from.to_string(), to.to_string()));
            Ok(stack("zero", false))
        })));
    });
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    let msg = h.rollback(Some("r0aa")).await.expect("rolled back");
    assert_eq!(msg, "rolled back from r1 to r0aaaa by hand (moor rollback)");
    run_for(Duration::from_secs(3)).await;
    assert_eq!(h.greeting().as_deref(), Some("zero"));
    assert_eq!(
        *asked.lock().expect("lock"),
        [("r1".to_string(), "r0aaaa".to_string())]
    );
    let s = h.status();
    assert_eq!(s.revision.as_deref(), Some("r0aaaa"));
    assert_eq!(s.refused_revision.as_deref(), Some("r1"));

    // A source that cannot load it (a directory) says why.
    let h = start_opts(true, |o| o.history = vec![before.clone()]);
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    let e = h.rollback(Some("r0aa")).await.expect_err("cannot");
    assert!(
        e.contains("was applied before the agent started") && e.contains("kept are r1"),
        "{e}"
    );
    // A failed load changes nothing.
    let h = start_opts(true, |o| {
        o.history = vec![before];
        o.load_revision = Some(LoadRevision(Arc::new(|_: &str, _: &str| {
            Err("commit r0aaaa is not in the local clone".into())
        })));
    });
    h.source("r1", stack("one", false)).await;
    run_for(Duration::from_secs(3)).await;
    let e = h.rollback(Some("r0aa")).await.expect_err("cannot");
    assert!(
        e.contains("could not be loaded again: commit r0aaaa"),
        "{e}"
    );
    run_for(Duration::from_secs(1)).await;
    assert_eq!(h.greeting().as_deref(), Some("one"));
    assert_eq!(h.status().refused_revision, None);
}
