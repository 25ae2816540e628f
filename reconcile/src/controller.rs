//! The controller loop, in the style of kube-runtime's `Controller`.
//!
//! Triggers — a new desired state from a source, a change on the host (a
//! container exited), an explicit request, a periodic resync — all land in one
//! channel. Triggers that arrive while a pass is pending collapse into that
//! one pass (the de-duplicating queue: every pass diffs the whole desired state,
//! which costs milliseconds even for 10,000 resources). A failed action puts
//! its resource into exponential backoff: later passes leave it alone until its
//! retry is due, and only that retry failing again lengthens the wait. A pass
//! runs to completion; shutdown is seen between passes, so in-flight actions
//! finish and containers keep running.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use moor_spec::{DesiredState, Kind};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::apply::{ApplyOptions, apply};
use crate::backoff::Backoff;
use crate::converge::InstancePhase;
use crate::diff::{DiffOptions, diff, instance_name};
use crate::gate::{DriftMode, SourceMode, gate};
use crate::plan::{Action, Verb};
use crate::runtime::Runtime;

/// Something that asks for a reconcile.
#[derive(Debug)]
pub enum Trigger {
    /// A source produced a new desired state, or failed to (the message
    /// holds its diagnostics); a failure keeps the last good state in force.
    Source {
        /// The source's revision (a git commit, a directory's content hash).
        revision: Option<String>,
        /// The new desired state, or why there is none.
        result: Result<DesiredState, String>,
    },
    /// Something changed on the host (a container exited).
    HostChanged,
    /// Reconcile now.
    Now,
    /// Reconcile now and correct drift that `drift = "report"` left alone
    /// (an operator's `moor reconcile`).
    Correct,
    /// Stop acting on the host: neither source changes nor drift
    /// correction until [`Trigger::Resume`]. The latest desired state is
    /// kept and applied on resume.
    Suspend,
    /// Act again, applying the latest desired state.
    Resume,
    /// Finish the pass under way, if any, and stop.
    Shutdown,
}

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// How to apply (project, concurrency, health waits).
    pub apply: ApplyOptions,
    /// Time between passes when nothing triggers one.
    pub resync: Duration,
    /// Let an empty desired state remove everything the project owns.
    pub allow_empty: bool,
    /// Correct drift, or only report it.
    pub drift: DriftMode,
    /// Apply, or only plan.
    pub mode: SourceMode,
    /// Start suspended (a suspension that survived a restart).
    pub suspended: bool,
}

impl ControllerOptions {
    /// Defaults: a 30 s resync.
    pub fn new(project: impl Into<String>) -> Self {
        Self {
            apply: ApplyOptions::new(project),
            resync: Duration::from_secs(30),
            allow_empty: false,
            drift: DriftMode::Correct,
            mode: SourceMode::Apply,
            suspended: false,
        }
    }
}

/// The state of one resource, as `moor ps`, `/status` and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConditionStatus {
    /// It matches the manifests.
    Ready,
    /// A change is under way or due (a restart waiting out its backoff).
    Progressing,
    /// It cannot be reconciled now; `reason` says why.
    Failed,
}

/// One resource's condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// The kind of resource.
    pub kind: Kind,
    /// Its name (a container instance name for containers).
    pub name: String,
    /// Ready, progressing or failed.
    pub status: ConditionStatus,
    /// A short word: `UpToDate`, `Applied`, `ActionFailed`, `BuildFailed`, `Blocked`, `BackingOff`.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// What the controller reports after each pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The revision of the desired state in force.
    pub revision: Option<String>,
    /// Why the latest source update was refused, if it was.
    pub source_error: Option<String>,
    /// When the last pass finished.
    pub last_reconcile: Option<SystemTime>,
    /// The last pass's error, if it failed as a whole.
    pub last_error: Option<String>,
    /// Passes so far.
    pub reconciles: u64,
    /// True once a desired state arrived and a pass over it finished.
    pub ready: bool,
    /// Per resource, keyed `kind/name`.
    pub conditions: BTreeMap<String, Condition>,
    /// Suspended: nothing is applied until resumed.
    pub suspended: bool,
    /// A revision that arrived while suspended, applied on resume.
    pub pending_revision: Option<String>,
    /// Drift found and left alone (`drift = "report"`, or `mode = "plan"`).
    pub drift: Vec<Action>,
    /// What a `mode = "plan"` source would do now.
    pub planned: Vec<Action>,
}

/// Hooks for metrics; every method has a no-op default.
pub trait Recorder: Send + Sync {
    /// A pass finished.
    fn reconcile(&self, _ok: bool, _duration: Duration) {}
    /// An action finished.
    fn action(&self, _kind: Kind, _verb: Verb, _ok: bool) {}
    /// An image build finished (an action of verb [`Verb::Build`]).
    fn build(&self, _ok: bool, _duration: Duration) {}
    /// A resource that was ready drifted from its spec on the host.
    fn drift(&self, _kind: Kind) {}
    /// Resources waiting for a retry, and retries so far.
    fn queue(&self, _depth: usize, _retries: u64) {}
    /// What a pass saw: desired and observed state, and drifted resources by kind.
    fn pass_view(&self, _view: &PassView<'_>) {}
    /// Resources of `project` found drifted and left so, by kind (every
    /// kind, zeros included).
    fn drift_left(&self, _project: &str, _by_kind: &BTreeMap<Kind, i64>) {}
}

/// What one pass saw, for [`Recorder::pass_view`].
#[derive(Debug)]
pub struct PassView<'a> {
    /// The desired state in force.
    pub desired: &'a DesiredState,
    /// The host as observed at the start of the pass.
    pub observed: &'a crate::Observed,
    /// The project.
    pub project: &'a str,
    /// Resources that had drifted from their spec, by kind.
    pub drifted: BTreeMap<Kind, i64>,
}

/// A recorder that records nothing.
#[derive(Debug, Default)]
pub struct NoRecorder;
impl Recorder for NoRecorder {}

/// The loop. Create with [`Controller::new`], then [`Controller::run`].
#[derive(Debug)]
pub struct Controller<R> {
    runtime: R,
    opts: ControllerOptions,
    desired: Option<DesiredState>,
    backoff: Backoff<(Kind, String)>,
    /// Backoff for passes that failed as a whole (the host could not be observed).
    pass_backoff: Backoff<()>,
    status: Status,
    retries: u64,
    /// A desired state that arrived while suspended.
    pending: Option<(Option<String>, DesiredState)>,
    /// Resources a pass found matching their spec: an action on one of
    /// them that no spec change asks for is drift (see `gate`).
    in_place: BTreeSet<(Kind, String)>,
    /// Wall-clock time at `epoch`: restart backoff compares wall-clock exit
    /// times, and deriving "now" from tokio's clock keeps a paused test clock
    /// in charge of both.
    wall_epoch: (SystemTime, Instant),
}

impl<R: Runtime> Controller<R> {
    /// A controller over `runtime`.
    pub fn new(runtime: R, opts: ControllerOptions) -> Self {
        let suspended = opts.suspended;
        Self {
            runtime,
            opts,
            desired: None,
            backoff: Backoff::default(),
            pass_backoff: Backoff::default(),
            status: Status {
                suspended,
                ..Status::default()
            },
            retries: 0,
            pending: None,
            in_place: BTreeSet::new(),
            wall_epoch: (SystemTime::now(), Instant::now()),
        }
    }

    /// The runtime, for callers that share it.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Runs until [`Trigger::Shutdown`] or until every sender is dropped.
    /// Publishes a [`Status`] after every pass.
    pub async fn run(
        mut self,
        mut triggers: mpsc::Receiver<Trigger>,
        status: watch::Sender<Status>,
        recorder: &dyn Recorder,
    ) {
        let mut next: Option<Instant> = None;
        loop {
            let wake = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                t = triggers.recv() => {
                    match t {
                        None | Some(Trigger::Shutdown) => return,
                        Some(t) => {
                            if self.handle(t) {
                                next = Some(Instant::now());
                            }
                            status.send_replace(self.status.clone());
                        }
                    }
                }
                () = wake => {
                    // Collapse a burst of triggers into this one pass.
                    while let Ok(t) = triggers.try_recv() {
                        if matches!(t, Trigger::Shutdown) {
                            return;
                        }
                        self.handle(t);
                    }
                    next = self.pass(recorder).await;
                    status.send_replace(self.status.clone());
                }
            }
        }
    }

    fn wall_now(&self) -> SystemTime {
        let (wall, instant) = self.wall_epoch;
        wall + instant.elapsed()
    }

    /// Takes a trigger in; returns whether a pass is wanted now.
    fn handle(&mut self, t: Trigger) -> bool {
        match t {
            Trigger::Source { revision, result } => match result {
                Ok(desired) if self.status.suspended => {
                    tracing::info!(
                        project = %self.opts.apply.project,
                        revision = revision.as_deref().unwrap_or("-"),
                        "suspended: the new desired state waits for resume"
                    );
                    self.status.pending_revision = revision.clone();
                    self.status.source_error = None;
                    self.pending = Some((revision, desired));
                    false
                }
                Ok(desired) => {
                    tracing::info!(
                        project = %self.opts.apply.project,
                        revision = revision.as_deref().unwrap_or("-"),
                        resources = desired.len(),
                        "new desired state"
                    );
                    self.desired = Some(desired);
                    self.status.revision = revision;
                    self.status.source_error = None;
                    // A new desired state may well fix what failed: retry everything now.
                    self.backoff.reset();
                    true
                }
                Err(message) => {
                    // The last good desired state stays in force.
                    tracing::warn!(
                        project = %self.opts.apply.project,
                        "invalid manifests; the last good state stays in force:\n{message}"
                    );
                    self.status.source_error = Some(message);
                    false
                }
            },
            Trigger::HostChanged | Trigger::Now => !self.status.suspended && self.desired.is_some(),
            Trigger::Correct => {
                // Forget what was in place: nothing counts as drift in the next pass.
                self.in_place.clear();
                !self.status.suspended && self.desired.is_some()
            }
            Trigger::Suspend => {
                if !self.status.suspended {
                    tracing::info!(project = %self.opts.apply.project, "suspended");
                }
                self.status.suspended = true;
                false
            }
            Trigger::Resume => {
                if self.status.suspended {
                    tracing::info!(project = %self.opts.apply.project, "resumed");
                }
                self.status.suspended = false;
                if let Some((revision, desired)) = self.pending.take() {
                    self.desired = Some(desired);
                    self.status.revision = revision;
                    self.backoff.reset();
                }
                self.status.pending_revision = None;
                self.desired.is_some()
            }
            Trigger::Shutdown => false,
        }
    }

    /// One reconcile pass; returns when the next one is due.
    async fn pass(&mut self, recorder: &dyn Recorder) -> Option<Instant> {
        if self.status.suspended {
            return None;
        }
        let desired = self.desired.as_ref()?;
        let started = Instant::now();
        let resync = started + self.opts.resync;
        let span = tracing::info_span!(
            "reconcile",
            project = %self.opts.apply.project,
            revision = self.status.revision.as_deref().unwrap_or("-"),
            pass = self.status.reconciles + 1,
        );
        let result = self
            .pass_inner(desired.clone(), recorder)
            .instrument(span.clone())
            .await;
        let ok = result.is_ok();
        let elapsed = started.elapsed();
        recorder.reconcile(ok, elapsed);
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!(elapsed_ms = elapsed.as_secs_f64() * 1e3, "pass finished"),
            Err(e) => tracing::warn!(error = %e, "pass failed"),
        });
        self.status.reconciles += 1;
        self.status.last_reconcile = Some(self.wall_now());
        let now = Instant::now();
        let mut next = resync;
        match result {
            Ok(requeue) => {
                self.pass_backoff.succeeded(&());
                self.status.last_error = None;
                self.status.ready = true;
                if let Some(r) = requeue {
                    next = next.min(now + r);
                }
            }
            Err(e) => {
                self.status.last_error = Some(e);
                next = next.min(self.pass_backoff.failed(&(), now));
            }
        }
        if let Some(due) = self.backoff.next_due(now) {
            next = next.min(due);
        }
        Some(next)
    }

    async fn pass_inner(
        &mut self,
        desired: DesiredState,
        recorder: &dyn Recorder,
    ) -> Result<Option<Duration>, String> {
        let observed = crate::runtime::observe(&self.runtime, &desired)
            .await
            .map_err(|e| format!("observing the host: {e}"))?;
        let opts = DiffOptions {
            project: &self.opts.apply.project,
            allow_empty: self.opts.allow_empty,
            remove_volumes: false,
            now: self.wall_now(),
        };
        let mut plan = diff(&desired, &observed, &opts).map_err(|e| e.to_string())?;
        let now = Instant::now();

        // Resources in backoff sit this pass out.
        let (runnable, waiting): (Vec<_>, Vec<_>) = plan
            .actions
            .drain(..)
            .partition(|a| !self.backoff.waiting(&(a.kind, a.name.clone()), now));
        plan.actions = runnable;

        // Drift: a resource that was ready needs an action without its spec having changed.
        let mut drifted: BTreeMap<Kind, i64> = BTreeMap::new();
        for a in &plan.actions {
            let key = format!("{}/{}", a.kind, a.name);
            let was_ready = self
                .status
                .conditions
                .get(&key)
                .is_some_and(|c| c.status == ConditionStatus::Ready);
            if was_ready && !a.reason.is_spec_change() && a.verb != Verb::Remove {
                recorder.drift(a.kind);
                *drifted.entry(a.kind).or_default() += 1;
            }
        }
        recorder.pass_view(&PassView {
            desired: &desired,
            observed: &observed,
            project: &self.opts.apply.project,
            drifted,
        });

        // What this source may do: drift it only reports, plans it only shows.
        let gated = gate(
            std::mem::take(&mut plan.actions),
            &self.in_place,
            self.opts.drift,
            self.opts.mode,
        );
        plan.actions = gated.apply;
        let mut left: BTreeMap<Kind, i64> =
            [Kind::Image, Kind::Network, Kind::Volume, Kind::Container]
                .into_iter()
                .map(|k| (k, 0))
                .collect();
        for a in &gated.drifted {
            *left.entry(a.kind).or_default() += 1;
            if !self
                .status
                .drift
                .iter()
                .any(|d| d.kind == a.kind && d.name == a.name)
            {
                tracing::warn!(kind = %a.kind, resource = %a.name, "drift left alone: {} ({})", a.verb, a.reason);
            }
        }
        recorder.drift_left(&self.opts.apply.project, &left);

        if !plan.actions.is_empty() {
            tracing::info!(actions = plan.actions.len(), "applying");
        }
        let outcomes = apply(&self.runtime, &plan, &desired, &observed, &self.opts.apply).await;

        let mut conditions = ready_conditions(&desired);
        for o in &outcomes {
            let key = (o.action.kind, o.action.name.clone());
            recorder.action(o.action.kind, o.action.verb, o.result.is_ok());
            if o.action.verb == Verb::Build {
                recorder.build(o.result.is_ok(), o.elapsed);
            }
            let cond_key = format!("{}/{}", o.action.kind, o.action.name);
            match &o.result {
                Ok(()) => {
                    self.backoff.succeeded(&key);
                    if let Some(c) = conditions.get_mut(&cond_key) {
                        c.reason = "Applied";
                        c.message = format!("{}: {}", o.action.verb, o.action.reason);
                    }
                }
                Err(e) => {
                    if self.backoff.waiting(&key, now) || self.backoff.failures(&key) > 0 {
                        self.retries += 1;
                    }
                    let due = self.backoff.failed(&key, Instant::now());
                    let wait = due.saturating_duration_since(Instant::now());
                    conditions.insert(
                        cond_key,
                        Condition {
                            kind: o.action.kind,
                            name: o.action.name.clone(),
                            status: ConditionStatus::Failed,
                            reason: if o.action.verb == Verb::Build {
                                "BuildFailed"
                            } else {
                                "ActionFailed"
                            },
                            message: format!(
                                "{} failed: {e}; retrying in {:.1}s",
                                o.action.verb,
                                wait.as_secs_f64()
                            ),
                        },
                    );
                }
            }
        }
        for a in &waiting {
            let key = format!("{}/{}", a.kind, a.name);
            let previous = self
                .status
                .conditions
                .get(&key)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            conditions.insert(
                key,
                Condition {
                    kind: a.kind,
                    name: a.name.clone(),
                    status: ConditionStatus::Failed,
                    reason: "BackingOff",
                    message: previous,
                },
            );
        }
        for b in &plan.blocked {
            let key = format!("{}/{}", b.kind, b.name);
            let message = b.reason.to_string();
            if self.status.conditions.get(&key).map(|c| &c.message) != Some(&message) {
                tracing::warn!(kind = %b.kind, resource = %b.name, "blocked: {message}");
            }
            conditions.insert(
                format!("{}/{}", b.kind, b.name),
                Condition {
                    kind: b.kind,
                    name: b.name.clone(),
                    status: ConditionStatus::Failed,
                    reason: "Blocked",
                    message,
                },
            );
        }
        if plan.requeue_after.is_some() {
            // A restart waits out its crash-loop backoff: those containers are progressing.
            for (key, c) in conditions.iter_mut() {
                if c.kind == Kind::Container && c.reason == "UpToDate" {
                    // Not a job that exited for good (restart = "no", or
                    // on-failure after exit 0): nothing is due for that.
                    let restarting = observed.containers.get(&c.name).is_some_and(|o| {
                        match desired.containers.get(&o.resource) {
                            Some(d) => InstancePhase::of(&d.spec, Some(o)).awaits_restart(),
                            // Its policy unknown: whatever does not run.
                            None => o.state != crate::ContainerState::Running,
                        }
                    });
                    if restarting {
                        c.status = ConditionStatus::Progressing;
                        c.reason = "BackingOff";
                        c.message =
                            format!("{key} exited; restart is due after its crash-loop backoff");
                    }
                }
            }
        }
        for a in &gated.held {
            let key = format!("{}/{}", a.kind, a.name);
            conditions.insert(
                key,
                Condition {
                    kind: a.kind,
                    name: a.name.clone(),
                    status: ConditionStatus::Progressing,
                    reason: "Planned",
                    message: format!("mode = \"plan\": would {} ({})", a.verb, a.reason),
                },
            );
        }
        for a in &gated.drifted {
            conditions.insert(
                format!("{}/{}", a.kind, a.name),
                Condition {
                    kind: a.kind,
                    name: a.name.clone(),
                    status: ConditionStatus::Failed,
                    reason: "Drifted",
                    message: format!(
                        "changed on the host, left so (drift = \"report\"): would {} ({})",
                        a.verb, a.reason
                    ),
                },
            );
        }
        recorder.queue(
            waiting.len() + outcomes.iter().filter(|o| o.result.is_err()).count(),
            self.retries,
        );
        // What is in place now; drifted resources stay known (still drift
        // next pass) until `Trigger::Correct`.
        self.in_place
            .retain(|(k, n)| conditions.contains_key(&format!("{k}/{n}")));
        for c in conditions.values() {
            if c.status == ConditionStatus::Ready {
                self.in_place.insert((c.kind, c.name.clone()));
            }
        }
        self.status.drift = gated.drifted;
        self.status.planned = gated.held;
        self.status.conditions = conditions;
        // A built or pulled image's containers follow its new ID in the
        // next pass (this one diffed them against the old): run it now.
        let built = outcomes
            .iter()
            .any(|o| matches!(o.action.verb, Verb::Build | Verb::Pull) && o.result.is_ok());
        Ok(if built {
            Some(Duration::ZERO)
        } else {
            plan.requeue_after
        })
    }
}

fn ready_conditions(desired: &DesiredState) -> BTreeMap<String, Condition> {
    let mut out = BTreeMap::new();
    let mut put = |kind: Kind, name: String| {
        out.insert(
            format!("{kind}/{name}"),
            Condition {
                kind,
                name,
                status: ConditionStatus::Ready,
                reason: "UpToDate",
                message: String::new(),
            },
        );
    };
    for i in desired.images.values() {
        put(Kind::Image, i.spec.reference.to_string());
    }
    for c in desired.containers.values() {
        put(Kind::Image, c.spec.image.to_string());
    }
    for n in desired.networks.keys() {
        put(Kind::Network, n.clone());
    }
    for v in desired.volumes.keys() {
        put(Kind::Volume, v.clone());
    }
    for (name, c) in &desired.containers {
        for r in 1..=c.spec.replicas {
            put(Kind::Container, instance_name(name, r));
        }
    }
    out
}
