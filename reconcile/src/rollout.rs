//! Whether a revision became healthy: the pure judgement behind rollback.
//! Start at [`judge`].
//!
//! A revision is judged on the container instances it changed (those a pass
//! of the revision created, replaced or started). It is **healthy** once
//! every one of them is in place and either passes its health check, or,
//! without one, has been running for `min_ready`, or is a job (a restart
//! policy that leaves it exited) that exited 0. It has **failed** as soon as
//! one fails its health check, crash-loops, is a job that exited non-zero,
//! or its image cannot be pulled or built; and when `deploy_timeout` has
//! passed since it was applied without every changed instance being ready.
//! The controller feeds this with what each pass observed, and acts on the
//! verdict (rolls back, or reports); nothing here touches the host or the
//! clock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use moor_spec::reference::ImageRef;
use moor_spec::{DesiredState, MountSource};
use serde::{Deserialize, Serialize};

use crate::converge::InstancePhase;
use crate::observed::Health;

/// Restarts by moor after which an instance that exits again is
/// crash-looping.
pub const CRASH_LOOP_RESTARTS: u32 = 3;

/// How a revision is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long the changed containers have to become ready.
    pub deploy_timeout: Duration,
    /// How long a container without a health check must run, without
    /// exiting, to count as ready.
    pub min_ready: Duration,
}

impl Default for Limits {
    /// A 3-minute deploy timeout and a 10-second `min_ready`.
    fn default() -> Self {
        Self {
            deploy_timeout: Duration::from_secs(180),
            min_ready: Duration::from_secs(10),
        }
    }
}

/// One changed container instance, as a pass saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Its instance name (`web`, `web-2`).
    pub name: String,
    /// Whether the host runs what the revision asks for (no create,
    /// replace or start of it is still due).
    pub in_place: bool,
    /// Its phase against its spec.
    pub phase: InstancePhase,
    /// Whether its spec has a health check.
    pub has_healthcheck: bool,
    /// Its health.
    pub health: Health,
    /// Its last exit code, when it has exited.
    pub exit_code: Option<i32>,
    /// Restarts by moor since it was created.
    pub restart_count: u32,
    /// When its process last started.
    pub started_at: Option<SystemTime>,
}

/// A revision's outcome, as recorded in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Applied; its containers have not all become ready yet.
    Pending,
    /// Every container it changed became ready.
    Healthy,
    /// It failed and stays in force (`rollback = "off"`, or nothing to roll back to).
    Failed,
    /// It failed (or a person asked) and an earlier revision was applied instead.
    RolledBack,
}

impl Outcome {
    /// The outcome as a word.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Healthy => "healthy",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
        }
    }
}

/// How many revisions a source's history keeps (the newest).
pub const HISTORY_LIMIT: usize = 20;

/// One applied revision and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionRecord {
    /// The source's revision (a git commit, a directory's content hash).
    pub revision: String,
    /// What became of it.
    pub outcome: Outcome,
    /// When it was applied, in seconds since the Unix epoch.
    pub applied_at: u64,
    /// When its outcome was decided, in seconds since the Unix epoch.
    #[serde(default)]
    pub decided_at: Option<u64>,
    /// Why it failed or was rolled back, or what it rolled back from.
    #[serde(default)]
    pub message: Option<String>,
    /// What its passes changed on the host (`container web: replace (…)`).
    #[serde(default)]
    pub changes: Vec<String>,
    /// The image digest each image reference resolved to, when decided.
    #[serde(default)]
    pub images: std::collections::BTreeMap<String, String>,
    /// Each resource's spec hash (`container/web` → `sha256:…`).
    #[serde(default)]
    pub specs: std::collections::BTreeMap<String, String>,
}

/// Appends `record` to `history`, keeping the newest [`HISTORY_LIMIT`].
pub fn push_history(history: &mut Vec<RevisionRecord>, record: RevisionRecord) {
    history.push(record);
    let extra = history.len().saturating_sub(HISTORY_LIMIT);
    history.drain(..extra);
}

/// The newest healthy revisions a source's controller keeps to roll back
/// to (in memory, since the agent started); their images are kept from
/// `moor image prune` (see [`kept_digests`]).
pub const KEPT_GOOD: usize = 5;

/// The most images one record names that [`kept_digests`] reads: far
/// above what a stack declares; a record edited to name more keeps no
/// more than this.
pub const MAX_KEPT_IMAGES_PER_RECORD: usize = 512;

/// `written` pinned to `digest`: `registry/repository:TAG@DIGEST`, checked
/// as any reference is (`TAG` is `latest` when `written` names none).
/// None when `written` names a digest already or `digest` is not one
/// (a hand-edited record).
pub fn pinned_reference(written: &ImageRef, digest: &str) -> Option<ImageRef> {
    if written.digest.is_some() {
        return None;
    }
    let tag = written.tag.as_deref().unwrap_or("latest");
    let r = moor_spec::reference::parse(&format!("{}:{tag}@{digest}", written.name())).ok()?;
    (r.name() == written.name()
        && r.tag.as_deref() == Some(tag)
        && r.digest.as_deref() == Some(digest))
    .then_some(r)
}

/// Puts `pinned` in force for the image `written` in `desired`: in the
/// `[images]` entry `entry` (when given) and in every container that runs
/// the image (through that entry, or by naming `written`). Spec hashes
/// stay those of the written manifests: a container is replaced when the
/// image's digest changes, not because a reference names the same image
/// anew. The one way a reference is pinned, for image updates and for
/// rollbacks alike.
pub fn pin_image(
    desired: &mut DesiredState,
    entry: Option<&str>,
    written: &ImageRef,
    pinned: &ImageRef,
) {
    if let Some(image) = entry.and_then(|e| desired.images.get_mut(e)) {
        Arc::make_mut(&mut image.spec).reference = pinned.clone();
    }
    for c in desired.containers.values_mut() {
        let through_entry = entry.is_some() && c.spec.image_entry.as_deref() == entry;
        if through_entry || c.spec.image == *written {
            Arc::make_mut(&mut c.spec).image = pinned.clone();
        }
    }
}

/// `desired` with each image pinned to the digest `digests` (reference →
/// digest, a [`RevisionRecord`]'s `images`) records for it: what a
/// rollback re-applies, so that it runs the images the revision ran, not
/// what their tags name now. An image the operator puts in the store
/// (`pull = "never"`: imported, loaded) is pinned too: the store finds
/// `name:tag@digest` by its digest, and keeps the images of the revisions
/// a rollback may return to. Built images, references that name a digest
/// already, and records that do not make a reference are left as written.
pub fn pin_to(desired: &DesiredState, digests: &BTreeMap<String, String>) -> DesiredState {
    let mut out = desired.clone();
    // Built images are built again.
    let unpinned = |i: &moor_spec::ImageSpec| i.build.is_some();
    let built: BTreeSet<ImageRef> = desired
        .images
        .values()
        .filter(|i| unpinned(&i.spec))
        .map(|i| i.spec.reference.clone())
        .collect();
    let entries: Vec<(String, ImageRef)> = desired
        .images
        .iter()
        .filter(|(_, i)| !unpinned(&i.spec))
        .map(|(n, i)| (n.clone(), i.spec.reference.clone()))
        .collect();
    for (name, written) in entries {
        if let Some(pinned) = digests
            .get(&written.to_string())
            .and_then(|d| pinned_reference(&written, d))
        {
            pin_image(&mut out, Some(&name), &written, &pinned);
        }
    }
    let direct: BTreeSet<ImageRef> = out
        .containers
        .values()
        .filter(|c| c.spec.image_entry.is_none())
        .map(|c| c.spec.image.clone())
        .filter(|r| !built.contains(r))
        .collect();
    for written in direct {
        if let Some(pinned) = digests
            .get(&written.to_string())
            .and_then(|d| pinned_reference(&written, d))
        {
            pin_image(&mut out, None, &written, &pinned);
        }
    }
    out
}

/// A bind source a snapshot copies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotSource {
    /// The root of the source's tree.
    pub tree: PathBuf,
    /// The bind source, beneath `tree`.
    pub source: PathBuf,
    /// Its content digest when the manifests were loaded: the copy must
    /// have it (see `moor_spec::bind::content_digest`).
    pub digest: Option<String>,
}

/// The bind sources a snapshot of `desired` copies: the read-only ones
/// that live in the source's tree (the files the revision's containers
/// read from there; a read-write one is the container's own data, which a
/// rollback leaves as it is).
pub fn snapshot_sources(desired: &DesiredState) -> BTreeSet<SnapshotSource> {
    desired
        .containers
        .values()
        .flat_map(|c| c.spec.mounts.iter())
        .filter(|m| m.read_only)
        .filter_map(|m| match &m.source {
            MountSource::Bind {
                source,
                tree: Some(tree),
                content_digest,
            } if source.starts_with(tree) => Some(SnapshotSource {
                tree: tree.clone(),
                source: source.clone(),
                digest: content_digest.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// `desired` with each read-only bind source that lives in a tree `trees`
/// maps (old root → snapshot root) moved to the same place beneath the
/// snapshot: what a rollback of a directory source re-applies, so that its
/// containers read the files as they were. A container moved so has a spec
/// hash of its own (derived from the written one and the snapshot): the
/// rollback puts it in place reading the copies, and the source's next
/// revision puts it back reading the tree — no container keeps reading a
/// snapshot once its revision is out of force (and its copy may go).
pub fn rebase_binds(desired: &DesiredState, trees: &BTreeMap<PathBuf, PathBuf>) -> DesiredState {
    let mut out = desired.clone();
    for c in out.containers.values_mut() {
        let moved = |m: &moor_spec::Mount| match &m.source {
            MountSource::Bind {
                source,
                tree: Some(tree),
                ..
            } if m.read_only => trees.contains_key(tree) && source.starts_with(tree),
            _ => false,
        };
        if !c.spec.mounts.iter().any(moved) {
            continue;
        }
        let spec = Arc::make_mut(&mut c.spec);
        let mut roots = BTreeSet::new();
        for m in &mut spec.mounts {
            if !moved(m) {
                continue;
            }
            if let MountSource::Bind {
                source,
                tree: Some(tree),
                ..
            } = &mut m.source
                && let Some(root) = trees.get(tree)
                && let Ok(rel) = source.strip_prefix(&*tree)
            {
                *source = root.join(rel);
                *tree = root.clone();
                roots.insert(root.display().to_string());
            }
        }
        let roots: Vec<String> = roots.into_iter().collect();
        c.hash = c
            .hash
            .with_image_digest(&format!("snapshot:{}", roots.join("\0")));
    }
    out
}

/// The image digests the newest [`KEPT_GOOD`] healthy revisions of
/// `history` ran: what `moor image prune` keeps so that a rollback finds
/// them. Only well-formed digests count, at most
/// [`MAX_KEPT_IMAGES_PER_RECORD`] of each record.
pub fn kept_digests(history: &[RevisionRecord]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    history
        .iter()
        .rev()
        .filter(|r| r.outcome == Outcome::Healthy)
        .filter(|r| seen.insert(r.revision.clone()))
        .take(KEPT_GOOD)
        .flat_map(|r| r.images.values().take(MAX_KEPT_IMAGES_PER_RECORD))
        .filter(|d| is_digest(d))
        .cloned()
        .collect()
}

/// `sha256:` and 64 lowercase hexadecimal digits.
fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What [`judge`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet: what it waits for.
    Pending(String),
    /// Every changed instance is ready.
    Healthy,
    /// It failed: why, for people.
    Failed(String),
}

/// What a pass saw of a revision, besides its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// The pulls and builds of its images that failed (each a message
    /// naming the image).
    pub image_failures: &'a [String],
    /// Whether the pass had nothing of the revision left to do (a built
    /// image's containers, say, follow in the pass after the build).
    pub settled: bool,
    /// What of the revision cannot be applied as things stand (an image
    /// with `pull = "never"` not in the store, and what depends on it),
    /// each for people: never healthy while any is.
    pub blocked: &'a [String],
}

/// Judges a revision applied at `applied` from its changed instances as
/// seen `now`, and what else the pass saw of it.
pub fn judge(
    instances: &[InstanceView],
    progress: Progress<'_>,
    applied: SystemTime,
    now: SystemTime,
    limits: Limits,
) -> Verdict {
    if let Some(f) = progress.image_failures.first() {
        return Verdict::Failed(f.clone());
    }
    let mut waiting = Vec::new();
    if !progress.settled {
        waiting.push("its changes are still being applied".to_string());
    }
    waiting.extend(progress.blocked.iter().cloned());
    for i in instances {
        match instance(i, now, limits.min_ready) {
            Ok(None) => {}
            Ok(Some(why)) => waiting.push(why),
            Err(why) => return Verdict::Failed(why),
        }
    }
    if waiting.is_empty() {
        return Verdict::Healthy;
    }
    let elapsed = now.duration_since(applied).unwrap_or_default();
    if elapsed >= limits.deploy_timeout {
        return Verdict::Failed(format!(
            "not ready within deploy_timeout ({}): {}",
            human(limits.deploy_timeout),
            waiting.join("; ")
        ));
    }
    Verdict::Pending(waiting.join("; "))
}

/// `Ok(None)`: ready; `Ok(Some(why))`: not yet; `Err(why)`: failed.
fn instance(
    i: &InstanceView,
    now: SystemTime,
    min_ready: Duration,
) -> Result<Option<String>, String> {
    let name = &i.name;
    // What is not in place yet is the container it replaces, whose health
    // says nothing of this revision.
    if !i.in_place {
        return Ok(Some(format!("container {name} is not in place yet")));
    }
    if i.health == Health::Unhealthy {
        return Err(format!("container {name} failed its health check"));
    }
    match i.phase {
        InstancePhase::Running if i.has_healthcheck => Ok(None),
        InstancePhase::Running => {
            let up = i
                .started_at
                .map(|t| now.duration_since(t).unwrap_or_default())
                .unwrap_or_default();
            if up >= min_ready {
                Ok(None)
            } else {
                Ok(Some(format!(
                    "container {name} has run {} of the {} min_ready",
                    human(up),
                    human(min_ready)
                )))
            }
        }
        InstancePhase::Starting => Ok(Some(format!(
            "container {name} has not passed its health check yet"
        ))),
        InstancePhase::Done => match i.exit_code {
            Some(0) | None => Ok(None),
            Some(code) => Err(format!("container {name} (a job) exited with code {code}")),
        },
        InstancePhase::Restarting => {
            let code = i
                .exit_code
                .map_or_else(String::new, |c| format!(" with code {c}"));
            if i.restart_count >= CRASH_LOOP_RESTARTS {
                Err(format!(
                    "container {name} is crash-looping (exited{code} after {} restarts)",
                    i.restart_count
                ))
            } else {
                Ok(Some(format!("container {name} exited{code}")))
            }
        }
        InstancePhase::Absent | InstancePhase::Down => {
            Ok(Some(format!("container {name} is not running")))
        }
    }
}

/// A duration for people: `5s`, `3m`, `1m30s`, `250ms`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        T0 + Duration::from_secs(s)
    }

    fn quiet() -> Progress<'static> {
        Progress {
            image_failures: &[],
            settled: true,
            blocked: &[],
        }
    }

    #[test]
    fn changes_still_applied_wait_and_time_out() {
        let busy = Progress {
            image_failures: &[],
            settled: false,
            blocked: &[],
        };
        assert!(matches!(
            judge(&[], busy, at(0), at(10), limits()),
            Verdict::Pending(w) if w == "its changes are still being applied"
        ));
        assert!(matches!(
            judge(&[], busy, at(0), at(60), limits()),
            Verdict::Failed(w) if w.contains("its changes are still being applied")
        ));
    }

    fn limits() -> Limits {
        Limits {
            deploy_timeout: Duration::from_secs(60),
            min_ready: Duration::from_secs(5),
        }
    }

    fn running(name: &str, since: u64) -> InstanceView {
        InstanceView {
            name: name.into(),
            in_place: true,
            phase: InstancePhase::Running,
            has_healthcheck: false,
            health: Health::None,
            exit_code: None,
            restart_count: 0,
            started_at: Some(at(since)),
        }
    }

    #[test]
    fn nothing_changed_is_healthy_at_once() {
        assert_eq!(
            judge(&[], quiet(), at(0), at(0), limits()),
            Verdict::Healthy
        );
    }

    #[test]
    fn without_a_health_check_min_ready_decides() {
        let v = [running("web", 10)];
        assert!(matches!(
            judge(&v, quiet(), at(10), at(12), limits()),
            Verdict::Pending(w) if w.contains("web has run 2s of the 5s min_ready")
        ));
        assert_eq!(
            judge(&v, quiet(), at(10), at(15), limits()),
            Verdict::Healthy
        );
    }

    #[test]
    fn a_health_check_decides_when_there_is_one() {
        let mut v = running("web", 10);
        v.has_healthcheck = true;
        v.phase = InstancePhase::Starting;
        v.health = Health::Starting;
        assert!(matches!(
            judge(std::slice::from_ref(&v), quiet(), at(10), at(50), limits()),
            Verdict::Pending(_)
        ));
        v.phase = InstancePhase::Running;
        v.health = Health::Healthy;
        // Healthy at once: min_ready is for containers without a check.
        assert_eq!(
            judge(std::slice::from_ref(&v), quiet(), at(10), at(10), limits()),
            Verdict::Healthy
        );
        v.health = Health::Unhealthy;
        assert_eq!(
            judge(&[v], quiet(), at(10), at(11), limits()),
            Verdict::Failed("container web failed its health check".into())
        );
    }

    #[test]
    fn the_deploy_timeout_fails_what_is_still_waiting() {
        let mut v = running("web", 10);
        v.in_place = false;
        assert!(matches!(
            judge(std::slice::from_ref(&v), quiet(), at(10), at(69), limits()),
            Verdict::Pending(_)
        ));
        assert_eq!(
            judge(&[v], quiet(), at(10), at(70), limits()),
            Verdict::Failed(
                "not ready within deploy_timeout (1m): container web is not in place yet".into()
            )
        );
    }

    #[test]
    fn the_health_of_what_is_being_replaced_is_not_judged() {
        let mut v = running("web", 10);
        v.in_place = false;
        v.has_healthcheck = true;
        v.health = Health::Unhealthy;
        assert!(matches!(
            judge(&[v], quiet(), at(10), at(11), limits()),
            Verdict::Pending(w) if w == "container web is not in place yet"
        ));
    }

    #[test]
    fn a_crash_loop_fails_before_the_timeout() {
        let mut v = running("web", 10);
        v.phase = InstancePhase::Restarting;
        v.exit_code = Some(1);
        v.restart_count = 1;
        assert!(matches!(
            judge(std::slice::from_ref(&v), quiet(), at(10), at(20), limits()),
            Verdict::Pending(w) if w == "container web exited with code 1"
        ));
        v.restart_count = CRASH_LOOP_RESTARTS;
        assert_eq!(
            judge(&[v], quiet(), at(10), at(20), limits()),
            Verdict::Failed(
                "container web is crash-looping (exited with code 1 after 3 restarts)".into()
            )
        );
    }

    #[test]
    fn a_job_that_exits_zero_is_no_failure_and_one_that_exits_non_zero_is() {
        let mut job = running("migrate", 10);
        job.phase = InstancePhase::Done;
        job.exit_code = Some(0);
        // Exited at once, well under min_ready: done is done.
        assert_eq!(
            judge(
                std::slice::from_ref(&job),
                quiet(),
                at(10),
                at(10),
                limits()
            ),
            Verdict::Healthy
        );
        job.exit_code = Some(2);
        assert_eq!(
            judge(&[job], quiet(), at(10), at(10), limits()),
            Verdict::Failed("container migrate (a job) exited with code 2".into())
        );
    }

    /// A revision with something blocked (its image not in the store with
    /// `pull = "never"`) is not healthy, though nothing it changed is
    /// waiting (the blocked container was never replaced), and fails when
    /// the deploy timeout passes.
    #[test]
    fn what_is_blocked_is_never_healthy() {
        let blocked =
            ["image app:1 is blocked: not in the image store and pull = \"never\"".into()];
        let stuck = Progress {
            image_failures: &[],
            settled: true,
            blocked: &blocked,
        };
        assert!(matches!(
            judge(&[], stuck, at(0), at(10), limits()),
            Verdict::Pending(w) if w.contains("is blocked")
        ));
        assert!(matches!(
            judge(&[], stuck, at(0), at(600), limits()),
            Verdict::Failed(w) if w.contains("deploy_timeout") && w.contains("is blocked")
        ));
        assert_eq!(
            judge(&[], quiet(), at(0), at(10), limits()),
            Verdict::Healthy
        );
    }

    #[test]
    fn an_image_that_cannot_be_pulled_fails_at_once() {
        let v = [running("web", 0)];
        assert_eq!(
            judge(
                &v,
                Progress {
                    image_failures: &["image x: pull failed: 404".into()],
                    settled: true,
                    blocked: &[],
                },
                at(0),
                at(100),
                limits()
            ),
            Verdict::Failed("image x: pull failed: 404".into())
        );
    }

    #[test]
    fn one_failure_among_ready_instances_fails_the_revision() {
        let mut bad = running("api", 0);
        bad.health = Health::Unhealthy;
        bad.has_healthcheck = true;
        let v = [running("web", 0), bad];
        assert!(
            matches!(judge(&v, quiet(), at(0), at(30), limits()), Verdict::Failed(w) if w.contains("api"))
        );
    }

    #[test]
    fn a_clock_that_went_back_waits_rather_than_fails() {
        let v = [running("web", 100)];
        assert!(matches!(
            judge(&v, quiet(), at(100), at(50), limits()),
            Verdict::Pending(_)
        ));
    }

    #[test]
    fn history_keeps_the_newest() {
        let mut h = Vec::new();
        for i in 0..(HISTORY_LIMIT + 5) {
            push_history(
                &mut h,
                RevisionRecord {
                    revision: format!("r{i}"),
                    outcome: Outcome::Healthy,
                    applied_at: i as u64,
                    decided_at: None,
                    message: None,
                    changes: Vec::new(),
                    images: Default::default(),
                    specs: Default::default(),
                },
            );
        }
        assert_eq!(h.len(), HISTORY_LIMIT);
        assert_eq!(h[0].revision, "r5");
        assert_eq!(h.last().map(|r| r.revision.as_str()), Some("r24"));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(180)), "3m");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }

    fn desired(toml: &str) -> DesiredState {
        moor_spec::load_texts(&[(std::path::PathBuf::from("/m/stack.toml"), toml.to_string())])
            .expect("valid manifest")
    }

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn a_good_revision_is_pinned_to_the_digests_it_ran() {
        let state = desired(&format!(
            "[images.app]\nref = \"localhost:5000/app:1\"\n\
             [images.built]\nref = \"localhost/built:1\"\n\
             [containers.web]\nimage = \"app\"\n\
             [containers.direct]\nimage = \"localhost:5000/app:1\"\n\
             [containers.other]\nimage = \"localhost:5000/other\"\n\
             [containers.mine]\nimage = \"built\"\n\
             [containers.fixed]\nimage = \"localhost:5000/fixed:3@{}\"\n\
             [images.local]\nref = \"localhost/local:1\"\npull = \"never\"\n\
             [containers.byhand]\nimage = \"local\"\n\
             [containers.byname]\nimage = \"localhost/local:1\"\n",
            d('f')
        ));
        // Decoding a real `build` needs the context on disk: the spec is
        // what decoding gives.
        let state = {
            let mut s = state;
            let built = s.images.get_mut("built").expect("built");
            Arc::make_mut(&mut built.spec).build = Some(moor_spec::BuildSpec {
                context: "/m/app".into(),
                dockerfile: "Dockerfile".into(),
                args: BTreeMap::new(),
                target: None,
            });
            s
        };
        let digests: BTreeMap<String, String> = [
            ("localhost:5000/app:1", d('a')),
            ("localhost:5000/other:latest", d('b')),
            ("localhost/built:1", d('c')),
            ("localhost/local:1", d('d')),
            (&*format!("localhost:5000/fixed:3@{}", d('f')), d('e')),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let pinned = pin_to(&state, &digests);
        let app = format!("localhost:5000/app:1@{}", d('a'));
        assert_eq!(pinned.images["app"].spec.reference.to_string(), app);
        assert_eq!(pinned.containers["web"].spec.image.to_string(), app);
        assert_eq!(pinned.containers["direct"].spec.image.to_string(), app);
        assert_eq!(
            pinned.containers["other"].spec.image.to_string(),
            format!("localhost:5000/other:latest@{}", d('b'))
        );
        // A built image is built, not pulled by digest; a digest written
        // stays the one written.
        assert_eq!(
            pinned.containers["mine"].spec.image.to_string(),
            "localhost/built:1"
        );
        assert_eq!(
            pinned.containers["fixed"].spec.image.to_string(),
            format!("localhost:5000/fixed:3@{}", d('f'))
        );
        // An image the operator puts in the store (`pull = "never"`) is
        // pinned as well: the store finds it by its digest.
        let local = format!("localhost/local:1@{}", d('d'));
        for n in ["byhand", "byname"] {
            assert_eq!(pinned.containers[n].spec.image.to_string(), local, "{n}");
        }
        assert_eq!(pinned.images["local"].spec.reference.to_string(), local);
        // The spec hashes stay: nothing is replaced for the pin alone.
        for (n, c) in &state.containers {
            assert_eq!(pinned.containers[n].hash, c.hash, "{n}");
        }
        // The state pinned is a copy.
        assert_eq!(
            state.containers["web"].spec.image.to_string(),
            "localhost:5000/app:1"
        );
    }

    #[test]
    fn a_hand_edited_record_pins_nothing() {
        let state = desired("[containers.web]\nimage = \"localhost:5000/app:1\"\n");
        for bad in [
            "sha256:zz".to_string(),
            "md5:abc".into(),
            "".into(),
            format!("{}/../x", d('a')),
            format!("{}@{}", d('a'), d('b')),
            format!("{}\nlocalhost:5000/evil:1", d('a')),
        ] {
            let digests = BTreeMap::from([("localhost:5000/app:1".to_string(), bad.clone())]);
            assert_eq!(
                pin_to(&state, &digests).containers["web"]
                    .spec
                    .image
                    .to_string(),
                "localhost:5000/app:1",
                "{bad:?}"
            );
        }
    }

    fn healthy(rev: &str, images: &[(&str, String)]) -> RevisionRecord {
        RevisionRecord {
            revision: rev.into(),
            outcome: Outcome::Healthy,
            applied_at: 1,
            decided_at: Some(2),
            message: None,
            changes: Vec::new(),
            images: images
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            specs: BTreeMap::new(),
        }
    }

    #[test]
    fn snapshots_cover_read_only_binds_in_the_tree_and_rollbacks_read_them() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("src");
        std::fs::create_dir_all(root.join("site")).expect("mkdir");
        std::fs::create_dir_all(root.join("data")).expect("mkdir");
        std::fs::write(root.join("site/index.html"), "v1").expect("write");
        std::fs::write(root.join("app.conf"), "x").expect("write");
        std::fs::write(
            root.join("stack.toml"),
            "[containers.web]\nimage = \"localhost:5000/app:1\"\n\
             mounts = [\"./site:/srv:ro\", \"./data:/data\", \"/etc/hostname:/h:ro\"]\n\
             [containers.api]\nimage = \"localhost:5000/app:1\"\n\
             mounts = [\"./app.conf:/etc/app.conf:ro\"]\n\
             [containers.plain]\nimage = \"localhost:5000/app:1\"\n",
        )
        .expect("write");
        let state = moor_spec::load(&[root.join("stack.toml")]).expect("valid manifest");
        let sources = snapshot_sources(&state);
        let names: Vec<PathBuf> = sources
            .iter()
            .map(|s| {
                s.source
                    .strip_prefix(&s.tree)
                    .expect("beneath")
                    .to_path_buf()
            })
            .collect();
        // Read-write data and host paths are not the revision's files.
        assert_eq!(names, [PathBuf::from("app.conf"), PathBuf::from("site")]);
        for s in &sources {
            assert_eq!(
                s.digest,
                Some(moor_spec::bind::content_digest(&s.source).expect("digest"))
            );
        }
        let tree = sources.iter().next().expect("one").tree.clone();
        let snap = PathBuf::from("/state/snapshots/s/r1/0");
        let moved = rebase_binds(&state, &BTreeMap::from([(tree.clone(), snap.clone())]));
        let binds = |s: &DesiredState, c: &str| -> Vec<(String, Option<PathBuf>)> {
            s.containers[c]
                .spec
                .mounts
                .iter()
                .filter_map(|m| match &m.source {
                    MountSource::Bind { source, tree, .. } => {
                        Some((source.display().to_string(), tree.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        let web = binds(&moved, "web");
        assert!(web.contains(&("/state/snapshots/s/r1/0/site".into(), Some(snap.clone()))));
        // The container's data stays where it is, and so does a host path.
        assert!(
            web.iter()
                .any(|(s, t)| s.ends_with("/src/data") && t.as_ref() == Some(&tree)),
            "{web:?}"
        );
        assert!(web.iter().any(|(s, _)| s == "/etc/hostname"), "{web:?}");
        assert_eq!(
            binds(&moved, "api"),
            [(
                "/state/snapshots/s/r1/0/app.conf".into(),
                Some(snap.clone())
            )]
        );
        // A container reading the snapshot is another container: put in
        // place by the rollback, and back by the next revision.
        for n in ["web", "api"] {
            assert_ne!(moved.containers[n].hash, state.containers[n].hash, "{n}");
        }
        assert_eq!(
            moved.containers["plain"].hash,
            state.containers["plain"].hash
        );
        // The same snapshot, the same hash.
        let again = rebase_binds(&state, &BTreeMap::from([(tree.clone(), snap.clone())]));
        assert_eq!(again.containers["web"].hash, moved.containers["web"].hash);
        // A tree not mapped is left as it is.
        let other = rebase_binds(
            &state,
            &BTreeMap::from([(PathBuf::from("/elsewhere"), snap)]),
        );
        assert_eq!(binds(&other, "web"), binds(&state, "web"));
    }

    #[test]
    fn kept_digests_are_those_of_the_newest_healthy_revisions() {
        let mut history: Vec<RevisionRecord> = ('0'..='9')
            .map(|c| healthy(&format!("r{c}"), &[("a", d(c))]))
            .collect();
        history[9].outcome = Outcome::RolledBack;
        history[8].outcome = Outcome::Failed;
        history[7].outcome = Outcome::Pending;
        let kept = kept_digests(&history);
        let want: BTreeSet<String> = ['2', '3', '4', '5', '6'].map(d).into_iter().collect();
        assert_eq!(kept, want);
        // A revision recorded twice (rolled back to) counts once.
        history.push(healthy("r6", &[("a", d('6'))]));
        assert_eq!(kept_digests(&history), want);
    }

    #[test]
    fn a_hand_edited_history_keeps_nothing_unbounded() {
        // Garbage instead of digests keeps nothing.
        let junk = healthy(
            "r1",
            &[
                ("a", "sha256:../../etc".into()),
                ("b", format!("sha256:{}", "A".repeat(64))),
                ("c", format!("sha512:{}", "a".repeat(128))),
                ("d", format!("{} ", d('a'))),
            ],
        );
        assert!(kept_digests(&[junk]).is_empty());
        // A record naming thousands of images keeps a bounded number.
        let many: Vec<(String, String)> = (0..5000u32)
            .map(|i| (format!("img{i}"), format!("sha256:{i:064x}")))
            .collect();
        let mut r = healthy("r1", &[]);
        r.images = many.into_iter().collect();
        let history = vec![r; HISTORY_LIMIT];
        assert_eq!(kept_digests(&history).len(), MAX_KEPT_IMAGES_PER_RECORD);
    }
}
