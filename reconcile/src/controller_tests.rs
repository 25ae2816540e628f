//! The controller loop on a paused clock, against the fake runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use moor_spec::{DesiredState, Kind};
use tokio::sync::{mpsc, watch};

use crate::fake::FakeRuntime;
use crate::*;

static NO_RECORDER: NoRecorder = NoRecorder;

const STACK: &str = r#"
[networks.front]
[containers.web]
image = "localhost:5000/busybox:1"
networks = ["front"]
restart = "always"
[containers.job]
image = "localhost:5000/busybox:1"
"#;

fn load(toml: &str) -> DesiredState {
    moor_spec::load_texts(&[(PathBuf::from("/m/stack.toml"), toml.to_string())])
        .expect("valid manifest")
}

struct Harness {
    rt: Arc<FakeRuntime>,
    tx: mpsc::Sender<Trigger>,
    status: watch::Receiver<Status>,
    task: tokio::task::JoinHandle<()>,
}

fn start() -> Harness {
    start_with(|_| {})
}

fn start_with(f: impl FnOnce(&mut ControllerOptions)) -> Harness {
    let rt = Arc::new(FakeRuntime::new());
    let (tx, rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(Status::default());
    let mut opts = ControllerOptions::new("demo");
    opts.apply.health_poll = Duration::from_millis(10);
    f(&mut opts);
    let controller = Controller::new(rt.clone(), opts);
    let task = tokio::spawn(async move { controller.run(rx, status_tx, &NO_RECORDER).await });
    Harness {
        rt,
        tx,
        status,
        task,
    }
}

impl Harness {
    async fn send(&self, t: Trigger) {
        self.tx.send(t).await.expect("controller alive");
    }

    async fn source(&self, toml: &str) {
        self.send(Trigger::Source {
            revision: Some("r1".into()),
            result: Ok(load(toml)),
        })
        .await;
    }

    /// Lets the controller run for `d` of (paused) time.
    async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    fn count(&self, call: &str) -> usize {
        self.rt
            .calls()
            .iter()
            .filter(|c| c.as_str() == call)
            .count()
    }
}

#[tokio::test(start_paused = true)]
async fn converges_and_reports_ready() {
    let h = start();
    assert!(!h.status.borrow().ready, "not ready before a desired state");
    h.source(STACK).await;
    h.run_for(Duration::from_millis(100)).await;
    let s = h.status.borrow().clone();
    assert!(s.ready);
    assert_eq!(s.revision.as_deref(), Some("r1"));
    assert!(
        s.conditions
            .values()
            .all(|c| c.status == ConditionStatus::Ready),
        "{:?}",
        s.conditions
    );
    assert!(s.conditions.contains_key("container/web"));
    assert_eq!(h.count("create_container web"), 1);
    // Resyncs change nothing on a converged host.
    h.run_for(Duration::from_secs(95)).await;
    assert_eq!(h.count("create_container web"), 1);
    assert!(h.status.borrow().reconciles >= 4, "resync every 30 s");
    h.send(Trigger::Shutdown).await;
    tokio::time::timeout(Duration::from_secs(1), h.task)
        .await
        .expect("test timeout expired, controller did not stop on Shutdown")
        .expect("controller task");
    // Shutdown leaves containers running.
    assert!(h.rt.with_host(|o| o.containers.contains_key("web")));
}

#[tokio::test(start_paused = true)]
async fn invalid_source_keeps_the_last_good_state() {
    let h = start();
    h.source(STACK).await;
    h.run_for(Duration::from_millis(100)).await;
    h.rt.clear_calls();
    h.send(Trigger::Source {
        revision: Some("r2".into()),
        result: Err("stack.toml:3:1: error: containers.web.comand: unknown field".into()),
    })
    .await;
    h.run_for(Duration::from_secs(40)).await;
    let s = h.status.borrow().clone();
    assert_eq!(s.revision.as_deref(), Some("r1"));
    assert!(
        s.source_error
            .as_deref()
            .is_some_and(|e| e.contains("comand"))
    );
    assert!(
        h.rt.calls().is_empty(),
        "nothing changed on the host: {:?}",
        h.rt.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_per_resource() {
    let h = start();
    for _ in 0..4 {
        h.rt.fail_next("create_container web", "no space left on device");
    }
    h.source(STACK).await;
    h.run_for(Duration::from_millis(100)).await;
    assert_eq!(h.count("create_container web"), 1);
    assert_eq!(
        h.count("create_container job"),
        1,
        "the failure is confined to web"
    );
    let s = h.status.borrow().clone();
    let web = &s.conditions["container/web"];
    assert_eq!(web.status, ConditionStatus::Failed);
    assert!(
        web.message.contains("no space left on device"),
        "{}",
        web.message
    );
    // Retries at about 1 s, then 2 s, then 4 s after each failure.
    h.run_for(Duration::from_millis(1200)).await;
    assert_eq!(h.count("create_container web"), 2);
    h.run_for(Duration::from_millis(1500)).await;
    assert_eq!(
        h.count("create_container web"),
        2,
        "second retry waits about 2 s"
    );
    h.run_for(Duration::from_millis(800)).await;
    assert_eq!(h.count("create_container web"), 3);
    // A trigger from the host does not make it retry early or grow the delay.
    h.send(Trigger::HostChanged).await;
    h.run_for(Duration::from_millis(100)).await;
    assert_eq!(h.count("create_container web"), 3);
    h.run_for(Duration::from_secs(5)).await;
    assert_eq!(h.count("create_container web"), 4);
    h.run_for(Duration::from_secs(10)).await;
    assert_eq!(
        h.count("create_container web"),
        5,
        "the fifth attempt succeeds"
    );
    assert_eq!(
        h.status.borrow().conditions["container/web"].status,
        ConditionStatus::Ready
    );
}

#[tokio::test(start_paused = true)]
async fn exits_are_restarted_per_policy_after_the_crash_loop_backoff() {
    let h = start();
    h.source(STACK).await;
    h.run_for(Duration::from_millis(100)).await;
    h.rt.exit("web", 137, SystemTime::now());
    h.rt.exit("job", 0, SystemTime::now());
    h.send(Trigger::HostChanged).await;
    h.run_for(Duration::from_millis(100)).await;
    assert_eq!(
        h.count("start_container web"),
        0,
        "restart waits out its backoff"
    );
    assert_eq!(
        h.status.borrow().conditions["container/web"].status,
        ConditionStatus::Progressing
    );
    h.run_for(Duration::from_millis(1500)).await;
    assert_eq!(h.count("start_container web"), 1);
    assert_eq!(h.count("start_container job"), 0, "restart = no");
}

#[tokio::test(start_paused = true)]
async fn resync_finds_drift_without_a_trigger() {
    let h = start();
    h.source(STACK).await;
    h.run_for(Duration::from_millis(100)).await;
    h.rt.with_host(|o| {
        o.networks.get_mut("front").expect("front").fault = Some("bridge missing".into())
    });
    h.run_for(Duration::from_secs(31)).await;
    assert_eq!(h.count("remove_network front"), 1);
    assert_eq!(h.count("create_network front"), 2);
    // Said, for the `drift_corrected` notification.
    let s = h.status.borrow().clone();
    assert!(
        s.corrected
            .iter()
            .any(|a| a.kind == Kind::Network && a.name == "front"),
        "{:?}",
        s.corrected
    );
    h.run_for(Duration::from_secs(31)).await;
    assert_eq!(h.status.borrow().corrections, s.corrections, "nothing new");
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_triggers_is_one_pass() {
    let h = start();
    h.source(STACK).await;
    h.run_for(Duration::from_millis(100)).await;
    let before = h.status.borrow().reconciles;
    for _ in 0..10 {
        h.tx.try_send(Trigger::HostChanged).expect("queue has room");
    }
    h.run_for(Duration::from_millis(100)).await;
    let after = h.status.borrow().reconciles;
    assert!(
        after - before <= 2,
        "{} passes for a burst of 10",
        after - before
    );
}

const STACK_V2: &str = r#"
[networks.front]
[containers.web]
image = "localhost:5000/busybox:1"
networks = ["front"]
restart = "always"
env = { V = "2" }
[containers.job]
image = "localhost:5000/busybox:1"
"#;

impl Harness {
    async fn source_rev(&self, rev: &str, toml: &str) {
        self.send(Trigger::Source {
            revision: Some(rev.into()),
            result: Ok(load(toml)),
        })
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn suspended_applies_neither_source_changes_nor_drift_until_resumed() {
    let h = start();
    h.source(STACK).await;
    h.run_for(Duration::from_millis(100)).await;
    h.send(Trigger::Suspend).await;
    h.run_for(Duration::from_millis(100)).await;
    assert!(h.status.borrow().suspended);
    h.rt.clear_calls();
    // Drift and a new revision: nothing happens, through resyncs and triggers.
    h.rt.with_host(|o| o.containers.remove("job"));
    h.source_rev("r2", STACK_V2).await;
    h.send(Trigger::Now).await;
    h.send(Trigger::Correct).await;
    h.run_for(Duration::from_secs(95)).await;
    assert!(h.rt.calls().is_empty(), "{:?}", h.rt.calls());
    let s = h.status.borrow().clone();
    assert_eq!(s.revision.as_deref(), Some("r1"), "r2 is not in force");
    assert_eq!(s.pending_revision.as_deref(), Some("r2"));
    // Resume: r2 applies and the drift is corrected.
    h.send(Trigger::Resume).await;
    h.run_for(Duration::from_millis(100)).await;
    let s = h.status.borrow().clone();
    assert!(!s.suspended);
    assert_eq!(s.revision.as_deref(), Some("r2"));
    assert_eq!(s.pending_revision, None);
    assert_eq!(h.count("create_container job"), 1);
    assert!(
        h.rt.calls().iter().any(|c| c.contains("web")),
        "web replaced for r2: {:?}",
        h.rt.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn a_controller_started_suspended_waits_for_resume() {
    let h = start_with(|o| o.suspended = true);
    h.source(STACK).await;
    h.run_for(Duration::from_secs(40)).await;
    assert!(h.rt.calls().is_empty(), "{:?}", h.rt.calls());
    assert!(h.status.borrow().suspended);
    h.send(Trigger::Resume).await;
    h.run_for(Duration::from_millis(100)).await;
    assert_eq!(h.count("create_container web"), 1);
}

#[tokio::test(start_paused = true)]
async fn report_mode_reports_drift_and_still_applies_the_source() {
    let h = start_with(|o| o.drift = DriftMode::Report);
    h.source(STACK).await;
    h.run_for(Duration::from_millis(100)).await;
    assert_eq!(h.count("create_container job"), 1, "first deploy applies");
    // job removed by hand, front's bridge deleted: reported, left so.
    h.rt.with_host(|o| {
        o.containers.remove("job");
        o.networks.get_mut("front").expect("front").fault = Some("bridge missing".into());
    });
    h.send(Trigger::HostChanged).await;
    h.run_for(Duration::from_secs(65)).await;
    assert_eq!(h.count("create_container job"), 1, "{:?}", h.rt.calls());
    assert_eq!(h.count("remove_network front"), 0, "{:?}", h.rt.calls());
    let s = h.status.borrow().clone();
    assert_eq!(s.conditions["container/job"].reason, "Drifted");
    assert_eq!(s.conditions["network/front"].reason, "Drifted");
    assert!(s.drift.iter().any(|a| a.name == "job"), "{:?}", s.drift);
    // A source change still applies.
    h.rt.clear_calls();
    h.source_rev("r2", STACK_V2).await;
    h.run_for(Duration::from_millis(100)).await;
    assert!(
        h.rt.calls().iter().any(|c| c.contains("web")),
        "{:?}",
        h.rt.calls()
    );
    assert_eq!(h.count("create_container job"), 0, "drift still left");
    // An operator's `moor reconcile` corrects it.
    h.send(Trigger::Correct).await;
    h.run_for(Duration::from_millis(100)).await;
    assert_eq!(h.count("create_container job"), 1);
    assert_eq!(h.count("remove_network front"), 1);
    assert!(h.status.borrow().drift.is_empty());
}

#[tokio::test(start_paused = true)]
async fn plan_mode_never_touches_the_host() {
    let h = start_with(|o| o.mode = SourceMode::Plan);
    h.source(STACK).await;
    h.run_for(Duration::from_secs(40)).await;
    assert!(
        h.rt.calls()
            .iter()
            .all(|c| !c.starts_with("create") && !c.starts_with("pull")),
        "{:?}",
        h.rt.calls()
    );
    let s = h.status.borrow().clone();
    assert!(s.planned.iter().any(|a| a.name == "web"), "{:?}", s.planned);
    assert_eq!(s.conditions["container/web"].reason, "Planned");
}
