//! Apply: carry out a plan in dependency order, independent actions
//! concurrently (bounded), each failure confined to its resource and what
//! depends on it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use moor_spec::{ContainerSpec, DependCondition, DesiredState, Kind, MountSource, NetworkMode};
use tracing::Instrument;

use crate::diff::instance_name;
use crate::observed::{ContainerState, Health, Observed, ObservedContainer};
use crate::plan::{Action, Plan, Verb};
use crate::runtime::{Instance, Runtime, RuntimeError};

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The project that owns what is created.
    pub project: String,
    /// How many actions may run at once.
    pub concurrency: usize,
    /// How long to wait for a `depends_on = "healthy"` dependency.
    pub health_timeout: Duration,
    /// How often to look at a dependency's health while waiting.
    pub health_poll: Duration,
    /// How long to wait for a `depends_on = "completed"` job to exit.
    pub completion_timeout: Duration,
}

impl ApplyOptions {
    /// Defaults for `project`: 8 actions at once, 2 minutes for health,
    /// 10 minutes for a job to complete.
    pub fn new(project: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            concurrency: 8,
            health_timeout: Duration::from_secs(120),
            health_poll: Duration::from_millis(100),
            completion_timeout: Duration::from_secs(600),
        }
    }
}

/// What happened to one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The action.
    pub action: Action,
    /// `Ok`, or why it failed (or was skipped because a dependency failed).
    pub result: Result<(), String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Why an action failed: the runtime's error, or what apply itself found.
/// Its text is the outcome's message ([`Outcome::result`]).
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// An image action names no valid reference.
    #[error("{0}")]
    Reference(String),
    /// The action's resource is not in the desired state.
    #[error("{kind} {name} is not in the desired state")]
    NotDesired {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// A plan cannot ask for this verb on this kind.
    #[error("cannot {verb} a {kind}")]
    Unsupported {
        /// The verb.
        verb: Verb,
        /// The kind.
        kind: Kind,
    },
    /// The container's image has no digest: it was not pulled.
    #[error("image {image} is not in the image store")]
    NotPulled {
        /// The image reference.
        image: String,
    },
    /// A container the action waits for (`depends_on`) did not get ready.
    #[error("dependency {name} {failure}")]
    Dependency {
        /// The dependency's instance name.
        name: String,
        /// What became of it.
        failure: DependencyFailure,
    },
    /// The new instance of a start-first update reported unhealthy.
    #[error("it is unhealthy")]
    Unhealthy,
    /// The new instance of a start-first update was not healthy in time.
    #[error("it did not become healthy within {0:?}")]
    NotHealthy(Duration),
    /// The new instance of a start-first update failed; the old one runs on.
    #[error(
        "start-first update: the new instance {new} failed: {error}{}; {old} keeps running",
        cleanup.as_ref().map(|r| format!(" (and removing it failed: {r})")).unwrap_or_default()
    )]
    StartFirst {
        /// The new instance's id.
        new: String,
        /// Why it failed (part of this message, so not its source).
        error: Box<ApplyError>,
        /// Why removing it failed, if it did.
        cleanup: Option<RuntimeError>,
        /// The old instance's id.
        old: String,
    },
}

/// What became of a dependency that an action waited for in vain.
#[derive(Debug)]
enum DependencyFailure {
    /// It exited non-zero (`depends_on = "completed"`).
    Exited {
        /// Its exit code.
        code: i32,
        /// The out-of-memory killer ended it.
        oom: bool,
    },
    /// Its supervisor is gone.
    Lost,
    /// It is not on the host.
    Missing,
    /// It still ran when the wait ended.
    NotCompleted(Duration),
    /// It was not healthy when the wait ended.
    NotHealthy(Duration, Health),
}

impl std::fmt::Display for DependencyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DependencyFailure::Exited { code, oom } => {
                let oom = if *oom { " (out of memory)" } else { "" };
                write!(f, "exited {code}{oom}")
            }
            DependencyFailure::Lost => f.write_str("lost its supervisor before it completed"),
            DependencyFailure::Missing => f.write_str("is not on the host"),
            DependencyFailure::NotCompleted(within) => {
                write!(
                    f,
                    "did not complete within {within:?} (it is still running)"
                )
            }
            DependencyFailure::NotHealthy(within, last) => {
                let state = match last {
                    Health::Unhealthy => "unhealthy",
                    Health::None => "without a health status",
                    _ => "still starting",
                };
                write!(
                    f,
                    "did not become healthy within {within:?} (it is {state})"
                )
            }
        }
    }
}

/// Default stop settings for containers whose spec the store no longer has.
const DEFAULT_STOP_SIGNAL: &str = "SIGTERM";
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs `plan` against `rt`. Returns one outcome per action, in completion order.
pub async fn apply<R: Runtime>(
    rt: &R,
    plan: &Plan,
    desired: &DesiredState,
    observed: &Observed,
    opts: &ApplyOptions,
) -> Vec<Outcome> {
    let actions = &plan.actions;
    let graph = Graph::build(actions, desired, observed);
    let digests: Mutex<HashMap<String, String>> = Mutex::new(
        observed
            .images
            .iter()
            .map(|(r, i)| (r.clone(), i.digest.clone()))
            .collect(),
    );
    let ctx = Ctx {
        rt,
        desired,
        observed,
        opts,
        digests: &digests,
        instances: instances(desired),
        removals: actions
            .iter()
            .filter(|a| a.kind == Kind::Container && a.verb == Verb::Remove)
            .map(|a| a.name.as_str())
            .collect(),
    };

    let mut indegree: Vec<usize> = graph.deps.iter().map(Vec::len).collect();
    let mut failed_dep: Vec<Option<String>> = vec![None; actions.len()];
    let mut ready: VecDeque<usize> = (0..actions.len()).filter(|&i| indegree[i] == 0).collect();
    let mut outcomes = Vec::with_capacity(actions.len());
    let mut running = FuturesUnordered::new();
    let mut done = vec![false; actions.len()];

    loop {
        while running.len() < opts.concurrency.max(1) {
            let Some(i) = ready.pop_front() else { break };
            if let Some(why) = failed_dep[i].take() {
                // Skipped: complete it at once so its dependents learn.
                let a = &actions[i];
                tracing::warn!(kind = %a.kind, resource = %a.name, verb = %a.verb, "{why}");
                done[i] = true;
                outcomes.push(Outcome {
                    action: actions[i].clone(),
                    result: Err(why.clone()),
                    elapsed: Duration::ZERO,
                });
                release(
                    i,
                    &Err(why),
                    &graph,
                    &mut indegree,
                    &mut failed_dep,
                    &mut ready,
                    actions,
                );
                continue;
            }
            let ctx = &ctx;
            let a = &actions[i];
            let span = tracing::info_span!(
                "action",
                kind = %a.kind,
                resource = %a.name,
                verb = %a.verb,
            );
            running.push(
                async move {
                    let start = Instant::now();
                    let result = ctx.run(a).await.map_err(|e| e.to_string());
                    let elapsed = start.elapsed();
                    let ms = elapsed.as_secs_f64() * 1e3;
                    match &result {
                        Ok(()) => tracing::info!(reason = %a.reason, elapsed_ms = ms, "done"),
                        Err(e) => tracing::warn!(reason = %a.reason, elapsed_ms = ms, error = %e, "failed"),
                    }
                    (i, result, elapsed)
                }
                .instrument(span),
            );
        }
        let Some((i, result, elapsed)) = running.next().await else {
            break;
        };
        done[i] = true;
        release(
            i,
            &result,
            &graph,
            &mut indegree,
            &mut failed_dep,
            &mut ready,
            actions,
        );
        outcomes.push(Outcome {
            action: actions[i].clone(),
            result,
            elapsed,
        });
    }
    // Anything left waits on a cycle among removals (manifests cannot have one).
    for (i, a) in actions.iter().enumerate() {
        if !done[i] {
            outcomes.push(Outcome {
                action: a.clone(),
                result: Err("not applied: its dependencies form a cycle".to_string()),
                elapsed: Duration::ZERO,
            });
        }
    }
    outcomes
}

fn release(
    i: usize,
    result: &Result<(), String>,
    graph: &Graph,
    indegree: &mut [usize],
    failed_dep: &mut [Option<String>],
    ready: &mut VecDeque<usize>,
    actions: &[Action],
) {
    for &d in &graph.dependents[i] {
        if result.is_err() && failed_dep[d].is_none() {
            let a = &actions[i];
            failed_dep[d] = Some(format!(
                "skipped: {} of {} {} failed",
                a.verb, a.kind, a.name
            ));
        }
        indegree[d] -= 1;
        if indegree[d] == 0 {
            ready.push_back(d);
        }
    }
}

/// Which action must finish before which.
struct Graph {
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    fn build(actions: &[Action], desired: &DesiredState, observed: &Observed) -> Self {
        let index: HashMap<(Kind, &str), usize> = actions
            .iter()
            .enumerate()
            .map(|(i, a)| ((a.kind, a.name.as_str()), i))
            .collect();
        let find = |kind: Kind, name: &str| index.get(&(kind, name)).copied();
        let instances = instances(desired);
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); actions.len()];
        for (i, a) in actions.iter().enumerate() {
            let mut add = |j: Option<usize>| {
                if let Some(j) = j.filter(|&j| j != i) {
                    deps[i].push(j);
                }
            };
            match (a.kind, a.verb) {
                (Kind::Image, Verb::Build) => {
                    // After the builds and pulls of the base images it needs
                    // (a cycle of Dockerfiles is reported as one).
                    if let Some(Ok(inputs)) = observed.builds.get(&a.name) {
                        for base in inputs.bases.keys() {
                            add(find(Kind::Image, base));
                        }
                    }
                }
                (Kind::Container, Verb::Remove) => {
                    // Remove dependents before what they depend on.
                    if let Some(o) = observed.containers.get(&a.name) {
                        for (other, oc) in &observed.containers {
                            let depends = oc.spec.as_ref().is_some_and(|s| {
                                s.depends_on.contains_key(&o.resource)
                                    || s.network_mode == NetworkMode::Container(o.resource.clone())
                            });
                            if depends
                                && let Some(j) = find(Kind::Container, other)
                                    .filter(|&j| actions[j].verb == Verb::Remove)
                            {
                                add(Some(j));
                            }
                        }
                    }
                }
                (Kind::Container, _) => {
                    let Some((resource, _)) = instances.get(a.name.as_str()) else {
                        continue;
                    };
                    // After the removal of instances an interrupted update left.
                    for s in observed.superseded_of(&a.name) {
                        add(find(Kind::Container, &s.host_id())
                            .filter(|&j| actions[j].verb == Verb::Remove));
                    }
                    let spec = &desired.containers[*resource].spec;
                    add(find(Kind::Image, &spec.image.to_string()));
                    for n in &spec.networks {
                        add(find(Kind::Network, &n.network));
                    }
                    for m in &spec.mounts {
                        if let MountSource::Volume { name } = &m.source {
                            add(find(Kind::Volume, name));
                        }
                    }
                    for target in dependencies(spec).into_iter().map(|(t, _)| t) {
                        if let Some(c) = desired.containers.get(target) {
                            for r in 1..=c.spec.replicas {
                                add(find(Kind::Container, &instance_name(target, r)));
                            }
                        }
                    }
                }
                (Kind::Network | Kind::Volume, Verb::Remove) => {
                    // After every container that uses it is gone.
                    let superseded = observed.superseded.iter();
                    for (name, oc) in observed.containers.iter().chain(superseded) {
                        let uses = match a.kind {
                            Kind::Network => oc.networks.contains(&a.name),
                            _ => oc.volumes.contains(&a.name),
                        };
                        if uses {
                            add(find(Kind::Container, name).filter(|&j| {
                                matches!(actions[j].verb, Verb::Remove | Verb::Replace)
                            }));
                        }
                    }
                }
                _ => {}
            }
        }
        let mut dependents = vec![Vec::new(); actions.len()];
        for (i, ds) in deps.iter_mut().enumerate() {
            ds.sort_unstable();
            ds.dedup();
            for &d in ds.iter() {
                dependents[d].push(i);
            }
        }
        Graph { deps, dependents }
    }
}

/// Instance name → (resource, replica) for every desired container instance.
fn instances(desired: &DesiredState) -> BTreeMap<String, (&String, u32)> {
    let mut out = BTreeMap::new();
    for (name, c) in &desired.containers {
        for r in 1..=c.spec.replicas {
            out.insert(instance_name(name, r), (name, r));
        }
    }
    out
}

/// The containers `spec` waits for, and for what.
fn dependencies(spec: &ContainerSpec) -> Vec<(&str, DependCondition)> {
    let mut out: Vec<(&str, DependCondition)> = spec
        .depends_on
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    if let NetworkMode::Container(t) = &spec.network_mode
        && !spec.depends_on.contains_key(t)
    {
        out.push((t, DependCondition::Started));
    }
    out
}

struct Ctx<'a, R> {
    rt: &'a R,
    desired: &'a DesiredState,
    observed: &'a Observed,
    opts: &'a ApplyOptions,
    digests: &'a Mutex<HashMap<String, String>>,
    instances: BTreeMap<String, (&'a String, u32)>,
    /// The containers the plan removes with actions of their own.
    removals: BTreeSet<&'a str>,
}

impl<R: Runtime> Ctx<'_, R> {
    async fn run(&self, a: &Action) -> Result<(), ApplyError> {
        let project = self.opts.project.as_str();
        match (a.kind, a.verb) {
            (Kind::Image, Verb::Pull) => {
                let reference =
                    moor_spec::reference::parse(&a.name).map_err(ApplyError::Reference)?;
                // Every `[images]` entry of this reference that asks for
                // a signature adds its key: each must verify.
                let verify: Vec<_> = self
                    .desired
                    .images
                    .values()
                    .filter(|i| i.spec.reference == reference)
                    .filter_map(|i| i.spec.verify.clone())
                    .collect();
                let digest = self.rt.pull(&reference, &verify).await?;
                self.digests
                    .lock()
                    .expect("digest map poisoned")
                    .insert(a.name.clone(), digest);
                Ok(())
            }
            (Kind::Image, Verb::Build) => {
                let image = self
                    .desired
                    .images
                    .values()
                    .find(|i| i.spec.build.is_some() && i.spec.reference.to_string() == a.name)
                    .ok_or_else(|| missing(a))?;
                let build = image.spec.build.as_ref().ok_or_else(|| missing(a))?;
                let digest = self.rt.build(&image.spec.reference, build).await?;
                self.digests
                    .lock()
                    .expect("digest map poisoned")
                    .insert(a.name.clone(), digest);
                Ok(())
            }
            (Kind::Network, Verb::Create | Verb::Replace) => {
                let net = self
                    .desired
                    .networks
                    .get(&a.name)
                    .ok_or_else(|| missing(a))?;
                if a.verb == Verb::Replace {
                    self.rt.remove_network(&a.name).await?;
                }
                Ok(self.rt.create_network(project, net).await?)
            }
            (Kind::Network, Verb::Remove) => Ok(self.rt.remove_network(&a.name).await?),
            (Kind::Volume, Verb::Create) => {
                let vol = self
                    .desired
                    .volumes
                    .get(&a.name)
                    .ok_or_else(|| missing(a))?;
                Ok(self.rt.create_volume(project, vol).await?)
            }
            (Kind::Volume, Verb::Remove) => Ok(self.rt.remove_volume(&a.name).await?),
            (Kind::Container, Verb::Create | Verb::Replace | Verb::Start) => {
                let (resource, replica) = *self.instances.get(&a.name).ok_or_else(|| missing(a))?;
                let c = &self.desired.containers[resource];
                self.wait_for_dependencies(&c.spec).await?;
                self.remove_superseded(&a.name).await?;
                let current = self.current_id(&a.name);
                if a.verb == Verb::Start {
                    return Ok(self.rt.start_container(&current).await?);
                }
                let image = c.spec.image.to_string();
                let digest = self
                    .digests
                    .lock()
                    .expect("digest map poisoned")
                    .get(&image)
                    .cloned()
                    .ok_or(ApplyError::NotPulled { image })?;
                let hash = c.hash.with_image_digest(&digest);
                let mut instance = Instance {
                    name: a.name.clone(),
                    id: a.name.clone(),
                    resource,
                    replica,
                    spec: &c.spec,
                    hash,
                    image_digest: digest,
                };
                if a.verb == Verb::Replace && a.start_first {
                    let id = start_first_id(&a.name, &instance.hash);
                    // The same id would be the same instance hash: nothing
                    // new to start first (and no room for two), so stop-first.
                    if id != current {
                        instance.id = id;
                        return self.replace_start_first(&instance, &current).await;
                    }
                }
                if a.verb == Verb::Replace {
                    let (signal, grace) = self.stop_settings(&a.name);
                    self.rt.remove_container(&current, signal, grace).await?;
                }
                Ok(self.rt.create_container(project, &instance).await?)
            }
            (Kind::Container, Verb::Stop) => {
                let (signal, grace) = self.stop_settings(&a.name);
                Ok(self
                    .rt
                    .stop_container(&self.current_id(&a.name), signal, grace)
                    .await?)
            }
            (Kind::Container, Verb::Remove) => {
                if self.instances.contains_key(&a.name) {
                    // A desired instance's name: the action is on a
                    // superseded instance whose id is that name.
                    let (signal, grace) = stop_settings_of(self.observed.superseded.get(&a.name));
                    return Ok(self.rt.remove_container(&a.name, signal, grace).await?);
                }
                // Every instance of the name, and the superseded instance of that id.
                let mut doomed: Vec<&ObservedContainer> = Vec::new();
                doomed.extend(self.observed.containers.get(&a.name));
                doomed.extend(self.observed.superseded_of(&a.name));
                doomed.extend(self.observed.superseded.get(&a.name));
                if doomed.is_empty() {
                    let (signal, grace) = self.stop_settings(&a.name);
                    return Ok(self.rt.remove_container(&a.name, signal, grace).await?);
                }
                let mut ids: Vec<String> = Vec::new();
                for o in doomed {
                    let id = o.host_id();
                    if !ids.contains(&id) {
                        let (signal, grace) = stop_settings_of(Some(o));
                        self.rt.remove_container(&id, signal, grace).await?;
                        ids.push(id);
                    }
                }
                Ok(())
            }
            (kind, verb) => Err(ApplyError::Unsupported { verb, kind }),
        }
    }

    /// The id on the host of instance `name`'s current container.
    fn current_id(&self, name: &str) -> String {
        self.observed
            .containers
            .get(name)
            .map_or_else(|| name.to_string(), ObservedContainer::host_id)
    }

    /// Removes the instances of `name` an interrupted start-first update
    /// left, but for those removed by actions of their own (which ran first).
    async fn remove_superseded(&self, name: &str) -> Result<(), RuntimeError> {
        for s in self.observed.superseded_of(name) {
            let id = s.host_id();
            if id != name && self.removals.contains(id.as_str()) {
                continue;
            }
            let (signal, grace) = stop_settings_of(Some(s));
            self.rt.remove_container(&id, signal, grace).await?;
        }
        Ok(())
    }

    /// Start-first: creates and starts `new`, waits until it runs and (with a
    /// health check) is healthy, and only then removes the old container
    /// `old`. A new instance that fails is removed and the old one keeps running.
    async fn replace_start_first(&self, new: &Instance<'_>, old: &str) -> Result<(), ApplyError> {
        let project = self.opts.project.as_str();
        let started = match self.rt.create_container(project, new).await {
            Ok(()) => self.wait_serving(new).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = started {
            let (signal, grace) = (new.spec.stop_signal.as_str(), new.spec.stop_grace_period);
            let cleanup = self.rt.remove_container(&new.id, signal, grace).await.err();
            return Err(ApplyError::StartFirst {
                new: new.id.clone(),
                error: Box::new(e),
                cleanup,
                old: old.to_string(),
            });
        }
        let (signal, grace) = self.stop_settings(&new.name);
        Ok(self.rt.remove_container(old, signal, grace).await?)
    }

    /// Waits until the new instance of a start-first update serves: it runs
    /// once created; with a health check, until the check passes (failing at
    /// once when it reports unhealthy, or after the health timeout).
    async fn wait_serving(&self, new: &Instance<'_>) -> Result<(), ApplyError> {
        if new.spec.healthcheck.is_none() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.opts.health_timeout;
        loop {
            match self.rt.health(&new.id).await? {
                Health::Healthy => return Ok(()),
                Health::Unhealthy => return Err(ApplyError::Unhealthy),
                Health::None | Health::Starting => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApplyError::NotHealthy(self.opts.health_timeout));
            }
            tokio::time::sleep(self.opts.health_poll).await;
        }
    }

    /// The stop signal and grace period of the running instance: its own
    /// spec's if the store has it, else the desired spec's, else Docker's defaults.
    fn stop_settings(&self, name: &str) -> (&str, Duration) {
        let observed = self
            .observed
            .containers
            .get(name)
            .and_then(|o| o.spec.as_ref());
        let desired = self
            .instances
            .get(name)
            .map(|(r, _)| &*self.desired.containers[*r].spec);
        match observed.or(desired) {
            Some(s) => (s.stop_signal.as_str(), s.stop_grace_period),
            None => (DEFAULT_STOP_SIGNAL, DEFAULT_STOP_GRACE),
        }
    }

    async fn wait_for_dependencies(&self, spec: &ContainerSpec) -> Result<(), ApplyError> {
        for (target, condition) in dependencies(spec) {
            if condition == DependCondition::Started {
                continue;
            }
            let replicas = self
                .desired
                .containers
                .get(target)
                .map_or(1, |c| c.spec.replicas);
            for r in 1..=replicas {
                let name = instance_name(target, r);
                match condition {
                    DependCondition::Healthy => self.wait_healthy(&name).await?,
                    DependCondition::Completed => self.wait_completed(&name).await?,
                    DependCondition::Started => {}
                }
            }
        }
        Ok(())
    }

    /// Waits until job `name` has exited 0; fails at once on another exit.
    async fn wait_completed(&self, name: &str) -> Result<(), ApplyError> {
        let deadline = tokio::time::Instant::now() + self.opts.completion_timeout;
        let failed = |failure| ApplyError::Dependency {
            name: name.to_string(),
            failure,
        };
        loop {
            match self.rt.state(name).await {
                Ok(ContainerState::Exited { code: 0, .. }) => return Ok(()),
                Ok(ContainerState::Exited { code, oom }) => {
                    return Err(failed(DependencyFailure::Exited { code, oom }));
                }
                Ok(ContainerState::Dead) => return Err(failed(DependencyFailure::Lost)),
                Err(RuntimeError::NotFound { .. }) => {
                    return Err(failed(DependencyFailure::Missing));
                }
                Err(e) => return Err(e.into()),
                Ok(ContainerState::Running | ContainerState::Created) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                let within = self.opts.completion_timeout;
                return Err(failed(DependencyFailure::NotCompleted(within)));
            }
            tokio::time::sleep(self.opts.health_poll).await;
        }
    }

    async fn wait_healthy(&self, name: &str) -> Result<(), ApplyError> {
        let deadline = tokio::time::Instant::now() + self.opts.health_timeout;
        let mut last = Health::None;
        loop {
            last = match self.rt.health(name).await {
                Ok(Health::Healthy) => return Ok(()),
                Ok(h) => h,
                Err(RuntimeError::NotFound { .. }) => last,
                Err(e) => return Err(e.into()),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ApplyError::Dependency {
                    name: name.to_string(),
                    failure: DependencyFailure::NotHealthy(self.opts.health_timeout, last),
                });
            }
            tokio::time::sleep(self.opts.health_poll).await;
        }
    }
}

/// The stop signal and grace period of an observed container: its spec's,
/// or Docker's defaults when the store does not have it.
fn stop_settings_of(o: Option<&ObservedContainer>) -> (&str, Duration) {
    match o.and_then(|o| o.spec.as_ref()) {
        Some(s) => (s.stop_signal.as_str(), s.stop_grace_period),
        None => (DEFAULT_STOP_SIGNAL, DEFAULT_STOP_GRACE),
    }
}

/// The id of the new instance of a start-first update of `name`: the name,
/// `--`, and the first 8 hex digits of the instance hash, cut to fit the
/// name limit. Unique beside the old instance, whose hash differs.
pub(crate) fn start_first_id(name: &str, hash: &moor_spec::SpecHash) -> String {
    let short = hash.short();
    let hex = short.get(..8).unwrap_or(short);
    let keep = moor_spec::MAX_NAME_LEN.saturating_sub(hex.len() + 2);
    let mut end = name.len().min(keep);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}--{hex}", &name[..end])
}

fn missing(a: &Action) -> ApplyError {
    ApplyError::NotDesired {
        kind: a.kind,
        name: a.name.clone(),
    }
}
