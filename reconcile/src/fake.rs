//! An in-memory [`Runtime`] for tests: it keeps an [`Observed`] host, records
//! every call, and can be told to fail a call or to report a health sequence.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use moor_spec::{BuildSpec, ImageRef, MountSource, NetworkSpec, Resource, VerifySpec, VolumeSpec};
use sha2::{Digest, Sha256};

use crate::observed::{
    BuildInputs, ContainerState, Health, Observed, ObservedContainer, ObservedImage,
    ObservedNetwork, ObservedVolume,
};
use crate::runtime::{Instance, Runtime, RuntimeError};

/// The fake host.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    host: Observed,
    calls: Vec<String>,
    failures: HashMap<String, VecDeque<RuntimeError>>,
    health: HashMap<String, VecDeque<Health>>,
    states: HashMap<String, VecDeque<(ContainerState, SystemTime)>>,
    registry: HashMap<String, String>,
    /// What each build context (by path) holds now.
    contexts: HashMap<std::path::PathBuf, BuildInputs>,
    /// The verify keys each pull was asked to check, by reference.
    pull_keys: HashMap<String, Vec<std::path::PathBuf>>,
}

/// The digest the fake registry serves for `reference` unless told otherwise.
pub fn default_digest(reference: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(reference.as_bytes()))
    )
}

impl FakeRuntime {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake runtime poisoned")
    }

    /// Every call so far, as `verb name` strings, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Makes the next call `call` (e.g. `"create_container web"`) fail with
    /// `message`, as an error of the kind of thing the call is about.
    pub fn fail_next(&self, call: &str, message: &str) {
        let error: crate::runtime::BoxError = message.into();
        let verb = call.split(' ').next().unwrap_or_default();
        let error = match verb {
            "pull" => RuntimeError::Image(error),
            "build" | "build_inputs" => RuntimeError::Build(error),
            _ if verb.ends_with("_network") => RuntimeError::Network(error),
            _ if verb.ends_with("_volume") => RuntimeError::Volume(error),
            _ if verb.ends_with("_container") || verb == "health" || verb == "state" => {
                RuntimeError::Container(error)
            }
            _ => RuntimeError::Host(error),
        };
        self.lock()
            .failures
            .entry(call.to_string())
            .or_default()
            .push_back(error);
    }

    /// Scripts the health reports of container `name` (the last one repeats).
    pub fn script_health(&self, name: &str, reports: &[Health]) {
        self.lock()
            .health
            .insert(name.to_string(), reports.iter().copied().collect());
    }

    /// Scripts what [`Runtime::state`] reports for container `name`, one
    /// state per call (the last one repeats); each becomes the container's
    /// state on the host when reported (an exit at `SystemTime::now()`),
    /// as a job that runs a while and then exits.
    pub fn script_states(&self, name: &str, states: &[ContainerState]) {
        let now = SystemTime::now();
        self.lock()
            .states
            .insert(name.to_string(), states.iter().map(|s| (*s, now)).collect());
    }

    /// The keys (`[images] verify`) the last pull of `reference` was
    /// asked to check signatures with.
    pub fn pull_keys(&self, reference: &str) -> Vec<std::path::PathBuf> {
        self.lock()
            .pull_keys
            .get(reference)
            .cloned()
            .unwrap_or_default()
    }

    /// Makes the fake registry serve `digest` for `reference`.
    pub fn set_registry_digest(&self, reference: &str, digest: &str) {
        self.lock()
            .registry
            .insert(reference.to_string(), digest.to_string());
    }

    /// Makes the build context at `context` hold what `inputs` says (what
    /// [`Runtime::build_inputs`] reports for it). A build's image digest
    /// follows from the inputs' digest, the build being reproducible.
    pub fn set_build_inputs(&self, context: &std::path::Path, inputs: BuildInputs) {
        self.lock().contexts.insert(context.to_path_buf(), inputs);
    }

    /// Changes the host directly, as a person or a crash would.
    pub fn with_host<T>(&self, f: impl FnOnce(&mut Observed) -> T) -> T {
        f(&mut self.lock().host)
    }

    /// The container's process exits with `code` at `when`.
    pub fn exit(&self, name: &str, code: i32, when: SystemTime) {
        self.with_host(|h| {
            if let Some(c) = h.containers.get_mut(name) {
                c.state = ContainerState::Exited { code, oom: false };
                c.finished_at = Some(when);
            }
        });
    }

    fn record(&self, call: String) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        s.calls.push(call.clone());
        match s.failures.get_mut(&call).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Runtime for FakeRuntime {
    async fn observe(&self) -> Result<Observed, RuntimeError> {
        Ok(self.lock().host.clone())
    }

    async fn pull(
        &self,
        reference: &ImageRef,
        verify: &[VerifySpec],
    ) -> Result<String, RuntimeError> {
        let r = reference.to_string();
        let keys = verify.iter().map(|v| v.key.clone()).collect();
        self.lock().pull_keys.insert(r.clone(), keys);
        self.record(format!("pull {r}"))?;
        let mut s = self.lock();
        // What the registry was told to serve; else a reference that names
        // a digest gets that digest, as from a registry.
        let digest = s
            .registry
            .get(&r)
            .cloned()
            .or_else(|| reference.digest.clone())
            .unwrap_or_else(|| default_digest(&r));
        s.host.images.insert(
            r,
            ObservedImage {
                digest: digest.clone(),
                remote_digest: None,
                built_from: None,
            },
        );
        Ok(digest)
    }

    async fn tag_moved(&self, reference: &ImageRef) -> Result<Option<String>, RuntimeError> {
        let r = reference.to_string();
        self.record(format!("head {r}"))?;
        let s = self.lock();
        let remote = s
            .registry
            .get(&r)
            .cloned()
            .unwrap_or_else(|| default_digest(&r));
        Ok(s.host
            .images
            .get(&r)
            .filter(|local| local.digest != remote)
            .map(|_| remote))
    }

    async fn build_inputs(&self, build: &BuildSpec) -> Result<BuildInputs, RuntimeError> {
        let context = build.context.display().to_string();
        self.record(format!("build_inputs {context}"))?;
        self.lock()
            .contexts
            .get(&build.context)
            .cloned()
            .ok_or_else(|| RuntimeError::Build(format!("no context at {context}").into()))
    }

    async fn build(&self, reference: &ImageRef, build: &BuildSpec) -> Result<String, RuntimeError> {
        let r = reference.to_string();
        self.record(format!("build {r}"))?;
        let mut s = self.lock();
        let inputs = s
            .contexts
            .get(&build.context)
            .cloned()
            .ok_or_else(|| RuntimeError::Build(format!("no context for {r}").into()))?;
        let digest = default_digest(&inputs.digest);
        s.host.images.insert(
            r,
            ObservedImage {
                digest: digest.clone(),
                remote_digest: None,
                built_from: Some(inputs),
            },
        );
        Ok(digest)
    }

    async fn create_network(
        &self,
        project: &str,
        network: &Resource<NetworkSpec>,
    ) -> Result<(), RuntimeError> {
        self.record(format!("create_network {}", network.name))?;
        self.lock().host.networks.insert(
            network.name.clone(),
            ObservedNetwork {
                project: Some(project.to_string()),
                spec_hash: Some(network.hash.clone()),
                fault: None,
            },
        );
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.record(format!("remove_network {name}"))?;
        self.lock().host.networks.remove(name);
        Ok(())
    }

    async fn create_volume(
        &self,
        project: &str,
        volume: &Resource<VolumeSpec>,
    ) -> Result<(), RuntimeError> {
        self.record(format!("create_volume {}", volume.name))?;
        self.lock().host.volumes.insert(
            volume.name.clone(),
            ObservedVolume {
                project: Some(project.to_string()),
                spec_hash: Some(volume.hash.clone()),
                fault: None,
                prune: volume.spec.prune,
            },
        );
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.record(format!("remove_volume {name}"))?;
        self.lock().host.volumes.remove(name);
        Ok(())
    }

    async fn create_container(&self, project: &str, i: &Instance<'_>) -> Result<(), RuntimeError> {
        self.record(format!("create_container {}", i.id))?;
        let volumes = i
            .spec
            .mounts
            .iter()
            .filter_map(|m| match &m.source {
                MountSource::Volume { name } => Some(name.clone()),
                _ => None,
            })
            .collect();
        let c = ObservedContainer {
            id: i.id.clone(),
            project: Some(project.to_string()),
            resource: i.resource.to_string(),
            replica: i.replica,
            hash: i.hash.clone(),
            spec: Some(i.spec.clone()),
            networks: i.spec.networks.iter().map(|n| n.network.clone()).collect(),
            volumes,
            state: ContainerState::Running,
            health: if i.spec.healthcheck.is_some() {
                Health::Starting
            } else {
                Health::None
            },
            restart_count: 0,
            started_at: Some(SystemTime::now()),
            finished_at: None,
            fault: None,
            hold: None,
        };
        // The newest instance of a name is its current one; an older one
        // with another id runs on beside it, superseded.
        let mut s = self.lock();
        if let Some(old) = s.host.containers.insert(i.name.clone(), c)
            && old.host_id() != i.id
        {
            s.host.superseded.insert(old.host_id(), old);
        }
        Ok(())
    }

    async fn start_container(&self, name: &str) -> Result<(), RuntimeError> {
        self.record(format!("start_container {name}"))?;
        let mut s = self.lock();
        let c = find_mut(&mut s.host, name).ok_or_else(|| RuntimeError::NotFound {
            what: format!("container {name}"),
        })?;
        if matches!(c.state, ContainerState::Exited { .. }) {
            c.restart_count += 1;
        }
        c.state = ContainerState::Running;
        c.started_at = Some(SystemTime::now());
        Ok(())
    }

    async fn stop_container(
        &self,
        name: &str,
        signal: &str,
        _grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.record(format!("stop_container {name} {signal}"))?;
        let mut s = self.lock();
        if let Some(c) = find_mut(&mut s.host, name) {
            c.state = ContainerState::Exited {
                code: 143,
                oom: false,
            };
            c.finished_at = Some(SystemTime::now());
        }
        Ok(())
    }

    async fn remove_container(
        &self,
        name: &str,
        signal: &str,
        _grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.record(format!("remove_container {name} {signal}"))?;
        let mut s = self.lock();
        let host = &mut s.host;
        if host.superseded.remove(name).is_some() {
            return Ok(());
        }
        let instance = host
            .containers
            .iter()
            .find(|(_, c)| c.host_id() == name)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| name.to_string());
        if host.containers.remove(&instance).is_some() {
            // The newest superseded instance becomes the current one again.
            let next = host
                .superseded_of(&instance)
                .max_by_key(|c| c.started_at)
                .map(ObservedContainer::host_id);
            if let Some(c) = next.and_then(|id| host.superseded.remove(&id)) {
                host.containers.insert(instance, c);
            }
        }
        Ok(())
    }

    async fn state(&self, name: &str) -> Result<ContainerState, RuntimeError> {
        self.record(format!("state {name}"))?;
        let mut s = self.lock();
        if let Some(q) = s.states.get_mut(name) {
            let next = if q.len() > 1 {
                q.pop_front()
            } else {
                q.front().copied()
            };
            if let Some((state, when)) = next {
                // The scripted state becomes the host's, as a real exit would.
                if let Some(c) = find_mut(&mut s.host, name) {
                    c.state = state;
                    if matches!(state, ContainerState::Exited { .. }) {
                        c.finished_at = Some(when);
                    }
                }
                return Ok(state);
            }
        }
        match find_mut(&mut s.host, name) {
            Some(c) => Ok(c.state),
            None => Err(RuntimeError::NotFound {
                what: format!("container {name}"),
            }),
        }
    }

    async fn health(&self, name: &str) -> Result<Health, RuntimeError> {
        let mut s = self.lock();
        if let Some(q) = s.health.get_mut(name) {
            let h = if q.len() > 1 {
                q.pop_front()
            } else {
                q.front().copied()
            };
            if let Some(h) = h {
                return Ok(h);
            }
        }
        match find_mut(&mut s.host, name).map(|c| &*c) {
            Some(c) if c.spec.as_ref().is_some_and(|s| s.healthcheck.is_some()) => {
                Ok(Health::Healthy)
            }
            Some(_) => Ok(Health::None),
            None => Err(RuntimeError::NotFound {
                what: format!("container {name}"),
            }),
        }
    }
}

/// The container with id `name` (current or superseded), else the current
/// container of instance `name`.
fn find_mut<'a>(host: &'a mut Observed, name: &str) -> Option<&'a mut ObservedContainer> {
    if host.superseded.contains_key(name) {
        return host.superseded.get_mut(name);
    }
    let instance = host
        .containers
        .iter()
        .find(|(_, c)| c.host_id() == name)
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| name.to_string());
    host.containers.get_mut(&instance)
}
