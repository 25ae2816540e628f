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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
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
use crate::rollout::{self, InstanceView, Limits, Outcome, RevisionRecord, Verdict};
use crate::runtime::Runtime;

/// How often a pass runs while a revision's outcome is undecided (health
/// checks and `min_ready` change nothing a trigger would announce).
const ROLLOUT_POLL: Duration = Duration::from_secs(1);

/// How many healthy revisions' desired states the controller keeps to roll
/// back to (in memory: since the agent started).
pub use crate::rollout::KEPT_GOOD;

/// What puts a source's own files of a revision back in force before a
/// rollback to it applies (a git source checks the commit's tree out
/// again): called with the revision rolled back from and the one rolled
/// back to. Blocking, and brief.
#[derive(Clone)]
pub struct Restore(pub std::sync::Arc<RestoreFn>);

/// The function behind [`Restore`]: `(from, to)`, or why the files could
/// not be put back.
pub type RestoreFn = dyn Fn(&str, &str) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for Restore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Restore(..)")
    }
}

/// Loads the desired state of a revision applied before this start (a git
/// source checks its commit out again and loads it), for `moor rollback
/// --to`: called with the revision in force and the one asked for; puts
/// the source's files of the one in force back when it fails. Blocking.
#[derive(Clone)]
pub struct LoadRevision(pub Arc<LoadRevisionFn>);

/// The function behind [`LoadRevision`]: `(from, to)`.
pub type LoadRevisionFn = dyn Fn(&str, &str) -> Result<DesiredState, String> + Send + Sync;

impl std::fmt::Debug for LoadRevision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadRevision(..)")
    }
}

/// Where a source's files of a healthy revision are kept for a rollback to
/// it (a directory source: a git source has its commits). Blocking, and
/// brief (bounded copies).
pub trait Snapshots: Send + Sync + std::fmt::Debug {
    /// Copies `sources` (see [`rollout::snapshot_sources`]) of
    /// `revision`; returns each tree's copy (old root → snapshot root), or
    /// why there is none.
    fn take(
        &self,
        revision: &str,
        sources: &BTreeSet<rollout::SnapshotSource>,
    ) -> Result<BTreeMap<PathBuf, PathBuf>, String>;
    /// Deletes the snapshots of every revision but those in `keep`.
    fn keep(&self, keep: &[&str]);
}

/// Runs `f`, which blocks briefly, without stalling the other tasks of a
/// multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    if tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
    {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Where a manual rollback's answer goes.
pub type RollbackReply = tokio::sync::oneshot::Sender<Result<String, String>>;

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
    /// Roll back by hand (`moor rollback`): to `to` (a revision or a
    /// prefix of one, of the healthy revisions kept), or to the newest
    /// healthy revision before the one in force. The revision in force is
    /// not applied again until the source moves.
    Rollback {
        /// The revision to go back to.
        to: Option<String>,
        /// Where the answer goes.
        reply: RollbackReply,
    },
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
    /// When a revision has failed (`deploy_timeout`, `min_ready`).
    pub limits: Limits,
    /// Roll a failed revision back to the last healthy one (`rollback = "auto"`).
    pub rollback: bool,
    /// The revisions applied before this start (the store's history), oldest first.
    pub history: Vec<RevisionRecord>,
    /// Puts a source's files of a revision back before a rollback to it.
    pub restore: Option<Restore>,
    /// Keeps a copy of the files a healthy revision's containers read
    /// from the source's tree, for a rollback to it.
    pub snapshots: Option<Arc<dyn Snapshots>>,
    /// Loads a revision applied before this start, for `moor rollback --to`.
    pub load_revision: Option<LoadRevision>,
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
            limits: Limits::default(),
            rollback: true,
            history: Vec::new(),
            restore: None,
            snapshots: None,
            load_revision: None,
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
    /// The revisions applied, oldest first, each with its outcome (at most
    /// [`rollout::HISTORY_LIMIT`]).
    pub history: Vec<RevisionRecord>,
    /// The last rollback, for people: `rolled back from X to Y because …`;
    /// cleared when the source moves on.
    pub rolled_back: Option<String>,
    /// A revision that failed and is not applied again until the source moves.
    pub refused_revision: Option<String>,
    /// Drift the last pass that corrected any put right (`drift =
    /// "correct"`): each action that succeeded on a resource changed on the
    /// host behind moor's back.
    pub corrected: Vec<Action>,
    /// Passes that corrected drift so far: a new one means new `corrected`.
    pub corrections: u64,
}

impl Status {
    /// The outcome of the revision in force, when it has one.
    pub fn outcome(&self) -> Option<Outcome> {
        let rev = self.revision.as_deref()?;
        self.history
            .iter()
            .rev()
            .find(|r| r.revision == rev)
            .map(|r| r.outcome)
    }
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
    /// A revision of `project` was rolled back.
    fn rollback(&self, _project: &str) {}
    /// The outcome of `project`'s revision in force changed.
    fn revision_outcome(&self, _project: &str, _outcome: Outcome) {}
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
    /// The revision being judged, if its outcome is undecided.
    rollout: Option<Rollout>,
    /// Healthy revisions' desired states, each image pinned to the digest
    /// it ran (`repo:tag@digest`), newest last.
    good: VecDeque<(String, DesiredState)>,
    /// Healthy revisions kept in `good` whose files have no snapshot, and why.
    unsnapshotted: BTreeMap<String, String>,
    /// Rollbacks done since the last pass (for the recorder).
    rollbacks: u32,
    /// Wall-clock time at `epoch`: restart backoff compares wall-clock exit
    /// times, and deriving "now" from tokio's clock keeps a paused test clock
    /// in charge of both.
    wall_epoch: (SystemTime, Instant),
}

impl<R: Runtime> Controller<R> {
    /// A controller over `runtime`.
    pub fn new(runtime: R, opts: ControllerOptions) -> Self {
        let suspended = opts.suspended;
        let history = opts.history.clone();
        let refused_revision = refused_after_restart(&history);
        // What the rollback said, until the source moves on.
        let rolled_back = refused_revision.as_ref().and_then(|r| {
            history
                .iter()
                .rev()
                .find(|x| x.revision == *r)
                .and_then(|x| x.message.clone())
        });
        Self {
            runtime,
            opts,
            desired: None,
            backoff: Backoff::default(),
            pass_backoff: Backoff::default(),
            rollout: None,
            good: VecDeque::new(),
            unsnapshotted: BTreeMap::new(),
            rollbacks: 0,
            status: Status {
                suspended,
                refused_revision,
                rolled_back,
                history,
                ..Status::default()
            },
            retries: 0,
            pending: None,
            in_place: BTreeSet::new(),
            wall_epoch: (SystemTime::now(), Instant::now()),
        }
    }

    /// The status as it stands (tests).
    #[cfg(test)]
    pub(crate) fn status_for_tests(&self) -> &Status {
        &self.status
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
                Ok(_)
                    if revision.is_some()
                        && revision == self.status.refused_revision
                        && !self.status.suspended =>
                {
                    tracing::info!(
                        project = %self.opts.apply.project,
                        revision = revision.as_deref().unwrap_or("-"),
                        "this revision failed and was rolled back: not applied again until the source moves"
                    );
                    self.status.source_error = Some(format!(
                        "revision {} was rolled back: not applied again until the source moves on{}",
                        short(revision.as_deref().unwrap_or("-")),
                        if self.desired.is_none() {
                            " (nothing else is in force since this start: the containers stay as they are)"
                        } else {
                            ""
                        }
                    ));
                    false
                }
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
                    self.take_in(revision, desired);
                    self.status.source_error = None;
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
                if let Some((revision, desired)) = self.pending.take()
                    && (revision.is_none() || revision != self.status.refused_revision)
                {
                    self.take_in(revision, desired);
                }
                self.status.pending_revision = None;
                self.desired.is_some()
            }
            Trigger::Rollback { to, reply } => {
                let result = self.rollback_by_hand(to.as_deref());
                let ok = result.is_ok();
                let _ = reply.send(result);
                ok
            }
            Trigger::Shutdown => false,
        }
    }

    /// Puts a new desired state from the source in force and starts
    /// judging it.
    fn take_in(&mut self, revision: Option<String>, desired: DesiredState) {
        let moved = revision != self.status.revision || self.desired.is_none();
        // The source moved on from a refused revision only to one never
        // applied before: going back to the revision rolled back to (an
        // agent restart, a revert) keeps the refusal.
        let known = self
            .status
            .history
            .iter()
            .any(|r| Some(&r.revision) == revision.as_ref());
        self.desired = Some(desired);
        self.status.revision = revision.clone();
        // A new desired state may well fix what failed: retry everything now.
        self.backoff.reset();
        if revision != self.status.refused_revision && !known {
            self.status.refused_revision = None;
            self.status.rolled_back = None;
        }
        if let (true, Some(rev), SourceMode::Apply) = (moved, revision, self.opts.mode) {
            self.start_rollout(rev, true, None);
        }
    }

    /// Starts judging `revision`, just put in force; `may_roll_back` is
    /// false for a revision that is itself a rollback.
    fn start_rollout(&mut self, revision: String, may_roll_back: bool, note: Option<String>) {
        let now = self.wall_now();
        self.rollout = Some(Rollout {
            revision: revision.clone(),
            applied: now,
            changes: Vec::new(),
            changed: BTreeSet::new(),
            image_failures: Vec::new(),
            may_roll_back,
        });
        rollout::push_history(
            &mut self.status.history,
            RevisionRecord {
                revision,
                outcome: Outcome::Pending,
                applied_at: unix(now),
                decided_at: None,
                message: note,
                changes: Vec::new(),
                images: BTreeMap::new(),
                specs: BTreeMap::new(),
            },
        );
    }

    /// The newest record of `revision`.
    fn record_mut(&mut self, revision: &str) -> Option<&mut RevisionRecord> {
        self.status
            .history
            .iter_mut()
            .rev()
            .find(|r| r.revision == revision)
    }

    /// The newest healthy record of a revision `t` names (a prefix of it),
    /// applied before this start: one a rollback by hand may load again.
    /// None when `t` names none, or more than one revision.
    fn earlier(&self, t: &str) -> Option<&RevisionRecord> {
        let mut found = self
            .status
            .history
            .iter()
            .rev()
            .filter(|r| r.outcome == Outcome::Healthy)
            .filter(|r| r.revision.starts_with(t) || short(&r.revision).starts_with(t));
        let first = found.next()?;
        found.all(|r| r.revision == first.revision).then_some(first)
    }

    /// Rolls back from the revision in force to `to` (or the newest
    /// healthy revision before it): `moor rollback`.
    fn rollback_by_hand(&mut self, to: Option<&str>) -> Result<String, String> {
        if self.status.suspended {
            return Err("the source is suspended: `moor resume` it first".into());
        }
        if self.opts.mode == SourceMode::Plan {
            return Err(
                "the source only plans (mode = \"plan\"): nothing was applied to roll back".into(),
            );
        }
        let current = self.status.revision.clone();
        let kept: Vec<&str> = self.good.iter().rev().map(|(r, _)| r.as_str()).collect();
        let target = match to {
            Some(t) => {
                let t = t.trim();
                if t.len() < 4
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '+')
                {
                    return Err(format!(
                        "{t:?} is not a revision (give at least 4 characters of one, as `moor history` shows it)"
                    ));
                }
                let found: Vec<&(String, DesiredState)> = self
                    .good
                    .iter()
                    .filter(|(r, _)| r.starts_with(t) || short(r).starts_with(t))
                    .collect();
                match found.as_slice() {
                    [one] => (*one).clone(),
                    [] if self.earlier(t).is_some() => {
                        let record = self.earlier(t).expect("checked").clone();
                        let from = current.as_deref().unwrap_or("-");
                        if Some(&record.revision) == current.as_ref() {
                            return Err(format!(
                                "revision {} is already in force",
                                short(&record.revision)
                            ));
                        }
                        let Some(load) = self.opts.load_revision.clone() else {
                            return Err(format!(
                                "revision {} was applied before the agent started, and this source keeps only the revisions applied since (a directory has no history of its own): kept are {}",
                                short(&record.revision),
                                if kept.is_empty() {
                                    "none".to_string()
                                } else {
                                    kept.iter().map(|r| short(r)).collect::<Vec<_>>().join(", ")
                                }
                            ));
                        };
                        let desired =
                            blocking(|| (load.0)(from, &record.revision)).map_err(|e| {
                                format!(
                                    "revision {} could not be loaded again: {e}",
                                    short(&record.revision)
                                )
                            })?;
                        (
                            record.revision.clone(),
                            rollout::pin_to(&desired, &record.images),
                        )
                    }
                    [] => {
                        return Err(format!(
                            "revision {t} is not one of the healthy revisions kept to roll back to ({}); the agent keeps the last {KEPT_GOOD} healthy revisions applied since it started",
                            if kept.is_empty() {
                                "none".to_string()
                            } else {
                                kept.iter().map(|r| short(r)).collect::<Vec<_>>().join(", ")
                            }
                        ));
                    }
                    _ => return Err(format!("revision {t} is ambiguous: give more of it")),
                }
            }
            None => match self
                .good
                .iter()
                .rev()
                .find(|(r, _)| Some(r) != current.as_ref())
            {
                Some(g) => g.clone(),
                None => {
                    return Err(
                        "no earlier healthy revision to roll back to (the agent keeps those applied since it started)"
                            .into(),
                    );
                }
            },
        };
        if Some(&target.0) == current.as_ref() {
            return Err(format!("revision {} is already in force", short(&target.0)));
        }
        let from = current.clone().unwrap_or_else(|| "-".into());
        let message = format!(
            "rolled back from {} to {} by hand (moor rollback)",
            short(&from),
            short(&target.0)
        );
        self.roll_back_to(&from, target, message.clone());
        Ok(message)
    }

    /// Puts `target` in force in place of `from`, which is not applied
    /// again until the source moves.
    fn roll_back_to(&mut self, from: &str, target: (String, DesiredState), mut message: String) {
        if let Some(restore) = self.opts.restore.clone()
            && let Err(e) = blocking(|| (restore.0)(from, &target.0))
        {
            message.push_str(&format!(
                " (the source's files of {} could not be put back: {e})",
                short(&target.0)
            ));
        }
        if let Some(why) = self.unsnapshotted.get(&target.0) {
            message.push_str(&format!(
                " (its manifests only: its files have no snapshot, {why})"
            ));
        }
        tracing::warn!(project = %self.opts.apply.project, "{message}");
        let now = unix(self.wall_now());
        if let Some(r) = self.record_mut(from) {
            r.outcome = Outcome::RolledBack;
            r.message = Some(message.clone());
            r.decided_at.get_or_insert(now);
        }
        self.status.refused_revision = Some(from.to_string());
        self.status.rolled_back = Some(message);
        self.status.revision = Some(target.0.clone());
        self.desired = Some(target.1);
        self.pending = None;
        self.status.pending_revision = None;
        self.backoff.reset();
        self.start_rollout(
            target.0,
            false,
            Some(format!("a rollback from {}", short(from))),
        );
        self.rollbacks += 1;
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
        for _ in 0..std::mem::take(&mut self.rollbacks) {
            recorder.rollback(&self.opts.apply.project);
        }
        if let Some(o) = self.status.outcome() {
            recorder.revision_outcome(&self.opts.apply.project, o);
        }
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
        let drift_keys: BTreeSet<(Kind, String)> = plan
            .actions
            .iter()
            .filter(|a| crate::gate::is_drift(a, &self.in_place))
            .map(|a| (a.kind, a.name.clone()))
            .collect();
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
        let corrected: Vec<Action> = outcomes
            .iter()
            .filter(|o| {
                o.result.is_ok() && drift_keys.contains(&(o.action.kind, o.action.name.clone()))
            })
            .map(|o| o.action.clone())
            .collect();
        if !corrected.is_empty() {
            self.status.corrected = corrected;
            self.status.corrections += 1;
        }
        self.status.drift = gated.drifted;
        self.status.planned = gated.held;
        self.status.conditions = conditions;
        let rollout_due = if self.opts.mode == SourceMode::Apply {
            self.judge_rollout(&desired, &observed, &plan, &outcomes)
        } else {
            None
        };
        // A built or pulled image's containers follow its new ID in the
        // next pass (this one diffed them against the old): run it now.
        let built = outcomes
            .iter()
            .any(|o| matches!(o.action.verb, Verb::Build | Verb::Pull) && o.result.is_ok());
        let requeue = if built {
            Some(Duration::ZERO)
        } else {
            plan.requeue_after
        };
        Ok(match (requeue, rollout_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Feeds the revision being judged with what this pass saw and did, and
    /// acts on the verdict: a healthy revision is kept to roll back to; a
    /// failed one is rolled back (`rollback = "auto"`) or reported. Returns
    /// when the next pass is due while the outcome is undecided.
    fn judge_rollout(
        &mut self,
        desired: &DesiredState,
        observed: &crate::Observed,
        plan: &crate::Plan,
        outcomes: &[crate::Outcome],
    ) -> Option<Duration> {
        let applied = &plan.actions;
        let blocked: Vec<String> = plan
            .blocked
            .iter()
            .map(|b| format!("{} {} is blocked: {}", b.kind, b.name, b.reason))
            .collect();
        let now = self.wall_now();
        let rollout = self.rollout.as_mut()?;
        for a in applied {
            if !by_revision(a) || (a.verb == Verb::Remove && a.kind != Kind::Container) {
                continue;
            }
            let line = format!("{} {}: {} ({})", a.kind, a.name, a.verb, a.reason);
            if rollout.changes.len() < 50 && !rollout.changes.contains(&line) {
                rollout.changes.push(line);
            }
            if a.kind == Kind::Container
                && matches!(a.verb, Verb::Create | Verb::Replace | Verb::Start)
            {
                rollout.changed.insert(a.name.clone());
            }
        }
        for o in outcomes {
            if let (Kind::Image, Err(e)) = (o.action.kind, &o.result)
                && matches!(o.action.verb, Verb::Pull | Verb::Build)
            {
                rollout.image_failures.push(format!(
                    "image {}: {} failed: {e}",
                    o.action.name, o.action.verb
                ));
            }
        }
        // Instances of a resource no longer desired are nobody's to judge.
        let specs: BTreeMap<String, &moor_spec::ContainerSpec> = desired
            .containers
            .iter()
            .flat_map(|(n, c)| (1..=c.spec.replicas).map(move |r| (instance_name(n, r), &*c.spec)))
            .collect();
        let views: Vec<InstanceView> = rollout
            .changed
            .iter()
            .filter_map(|name| {
                let spec = specs.get(name)?;
                let o = observed.containers.get(name);
                let pending_here = applied.iter().any(|a| {
                    a.kind == Kind::Container
                        && a.name == *name
                        && matches!(a.verb, Verb::Create | Verb::Replace)
                });
                Some(InstanceView {
                    name: name.clone(),
                    in_place: o.is_some() && !pending_here,
                    phase: InstancePhase::of(spec, o),
                    has_healthcheck: spec.healthcheck.is_some(),
                    health: o.map(|o| o.health).unwrap_or_default(),
                    exit_code: o.and_then(|o| match o.state {
                        crate::ContainerState::Exited { code, .. } => Some(code),
                        _ => None,
                    }),
                    restart_count: o.map_or(0, |o| o.restart_count),
                    started_at: o.and_then(|o| o.started_at),
                })
            })
            .collect();
        // Healthy only once a pass finds nothing of the revision left to
        // do: a built image's containers, say, follow in the next pass.
        let verdict = rollout::judge(
            &views,
            rollout::Progress {
                image_failures: &rollout.image_failures,
                settled: !applied.iter().any(by_revision),
                blocked: &blocked,
            },
            rollout.applied,
            now,
            self.opts.limits,
        );
        let revision = rollout.revision.clone();
        let changes = rollout.changes.clone();
        let may_roll_back = rollout.may_roll_back;
        let images: BTreeMap<String, String> = desired
            .images
            .values()
            .map(|i| i.spec.reference.to_string())
            .chain(
                desired
                    .containers
                    .values()
                    .map(|c| c.spec.image.to_string()),
            )
            .filter_map(|r| observed.images.get(&r).map(|i| (r, i.digest.clone())))
            .collect();
        let specs: BTreeMap<String, String> = desired
            .containers
            .iter()
            .map(|(n, c)| (format!("container/{n}"), c.hash.to_string()))
            .chain(
                desired
                    .networks
                    .iter()
                    .map(|(n, r)| (format!("network/{n}"), r.hash.to_string())),
            )
            .chain(
                desired
                    .volumes
                    .iter()
                    .map(|(n, r)| (format!("volume/{n}"), r.hash.to_string())),
            )
            .chain(
                desired
                    .images
                    .iter()
                    .map(|(n, r)| (format!("image/{n}"), r.hash.to_string())),
            )
            .collect();
        let stamp = unix(now);
        // What a rollback to this revision re-applies: its images pinned
        // to the digests it ran.
        // A rollback that became healthy again is kept as it was (its
        // files already read from their snapshot).
        let pinned = matches!(verdict, Verdict::Healthy).then(|| {
            let again = (!may_roll_back)
                .then(|| self.good.iter().find(|(r, _)| *r == revision))
                .flatten();
            match again {
                Some((_, kept)) => kept.clone(),
                None => self.snapshot(&revision, rollout::pin_to(desired, &images)),
            }
        });
        if let Some(r) = self.record_mut(&revision) {
            r.changes = changes;
            r.images = images;
            r.specs = specs;
        }
        match verdict {
            Verdict::Pending(why) => {
                tracing::debug!(revision = %revision, "waiting for the revision to become ready: {why}");
                Some(ROLLOUT_POLL)
            }
            Verdict::Healthy => {
                tracing::info!(revision = %revision, "revision healthy");
                self.rollout = None;
                let unsnapshotted = self.unsnapshotted.get(&revision).cloned();
                if let Some(r) = self.record_mut(&revision) {
                    r.outcome = Outcome::Healthy;
                    r.decided_at = Some(stamp);
                    if let (None, Some(why)) = (&r.message, unsnapshotted) {
                        r.message = Some(format!(
                            "its files have no snapshot ({why}): a rollback to it puts back its manifests only"
                        ));
                    }
                }
                self.good.retain(|(r, _)| *r != revision);
                self.good
                    .push_back((revision, pinned.unwrap_or_else(|| desired.clone())));
                while self.good.len() > KEPT_GOOD {
                    self.good.pop_front();
                }
                let good = &self.good;
                self.unsnapshotted
                    .retain(|r, _| good.iter().any(|(g, _)| g == r));
                if let Some(s) = self.opts.snapshots.clone() {
                    let keep: Vec<&str> = self.good.iter().map(|(r, _)| r.as_str()).collect();
                    blocking(|| s.keep(&keep));
                }
                None
            }
            Verdict::Failed(why) => {
                self.rollout = None;
                let target = self
                    .good
                    .iter()
                    .rev()
                    .find(|(r, _)| *r != revision)
                    .cloned();
                match target {
                    Some(target) if may_roll_back && self.opts.rollback => {
                        let message = format!(
                            "rolled back from {} to {} because {why}",
                            short(&revision),
                            short(&target.0)
                        );
                        self.roll_back_to(&revision, target, message);
                        Some(Duration::ZERO)
                    }
                    target => {
                        let left = if !may_roll_back {
                            "it is itself a rollback; left in force"
                        } else if !self.opts.rollback {
                            "rollback = \"off\": left in force"
                        } else if target.is_none() {
                            "no earlier healthy revision to roll back to; left in force"
                        } else {
                            "left in force"
                        };
                        let message =
                            format!("revision {} failed: {why} ({left})", short(&revision));
                        tracing::warn!(project = %self.opts.apply.project, "{message}");
                        if let Some(r) = self.record_mut(&revision) {
                            r.outcome = Outcome::Failed;
                            r.message = Some(message);
                            r.decided_at = Some(stamp);
                        }
                        None
                    }
                }
            }
        }
    }
}

impl<R> Controller<R> {
    /// `state` (healthy `revision`'s, to keep for a rollback) with its
    /// bind sources read from a snapshot of them, when the source keeps
    /// snapshots; as it is, and `revision` noted as without one, when the
    /// copy failed.
    fn snapshot(&mut self, revision: &str, state: DesiredState) -> DesiredState {
        self.unsnapshotted.remove(revision);
        let Some(snapshots) = self.opts.snapshots.clone() else {
            return state;
        };
        let sources = rollout::snapshot_sources(&state);
        if sources.is_empty() {
            return state;
        }
        match blocking(|| snapshots.take(revision, &sources)) {
            Ok(trees) => rollout::rebase_binds(&state, &trees),
            Err(why) => {
                tracing::warn!(
                    project = %self.opts.apply.project,
                    revision = %revision,
                    "the files of this healthy revision have no snapshot ({why}): a rollback to it puts back its manifests only"
                );
                self.unsnapshotted.insert(revision.to_string(), why);
                state
            }
        }
    }
}

/// Whether `a` is what a revision changes, not a restart a restart policy
/// asks for or drift put right (an unrelated container crash-looping since
/// before is not a new revision's failure).
fn by_revision(a: &Action) -> bool {
    !matches!(
        a.reason,
        crate::Reason::Exited { .. }
            | crate::Reason::SupervisorLost
            | crate::Reason::Fault { .. }
            | crate::Reason::InterruptedCreate
            | crate::Reason::Superseded { .. }
    )
}

/// A revision being judged.
#[derive(Debug)]
struct Rollout {
    revision: String,
    applied: SystemTime,
    /// What its passes did, for its history.
    changes: Vec<String>,
    /// The container instances it created, replaced or started.
    changed: BTreeSet<String>,
    /// Its images that could not be pulled or built.
    image_failures: Vec<String>,
    /// False for a revision that is itself a rollback.
    may_roll_back: bool,
}

/// After a restart, the revision last rolled back is still not applied
/// until the source moves.
pub fn refused_after_restart(history: &[RevisionRecord]) -> Option<String> {
    history
        .last()
        .filter(|r| r.outcome == Outcome::RolledBack)
        .map(|r| r.revision.clone())
        .or_else(|| {
            // A rollback's own record comes after the one it rolled back.
            let n = history.len();
            (n >= 2
                && history[n - 2].outcome == Outcome::RolledBack
                && history[n - 1]
                    .message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("a rollback from")))
            .then(|| history[n - 2].revision.clone())
        })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What marks a revision whose images an image update pinned:
/// `<source revision>+img:<hash of the pins>`.
pub const IMAGES_MARK: &str = "+img:";

/// The source's own revision of `revision` (without the mark of the image
/// updates in force, see [`IMAGES_MARK`]).
pub fn source_revision(revision: &str) -> &str {
    revision
        .split_once(IMAGES_MARK)
        .map_or(revision, |(base, _)| base)
}

/// The first 12 characters of a revision (after `sha256:`, for a
/// directory's), with the mark of its image updates
/// (`4b1d2a0e9f3c+img:1a2b3c4d`).
pub fn short(revision: &str) -> std::borrow::Cow<'_, str> {
    let (base, images) = match revision.split_once(IMAGES_MARK) {
        Some((base, images)) => (base, Some(images)),
        None => (revision, None),
    };
    let r = base.strip_prefix("sha256:").unwrap_or(base);
    let r = r.get(..12).unwrap_or(r);
    match images {
        None => std::borrow::Cow::Borrowed(r),
        Some(i) => std::borrow::Cow::Owned(format!("{r}{IMAGES_MARK}{}", i.get(..8).unwrap_or(i))),
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
