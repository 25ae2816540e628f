//! The metrics, named by Prometheus's rules: base units, `_total` counters,
//! `_seconds` durations, bounded label values (kinds, verbs, states, container
//! and source names — never error messages).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use moor_reconcile::{ContainerState, Health, Observed, PassView, Recorder, Verb};
use moor_spec::{DesiredState, Kind};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every state a container can be reported in, so that each gets a series
/// (0 or 1) and a state change never leaves a stale 1 behind.
const CONTAINER_STATES: [&str; 4] = ["created", "running", "exited", "dead"];

/// All of moor's metrics, in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_total: IntCounterVec,
    reconcile_duration: Histogram,
    reconcile_errors: IntCounterVec,
    actions: IntCounterVec,
    resources: IntGaugeVec,
    drift: IntCounterVec,
    drift_left: IntGaugeVec,
    source_suspended: IntGaugeVec,
    rollbacks: IntCounterVec,
    revision_outcome: IntGaugeVec,
    notifications: IntCounterVec,
    notifications_dropped: IntCounter,
    queue_depth: IntGauge,
    queue_retries: IntCounter,
    source_sync: IntCounterVec,
    source_last_sync: GaugeVec,
    source_revision: IntGaugeVec,
    pull_bytes: IntCounter,
    pull_duration: HistogramVec,
    builds: IntCounterVec,
    build_duration: Histogram,
    image_verify: IntCounterVec,
    image_info: IntGaugeVec,
    image_update_checks: IntCounterVec,
    container_state: IntGaugeVec,
    container_restarts: IntCounterVec,
    container_health: IntGaugeVec,
    container_cpu: prometheus::CounterVec,
    container_memory: IntGaugeVec,
    container_pids: IntGaugeVec,
    /// Last seen values, to turn observed totals into counter increments and
    /// to delete the series of containers that are gone.
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    restarts: HashMap<String, u64>,
    cpu: HashMap<String, f64>,
    /// Per project: its containers, and its resource counts by kind
    /// (desired, observed, drifted). The gauges hold the sums over projects.
    projects: HashMap<String, ProjectView>,
    revisions: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct ProjectView {
    containers: Vec<String>,
    counts: BTreeMap<Kind, [i64; 3]>,
}

/// Resource usage of one container, read from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContainerUsage {
    /// CPU time used, in seconds.
    pub cpu_seconds: f64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Metrics {
    /// Creates and registers every metric. `commit` is the source revision
    /// moor was built from, if known.
    pub fn new(version: &str, commit: &str) -> Self {
        let r = Registry::new();
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "moor_reconcile_duration_seconds",
                "Time taken by one reconcile pass.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )
        .expect("valid metric definition");
        r.register(Box::new(reconcile_duration.clone()))
            .expect("metric registered once");
        let queue_depth = IntGauge::new(
            "moor_workqueue_depth",
            "Resources waiting for a retry after a failure.",
        )
        .expect("valid metric definition");
        r.register(Box::new(queue_depth.clone()))
            .expect("metric registered once");
        let queue_retries =
            IntCounter::new("moor_workqueue_retries_total", "Retries of failed actions.")
                .expect("valid metric definition");
        r.register(Box::new(queue_retries.clone()))
            .expect("metric registered once");
        let notifications_dropped = IntCounter::new(
            "moor_notifications_dropped_total",
            "Notifications dropped because their target's queue was full.",
        )
        .expect("valid metric definition");
        r.register(Box::new(notifications_dropped.clone()))
            .expect("metric registered once");
        let pull_bytes = IntCounter::new(
            "moor_image_pull_bytes_total",
            "Bytes downloaded by image pulls.",
        )
        .expect("valid metric definition");
        r.register(Box::new(pull_bytes.clone()))
            .expect("metric registered once");
        let pull_duration = HistogramVec::new(
            HistogramOpts::new(
                "moor_image_pull_duration_seconds",
                "Time taken by image pulls.",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
            &["result"],
        )
        .expect("valid metric definition");
        r.register(Box::new(pull_duration.clone()))
            .expect("metric registered once");
        let build_duration = Histogram::with_opts(
            HistogramOpts::new(
                "moor_build_duration_seconds",
                "Time taken by builds of images the manifests build.",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
        )
        .expect("valid metric definition");
        r.register(Box::new(build_duration.clone()))
            .expect("metric registered once");
        let image_verify = IntCounterVec::new(
            Opts::new(
                "moor_image_verify_total",
                "Signature checks of pulled images ([[verify]] rules, [images] verify keys), by result (verified, refused).",
            ),
            &["result"],
        )
        .expect("valid metric definition");
        r.register(Box::new(image_verify.clone()))
            .expect("metric registered once");
        let source_last_sync = GaugeVec::new(
            Opts::new(
                "moor_source_last_sync_timestamp_seconds",
                "Unix time of the last successful sync of a source.",
            ),
            &["source"],
        )
        .expect("valid metric definition");
        r.register(Box::new(source_last_sync.clone()))
            .expect("metric registered once");
        let container_cpu = prometheus::CounterVec::new(
            Opts::new(
                "moor_container_cpu_seconds_total",
                "CPU time used by a container, from its cgroup.",
            ),
            &["container"],
        )
        .expect("valid metric definition");
        r.register(Box::new(container_cpu.clone()))
            .expect("metric registered once");

        let build = gauge_vec(
            &r,
            "moor_build_info",
            "Build information; the value is always 1.",
            &["version", "commit"],
        );
        build.with_label_values(&[version, commit]).set(1);

        Self {
            reconcile_total: counter_vec(
                &r,
                "moor_reconcile_total",
                "Reconcile passes, by result.",
                &["result"],
            ),
            reconcile_duration,
            reconcile_errors: counter_vec(
                &r,
                "moor_reconcile_errors_total",
                "Reconcile errors, by the kind of resource that failed (\"host\" when the host could not be observed).",
                &["kind"],
            ),
            actions: counter_vec(
                &r,
                "moor_actions_total",
                "Actions applied, by resource kind, action and result.",
                &["kind", "action", "result"],
            ),
            resources: gauge_vec(
                &r,
                "moor_resources",
                "Resources by kind and state (desired, observed, drifted).",
                &["kind", "state"],
            ),
            drift: counter_vec(
                &r,
                "moor_drift_detected_total",
                "Resources found to differ from their manifest on the host.",
                &["kind"],
            ),
            drift_left: gauge_vec(
                &r,
                "moor_drift_resources",
                "Resources found changed on the host and left so (drift = \"report\", or mode = \"plan\"), by source and kind.",
                &["source", "kind"],
            ),
            image_info: gauge_vec(
                &r,
                "moor_image_info",
                "1 for each image the manifests use: its [images] entry (or reference), the reference in force and the digest it resolved to.",
                &["image", "reference", "digest"],
            ),
            image_update_checks: counter_vec(
                &r,
                "moor_image_update_checks_total",
                "Checks of a registry for image updates ([images] update), by result: unchanged, updated, available (notify), or failure.",
                &["result"],
            ),
            source_suspended: gauge_vec(
                &r,
                "moor_source_suspended",
                "1 while a source is suspended (moor suspend), 0 otherwise.",
                &["source"],
            ),
            rollbacks: counter_vec(
                &r,
                "moor_rollbacks_total",
                "Rollbacks of a source to an earlier healthy revision (automatic or moor rollback).",
                &["source"],
            ),
            revision_outcome: gauge_vec(
                &r,
                "moor_source_revision_outcome",
                "1 for the outcome of the revision in force (pending, healthy, failed, rolled_back), 0 for the others.",
                &["source", "outcome"],
            ),
            notifications: counter_vec(
                &r,
                "moor_notifications_total",
                "Notifications, by result: success, failure (after retries) or suppressed (a repeat).",
                &["result"],
            ),
            notifications_dropped,
            queue_depth,
            queue_retries,
            source_sync: counter_vec(
                &r,
                "moor_source_sync_total",
                "Source syncs, by source and result.",
                &["source", "result"],
            ),
            source_last_sync,
            source_revision: gauge_vec(
                &r,
                "moor_source_revision_info",
                "The revision applied from a source; the value is always 1.",
                &["source", "revision"],
            ),
            pull_bytes,
            pull_duration,
            builds: counter_vec(
                &r,
                "moor_build_total",
                "Builds of images the manifests build, by result: success or failure.",
                &["result"],
            ),
            build_duration,
            image_verify,
            container_state: gauge_vec(
                &r,
                "moor_container_state",
                "1 for the state a container is in, 0 for the others.",
                &["container", "state"],
            ),
            container_restarts: counter_vec(
                &r,
                "moor_container_restarts_total",
                "Restarts of a container by moor.",
                &["container"],
            ),
            container_health: gauge_vec(
                &r,
                "moor_container_health",
                "Container health: 1 healthy, 0 unhealthy, -1 starting or no check.",
                &["container"],
            ),
            container_cpu,
            container_memory: gauge_vec(
                &r,
                "moor_container_memory_bytes",
                "Memory used by a container, from its cgroup.",
                &["container"],
            ),
            container_pids: gauge_vec(
                &r,
                "moor_container_pids",
                "Processes and threads in a container, from its cgroup.",
                &["container"],
            ),
            registry: r,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// The text exposition format of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding metrics into memory cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }

    /// A source synced (or failed to).
    pub fn source_sync(&self, source: &str, revision: Option<&str>, ok: bool, unix_time: f64) {
        let result = if ok { "success" } else { "failure" };
        self.source_sync.with_label_values(&[source, result]).inc();
        if !ok {
            return;
        }
        self.source_last_sync
            .with_label_values(&[source])
            .set(unix_time);
        if let Some(rev) = revision {
            let mut seen = self.seen.lock().expect("metrics state poisoned");
            if let Some(old) = seen.revisions.insert(source.to_string(), rev.to_string())
                && old != rev
            {
                let _ = self.source_revision.remove_label_values(&[source, &old]);
            }
            self.source_revision
                .with_label_values(&[source, rev])
                .set(1);
        }
    }

    /// A source the agent runs: its rollback counter starts at 0.
    pub fn source_rollbacks(&self, source: &str) {
        self.rollbacks.with_label_values(&[source]);
    }

    /// The images in use now, as `(image, reference, digest)`: replaces
    /// every series of `moor_image_info`, so an image no longer used or
    /// resolved anew leaves no stale series behind.
    pub fn images<'a>(&self, rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
        self.image_info.reset();
        for (image, reference, digest) in rows {
            self.image_info
                .with_label_values(&[image, reference, digest])
                .set(1);
        }
    }

    /// A check for an image update ended: `unchanged`, `updated`,
    /// `available` or `failure`.
    pub fn image_update_check(&self, result: &str) {
        self.image_update_checks.with_label_values(&[result]).inc();
    }

    /// A source was suspended (`true`) or resumed.
    pub fn source_suspended(&self, source: &str, suspended: bool) {
        self.source_suspended
            .with_label_values(&[source])
            .set(i64::from(suspended));
    }

    /// A notification was sent (`success`), given up on (`failure`) or
    /// held back as a repeat (`suppressed`).
    pub fn notification(&self, result: &str) {
        self.notifications.with_label_values(&[result]).inc();
    }

    /// A notification was dropped: its target's queue was full.
    pub fn notification_dropped(&self) {
        self.notifications_dropped.inc();
    }

    /// An image pull finished.
    pub fn image_pull(&self, bytes: u64, duration: Duration, ok: bool) {
        self.pull_bytes.inc_by(bytes);
        let result = if ok { "success" } else { "failure" };
        self.pull_duration
            .with_label_values(&[result])
            .observe(duration.as_secs_f64());
    }

    /// A signature check of an image a verification rule covers.
    pub fn image_verify(&self, verified: bool) {
        let result = if verified { "verified" } else { "refused" };
        self.image_verify.with_label_values(&[result]).inc();
    }

    /// Updates the resource and container gauges from a pass's view of the host.
    pub fn host(
        &self,
        desired: &DesiredState,
        observed: &Observed,
        project: &str,
        drifted: &BTreeMap<Kind, i64>,
    ) {
        let mine = |p: &Option<String>| p.as_deref() == Some(project);
        let observed_counts = [
            (Kind::Image, observed.images.len() as i64),
            (
                Kind::Network,
                observed
                    .networks
                    .values()
                    .filter(|n| mine(&n.project))
                    .count() as i64,
            ),
            (
                Kind::Volume,
                observed
                    .volumes
                    .values()
                    .filter(|v| mine(&v.project))
                    .count() as i64,
            ),
            (
                Kind::Container,
                observed
                    .containers
                    .values()
                    .filter(|c| mine(&c.project))
                    .count() as i64,
            ),
        ];
        let desired_containers: i64 = desired
            .containers
            .values()
            .map(|c| i64::from(c.spec.replicas))
            .sum();
        let mut seen = self.seen.lock().expect("metrics state poisoned");
        let mut counts = BTreeMap::new();
        for ((kind, n), (_, observed_n)) in desired.counts().iter().zip(observed_counts) {
            let desired_n = if *kind == Kind::Container {
                desired_containers
            } else {
                *n as i64
            };
            let drifted_n = drifted.get(kind).copied().unwrap_or(0);
            counts.insert(*kind, [desired_n, observed_n, drifted_n]);
        }
        seen.projects.entry(project.to_string()).or_default().counts = counts;
        for kind in [Kind::Image, Kind::Network, Kind::Volume, Kind::Container] {
            let mut sum = [0i64; 3];
            for view in seen.projects.values() {
                if let Some(c) = view.counts.get(&kind) {
                    for (s, v) in sum.iter_mut().zip(c) {
                        *s += v;
                    }
                }
            }
            if kind == Kind::Image {
                // Images belong to no project: every view sees all of them.
                sum[1] = observed.images.len() as i64;
            }
            for (state, v) in ["desired", "observed", "drifted"].iter().zip(sum) {
                self.resources
                    .with_label_values(&[kind.as_str(), state])
                    .set(v);
            }
        }

        let mut current = Vec::new();
        for (name, c) in observed.containers.iter().filter(|(_, c)| mine(&c.project)) {
            current.push(name.clone());
            for s in CONTAINER_STATES {
                self.container_state
                    .with_label_values(&[name, s])
                    .set(i64::from(c.state.as_str() == s));
            }
            let last = seen
                .restarts
                .insert(name.clone(), u64::from(c.restart_count))
                .unwrap_or(0);
            let counter = self.container_restarts.with_label_values(&[name]);
            if u64::from(c.restart_count) > last {
                counter.inc_by(u64::from(c.restart_count) - last);
            }
            let health = match c.health {
                Health::Healthy => 1,
                Health::Unhealthy => 0,
                Health::Starting | Health::None => -1,
            };
            self.container_health.with_label_values(&[name]).set(health);
            if c.state != ContainerState::Running {
                self.container_memory.with_label_values(&[name]).set(0);
                self.container_pids.with_label_values(&[name]).set(0);
            }
        }
        // This project's containers that are gone take their series with them.
        let view = seen.projects.entry(project.to_string()).or_default();
        let gone: Vec<String> = std::mem::replace(&mut view.containers, current)
            .into_iter()
            .filter(|n| !view.containers.contains(n))
            .collect();
        for gone in &gone {
            for s in CONTAINER_STATES {
                let _ = self.container_state.remove_label_values(&[gone, s]);
            }
            let _ = self.container_restarts.remove_label_values(&[gone]);
            let _ = self.container_health.remove_label_values(&[gone]);
            let _ = self.container_cpu.remove_label_values(&[gone]);
            let _ = self.container_memory.remove_label_values(&[gone]);
            let _ = self.container_pids.remove_label_values(&[gone]);
            seen.restarts.remove(gone);
            seen.cpu.remove(gone);
        }
    }

    /// Records a container's cgroup usage.
    pub fn container_usage(&self, name: &str, usage: ContainerUsage) {
        let mut seen = self.seen.lock().expect("metrics state poisoned");
        let last = seen
            .cpu
            .insert(name.to_string(), usage.cpu_seconds)
            .unwrap_or(0.0);
        if usage.cpu_seconds > last {
            self.container_cpu
                .with_label_values(&[name])
                .inc_by(usage.cpu_seconds - last);
        } else {
            // Touch the series so that it exists from the first scrape.
            self.container_cpu.with_label_values(&[name]).inc_by(0.0);
        }
        self.container_memory
            .with_label_values(&[name])
            .set(i64::try_from(usage.memory_bytes).unwrap_or(i64::MAX));
        self.container_pids
            .with_label_values(&[name])
            .set(i64::try_from(usage.pids).unwrap_or(i64::MAX));
    }
}

impl Recorder for Metrics {
    fn reconcile(&self, ok: bool, duration: Duration) {
        let result = if ok { "success" } else { "failure" };
        self.reconcile_total.with_label_values(&[result]).inc();
        self.reconcile_duration.observe(duration.as_secs_f64());
        if !ok {
            self.reconcile_errors.with_label_values(&["host"]).inc();
        }
    }

    fn action(&self, kind: Kind, verb: Verb, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.actions
            .with_label_values(&[kind.as_str(), verb.as_str(), result])
            .inc();
        if !ok {
            self.reconcile_errors
                .with_label_values(&[kind.as_str()])
                .inc();
        }
    }

    fn build(&self, ok: bool, duration: Duration) {
        let result = if ok { "success" } else { "failure" };
        self.builds.with_label_values(&[result]).inc();
        self.build_duration.observe(duration.as_secs_f64());
    }

    fn drift(&self, kind: Kind) {
        self.drift.with_label_values(&[kind.as_str()]).inc();
    }

    fn rollback(&self, project: &str) {
        self.rollbacks.with_label_values(&[project]).inc();
    }

    fn revision_outcome(&self, project: &str, outcome: moor_reconcile::rollout::Outcome) {
        use moor_reconcile::rollout::Outcome;
        for o in [
            Outcome::Pending,
            Outcome::Healthy,
            Outcome::Failed,
            Outcome::RolledBack,
        ] {
            self.revision_outcome
                .with_label_values(&[project, o.as_str()])
                .set(i64::from(o == outcome));
        }
    }

    fn drift_left(&self, project: &str, by_kind: &BTreeMap<Kind, i64>) {
        for (kind, n) in by_kind {
            self.drift_left
                .with_label_values(&[project, kind.as_str()])
                .set(*n);
        }
    }

    fn pass_view(&self, view: &PassView<'_>) {
        self.host(view.desired, view.observed, view.project, &view.drifted);
    }

    fn queue(&self, depth: usize, retries: u64) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        let seen = self.queue_retries.get();
        if retries > seen {
            self.queue_retries.inc_by(retries - seen);
        }
    }
}
