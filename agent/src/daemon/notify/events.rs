//! What notifications say, as pure data: [`Tracker`] turns a source's
//! controller status, pass after pass, into [`Event`]s; [`Suppressor`]
//! keeps a failure that repeats from being sent again and again; the
//! payload functions write an event for each kind of receiver.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use moor_reconcile::rollout::Outcome;
use moor_reconcile::{ConditionStatus, Status};
use serde::Serialize;
use sha2::Sha256;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A revision is in force and every resource is as it says.
    Applied,
    /// A resource (or a whole pass) failed.
    Failed,
    /// A resource that had failed is as its manifest says again.
    Recovered,
    /// A revision failed and an earlier healthy one was put back in force
    /// (or a person rolled back with `moor rollback`).
    RolledBack,
    /// A container exits again and again: its restart waits out the
    /// crash-loop backoff.
    CrashLooping,
    /// A resource changed on the host behind moor's back was put back
    /// (`drift = "correct"`).
    DriftCorrected,
    /// A registry has a newer image than the one in force (`[images.X]
    /// update` with `policy = "notify"`); nothing was changed.
    UpdateAvailable,
}

impl EventKind {
    /// The event's name in the configuration's `events`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Applied => "applied",
            EventKind::Failed => "failed",
            EventKind::Recovered => "recovered",
            EventKind::RolledBack => "rolled_back",
            EventKind::CrashLooping => "crash_looping",
            EventKind::DriftCorrected => "drift_corrected",
            EventKind::UpdateAvailable => "update_available",
        }
    }
}

/// One notification's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// What happened.
    pub event: EventKind,
    /// The source (project).
    pub source: String,
    /// `kind/name`, or `None` for the source as a whole.
    pub resource: Option<String>,
    /// The revision in force.
    pub revision: Option<String>,
    /// For people.
    pub message: String,
}

/// Failed, and not by choice: drift left alone and planned actions are
/// not failures.
fn failing(status: ConditionStatus, reason: &str) -> bool {
    status == ConditionStatus::Failed && reason != "Drifted"
}

/// A container waiting out its crash-loop backoff before a restart.
fn crash_looping(c: &moor_reconcile::Condition) -> bool {
    c.kind == moor_spec::Kind::Container
        && c.status == ConditionStatus::Progressing
        && c.reason == "BackingOff"
}

/// Follows one source's controller status and says what changed.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The revision last reported as applied.
    applied: Option<String>,
    /// The revision in force changed since (it may have changed back).
    changed: bool,
}

impl Tracker {
    /// The events between two successive statuses of `source`.
    pub fn step(&mut self, source: &str, prev: &Status, cur: &Status) -> Vec<Event> {
        let mut out = Vec::new();
        let event = |event, resource: Option<String>, message: String| Event {
            event,
            source: source.to_string(),
            resource,
            revision: cur.revision.clone(),
            message,
        };
        match (&prev.last_error, &cur.last_error) {
            (None, Some(e)) => out.push(event(EventKind::Failed, None, e.clone())),
            (Some(_), None) => out.push(event(
                EventKind::Recovered,
                None,
                "the host can be observed again".into(),
            )),
            _ => {}
        }
        let was_failing = |key: &str| {
            prev.conditions
                .get(key)
                .is_some_and(|c| failing(c.status, c.reason))
        };
        // A failing resource the manifests dropped has stopped failing.
        for (key, c) in &prev.conditions {
            if failing(c.status, c.reason) && !cur.conditions.contains_key(key) {
                out.push(event(
                    EventKind::Recovered,
                    Some(key.clone()),
                    "no longer in the manifests".into(),
                ));
            }
        }
        let was_looping = |key: &str| prev.conditions.get(key).is_some_and(crash_looping);
        for (key, c) in &cur.conditions {
            if crash_looping(c) && !was_looping(key) {
                out.push(event(
                    EventKind::CrashLooping,
                    Some(key.clone()),
                    c.message.clone(),
                ));
            } else if c.status == ConditionStatus::Ready && was_looping(key) {
                out.push(event(
                    EventKind::Recovered,
                    Some(key.clone()),
                    "runs again".into(),
                ));
            }
            if failing(c.status, c.reason) && !was_failing(key) {
                out.push(event(
                    EventKind::Failed,
                    Some(key.clone()),
                    c.message.clone(),
                ));
            } else if c.status == ConditionStatus::Ready && was_failing(key) {
                out.push(event(
                    EventKind::Recovered,
                    Some(key.clone()),
                    "as its manifest says again".into(),
                ));
            }
        }
        if let Some(m) = &cur.rolled_back
            && prev.rolled_back.as_ref() != Some(m)
        {
            out.push(event(EventKind::RolledBack, None, m.clone()));
        }
        // A revision that failed and was left in force (rollback = "off",
        // or nothing to roll back to).
        let failed_record = |st: &Status| {
            st.revision.as_deref().and_then(|rev| {
                st.history
                    .iter()
                    .rev()
                    .find(|r| r.revision == rev)
                    .filter(|r| r.outcome == Outcome::Failed)
                    .map(|r| (r.applied_at, r.message.clone()))
            })
        };
        if let Some((at, m)) = failed_record(cur)
            && failed_record(prev).map(|(a, _)| a) != Some(at)
        {
            out.push(event(
                EventKind::Failed,
                None,
                m.unwrap_or_else(|| "the revision failed".into()),
            ));
        }
        if cur.revision != prev.revision {
            self.changed = true;
        }
        let passed = cur.reconciles > prev.reconciles;
        if cur.corrections != prev.corrections {
            for a in &cur.corrected {
                out.push(event(
                    EventKind::DriftCorrected,
                    Some(format!("{}/{}", a.kind, a.name)),
                    format!("changed on the host; put back: {} ({})", a.verb, a.reason),
                ));
            }
        }
        let clean = cur.last_error.is_none()
            && !cur.suspended
            && cur
                .conditions
                .values()
                .all(|c| c.status == ConditionStatus::Ready);
        // Applied means healthy: a revision still being judged, or one that
        // failed, is not reported as a success.
        let healthy = matches!(cur.outcome(), None | Some(Outcome::Healthy));
        if passed
            && clean
            && healthy
            && cur.revision.is_some()
            && (cur.revision != self.applied || self.changed)
        {
            self.applied = cur.revision.clone();
            self.changed = false;
            out.push(event(
                EventKind::Applied,
                None,
                format!(
                    "revision {} applied",
                    short(cur.revision.as_deref().unwrap_or("-"))
                ),
            ));
        }
        out
    }
}

fn short(revision: &str) -> &str {
    let hex = revision.strip_prefix("sha256:").unwrap_or(revision);
    hex.get(..12).unwrap_or(hex)
}

/// Keeps a failure that repeats from flooding a receiver: the first is
/// sent; repeats within `interval` are counted, and the first after it is
/// sent as a summary; `recovered` ends it.
#[derive(Debug)]
pub struct Suppressor {
    interval: Duration,
    /// Per (source, resource): when a failure was last sent, and repeats since.
    failing: BTreeMap<(String, Option<String>), (Instant, u32)>,
}

/// What [`Suppressor::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Send it (perhaps rewritten as a summary).
    Send(Event),
    /// A repeat: counted, not sent.
    Suppressed,
}

impl Suppressor {
    /// A suppressor that lets a repeating failure through at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            failing: BTreeMap::new(),
        }
    }

    /// Decides about `ev` at `now`.
    pub fn admit(&mut self, mut ev: Event, now: Instant) -> Admit {
        let key = (ev.source.clone(), ev.resource.clone());
        match ev.event {
            // Each new digest is announced once by its sender.
            EventKind::Applied | EventKind::UpdateAvailable => Admit::Send(ev),
            EventKind::Recovered => {
                if let Some((_, repeats)) = self.failing.remove(&key)
                    && repeats > 0
                {
                    ev.message =
                        format!("{} (after {repeats} more failure(s) not sent)", ev.message);
                }
                Admit::Send(ev)
            }
            EventKind::RolledBack | EventKind::DriftCorrected => Admit::Send(ev),
            EventKind::Failed | EventKind::CrashLooping => match self.failing.get_mut(&key) {
                None => {
                    self.failing.insert(key, (now, 0));
                    Admit::Send(ev)
                }
                Some((last, repeats)) if now.duration_since(*last) >= self.interval => {
                    ev.message = format!(
                        "still failing: {} more time(s) since the last notice; latest: {}",
                        *repeats + 1,
                        ev.message
                    );
                    *last = now;
                    *repeats = 0;
                    Admit::Send(ev)
                }
                Some((_, repeats)) => {
                    *repeats += 1;
                    Admit::Suppressed
                }
            },
        }
    }
}

/// One line for people: `[moor edge-1] fleet: failed container/web: …`.
pub fn line(host: &str, ev: &Event) -> String {
    let what = match &ev.resource {
        Some(r) => format!("{} {r}", ev.event.as_str()),
        None => ev.event.as_str().to_string(),
    };
    format!("[moor {host}] {}: {what}: {}", ev.source, ev.message)
}

/// The generic webhook's JSON body.
pub fn webhook_body(host: &str, ev: &Event, unix_time: f64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": ev.event,
        "source": ev.source,
        "resource": ev.resource,
        "revision": ev.revision,
        "message": ev.message,
        "host": host,
        "time": unix_time,
    }))
    .expect("plain data")
}

/// `X-Moor-Signature-256`: `sha256=` and the hex HMAC-SHA256 of the body.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use moor_reconcile::Condition;
    use moor_spec::Kind;

    use super::*;

    fn status(rev: &str, reconciles: u64, web: ConditionStatus, reason: &'static str) -> Status {
        Status {
            revision: Some(rev.into()),
            reconciles,
            ready: true,
            conditions: BTreeMap::from([(
                "container/web".to_string(),
                Condition {
                    kind: Kind::Container,
                    name: "web".into(),
                    status: web,
                    reason,
                    message: "create failed: no space".into(),
                },
            )]),
            ..Status::default()
        }
    }

    fn kinds(evs: &[Event]) -> Vec<(EventKind, Option<&str>)> {
        evs.iter()
            .map(|e| (e.event, e.resource.as_deref()))
            .collect()
    }

    #[test]
    fn the_tracker_reports_applied_failed_and_recovered_once_each() {
        use ConditionStatus::*;
        let mut t = Tracker::default();
        let s0 = Status::default();
        let ok1 = status("r1", 1, Ready, "Applied");
        assert_eq!(kinds(&t.step("s", &s0, &ok1)), [(EventKind::Applied, None)]);
        let ok1b = status("r1", 2, Ready, "UpToDate");
        assert!(t.step("s", &ok1, &ok1b).is_empty(), "a resync is not news");
        let bad = status("r2", 3, Failed, "ActionFailed");
        assert_eq!(
            kinds(&t.step("s", &ok1b, &bad)),
            [(EventKind::Failed, Some("container/web"))]
        );
        let bad2 = status("r2", 4, Failed, "BackingOff");
        assert!(t.step("s", &bad, &bad2).is_empty(), "still failing");
        let ok2 = status("r2", 5, Ready, "Applied");
        assert_eq!(
            kinds(&t.step("s", &bad2, &ok2)),
            [
                (EventKind::Recovered, Some("container/web")),
                (EventKind::Applied, None)
            ]
        );
        let drifted = status("r2", 6, Failed, "Drifted");
        assert!(
            t.step("s", &ok2, &drifted).is_empty(),
            "drift is not a failure"
        );
        // Back to a revision applied before: applied again.
        let back = status("r2", 8, Ready, "Applied");
        assert_eq!(kinds(&t.step("s", &drifted, &back)), []);
        let mut t = Tracker::default();
        t.step("s", &s0, &ok1);
        let r2 = status("r2", 2, Ready, "Applied");
        t.step("s", &ok1, &r2);
        let r1_again = status("r1", 3, Ready, "Applied");
        assert_eq!(
            kinds(&t.step("s", &r2, &r1_again)),
            [(EventKind::Applied, None)]
        );
        // A failing resource dropped from the manifests has recovered.
        let gone = Status {
            conditions: BTreeMap::new(),
            ..status("r3", 7, Ready, "Applied")
        };
        assert_eq!(
            kinds(&t.step("s", &bad2, &gone)),
            [
                (EventKind::Recovered, Some("container/web")),
                (EventKind::Applied, None)
            ]
        );
    }

    #[test]
    fn rollbacks_crash_loops_and_failed_revisions_are_events_and_never_applied() {
        use ConditionStatus::*;
        use moor_reconcile::rollout::RevisionRecord;
        let rec = |rev: &str, outcome, at, message: Option<&str>| RevisionRecord {
            revision: rev.into(),
            outcome,
            applied_at: at,
            decided_at: None,
            message: message.map(str::to_string),
            changes: Vec::new(),
            images: Default::default(),
            specs: Default::default(),
        };
        let mut t = Tracker::default();
        let s0 = Status::default();
        let mut ok1 = status("r1", 1, Ready, "Applied");
        ok1.history = vec![rec("r1", Outcome::Healthy, 1, None)];
        assert_eq!(kinds(&t.step("s", &s0, &ok1)), [(EventKind::Applied, None)]);
        // r2 applied, still being judged: not "applied".
        let mut r2 = status("r2", 2, Ready, "Applied");
        r2.history = vec![ok1.history[0].clone(), rec("r2", Outcome::Pending, 2, None)];
        assert!(t.step("s", &ok1, &r2).is_empty());
        // Its container exits and waits out its backoff: crash looping.
        let mut looping = status("r2", 3, Progressing, "BackingOff");
        looping.history = r2.history.clone();
        assert_eq!(
            kinds(&t.step("s", &r2, &looping)),
            [(EventKind::CrashLooping, Some("container/web"))]
        );
        // Rolled back to r1: one event saying so, then r1 applied (healthy).
        let mut back = status("r1", 4, Ready, "Applied");
        back.rolled_back =
            Some("rolled back from r2 to r1 because container web is crash-looping".into());
        back.history = vec![
            ok1.history[0].clone(),
            rec("r2", Outcome::RolledBack, 2, None),
            rec("r1", Outcome::Healthy, 4, Some("a rollback from r2")),
        ];
        let evs = t.step("s", &looping, &back);
        assert_eq!(
            kinds(&evs),
            [
                (EventKind::Recovered, Some("container/web")),
                (EventKind::RolledBack, None),
                (EventKind::Applied, None)
            ]
        );
        assert!(evs[1].message.starts_with("rolled back from r2 to r1"));
        let mut again = back.clone();
        again.reconciles = 5;
        assert!(
            t.step("s", &back, &again).is_empty(),
            "a rollback is news once"
        );
        // rollback = "off": the revision failed and stays; said once.
        let mut r3 = status("r3", 6, Ready, "UpToDate");
        r3.history = vec![rec("r3", Outcome::Failed, 6, Some("revision r3 failed: x"))];
        let evs = t.step("s", &again, &r3);
        assert_eq!(kinds(&evs), [(EventKind::Failed, None)]);
        assert_eq!(evs[0].message, "revision r3 failed: x");
        let mut r3b = r3.clone();
        r3b.reconciles = 7;
        assert!(t.step("s", &r3, &r3b).is_empty());
    }

    #[test]
    fn corrected_drift_is_an_event_per_resource_and_pass() {
        use ConditionStatus::*;
        use moor_reconcile::{Action, Reason, Verb};
        let mut t = Tracker::default();
        let ok = status("r1", 1, Ready, "Applied");
        t.step("s", &Status::default(), &ok);
        let mut fixed = status("r1", 2, Ready, "Applied");
        let action = Action {
            kind: Kind::Network,
            name: "front".into(),
            verb: Verb::Create,
            reason: Reason::NotOnHost,
            start_first: false,
        };
        fixed.corrected = vec![action];
        fixed.corrections = 1;
        let evs = t.step("s", &ok, &fixed);
        assert_eq!(
            kinds(&evs),
            [(EventKind::DriftCorrected, Some("network/front"))]
        );
        assert!(
            evs[0]
                .message
                .starts_with("changed on the host; put back: create"),
            "{}",
            evs[0].message
        );
        // The same status seen again (no new pass) says nothing.
        assert!(t.step("s", &fixed, &fixed).is_empty());
    }

    fn failed(resource: &str) -> Event {
        Event {
            event: EventKind::Failed,
            source: "s".into(),
            resource: Some(resource.into()),
            revision: None,
            message: "boom".into(),
        }
    }

    #[test]
    fn a_repeating_failure_is_sent_once_then_summarised_hourly() {
        let mut s = Suppressor::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        assert!(matches!(
            s.admit(failed("container/web"), t0),
            Admit::Send(_)
        ));
        for i in 1..240 {
            let at = t0 + Duration::from_secs(i * 10);
            assert_eq!(s.admit(failed("container/web"), at), Admit::Suppressed);
        }
        // Another resource is its own story.
        assert!(matches!(
            s.admit(failed("container/db"), t0),
            Admit::Send(_)
        ));
        match s.admit(failed("container/web"), t0 + Duration::from_secs(3600)) {
            Admit::Send(e) => assert!(e.message.contains("240 more time(s)"), "{}", e.message),
            other => panic!("{other:?}"),
        }
        // Recovered ends it: the next failure is sent at once.
        let rec = Event {
            event: EventKind::Recovered,
            ..failed("container/web")
        };
        assert!(matches!(
            s.admit(rec, t0 + Duration::from_secs(3700)),
            Admit::Send(_)
        ));
        assert!(matches!(
            s.admit(failed("container/web"), t0 + Duration::from_secs(3701)),
            Admit::Send(_)
        ));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
