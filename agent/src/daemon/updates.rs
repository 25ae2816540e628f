//! Image updates (`[images.X] update = { interval, policy }`): a task per
//! source between the source and its controller. It passes every trigger
//! on, each desired state with the pins of `crate::source::pins` put in
//! force, and checks each image that asks for it every `interval`:
//!
//! - `digest`: a `HEAD` of the tag's manifest; a new (index) digest is
//!   pinned, and the desired state sent again: the controller pulls it and
//!   replaces the containers using it, as for any other change.
//! - `semver:RANGE`: the repository's tag list, the highest tag in range
//!   ([`moor_spec::update::pick_tag`]), then its digest; pinned the same way.
//! - `notify`: as `digest`, but only reported (`update_available` in
//!   `/status`, the log and a notification); nothing changes.
//!
//! A failed check is reported (status, log, metric) and tried again the
//! next interval; it changes nothing, so the containers keep running.
//! Checks run beside the task (a slow registry does not hold up the
//! source), and not while the source is suspended.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use moor_metrics::Metrics;
use moor_reconcile::rollout::Outcome;
use moor_reconcile::{Status, Trigger};
use moor_runtime::host::Host;
use moor_spec::reference::ImageRef;
use moor_spec::update::{Decision, UpdatePolicy, UpdateSpec, judge, pick_tag};
use moor_spec::{DesiredState, ImageSpec};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::notify::Notifier;
use crate::source::pins::{Pin, Pins, written_tag};

/// What `/status` says of a source's images.
pub type Shared = Arc<Mutex<BTreeMap<String, ImageView>>>;

/// One image of a source, for `/status` (the digest is read at request time).
#[derive(Debug, Clone, Serialize)]
pub struct ImageView {
    /// The reference in force (a pinned one: `registry/repo:tag@digest`).
    pub reference: String,
    /// The reference the manifests write, when a pin stands in for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    /// The image's update, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateView>,
}

/// An image update's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateView {
    /// `digest`, `notify` or `semver:RANGE`.
    pub policy: String,
    /// Seconds between checks.
    pub interval: f64,
    /// When the registry was last asked (Unix seconds).
    pub last_check: Option<f64>,
    /// What the registry said last: `tag@digest`.
    pub latest: Option<String>,
    /// `notify`: the registry has something newer than the image in force.
    pub update_available: bool,
    /// Why the last check failed, if it did.
    pub error: Option<String>,
    /// Failed checks in a row.
    pub failures: u32,
    /// When the last update was put in force (Unix seconds).
    pub last_update: Option<f64>,
}

/// An image update put in force and not judged yet.
struct Judged {
    /// The revision it made (`<source revision>+img:<hash>`).
    revision: String,
    /// The pins before it.
    previous: Pins,
}

/// What the task needs of the agent.
pub struct Updater {
    /// The source (project).
    pub source: String,
    /// The host: the registry client and the image store.
    pub host: Host,
    /// The state dir (pins, suspension).
    pub state_dir: PathBuf,
    /// Check counts.
    pub metrics: Arc<Metrics>,
    /// `update_available` notifications.
    pub notifier: Notifier,
    /// What `/status` shows.
    pub view: Shared,
    /// The source's controller's status: whether an update's revision
    /// was rolled back.
    pub status: watch::Receiver<Status>,
}

/// One image's check: what it asked and what the registry answered.
struct Checked {
    /// The written reference (the key of pins and schedules).
    key: String,
    spec: ImageSpec,
    /// The local image's digest for the written reference.
    local: Option<String>,
    /// The tag and digest found.
    found: Result<Option<(String, String)>, String>,
}

/// The schedule key of an image: its written reference and update.
fn key(spec: &ImageSpec) -> String {
    spec.reference.to_string()
}

impl Updater {
    /// Runs until the source's triggers end.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Trigger>, tx: mpsc::Sender<Trigger>) {
        let mut judged: Option<Judged> = None;
        let mut pins = Pins::load(&self.state_dir, &self.source).unwrap_or_else(|e| {
            tracing::warn!(source = %self.source, "image updates start afresh: {e:#}");
            Pins::default()
        });
        let mut last: Option<(Option<String>, DesiredState)> = None;
        let mut due: BTreeMap<String, (Instant, UpdateSpec)> = BTreeMap::new();
        let mut checking: Option<tokio::task::JoinHandle<Vec<Checked>>> = None;
        let mut announced: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let next = due.values().map(|(at, _)| *at).min();
            tokio::select! {
                t = rx.recv() => {
                    let Some(t) = t else { break };
                    let t = match t {
                        Trigger::Source { revision, result: Ok(desired) } => {
                            schedule(&mut due, &desired);
                            if pins.retain_used(&desired) {
                                self.save(&pins);
                            }
                            if last.as_ref().map(|(r, _)| r) != Some(&revision) {
                                // The source moved: an update under way is
                                // judged with it.
                                judged = None;
                            }
                            let pinned = pins.apply(&desired);
                            self.show(&desired, &pinned);
                            let with_pins = pins.revision(revision.as_deref(), &desired);
                            last = Some((revision, desired));
                            Trigger::Source { revision: with_pins, result: Ok(pinned) }
                        }
                        other => other,
                    };
                    if tx.send(t).await.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)),
                    if next.is_some() && checking.is_none() => {
                    let now = Instant::now();
                    let Some((_, desired)) = &last else { continue };
                    let wanted: Vec<ImageSpec> = desired
                        .images
                        .values()
                        .filter(|i| due.get(&key(&i.spec)).is_some_and(|(at, _)| *at <= now))
                        .map(|i| (*i.spec).clone())
                        .collect();
                    for spec in &wanted {
                        if let Some(u) = &spec.update {
                            due.insert(key(spec), (now + u.interval, u.clone()));
                        }
                    }
                    if super::control::is_suspended(&self.state_dir, &self.source) {
                        continue;
                    }
                    let host = self.host.clone();
                    checking = Some(tokio::spawn(async move {
                        let mut out = Vec::new();
                        for spec in wanted {
                            out.push(check(&host, spec).await);
                        }
                        out
                    }));
                }
                done = async { checking.as_mut().expect("checked above").await }, if checking.is_some() => {
                    checking = None;
                    let Ok(results) = done else { continue };
                    let Some((revision, desired)) = &last else { continue };
                    let previous = pins.clone();
                    let mut changed = false;
                    for c in results {
                        changed |= self.take(c, &mut pins, &mut announced);
                    }
                    let pinned = pins.apply(desired);
                    self.show(desired, &pinned);
                    if changed {
                        self.save(&pins);
                        // A revision of its own, judged as any other.
                        let with_pins = pins.revision(revision.as_deref(), desired);
                        if let Some(r) = &with_pins
                            && r.as_str() != revision.as_deref().unwrap_or_default()
                        {
                            judged = Some(Judged {
                                revision: r.clone(),
                                // The pins before the first of updates in a row.
                                previous: judged.take().map_or(previous, |j| j.previous),
                            });
                        }
                        let t = Trigger::Source { revision: with_pins, result: Ok(pinned) };
                        if tx.send(t).await.is_err() {
                            break;
                        }
                    }
                }
                changed = self.status.changed(), if judged.is_some() => {
                    if changed.is_err() {
                        // The controller is gone.
                        judged = None;
                        continue;
                    }
                    let verdict = {
                        let s = self.status.borrow_and_update();
                        let j = judged.as_ref().expect("checked above");
                        verdict_on(&s, &j.revision)
                    };
                    match verdict {
                        None => {}
                        Some(false) => {
                            let j = judged.take().expect("checked above");
                            let reverted = pins.revert_to(&j.previous);
                            self.save(&pins);
                            tracing::warn!(
                                source = %self.source,
                                images = %reverted.join(", "),
                                revision = %j.revision,
                                "image update rolled back: the previous digest is in force again, and the new one is not pinned again until the registry offers another"
                            );
                            if let Some((_, desired)) = &last {
                                let pinned = pins.apply(desired);
                                self.show(desired, &pinned);
                            }
                        }
                        Some(true) => judged = None,
                    }
                }
            }
        }
        if let Some(c) = checking {
            c.abort();
        }
    }

    fn save(&self, pins: &Pins) {
        if let Err(e) = pins.save(&self.state_dir, &self.source) {
            tracing::error!(source = %self.source, "could not record image updates: {e}");
        }
    }

    /// Takes one check's result in; returns whether a pin changed.
    fn take(&self, c: Checked, pins: &mut Pins, announced: &mut BTreeMap<String, String>) -> bool {
        let Some(update) = c.spec.update.clone() else {
            return false;
        };
        let mut view = self.view.lock().expect("image view poisoned");
        let v = view
            .values_mut()
            .find(|v| v.written.as_deref().unwrap_or(&v.reference) == c.key)
            .and_then(|v| v.update.as_mut());
        let mut scratch = UpdateView::default();
        let v = v.unwrap_or(&mut scratch);
        v.last_check = Some(crate::source::unix_now());
        let (tag, digest) = match c.found {
            Err(e) => {
                v.error = Some(e.clone());
                v.failures += 1;
                self.metrics.image_update_check("failure");
                tracing::warn!(source = %self.source, image = %c.key, "image update check failed (tried again in {:?}): {e}", update.interval);
                return false;
            }
            Ok(None) => {
                let message = format!(
                    "no tag of {} is in the range of {}",
                    c.spec.reference.name(),
                    update.policy
                );
                v.error = Some(message.clone());
                v.failures += 1;
                self.metrics.image_update_check("failure");
                tracing::warn!(source = %self.source, image = %c.key, "{message}");
                return false;
            }
            Ok(Some(found)) => found,
        };
        v.error = None;
        v.failures = 0;
        let remote = format!("{tag}@{digest}");
        v.latest = Some(remote.clone());
        let written = written_tag(&c.spec).unwrap_or_default();
        let pinned = pins.get(&c.spec).map(|p| format!("{}@{}", p.tag, p.digest));
        let (decision, current) = judge(
            &update.policy,
            pinned.as_deref(),
            c.local.as_deref(),
            &written,
            &tag,
            &digest,
        );
        match decision {
            Decision::Unchanged => {
                v.update_available = false;
                self.metrics.image_update_check("unchanged");
                false
            }
            Decision::Notify => {
                v.update_available = true;
                self.metrics.image_update_check("available");
                if announced.get(&c.key) != Some(&remote) {
                    announced.insert(c.key.clone(), remote.clone());
                    let message = format!(
                        "{} has an update: {}:{remote} (in force: {})",
                        c.key,
                        c.spec.reference.name(),
                        current.as_deref().unwrap_or("-")
                    );
                    tracing::info!(source = %self.source, image = %c.key, latest = %remote, "image update available (policy notify: nothing changed)");
                    self.notifier
                        .update_available(&self.source, &c.key, message);
                }
                false
            }
            Decision::Adopt | Decision::Update if pins.is_refused(&c.spec, &digest) => {
                v.update_available = false;
                self.metrics.image_update_check("unchanged");
                if announced.get(&c.key) != Some(&remote) {
                    announced.insert(c.key.clone(), remote.clone());
                    tracing::info!(source = %self.source, image = %c.key, digest = %remote, "image update: this digest was rolled back; not pinned again until the registry offers another");
                }
                false
            }
            Decision::Adopt | Decision::Update => {
                let now = crate::source::unix_now();
                if decision == Decision::Update {
                    self.metrics.image_update_check("updated");
                    v.last_update = Some(now);
                    tracing::info!(
                        source = %self.source,
                        image = %c.key,
                        from = current.as_deref().unwrap_or("-"),
                        to = %remote,
                        "image update: putting the new image in force"
                    );
                } else {
                    self.metrics.image_update_check("unchanged");
                    tracing::info!(source = %self.source, image = %c.key, digest = %remote, "image update: following");
                }
                pins.set(
                    &c.spec,
                    Pin {
                        policy: update.policy.to_string(),
                        tag,
                        digest,
                        since: now,
                    },
                );
                true
            }
        }
    }

    /// Refreshes what `/status` shows of the images of `desired`.
    fn show(&self, desired: &DesiredState, pinned: &DesiredState) {
        let mut view = self.view.lock().expect("image view poisoned");
        let old = std::mem::take(&mut *view);
        for (name, image) in &pinned.images {
            let written = desired
                .images
                .get(name)
                .map(|i| i.spec.reference.to_string());
            let reference = image.spec.reference.to_string();
            let update = image.spec.update.as_ref().map(|u| {
                let mut v = old
                    .get(name)
                    .and_then(|o| o.update.clone())
                    .filter(|o| o.policy == u.policy.to_string())
                    .unwrap_or_default();
                v.policy = u.policy.to_string();
                v.interval = u.interval.as_secs_f64();
                v
            });
            view.insert(
                name.clone(),
                ImageView {
                    written: written.filter(|w| *w != reference),
                    reference,
                    update,
                },
            );
        }
        // Images containers name without an `[images]` entry.
        for c in pinned.containers.values() {
            if c.spec.image_entry.is_none() {
                let reference = c.spec.image.to_string();
                view.entry(reference.clone()).or_insert(ImageView {
                    reference,
                    written: None,
                    update: None,
                });
            }
        }
    }
}

/// What became of `revision` (an image update's), as `status` says:
/// `Some(false)` when it was rolled back, `Some(true)` when it was decided
/// otherwise (healthy, or failed and left in force), `None` while it is
/// pending.
fn verdict_on(status: &Status, revision: &str) -> Option<bool> {
    if status.refused_revision.as_deref() == Some(revision) {
        return Some(false);
    }
    let record = status
        .history
        .iter()
        .rev()
        .find(|r| r.revision == revision)?;
    match record.outcome {
        Outcome::Pending => None,
        Outcome::RolledBack => Some(false),
        Outcome::Healthy | Outcome::Failed => Some(true),
    }
}

/// Images with an update due at once (new ones), the others as they were;
/// images no longer asking are dropped.
fn schedule(due: &mut BTreeMap<String, (Instant, UpdateSpec)>, desired: &DesiredState) {
    let now = Instant::now();
    let mut next = BTreeMap::new();
    for i in desired.images.values() {
        if let Some(u) = &i.spec.update {
            let k = key(&i.spec);
            let at = match due.get(&k) {
                Some((at, old)) if old == u => *at,
                _ => now,
            };
            next.insert(k, (at, u.clone()));
        }
    }
    *due = next;
}

/// Asks the registry about one image.
async fn check(host: &Host, spec: ImageSpec) -> Checked {
    let key = key(&spec);
    let local = host.local_digest(&spec.reference).await;
    let policy = spec.update.as_ref().map(|u| u.policy.clone());
    let found = match policy {
        None => Ok(None),
        Some(UpdatePolicy::Digest | UpdatePolicy::Notify) => {
            let tag = written_tag(&spec).unwrap_or_else(|| "latest".into());
            host.remote_digest(&spec.reference)
                .await
                .map(|d| Some((tag, d)))
        }
        Some(UpdatePolicy::Semver(range)) => match host.remote_tags(&spec.reference).await {
            Err(e) => Err(e),
            Ok(tags) => match pick_tag(tags.iter().map(String::as_str), &range) {
                Err(e) => Err(e),
                Ok(None) => Ok(None),
                Ok(Some(tag)) => {
                    let r = ImageRef {
                        tag: Some(tag.to_string()),
                        digest: None,
                        ..spec.reference.clone()
                    };
                    host.remote_digest(&r)
                        .await
                        .map(|d| Some((tag.to_string(), d)))
                }
            },
        },
    };
    Checked {
        key,
        spec,
        local,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moor_reconcile::rollout::RevisionRecord;

    fn record(revision: &str, outcome: Outcome) -> RevisionRecord {
        RevisionRecord {
            revision: revision.into(),
            outcome,
            applied_at: 1,
            decided_at: None,
            message: None,
            changes: Vec::new(),
            images: BTreeMap::new(),
            specs: BTreeMap::new(),
        }
    }

    #[test]
    fn an_update_is_judged_by_what_the_controller_made_of_its_revision() {
        let mut s = Status {
            history: vec![
                record("c+img:aa", Outcome::Healthy),
                record("c+img:bb", Outcome::Pending),
            ],
            ..Status::default()
        };
        assert_eq!(verdict_on(&s, "c+img:bb"), None);
        // Not applied yet.
        assert_eq!(verdict_on(&s, "c+img:cc"), None);
        s.history[1].outcome = Outcome::RolledBack;
        s.refused_revision = Some("c+img:bb".into());
        assert_eq!(verdict_on(&s, "c+img:bb"), Some(false));
        s.history[1].outcome = Outcome::Failed;
        s.refused_revision = None;
        assert_eq!(verdict_on(&s, "c+img:bb"), Some(true));
        assert_eq!(verdict_on(&s, "c+img:aa"), Some(true));
    }
}
