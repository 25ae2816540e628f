//! Converge: apply a desired state once and wait until the host has
//! settled, as `moor apply` does. Start at [`converge()`].
//!
//! One rule says when there is nothing left to wait for: [`settled`], built
//! on [`InstancePhase`], the phase of one container instance against its
//! spec. `converge` stops on it; the controller describes the same phases
//! in its conditions (a container whose phase awaits a restart is
//! `Progressing` while its crash-loop backoff runs).

use std::time::{Duration, SystemTime};

use moor_spec::{ContainerSpec, DesiredState, Kind};
use tokio::time::Instant;

use crate::apply::{ApplyOptions, Outcome, apply};
use crate::diff::{DiffError, DiffOptions, diff, instance_name};
use crate::observed::{ContainerState, Health, Observed, ObservedContainer};
use crate::plan::{Blocked, Plan};
use crate::runtime::{Runtime, RuntimeError};

/// Where one desired container instance stands on the host, against its
/// resource's spec. A person's hold (`moor stop`, `moor pause`) is apart
/// from this: it is what was asked of the container, not what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstancePhase {
    /// Not on the host.
    Absent,
    /// Created and never started, or its supervisor is gone.
    Down,
    /// Runs, and passes its health check when it has one.
    Running,
    /// Runs; its health check has not passed (yet).
    Starting,
    /// Exited, and its restart policy leaves it so: a job that is done.
    Done,
    /// Exited, and its restart policy starts it again.
    Restarting,
}

impl InstancePhase {
    /// The phase of `observed` (None: not on the host) for a resource with `spec`.
    pub fn of(spec: &ContainerSpec, observed: Option<&ObservedContainer>) -> Self {
        let Some(o) = observed else {
            return InstancePhase::Absent;
        };
        match o.state {
            ContainerState::Running
                if spec.healthcheck.is_none() || o.health == Health::Healthy =>
            {
                InstancePhase::Running
            }
            ContainerState::Running => InstancePhase::Starting,
            ContainerState::Exited { code, .. } if spec.restart.restarts_after(code) => {
                InstancePhase::Restarting
            }
            ContainerState::Exited { .. } => InstancePhase::Done,
            ContainerState::Created | ContainerState::Dead => InstancePhase::Down,
        }
    }

    /// True when nothing is left to wait for: it runs (and is healthy), or
    /// it is a job that has exited for good.
    pub fn is_settled(self) -> bool {
        matches!(self, InstancePhase::Running | InstancePhase::Done)
    }

    /// True when it is on the host but not running, and is to run again:
    /// its restart policy restarts it, or it never started, or its
    /// supervisor is gone.
    pub fn awaits_restart(self) -> bool {
        matches!(self, InstancePhase::Restarting | InstancePhase::Down)
    }
}

/// True when nothing is left to do or to wait for: the plan is empty and
/// every desired container instance is settled ([`InstancePhase::is_settled`]),
/// or held by a person (stopped on purpose with `moor stop`, or paused), or
/// blocked, which nothing but a person can change (the caller reports it).
pub fn settled(desired: &DesiredState, observed: &Observed, plan: &Plan) -> bool {
    plan.is_empty()
        && desired.containers.values().all(|c| {
            (1..=c.spec.replicas).all(|r| {
                let name = instance_name(&c.name, r);
                let blocked = plan
                    .blocked
                    .iter()
                    .any(|b| b.kind == Kind::Container && b.name == name);
                let o = observed.containers.get(&name);
                blocked
                    || o.is_some_and(|o| o.hold.is_some())
                    || InstancePhase::of(&c.spec, o).is_settled()
            })
        })
}

/// How to converge.
#[derive(Debug, Clone)]
pub struct ConvergeOptions {
    /// How to apply (the project, concurrency, health waits). A job its
    /// dependants wait for may take as long as the whole convergence:
    /// each pass's `completion_timeout` is what is left of `timeout`.
    pub apply: ApplyOptions,
    /// Let an empty desired state remove everything the project owns.
    pub allow_empty: bool,
    /// Give up when the host has not settled after this long.
    pub timeout: Duration,
    /// How often to look again while waiting (for a health check, or a
    /// restart's backoff) with nothing to apply.
    pub poll: Duration,
}

impl ConvergeOptions {
    /// Defaults for `project`: apply's defaults, a look every 200 ms.
    pub fn new(project: impl Into<String>, timeout: Duration) -> Self {
        Self {
            apply: ApplyOptions::new(project),
            allow_empty: false,
            timeout,
            poll: Duration::from_millis(200),
        }
    }
}

/// How a convergence ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Convergence {
    /// The host matches the desired state; nothing is left to wait for.
    Converged,
    /// Settled, but these resources cannot be reconciled as things stand
    /// (a job that exited non-zero, and what waits for it).
    Blocked(Vec<Blocked>),
    /// Actions of a pass failed: their outcomes (every outcome of that pass
    /// was reported as it came).
    Failed(Vec<Outcome>),
    /// The timeout passed before the host settled.
    TimedOut {
        /// The timeout.
        after: Duration,
        /// The last plan: what was still to do (empty when only waiting).
        plan: Plan,
    },
}

/// Why a convergence could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    /// The host could not be observed.
    #[error(transparent)]
    Observe(#[from] RuntimeError),
    /// No plan could be made (an empty desired state, say).
    #[error(transparent)]
    Diff(#[from] DiffError),
}

/// Observes the host, diffs `desired` against it and applies the plan,
/// again and again, until the host has [`settled`], an action fails or
/// `opts.timeout` passes. Each action's outcome goes to `report` as it
/// comes. Waits on tokio's clock, so a paused test clock drives it.
pub async fn converge<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    opts: &ConvergeOptions,
    mut report: impl FnMut(&Outcome),
) -> Result<Convergence, ConvergeError> {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    // Restart backoff compares wall-clock exit times; deriving "now" from
    // tokio's clock keeps a paused test clock in charge of both.
    let wall_epoch = SystemTime::now();
    loop {
        let observed = crate::runtime::observe(rt, desired).await?;
        let diff_opts = DiffOptions {
            project: &opts.apply.project,
            allow_empty: opts.allow_empty,
            remove_volumes: false,
            now: wall_epoch + started.elapsed(),
        };
        let plan = diff(desired, &observed, &diff_opts)?;
        if settled(desired, &observed, &plan) {
            return Ok(if plan.blocked.is_empty() {
                Convergence::Converged
            } else {
                Convergence::Blocked(plan.blocked)
            });
        }
        if Instant::now() >= deadline {
            return Ok(Convergence::TimedOut {
                after: opts.timeout,
                plan,
            });
        }
        if plan.is_empty() {
            // Waiting for health checks or a restart's backoff.
            tokio::time::sleep(opts.poll).await;
            continue;
        }
        let apply_opts = ApplyOptions {
            completion_timeout: deadline.saturating_duration_since(Instant::now()),
            ..opts.apply.clone()
        };
        let outcomes = apply(rt, &plan, desired, &observed, &apply_opts).await;
        let mut failed = Vec::new();
        for o in outcomes {
            report(&o);
            if o.result.is_err() {
                failed.push(o);
            }
        }
        if !failed.is_empty() {
            return Ok(Convergence::Failed(failed));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::fake::FakeRuntime;
    use crate::plan::Verb;

    const PROJECT: &str = "demo";

    fn load(toml: &str) -> DesiredState {
        moor_spec::load_texts(&[(PathBuf::from("/m/stack.toml"), toml.to_string())])
            .unwrap_or_else(|d| panic!("test manifest invalid:\n{d}"))
    }

    fn opts(timeout: Duration) -> ConvergeOptions {
        let mut o = ConvergeOptions::new(PROJECT, timeout);
        o.apply.health_poll = Duration::from_millis(10);
        o
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    /// Converges, recording every reported outcome as `verb name`.
    async fn run(
        rt: &FakeRuntime,
        desired: &DesiredState,
        timeout: Duration,
    ) -> (Convergence, Vec<String>) {
        let mut reported = Vec::new();
        let result = tokio::time::timeout(
            timeout + Duration::from_secs(60),
            converge(rt, desired, &opts(timeout), |o| {
                reported.push(format!("{} {}", o.action.verb, o.action.name));
            }),
        )
        .await
        .expect("test timeout expired, converge likely waits past its own deadline")
        .expect("converge");
        (result, reported)
    }

    const WEB: &str = r#"
[networks.front]

[containers.web]
image    = "localhost:5000/web:1"
networks = ["front"]
restart  = "always"
"#;

    #[tokio::test(start_paused = true)]
    async fn a_stack_converges_and_a_second_run_changes_nothing() {
        let rt = FakeRuntime::new();
        let desired = load(WEB);
        let (result, reported) = run(&rt, &desired, Duration::from_secs(120)).await;
        assert_eq!(result, Convergence::Converged);
        assert_eq!(
            sorted(reported),
            ["create front", "create web", "pull localhost:5000/web:1"]
        );

        rt.clear_calls();
        let (result, reported) = run(&rt, &desired, Duration::from_secs(120)).await;
        assert_eq!(result, Convergence::Converged);
        assert!(reported.is_empty(), "{reported:?}");
        assert!(rt.calls().is_empty(), "{:?}", rt.calls());
    }

    const CHECKED: &str = r#"
[containers.web]
image       = "localhost:5000/web:1"
restart     = "always"
healthcheck = { http = "http://localhost:80/", interval = "1s", retries = 3 }
"#;

    #[tokio::test(start_paused = true)]
    async fn it_waits_for_health_and_converges_once_healthy() {
        let rt = std::sync::Arc::new(FakeRuntime::new());
        let desired = load(CHECKED);
        let later = rt.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            later.with_host(|h| {
                if let Some(c) = h.containers.get_mut("web") {
                    c.health = Health::Healthy;
                }
            });
        });
        let t0 = Instant::now();
        let (result, _) = run(&rt, &desired, Duration::from_secs(120)).await;
        assert_eq!(result, Convergence::Converged);
        assert!(t0.elapsed() >= Duration::from_secs(5), "waited for health");
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "not until the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stack_that_never_settles_times_out_with_its_last_plan() {
        let rt = FakeRuntime::new();
        let desired = load(CHECKED);
        let t0 = Instant::now();
        let (result, reported) = run(&rt, &desired, Duration::from_secs(30)).await;
        assert!(t0.elapsed() >= Duration::from_secs(30), "kept waiting");
        assert_eq!(
            sorted(reported),
            ["create web", "pull localhost:5000/web:1"]
        );
        match result {
            Convergence::TimedOut { after, plan } => {
                assert_eq!(after, Duration::from_secs(30));
                assert!(plan.is_empty(), "only waiting for health: {plan}");
            }
            other => panic!("not a timeout: {other:?}"),
        }
        // Health never passed: the phase says so.
        let o = rt.with_host(|h| h.containers.get("web").cloned());
        let spec = &desired.containers["web"].spec;
        assert_eq!(InstancePhase::of(spec, o.as_ref()), InstancePhase::Starting);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_action_ends_it_with_the_failure() {
        let rt = FakeRuntime::new();
        let desired = load(WEB);
        rt.fail_next("create_container web", "no space left on device");
        let (result, reported) = run(&rt, &desired, Duration::from_secs(120)).await;
        assert_eq!(
            sorted(reported),
            ["create front", "create web", "pull localhost:5000/web:1"]
        );
        match result {
            Convergence::Failed(failed) => {
                assert_eq!(failed.len(), 1, "{failed:?}");
                assert_eq!(failed[0].action.name, "web");
                assert_eq!(failed[0].action.verb, Verb::Create);
                assert_eq!(failed[0].result, Err("no space left on device".to_string()));
            }
            other => panic!("not a failure: {other:?}"),
        }
    }

    const JOB: &str = r#"
[containers.migrate]
image    = "localhost:5000/app:1"
command  = ["app", "migrate"]

[containers.app]
image      = "localhost:5000/app:1"
command    = ["app", "serve"]
restart    = "always"
depends_on = { migrate = "completed" }
"#;

    #[tokio::test(start_paused = true)]
    async fn a_failed_job_fails_the_first_run_and_blocks_the_next() {
        let rt = FakeRuntime::new();
        let desired = load(JOB);
        rt.script_states(
            "migrate",
            &[
                ContainerState::Running,
                ContainerState::Exited {
                    code: 3,
                    oom: false,
                },
            ],
        );
        let (result, _) = run(&rt, &desired, Duration::from_secs(120)).await;
        match result {
            Convergence::Failed(failed) => {
                assert_eq!(failed.len(), 1, "{failed:?}");
                assert_eq!(failed[0].action.name, "app");
                assert_eq!(
                    failed[0].result,
                    Err("dependency migrate exited 3".to_string())
                );
            }
            other => panic!("not a failure: {other:?}"),
        }

        // Nothing but a person can change it now: settled, and blocked.
        let t0 = Instant::now();
        let (result, reported) = run(&rt, &desired, Duration::from_secs(120)).await;
        assert!(reported.is_empty(), "{reported:?}");
        assert_eq!(t0.elapsed(), Duration::ZERO, "nothing to wait for");
        match result {
            Convergence::Blocked(blocked) => {
                let names: Vec<(&str, String)> = blocked
                    .iter()
                    .map(|b| (b.name.as_str(), b.reason.to_string()))
                    .collect();
                assert_eq!(
                    names,
                    [
                        ("app", "migrate exited 3".to_string()),
                        ("migrate", "exited 3; restart = \"no\"".to_string())
                    ]
                );
            }
            other => panic!("not blocked: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_container_is_settled_whatever_its_phase() {
        let rt = FakeRuntime::new();
        let desired = load(WEB);
        assert_eq!(
            run(&rt, &desired, Duration::from_secs(120)).await.0,
            Convergence::Converged
        );
        rt.exit("web", 143, SystemTime::now());
        rt.with_host(|h| {
            h.containers.get_mut("web").expect("web").hold = Some(crate::Hold::Stopped);
        });
        rt.clear_calls();
        let (result, reported) = run(&rt, &desired, Duration::from_secs(120)).await;
        assert_eq!(result, Convergence::Converged);
        assert!(
            reported.is_empty(),
            "a held container is left alone: {reported:?}"
        );
    }

    #[test]
    fn phases_of_one_instance() {
        let desired = load(&format!("{CHECKED}\n{JOB}"));
        let (web, job) = (
            &desired.containers["web"].spec,
            &desired.containers["migrate"].spec,
        );
        let mut o = ObservedContainer {
            id: "x".into(),
            project: Some(PROJECT.into()),
            resource: "x".into(),
            replica: 1,
            hash: desired.containers["web"].hash.clone(),
            spec: None,
            networks: vec![],
            volumes: vec![],
            state: ContainerState::Running,
            health: Health::Starting,
            restart_count: 0,
            started_at: None,
            finished_at: None,
            fault: None,
            hold: None,
        };
        let exited = |code| ContainerState::Exited { code, oom: false };
        let mut cases = vec![(web, None, InstancePhase::Absent)];
        for (spec, state, health, phase) in [
            (
                web,
                ContainerState::Running,
                Health::Starting,
                InstancePhase::Starting,
            ),
            (
                web,
                ContainerState::Running,
                Health::Unhealthy,
                InstancePhase::Starting,
            ),
            (
                web,
                ContainerState::Running,
                Health::Healthy,
                InstancePhase::Running,
            ),
            (
                job,
                ContainerState::Running,
                Health::None,
                InstancePhase::Running,
            ),
            (web, exited(0), Health::None, InstancePhase::Restarting),
            (job, exited(0), Health::None, InstancePhase::Done),
            (job, exited(3), Health::None, InstancePhase::Done),
            (
                web,
                ContainerState::Created,
                Health::None,
                InstancePhase::Down,
            ),
            (job, ContainerState::Dead, Health::None, InstancePhase::Down),
        ] {
            o.state = state;
            o.health = health;
            cases.push((spec, Some(o.clone()), phase));
        }
        for (spec, o, phase) in cases {
            assert_eq!(InstancePhase::of(spec, o.as_ref()), phase, "{o:?}");
        }
        assert!(InstancePhase::Running.is_settled() && InstancePhase::Done.is_settled());
        for p in [
            InstancePhase::Absent,
            InstancePhase::Down,
            InstancePhase::Starting,
            InstancePhase::Restarting,
        ] {
            assert!(!p.is_settled(), "{p:?}");
        }
        assert!(InstancePhase::Restarting.awaits_restart() && InstancePhase::Down.awaits_restart());
        assert!(!InstancePhase::Absent.awaits_restart() && !InstancePhase::Done.awaits_restart());
    }
}
