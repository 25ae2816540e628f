//! One-shot jobs against the fake runtime: `depends_on = "completed"` gates
//! a dependant on a job's exit 0 and blocks it after another exit; an exited
//! `restart = "no"` job is done, never restarted; a changed job runs again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use moor_spec::{DesiredState, Kind};
use tokio::sync::{mpsc, watch};

use crate::fake::FakeRuntime;
use crate::*;

const PROJECT: &str = "demo";

const STACK: &str = r#"
[networks.back]

[volumes.data]

[containers.migrate]
image    = "localhost:5000/app:1"
command  = ["app", "migrate"]
networks = ["back"]
mounts   = ["data:/data"]

[containers.app]
image      = "localhost:5000/app:1"
command    = ["app", "serve"]
networks   = ["back"]
mounts     = ["data:/data"]
restart    = "always"
depends_on = { migrate = "completed" }
"#;

const EXIT_0: ContainerState = ContainerState::Exited {
    code: 0,
    oom: false,
};
const EXIT_3: ContainerState = ContainerState::Exited {
    code: 3,
    oom: false,
};

fn load(toml: &str) -> DesiredState {
    moor_spec::load_texts(&[(PathBuf::from("/m/stack.toml"), toml.to_string())])
        .unwrap_or_else(|d| panic!("test manifest invalid:\n{d}"))
}

fn plan_at(rt: &FakeRuntime, desired: &DesiredState, now: SystemTime) -> Plan {
    let observed = rt.with_host(|h| h.clone());
    let opts = DiffOptions {
        project: PROJECT,
        allow_empty: false,
        remove_volumes: false,
        now,
    };
    diff(desired, &observed, &opts).expect("diff")
}

fn plan(rt: &FakeRuntime, desired: &DesiredState) -> Plan {
    plan_at(rt, desired, SystemTime::now())
}

fn apply_opts() -> ApplyOptions {
    ApplyOptions {
        health_poll: Duration::from_millis(10),
        health_timeout: Duration::from_secs(5),
        completion_timeout: Duration::from_secs(5),
        ..ApplyOptions::new(PROJECT)
    }
}

async fn apply_plan(rt: &FakeRuntime, desired: &DesiredState) -> Vec<Outcome> {
    let p = plan(rt, desired);
    let observed = rt.with_host(|h| h.clone());
    tokio::time::timeout(
        Duration::from_secs(60),
        apply(rt, &p, desired, &observed, &apply_opts()),
    )
    .await
    .expect("test timeout expired, apply likely waits for a job for ever")
}

fn result(outcomes: &[Outcome], name: &str) -> Result<(), String> {
    outcomes
        .iter()
        .find(|o| o.action.kind == Kind::Container && o.action.name == name)
        .map(|o| o.result.clone())
        .unwrap_or_else(|| panic!("no outcome for {name}: {outcomes:?}"))
}

fn blocked(p: &Plan, name: &str) -> Option<String> {
    p.blocked
        .iter()
        .find(|b| b.kind == Kind::Container && b.name == name)
        .map(|b| b.reason.to_string())
}

fn position(calls: &[String], call: &str) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("{call} not called: {calls:?}"))
}

#[tokio::test(start_paused = true)]
async fn the_dependant_starts_after_the_job_exited_0_and_the_job_is_not_run_again() {
    let rt = FakeRuntime::new();
    let desired = load(STACK);
    rt.script_states(
        "migrate",
        &[ContainerState::Running, ContainerState::Running, EXIT_0],
    );
    let outcomes = apply_plan(&rt, &desired).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let calls = rt.calls();
    let created = position(&calls, "create_container migrate");
    let app = position(&calls, "create_container app");
    let waits: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i] == "state migrate")
        .collect();
    assert_eq!(waits.len(), 3, "polled until the exit: {calls:?}");
    assert!(
        created < waits[0] && waits[2] < app,
        "app is created once migrate has exited 0: {calls:?}"
    );

    // Converged: the exited job is done; later passes leave it alone.
    for later in [1, 60, 3600] {
        let p = plan_at(
            &rt,
            &desired,
            SystemTime::now() + Duration::from_secs(later),
        );
        assert!(p.is_empty() && p.blocked.is_empty(), "after {later}s: {p}");
        assert_eq!(p.requeue_after, None, "nothing is due: {p}");
    }
    // The dependant restarting (restart = always) needs no new run of the job.
    rt.exit("app", 1, SystemTime::now() - Duration::from_secs(60));
    rt.clear_calls();
    let outcomes = apply_plan(&rt, &desired).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert_eq!(rt.calls(), ["state migrate", "start_container app"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_blocks_its_dependant_and_says_why() {
    let rt = FakeRuntime::new();
    let desired = load(STACK);
    rt.script_states("migrate", &[ContainerState::Running, EXIT_3]);
    let outcomes = apply_plan(&rt, &desired).await;
    assert!(result(&outcomes, "migrate").is_ok());
    assert_eq!(
        result(&outcomes, "app"),
        Err("dependency migrate exited 3".to_string())
    );
    assert!(
        !rt.calls().contains(&"create_container app".to_string()),
        "{:?}",
        rt.calls()
    );

    // The next plan changes nothing and says why, for the job and for the app.
    let p = plan(&rt, &desired);
    assert!(p.is_empty(), "{p}");
    assert_eq!(
        blocked(&p, "migrate").as_deref(),
        Some("exited 3; restart = \"no\"")
    );
    assert_eq!(blocked(&p, "app").as_deref(), Some("migrate exited 3"));
    let text = p.to_string();
    assert!(
        text.contains("! container app (blocked: migrate exited 3)"),
        "{text}"
    );

    // Fixing the job replaces it; the app waits for the new run.
    let fixed = load(&STACK.replace(
        "[\"app\", \"migrate\"]",
        "[\"app\", \"migrate\", \"--fixed\"]",
    ));
    rt.script_states("migrate", &[ContainerState::Running, EXIT_0]);
    let p = plan(&rt, &fixed);
    assert_eq!(
        p.find(Kind::Container, "migrate").map(|a| a.verb),
        Some(Verb::Replace),
        "{p}"
    );
    assert_eq!(
        p.find(Kind::Container, "app").map(|a| a.verb),
        Some(Verb::Create),
        "{p}"
    );
    rt.clear_calls();
    let outcomes = apply_plan(&rt, &fixed).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let calls = rt.calls();
    assert!(
        position(&calls, "create_container migrate") < position(&calls, "state migrate")
            && position(&calls, "state migrate") < position(&calls, "create_container app"),
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_changed_job_runs_again_and_its_running_dependants_stay() {
    let rt = FakeRuntime::new();
    let desired = load(STACK);
    rt.script_states("migrate", &[EXIT_0]);
    apply_plan(&rt, &desired).await;
    assert!(plan(&rt, &desired).is_empty());

    let changed = load(&STACK.replace("[\"app\", \"migrate\"]", "[\"app\", \"migrate\", \"v2\"]"));
    let p = plan(&rt, &changed);
    assert_eq!(
        p.actions
            .iter()
            .map(|a| format!("{} {}", a.verb, a.name))
            .collect::<Vec<_>>(),
        ["replace migrate"],
        "{p}"
    );
    rt.clear_calls();
    let outcomes = apply_plan(&rt, &changed).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert_eq!(
        rt.calls(),
        [
            "remove_container migrate SIGTERM",
            "create_container migrate"
        ]
    );
    // The new run fails: the running app is left alone, the job is reported.
    rt.exit("migrate", 3, SystemTime::now());
    let p = plan(&rt, &changed);
    assert!(p.is_empty(), "{p}");
    assert_eq!(blocked(&p, "app"), None, "app runs and needs nothing");
    assert_eq!(
        blocked(&p, "migrate").as_deref(),
        Some("exited 3; restart = \"no\"")
    );
}

#[tokio::test(start_paused = true)]
async fn an_on_failure_job_is_retried_before_its_dependant_gives_up() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let rt = FakeRuntime::new();
    let desired = load(&STACK.replace(
        "mounts   = [\"data:/data\"]\n\n[containers.app]",
        "mounts   = [\"data:/data\"]\nrestart  = \"on-failure:1\"\n\n[containers.app]",
    ));
    rt.script_states("migrate", &[EXIT_3]);
    apply_plan(&rt, &desired).await;
    rt.with_host(|h| {
        let c = h.containers.get_mut("migrate").expect("migrate");
        c.started_at = Some(t0 - Duration::from_secs(1));
        c.finished_at = Some(t0);
    });
    // In its crash-loop backoff: the app waits for the restart.
    let p = plan_at(&rt, &desired, t0);
    assert!(p.is_empty(), "{p}");
    assert_eq!(p.requeue_after, Some(Duration::from_secs(1)));
    assert_eq!(
        blocked(&p, "app").as_deref(),
        Some("migrate exited 3; waiting for its restart")
    );
    // Due: the job starts again, and the app's create waits for that run.
    let p = plan_at(&rt, &desired, t0 + Duration::from_secs(2));
    assert_eq!(
        p.find(Kind::Container, "migrate").map(|a| a.verb),
        Some(Verb::Start)
    );
    assert_eq!(
        p.find(Kind::Container, "app").map(|a| a.verb),
        Some(Verb::Create)
    );
    // Out of retries: blocked for good, and so is the app.
    rt.with_host(|h| {
        h.containers
            .get_mut("migrate")
            .expect("migrate")
            .restart_count = 1
    });
    let p = plan_at(&rt, &desired, t0 + Duration::from_secs(2));
    assert!(p.is_empty(), "{p}");
    assert_eq!(blocked(&p, "app").as_deref(), Some("migrate exited 3"));
}

#[tokio::test(start_paused = true)]
async fn a_job_still_running_is_waited_for_up_to_the_timeout() {
    let rt = FakeRuntime::new();
    let desired = load(STACK);
    rt.script_states("migrate", &[ContainerState::Running]);
    let outcomes = apply_plan(&rt, &desired).await;
    let app = result(&outcomes, "app").unwrap_err();
    assert!(
        app.contains("dependency migrate did not complete within 5s"),
        "{app}"
    );
    // A later pass, with the job still running, waits again: not blocked.
    let p = plan(&rt, &desired);
    assert_eq!(
        p.find(Kind::Container, "app").map(|a| a.verb),
        Some(Verb::Create),
        "{p}"
    );
}

static NO_RECORDER: NoRecorder = NoRecorder;

/// The controller: an exited job is Ready and never restarted, even while
/// another container waits out its crash-loop backoff; a failed one is
/// Failed, and so is its dependant, each with the job's exit.
#[tokio::test(start_paused = true)]
async fn the_controller_reports_jobs_by_their_exit() {
    let rt = Arc::new(FakeRuntime::new());
    let (tx, rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(Status::default());
    let mut opts = ControllerOptions::new(PROJECT);
    opts.apply.health_poll = Duration::from_millis(10);
    let controller = Controller::new(rt.clone(), opts);
    let task = tokio::spawn(async move { controller.run(rx, status_tx, &NO_RECORDER).await });
    let text = format!(
        "{STACK}\n[containers.worker]\nimage = \"localhost:5000/app:1\"\nrestart = \"always\"\n"
    );
    rt.script_states("migrate", &[ContainerState::Running, EXIT_0]);
    tx.send(Trigger::Source {
        revision: Some("r1".into()),
        result: Ok(load(&text)),
    })
    .await
    .expect("controller alive");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let condition = |name: &str| status.borrow().conditions[&format!("container/{name}")].clone();
    assert_eq!(condition("migrate").status, ConditionStatus::Ready);
    assert_eq!(condition("app").status, ConditionStatus::Ready);

    rt.exit("worker", 1, SystemTime::now());
    tx.send(Trigger::HostChanged)
        .await
        .expect("controller alive");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(condition("worker").status, ConditionStatus::Progressing);
    assert_eq!(
        condition("migrate").status,
        ConditionStatus::Ready,
        "{:?}",
        condition("migrate")
    );
    tokio::time::sleep(Duration::from_secs(100)).await;
    let starts = |name: &str| {
        rt.calls()
            .iter()
            .filter(|c| *c == &format!("start_container {name}"))
            .count()
    };
    assert_eq!(starts("migrate"), 0, "a completed job is never restarted");
    assert_eq!(
        rt.calls()
            .iter()
            .filter(|c| *c == "create_container migrate")
            .count(),
        1
    );

    // A new run that fails is reported on the job and on what waits for it.
    rt.with_host(|h| {
        h.containers.remove("app");
    });
    rt.exit("migrate", 3, SystemTime::now());
    tx.send(Trigger::HostChanged)
        .await
        .expect("controller alive");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (job, app) = (condition("migrate"), condition("app"));
    assert_eq!(
        (job.status, job.reason, job.message.as_str()),
        (
            ConditionStatus::Failed,
            "Blocked",
            "exited 3; restart = \"no\""
        )
    );
    assert_eq!(
        (app.status, app.reason, app.message.as_str()),
        (ConditionStatus::Failed, "Blocked", "migrate exited 3")
    );
    tx.send(Trigger::Shutdown).await.expect("controller alive");
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("test timeout expired, controller did not stop on Shutdown")
        .expect("controller task");
}
