//! Diff: desired state against observed state, into a [`Plan`]. Pure: no I/O,
//! the clock is an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use moor_spec::{
    ContainerSpec, DependCondition, DesiredState, Kind, NetworkMode, PullPolicy, RestartPolicy,
    SpecHash, UpdateOrder,
};

use crate::observed::{ContainerState, Hold, Observed, ObservedContainer};
use crate::plan::{Plan, Verb};
use crate::reason::{JobState, Reason, StopFirstCause};

/// First delay of the crash-loop backoff.
pub const RESTART_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay of the crash-loop backoff.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// A container that ran this long before exiting starts its backoff afresh.
pub const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(10 * 60);

/// What a diff needs besides the two states.
#[derive(Debug, Clone)]
pub struct DiffOptions<'a> {
    /// The project whose resources this diff may change.
    pub project: &'a str,
    /// Allow a desired state with no resources at all to remove everything
    /// the project owns (otherwise that is refused as a likely accident).
    pub allow_empty: bool,
    /// Remove the project's volumes that are not desired, even without `prune = true` (`down --volumes`).
    pub remove_volumes: bool,
    /// The current time, for restart backoff.
    pub now: SystemTime,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// The manifests declare nothing, while the project owns resources.
    #[error(
        "the manifests declare no resources but project \"{project}\" owns {owned} on this host; refusing to remove them all (use --allow-empty if that is what you want)"
    )]
    EmptySource {
        /// The project.
        project: String,
        /// How many resources it owns.
        owned: usize,
    },
}

/// The host name of replica `replica` (from 1) of container `resource`:
/// `web`, `web-2`, `web-3`… so scaling up never renames the first one.
pub fn instance_name(resource: &str, replica: u32) -> String {
    if replica <= 1 {
        resource.to_string()
    } else {
        format!("{resource}-{replica}")
    }
}

/// The crash-loop backoff before restart number `restarts + 1`.
pub fn restart_delay(restarts: u32) -> Duration {
    RESTART_BACKOFF_BASE
        .checked_mul(1u32.checked_shl(restarts).unwrap_or(u32::MAX))
        .unwrap_or(RESTART_BACKOFF_MAX)
        .min(RESTART_BACKOFF_MAX)
}

/// Compares what the manifests want with what the host has.
pub fn diff(
    desired: &DesiredState,
    observed: &Observed,
    opts: &DiffOptions<'_>,
) -> Result<Plan, DiffError> {
    let project = opts.project;
    let mine = |p: &Option<String>| p.as_deref() == Some(project);
    if desired.is_empty() && !opts.allow_empty && observed.owns_anything(project) {
        let owned = observed
            .networks
            .values()
            .filter(|n| mine(&n.project))
            .count()
            + observed
                .volumes
                .values()
                .filter(|v| mine(&v.project))
                .count()
            + observed
                .containers
                .values()
                .filter(|c| mine(&c.project))
                .count();
        return Err(DiffError::EmptySource {
            project: project.to_string(),
            owned,
        });
    }

    let mut plan = Plan::default();
    let mut blocked_deps: BTreeSet<(Kind, String)> = BTreeSet::new();
    let mut replaced_networks: BTreeSet<String> = BTreeSet::new();

    // Images built from a Dockerfile: built when missing, or when what
    // they are built from changed since (never pulled).
    let mut built: BTreeSet<String> = BTreeSet::new();
    for i in desired.images.values().filter(|i| i.spec.build.is_some()) {
        let reference = i.spec.reference.to_string();
        if !built.insert(reference.clone()) {
            continue;
        }
        let have = observed.images.get(&reference);
        match observed.builds.get(&reference) {
            Some(Err(message)) => {
                plan.block(
                    Kind::Image,
                    &reference,
                    Reason::BuildUnreadable {
                        message: message.clone(),
                    },
                );
                blocked_deps.insert((Kind::Image, reference));
            }
            _ if have.is_none() => {
                plan.push(
                    Kind::Image,
                    &reference,
                    Verb::Build,
                    Reason::NotInImageStore,
                );
            }
            // The inputs were not read (`observe` was not asked): the image
            // is there, which is all that can be known.
            None => {}
            Some(Ok(want)) => match have.and_then(|h| h.built_from.as_ref()) {
                None => plan.push(
                    Kind::Image,
                    &reference,
                    Verb::Build,
                    Reason::BuildChanged {
                        changes: vec![
                            "the image in the store was not built from the manifests".into(),
                        ],
                    },
                ),
                Some(from) if from.digest != want.digest => plan.push(
                    Kind::Image,
                    &reference,
                    Verb::Build,
                    Reason::BuildChanged {
                        changes: want.changes_since(from),
                    },
                ),
                Some(_) => {}
            },
        }
    }

    // Images: every declared image and every image a container runs.
    let mut images: BTreeMap<String, PullPolicy> = BTreeMap::new();
    for i in desired.images.values() {
        if !built.contains(&i.spec.reference.to_string()) {
            images.insert(i.spec.reference.to_string(), i.spec.pull);
        }
    }
    for c in desired.containers.values() {
        let policy = c
            .spec
            .image_entry
            .as_ref()
            .and_then(|e| desired.images.get(e))
            .map_or(PullPolicy::IfNotPresent, |i| i.spec.pull);
        if !built.contains(&c.spec.image.to_string()) {
            images.entry(c.spec.image.to_string()).or_insert(policy);
        }
    }
    for (reference, policy) in &images {
        match (observed.images.get(reference), policy) {
            (None, PullPolicy::Never) => {
                plan.block(Kind::Image, reference, Reason::PullNever);
                blocked_deps.insert((Kind::Image, reference.clone()));
            }
            (None, _) => plan.push(Kind::Image, reference, Verb::Pull, Reason::NotInImageStore),
            (Some(img), PullPolicy::Always) => {
                if let Some(remote) = img.remote_digest.as_ref().filter(|r| **r != img.digest) {
                    plan.push(
                        Kind::Image,
                        reference,
                        Verb::Pull,
                        Reason::TagMoved {
                            digest: remote.clone(),
                        },
                    );
                }
            }
            (Some(_), _) => {}
        }
    }

    // A build on a base image that is blocked (`pull = "never"` and not
    // in the store) is blocked too, rather than fail trying to pull it.
    let on_blocked: Vec<(String, String)> = plan
        .actions
        .iter()
        .filter(|a| a.kind == Kind::Image && a.verb == Verb::Build)
        .filter_map(|a| {
            let Some(Ok(want)) = observed.builds.get(&a.name) else {
                return None;
            };
            want.bases
                .keys()
                .find(|b| blocked_deps.contains(&(Kind::Image, (*b).clone())))
                .map(|b| (a.name.clone(), b.clone()))
        })
        .collect();
    for (name, base) in on_blocked {
        plan.actions
            .retain(|a| !(a.kind == Kind::Image && a.verb == Verb::Build && a.name == name));
        plan.block(
            Kind::Image,
            &name,
            Reason::DependencyBlocked {
                kind: Kind::Image,
                name: base,
            },
        );
        blocked_deps.insert((Kind::Image, name));
    }

    // Networks.
    for (name, net) in &desired.networks {
        match observed.networks.get(name) {
            None => plan.push(Kind::Network, name, Verb::Create, Reason::NotOnHost),
            Some(o) if !mine(&o.project) => {
                plan.block(Kind::Network, name, foreign(&o.project));
                blocked_deps.insert((Kind::Network, name.clone()));
            }
            Some(o) => {
                let reason = if o.spec_hash.as_ref() != Some(&net.hash) {
                    Some(Reason::SpecChanged { fields: Vec::new() })
                } else {
                    o.fault.clone().map(|message| Reason::Fault { message })
                };
                if let Some(reason) = reason {
                    plan.push(Kind::Network, name, Verb::Replace, reason);
                    replaced_networks.insert(name.clone());
                }
            }
        }
    }

    // Volumes.
    for name in desired.volumes.keys() {
        match observed.volumes.get(name) {
            None => plan.push(Kind::Volume, name, Verb::Create, Reason::NotOnHost),
            Some(o) if !mine(&o.project) => {
                plan.block(Kind::Volume, name, foreign(&o.project));
                blocked_deps.insert((Kind::Volume, name.clone()));
            }
            Some(o) => {
                // A volume's data is never thrown away because a label changed:
                // only a missing directory is repaired.
                if let Some(fault) = &o.fault {
                    let reason = Reason::Fault {
                        message: fault.clone(),
                    };
                    plan.push(Kind::Volume, name, Verb::Create, reason);
                }
            }
        }
    }

    // Containers, one instance per replica.
    let mut desired_instances: BTreeSet<String> = BTreeSet::new();
    for (resource, c) in &desired.containers {
        let spec = &c.spec;
        let image = spec.image.to_string();
        let digest = observed.images.get(&image).map(|i| i.digest.as_str());
        let blocked_by = blocked_dependency(spec, &image, &blocked_deps).or_else(|| {
            // `container:NAME` joins the network namespace of whatever the
            // host calls NAME: never that of a container another project
            // owns (one of the same name declared here is blocked itself).
            match &spec.network_mode {
                NetworkMode::Container(t) => observed
                    .containers
                    .get(t)
                    .filter(|o| !mine(&o.project))
                    .map(|_| Reason::DependencyBlocked {
                        kind: Kind::Container,
                        name: t.clone(),
                    }),
                _ => None,
            }
        });
        for replica in 1..=spec.replicas {
            let name = instance_name(resource, replica);
            desired_instances.insert(name.clone());
            if let Some(reason) = &blocked_by {
                plan.block(Kind::Container, &name, reason.clone());
                continue;
            }
            let Some(o) = observed.containers.get(&name) else {
                plan.push(Kind::Container, &name, Verb::Create, Reason::NotOnHost);
                continue;
            };
            if !mine(&o.project) {
                plan.block(Kind::Container, &name, foreign(&o.project));
                continue;
            }
            let before = plan.actions.len();
            if let Some(reason) = replace_reason(spec, &c.hash, digest, o, &replaced_networks) {
                match update_order(spec, o, &replaced_networks) {
                    Order::StartFirst => plan.push_start_first(&name, reason),
                    Order::StopFirst(None) => {
                        plan.push(Kind::Container, &name, Verb::Replace, reason);
                    }
                    Order::StopFirst(Some(because)) => plan.push(
                        Kind::Container,
                        &name,
                        Verb::Replace,
                        Reason::StopFirst {
                            reason: Box::new(reason),
                            because,
                        },
                    ),
                }
            } else {
                restart(&mut plan, &name, spec, o, opts.now);
            }
            // Instances an interrupted start-first update left behind. One
            // whose id is the instance name itself (made before ids existed)
            // cannot have an action of its own beside this instance's: the
            // instance's action removes it first (see apply).
            let acted = plan.actions.len() > before;
            for s in observed.superseded_of(&name) {
                let id = s.host_id();
                if mine(&s.project) && (id != name || !acted) {
                    plan.push(
                        Kind::Container,
                        id,
                        Verb::Remove,
                        Reason::Superseded {
                            by: o.host_id().to_string(),
                        },
                    );
                }
            }
        }
    }

    gate_on_jobs(&mut plan, desired, observed);

    // Removals: only what this project created.
    for (name, o) in &observed.containers {
        if mine(&o.project) && !desired_instances.contains(name) {
            let reason = match desired.containers.get(&o.resource) {
                Some(c) => Reason::BeyondReplicas {
                    resource: o.resource.clone(),
                    replica: o.replica,
                    replicas: c.spec.replicas,
                },
                None => Reason::NotInManifests,
            };
            plan.push(Kind::Container, name, Verb::Remove, reason);
        }
    }
    for (name, o) in &observed.networks {
        if mine(&o.project) && !desired.networks.contains_key(name) {
            plan.push(Kind::Network, name, Verb::Remove, Reason::NotInManifests);
        }
    }
    for (name, o) in &observed.volumes {
        if mine(&o.project) && !desired.volumes.contains_key(name) {
            if opts.remove_volumes {
                plan.push(Kind::Volume, name, Verb::Remove, Reason::VolumesRemoved);
            } else if o.prune {
                plan.push(Kind::Volume, name, Verb::Remove, Reason::Pruned);
            }
        }
    }

    plan.sort();
    Ok(plan)
}

/// `depends_on = { job = "completed" }`: a dependant's action waits (in
/// apply) for a job that runs or is (re)run by this plan, goes ahead after
/// the job exited 0, and is blocked after any other exit — or while the job
/// itself is blocked — with the job's exit as the reason. A dependant that
/// needs no action is left alone: it completed its wait before.
fn gate_on_jobs(plan: &mut Plan, desired: &DesiredState, observed: &Observed) {
    let mut gated: Vec<(String, Reason)> = Vec::new();
    for (resource, c) in &desired.containers {
        let why = c
            .spec
            .depends_on
            .iter()
            .filter(|(_, cond)| **cond == DependCondition::Completed)
            .find_map(|(job, _)| job_failure(job, desired, observed, plan));
        let Some(why) = why else { continue };
        for replica in 1..=c.spec.replicas {
            gated.push((instance_name(resource, replica), why.clone()));
        }
    }
    for (name, why) in gated {
        let before = plan.actions.len();
        plan.actions
            .retain(|a| a.kind != Kind::Container || a.name != name || a.verb == Verb::Remove);
        if plan.actions.len() < before {
            plan.block(Kind::Container, name, why);
        }
    }
}

/// Why job `job` keeps its dependants from starting, if it does: it exited
/// non-zero (and this plan does not run it again), or it is blocked.
fn job_failure(
    job: &str,
    desired: &DesiredState,
    observed: &Observed,
    plan: &Plan,
) -> Option<Reason> {
    let replicas = desired.containers.get(job).map_or(1, |c| c.spec.replicas);
    (1..=replicas).find_map(|r| {
        let name = instance_name(job, r);
        let runs = plan.actions.iter().any(|a| {
            a.kind == Kind::Container
                && a.name == name
                && matches!(a.verb, Verb::Create | Verb::Replace | Verb::Start)
        });
        if runs {
            return None;
        }
        let blocked = plan
            .blocked
            .iter()
            .any(|b| b.kind == Kind::Container && b.name == name);
        let state = match observed.containers.get(&name).map(|o| o.state) {
            Some(ContainerState::Exited { code, .. }) if code != 0 => {
                let restarting = !blocked
                    && desired
                        .containers
                        .get(job)
                        .is_some_and(|c| c.spec.restart.restarts_after(code));
                JobState::Exited { code, restarting }
            }
            _ if blocked => JobState::Blocked,
            None => JobState::Missing,
            Some(_) => return None,
        };
        Some(Reason::Job { job: name, state })
    })
}

fn foreign(project: &Option<String>) -> Reason {
    Reason::NameTaken {
        project: project.clone(),
    }
}

fn blocked_dependency(
    spec: &ContainerSpec,
    image: &str,
    blocked: &BTreeSet<(Kind, String)>,
) -> Option<Reason> {
    let volumes = spec.mounts.iter().filter_map(|m| match &m.source {
        moor_spec::MountSource::Volume { name } => Some((Kind::Volume, name.clone())),
        _ => None,
    });
    std::iter::once((Kind::Image, image.to_string()))
        .chain(
            spec.networks
                .iter()
                .map(|a| (Kind::Network, a.network.clone())),
        )
        .chain(volumes)
        .find(|dep| blocked.contains(dep))
        .map(|(kind, name)| Reason::DependencyBlocked { kind, name })
}

/// Why an existing instance must be replaced, if it must.
fn replace_reason(
    spec: &ContainerSpec,
    hash: &SpecHash,
    digest: Option<&str>,
    o: &ObservedContainer,
    replaced_networks: &BTreeSet<String>,
) -> Option<Reason> {
    if o.state == ContainerState::Created && o.hold.is_none() {
        // moor creates and starts in one step: a container that was never
        // started is what an interrupted create left behind — unless a
        // person's `moor start` is starting it right now (it is held).
        return Some(Reason::InterruptedCreate);
    }
    if o.state == ContainerState::Dead {
        return Some(Reason::SupervisorLost);
    }
    if let Some(fault) = &o.fault {
        return Some(Reason::Fault {
            message: fault.clone(),
        });
    }
    // Before the image is pulled its digest is unknown: the pull is planned,
    // and the spec alone decides (the next pass compares digests).
    let Some(digest) = digest else {
        return match &o.spec {
            // Only the tag or digest of the same repository changed (an
            // image update's pin): whether the image really differs is
            // known once it is pulled, in the next pass — a new index
            // whose image for this platform is the same replaces nothing.
            Some(old)
                if old.image.name() == spec.image.name()
                    && changed_fields(old, spec) == ["image"] =>
            {
                None
            }
            Some(old) if moor_spec::hash::container(old) != *hash => Some(spec_changed(old, spec)),
            _ => None,
        };
    };
    if hash.with_image_digest(digest) != o.hash {
        let image_changed = || Reason::ImageChanged {
            digest: digest.to_string(),
        };
        return Some(match &o.spec {
            Some(old) if old.image == spec.image && *hash == moor_spec::hash::container(old) => {
                image_changed()
            }
            Some(old) if changed_fields(old, spec).is_empty() => image_changed(),
            Some(old) => spec_changed(old, spec),
            None => Reason::SpecChanged { fields: Vec::new() },
        });
    }
    let on_replaced: Vec<String> = o
        .networks
        .iter()
        .filter(|n| replaced_networks.contains(*n))
        .cloned()
        .collect();
    if !on_replaced.is_empty() {
        return Some(Reason::NetworkRecreated {
            networks: on_replaced,
        });
    }
    None
}

/// How a container is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Order {
    /// The new instance starts (and becomes healthy) before the old one goes.
    StartFirst,
    /// The old instance goes first; with the reason when the spec asked for
    /// start-first but cannot have it.
    StopFirst(Option<StopFirstCause>),
}

/// How `o` is replaced with an instance of `spec`. Start-first when the spec
/// asks for it and the old instance serves (runs, plugged in, on networks that
/// stay), unless the two instances cannot run side by side: a host port both
/// publish, an address both claim, or one network namespace both share (the
/// new one could not bind what the old one holds). Then stop-first, and the
/// plan's reason says why: Swarm leaves such an update pending for ever, but
/// a manifest that asked for less downtime should still be applied, with the
/// downtime it cannot avoid, rather than never (or be refused after being
/// valid for years).
fn update_order(
    spec: &ContainerSpec,
    o: &ObservedContainer,
    replaced_networks: &BTreeSet<String>,
) -> Order {
    if spec.update_order != UpdateOrder::StartFirst {
        return Order::StopFirst(None);
    }
    let serving = o.state == ContainerState::Running
        && o.fault.is_none()
        && !o.networks.iter().any(|n| replaced_networks.contains(n));
    if !serving {
        return Order::StopFirst(None);
    }
    let old = o.spec.as_ref().unwrap_or(spec);
    for mode in [&spec.network_mode, &old.network_mode] {
        match mode {
            NetworkMode::Host => return Order::StopFirst(Some(StopFirstCause::HostNetwork)),
            NetworkMode::Container(t) => {
                return Order::StopFirst(Some(StopFirstCause::SharedNamespace {
                    target: t.clone(),
                }));
            }
            NetworkMode::Bridge | NetworkMode::None => {}
        }
    }
    if let Some(p) = spec
        .ports
        .iter()
        .find(|p| old.ports.iter().any(|q| p.conflicts_with(q)))
    {
        return Order::StopFirst(Some(StopFirstCause::HostPort {
            port: p.host_port.unwrap_or_default(),
            protocol: p.protocol,
        }));
    }
    for a in &spec.networks {
        let Some(ip) = a.ipv4_address else { continue };
        if old
            .networks
            .iter()
            .any(|b| b.network == a.network && b.ipv4_address == Some(ip))
        {
            return Order::StopFirst(Some(StopFirstCause::Address {
                ip,
                network: a.network.clone(),
            }));
        }
    }
    Order::StartFirst
}

fn spec_changed(old: &ContainerSpec, new: &ContainerSpec) -> Reason {
    Reason::SpecChanged {
        fields: changed_fields(old, new),
    }
}

/// The fields that differ between two specs, as paths: `env.GREETING`, `ports`.
pub fn changed_fields(old: &ContainerSpec, new: &ContainerSpec) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x == y {
            continue;
        }
        match (x, y) {
            (Some(serde_json::Value::Object(x)), Some(serde_json::Value::Object(y)))
                if k == "env" || k == "labels" =>
            {
                let sub: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                out.extend(
                    sub.into_iter()
                        .filter(|s| x.get(*s) != y.get(*s))
                        .map(|s| format!("{k}.{s}")),
                );
            }
            _ => out.push(k.clone()),
        }
    }
    out
}

/// Restart policies with crash-loop backoff. A container stopped on
/// purpose (`moor stop`) stays stopped, whatever its policy.
fn restart(
    plan: &mut Plan,
    name: &str,
    spec: &ContainerSpec,
    o: &ObservedContainer,
    now: SystemTime,
) {
    if o.hold == Some(Hold::Stopped) {
        return;
    }
    let code = match o.state {
        // Created (never started) is redone by `replace_reason`.
        ContainerState::Running | ContainerState::Dead | ContainerState::Created => return,
        ContainerState::Exited { code, .. } => code,
    };
    match spec.restart {
        // A one-shot job that did its work; one that failed stays failed.
        RestartPolicy::No if code == 0 => return,
        RestartPolicy::No => {
            let oom = matches!(o.state, ContainerState::Exited { oom: true, .. });
            plan.block(Kind::Container, name, Reason::ExitedNoRestart { code, oom });
            return;
        }
        RestartPolicy::OnFailure { max_retries } => {
            if code == 0 {
                return;
            }
            if let Some(max) = max_retries
                && o.restart_count >= max
            {
                let reason = Reason::GaveUp {
                    code,
                    max_retries: max,
                };
                plan.block(Kind::Container, name, reason);
                return;
            }
        }
        RestartPolicy::Always | RestartPolicy::UnlessStopped => {}
    }
    // A container that ran long enough before exiting is not crash-looping.
    let ran = match (o.started_at, o.finished_at) {
        (Some(s), Some(f)) => f.duration_since(s).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    let restarts = if ran >= RESTART_BACKOFF_RESET {
        0
    } else {
        o.restart_count
    };
    let due = o.finished_at.map(|f| f + restart_delay(restarts));
    match due.and_then(|d| d.duration_since(now).ok()) {
        Some(wait) if !wait.is_zero() => plan.requeue(wait),
        _ => plan.push(
            Kind::Container,
            name,
            Verb::Start,
            Reason::Exited {
                code,
                restart: spec.restart,
            },
        ),
    }
}
