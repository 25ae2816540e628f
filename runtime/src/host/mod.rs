//! The live host as the reconciler sees it: [`Host`] implements
//! [`moor_reconcile::Runtime`] over the image store, the container engine and
//! the network engine.
//!
//! Every operation is blocking (files, netlink, processes) and runs on
//! tokio's blocking pool. Ownership is recorded so that a project only ever
//! removes what it created: containers carry `moor.*` labels in their own
//! records; networks and volumes are listed in `owners.json` ([`owners`]).
//! One process mutates a state dir at a time: [`Host::open`] takes an
//! exclusive lock on `<state>/host.lock`. Commands beside a running agent
//! open it without the lock, to read ([`HostView`], `moor plan`) or to act
//! on single containers ([`SharedHost`], `moor stop`…): see `shared.rs`.

mod health;
pub mod instances;
pub mod owners;
mod shared;
pub mod stats;
pub mod usage;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moor_reconcile::{
    ContainerState, Health, Hold, Instance, Observed, ObservedContainer, ObservedImage,
    ObservedNetwork, ObservedVolume, Runtime, RuntimeError,
};
use moor_spec::{
    ContainerSpec, ImageRef, MountSource, NetworkAttachment, NetworkMode, NetworkSpec, Resource,
    SpecHash, VolumeSpec,
};

use crate::container::{Engine, EngineConfig, Status, volumes};
use crate::image::Images;
use crate::image::pull::{PullOptions, pull};
use crate::net::{NetConfig, Networks};

pub use health::{Monitor, Probe, read_health};
use owners::{Owner, Owners};
pub use shared::{HostView, SharedHost};

/// Labels moor adds to the containers it creates.
pub mod labels {
    /// The project that owns the container.
    pub const PROJECT: &str = "moor.project";
    /// The `[containers]` resource it is an instance of.
    pub const RESOURCE: &str = "moor.resource";
    /// Its replica number.
    pub const REPLICA: &str = "moor.replica";
    /// The instance name (`web`, `web-2`) when its container's own name
    /// differs (`web--1a2b3c4d`: see [`super::instances`]).
    pub const INSTANCE: &str = "moor.instance";
    /// The instance hash it was created from.
    pub const HASH: &str = "moor.hash";
    /// The digest of its image.
    pub const IMAGE_DIGEST: &str = "moor.image-digest";
    /// The prefix of every label moor adds.
    pub const PREFIX: &str = "moor.";
}

/// The implicit network of containers that name none (Docker's `bridge`).
pub const DEFAULT_NETWORK: &str = "default";

/// How to open the host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The state dir.
    pub state_dir: PathBuf,
    /// Registry settings for pulls.
    pub pull: PullOptions,
    /// Container engine settings.
    pub engine: EngineConfig,
    /// Network engine settings.
    pub net: NetConfig,
    /// Settings from the environment that could not be used: [`Host::open`]
    /// refuses to run with any, rather than fall back to a default another
    /// instance may be using.
    pub problems: Vec<String>,
}

impl HostConfig {
    /// Defaults under `state_dir`. Several moor instances on one machine
    /// (a test fleet) keep apart with their own state dirs and
    /// `MOOR_BRIDGE_PREFIX` (bridge names, default `mo-`: see
    /// [`crate::net::names::Naming`]), `MOOR_NFT_TABLE` (the nftables table,
    /// default `moor`), `MOOR_NET_POOL` (where subnets are allocated,
    /// default `10.89.0.0/16`) and `MOOR_CGROUP_PARENT` (default `moor`).
    /// `MOOR_EXECUTOR` picks what creates new containers: `builtin` (the
    /// default), `runc`, or the path of a runc-compatible runtime.
    /// Everything else an instance makes is keyed by its state dir: start-up
    /// clean-up removes only interfaces marked with this state dir's
    /// instance token, containers' cgroups have random ids, and the state
    /// dir's DNS resolver listens on its own networks' gateway addresses.
    pub fn new(state_dir: &Path) -> Self {
        let mut net = NetConfig::new(state_dir);
        if let Ok(table) = std::env::var("MOOR_NFT_TABLE") {
            net.table = table;
        }
        if let Ok(prefix) = std::env::var("MOOR_BRIDGE_PREFIX") {
            // Checked by Host::open, which refuses a bad one.
            net.bridge_prefix = prefix;
        }
        let mut problems = Vec::new();
        if let Ok(pool) = std::env::var("MOOR_NET_POOL") {
            match pool.parse::<ipnet::Ipv4Net>() {
                Ok(p) if p.trunc() == p => net.pool = p,
                _ => problems.push(format!(
                    "MOOR_NET_POOL=\"{pool}\" is not an IPv4 network such as 10.89.0.0/16"
                )),
            }
        }
        if let Err(e) = crate::net::names::Naming::new(&net.bridge_prefix) {
            problems.push(format!("MOOR_BRIDGE_PREFIX: {e}"));
        }
        let mut engine = EngineConfig::new(state_dir);
        if let Ok(parent) = std::env::var("MOOR_CGROUP_PARENT") {
            engine.cgroup_parent = parent;
        }
        if let Ok(executor) = std::env::var("MOOR_EXECUTOR") {
            match crate::container::Executor::parse(&executor) {
                Ok(e) => engine.executor = e,
                Err(e) => problems.push(format!("MOOR_EXECUTOR: {e}")),
            }
        }
        // The binary that is each container's shim is the DNS resolver too.
        net.resolver = Some(engine.shim_exe.clone());
        Self {
            state_dir: state_dir.to_path_buf(),
            pull: PullOptions::default(),
            engine,
            net,
            problems,
        }
    }
}

/// Opening the host failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Another moor process holds the state dir.
    #[error(
        "another moor process is changing {dir} (lock {lock} is held); stop it or use another --state-dir"
    )]
    Locked {
        /// The state dir.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The configuration (from the environment) cannot be used.
    #[error("{message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A part of the engine could not be opened.
    #[error("opening {what} in {dir}: {message}")]
    Open {
        /// Which part.
        what: &'static str,
        /// The state dir.
        dir: PathBuf,
        /// Why.
        message: String,
    },
}

/// The live host.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("state_dir", &self.inner.state_dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    state_dir: PathBuf,
    images: Mutex<Images>,
    engine: Engine,
    nets: Networks,
    owners: Mutex<()>,
    health: Monitor,
    pull: PullOptions,
    usage: Mutex<usage::Reader>,
    /// The cgroup hierarchies (for the freezer), found once.
    hierarchies: std::sync::OnceLock<crate::container::cgroups::Hierarchies>,
    /// The state-dir lock, when this process holds it ([`Access::Exclusive`]).
    _lock: Option<File>,
}

/// How a process opened the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// With the state-dir lock: the reconciler (agent, apply, down).
    Exclusive,
    /// Without it, beside an agent: commands on single containers.
    Shared,
    /// Without it, observing only.
    ReadOnly,
}

fn failed(what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::failed(what.to_string())
}

impl Host {
    /// Opens the engine under `config.state_dir`, taking the state-dir lock.
    pub fn open(config: HostConfig) -> Result<Self, HostError> {
        Self::open_as(config, Access::Exclusive)
    }

    /// Opens the engine; with [`Access::Exclusive`], takes the state-dir
    /// lock, repairs the networks and runs health checks. Otherwise none
    /// of that: health is what the lock holder's checks recorded.
    fn open_as(config: HostConfig, access: Access) -> Result<Self, HostError> {
        if !config.problems.is_empty() {
            return Err(HostError::Config {
                message: config.problems.join("; "),
            });
        }
        let dir = config.state_dir.clone();
        let open_err = |what: &'static str| {
            let dir = dir.clone();
            move |e: &dyn std::fmt::Display| HostError::Open {
                what,
                dir: dir.clone(),
                message: e.to_string(),
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| open_err("the state dir")(&e))?;
        let lock = if access == Access::Exclusive {
            let lock_path = dir.join("host.lock");
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| open_err("the lock file")(&e))?;
            if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_err()
            {
                return Err(HostError::Locked {
                    dir,
                    lock: lock_path,
                });
            }
            Some(lock)
        } else {
            // Names are served by the state dir's resolver, which whoever
            // creates a network (`moor start` making the default one, say)
            // makes sure runs: nothing to do here.
            None
        };
        let images = Images::open(&dir).map_err(|e| open_err("the image store")(&e))?;
        let engine =
            Engine::new(config.engine).map_err(|e| open_err("the container engine")(&e))?;
        let nets = Networks::open(config.net).map_err(|e| open_err("the network engine")(&e))?;
        // Repair what a crash left behind, and serve DNS for the recorded
        // networks. A network that cannot be repaired (its bridge name is
        // taken) is reported and left to the reconciler, which names it in
        // that network's condition; the rest of the host stays usable.
        if access == Access::Exclusive
            && let Err(e) = nets.cleanup()
        {
            eprintln!("warning: repairing networks in {}: {e}", dir.display());
        }
        let health_dir = dir.join("health");
        let health = match access {
            Access::Exclusive => Monitor::with_dir(health_dir),
            Access::Shared | Access::ReadOnly => Monitor::reader(health_dir),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                state_dir: dir,
                images: Mutex::new(images),
                engine,
                nets,
                owners: Mutex::new(()),
                health,
                pull: config.pull,
                usage: Mutex::default(),
                hierarchies: std::sync::OnceLock::new(),
                _lock: lock,
            }),
        })
    }

    /// The container engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The network engine.
    pub fn networks(&self) -> &Networks {
        &self.inner.nets
    }

    /// Resource usage of every container that has a cgroup (one that runs,
    /// or whose shim was lost while its processes may still run), read from
    /// its cgroup files, which stay open between calls ([`usage::Reader`]).
    /// Each is reported under its instance name (`web`); of two containers
    /// of one instance (a start-first update under way), the newer.
    pub fn usage(&self) -> Vec<(String, usage::Usage)> {
        let Ok(paths) = self
            .inner
            .engine
            .scan(|r| (r.cgroup_path(), r.instance().to_string(), r.created_ms))
        else {
            return Vec::new();
        };
        let mut reader = self.inner.usage.lock().unwrap_or_else(|e| e.into_inner());
        let read = reader.read_all(paths.iter().map(|(_, (p, _, _))| p.as_str()));
        let mut newest: BTreeMap<&str, (u64, usage::Usage)> = BTreeMap::new();
        for (i, u) in read {
            let (_, (_, instance, created)) = &paths[i];
            if newest
                .get(instance.as_str())
                .is_none_or(|(c, _)| c < created)
            {
                newest.insert(instance, (*created, u));
            }
        }
        newest
            .into_iter()
            .map(|(name, (_, u))| (name.to_string(), u))
            .collect()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<Inner>) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(inner))
            .await
            .map_err(|e| failed(format!("engine task failed: {e}")))?
    }
}

impl Inner {
    fn hierarchies(&self) -> &crate::container::cgroups::Hierarchies {
        self.hierarchies
            .get_or_init(crate::container::cgroups::Hierarchies::detect)
    }

    fn with_owners<T>(&self, f: impl FnOnce(&mut Owners) -> T) -> Result<T, RuntimeError> {
        let _guard = self.owners.lock().expect("owners lock poisoned");
        let mut owners = Owners::load(&self.state_dir).map_err(failed)?;
        let out = f(&mut owners);
        owners.save(&self.state_dir).map_err(failed)?;
        Ok(out)
    }

    fn observe(self: &Arc<Self>) -> Result<Observed, RuntimeError> {
        let mut o = Observed::default();
        let images = self.images.lock().expect("image store poisoned");
        for img in images.list().map_err(failed)? {
            for r in &img.refs {
                o.images.insert(
                    r.clone(),
                    ObservedImage {
                        digest: img.digest.clone(),
                        remote_digest: None,
                    },
                );
            }
        }
        drop(images);

        let owners = Owners::load(&self.state_dir).map_err(failed)?;
        let net_state = self.nets.state().map_err(failed)?;
        for (name, owner) in &owners.networks {
            let fault = match net_state.networks.get(name) {
                None => Some("not in the network engine's state".to_string()),
                Some(rec) => (!Path::new("/sys/class/net").join(&rec.bridge).exists())
                    .then(|| format!("bridge {} is missing", rec.bridge)),
            };
            o.networks.insert(
                name.clone(),
                ObservedNetwork {
                    project: Some(owner.project.clone()),
                    spec_hash: Some(owner.spec_hash.clone()),
                    fault,
                },
            );
        }
        for name in net_state.networks.keys() {
            if name != DEFAULT_NETWORK && !o.networks.contains_key(name) {
                o.networks.insert(
                    name.clone(),
                    ObservedNetwork {
                        project: None,
                        spec_hash: None,
                        fault: None,
                    },
                );
            }
        }
        for name in volumes::list(&self.state_dir).map_err(failed)? {
            o.volumes.insert(
                name.clone(),
                ObservedVolume {
                    project: None,
                    spec_hash: None,
                    fault: None,
                    prune: false,
                },
            );
        }
        for (name, owner) in &owners.volumes {
            let present = volumes::data_dir(&self.state_dir, name).is_dir();
            o.volumes.insert(
                name.clone(),
                ObservedVolume {
                    project: Some(owner.project.clone()),
                    spec_hash: Some(owner.spec_hash.clone()),
                    fault: (!present).then(|| "its directory is missing".to_string()),
                    prune: owner.prune,
                },
            );
        }

        let mut found = Vec::new();
        for info in self.engine.list().map_err(failed)? {
            let labels = &info.record.spec.labels;
            let project = labels.get(labels::PROJECT).cloned();
            let name = info.record.name.clone();
            let (state, started_at, finished_at) = match &info.status {
                Status::Created => (ContainerState::Created, None, None),
                Status::Running { started_ms, .. } => {
                    (ContainerState::Running, Some(ms(*started_ms)), None)
                }
                Status::Exited(exit) => (
                    ContainerState::Exited {
                        code: exit.exit_code,
                        oom: exit.oom_killed,
                    },
                    exit.started_ms.map(ms),
                    Some(ms(exit.finished_ms)),
                ),
                Status::Lost { .. } => (ContainerState::Dead, None, None),
            };
            // A container stopped by another process (`moor stop`) is not
            // checked until it runs again; then its check starts afresh.
            if state != ContainerState::Running && self.health.watching(&name) {
                self.health.forget(&name);
            }
            // A running container with a health check is checked, also after an agent restart.
            if state == ContainerState::Running
                && let Some(check) = info.record.spec.healthcheck.clone()
                && !self.health.watching(&name)
            {
                self.health
                    .watch(&name, check, Arc::new(EngineProbe(self.clone())));
            }
            // Killed between starting it and plugging it in: running, but cut off.
            let fault = match (
                &info.status,
                info.record.spec.network_mode == NetworkMode::Bridge,
            ) {
                (Status::Running { pid, .. }, true) => {
                    let plugged = net_state
                        .containers
                        .get(&name)
                        .and_then(|c| c.netns.clone());
                    let expected = PathBuf::from(format!("/proc/{pid}/ns/net"));
                    (plugged.as_ref() != Some(&expected))
                        .then(|| "running but not plugged into its networks".to_string())
                }
                _ => None,
            };
            let mut spec = info.record.spec.clone();
            spec.labels.retain(|k, _| !k.starts_with(labels::PREFIX));
            let resolv_dir = self.state_dir.join("resolv");
            spec.mounts
                .retain(|m| !matches!(&m.source, MountSource::Bind { source, .. } if source.starts_with(&resolv_dir)));
            let hash = labels.get(labels::HASH).and_then(|h| {
                serde_json::from_value::<SpecHash>(serde_json::Value::String(h.clone())).ok()
            });
            let Some(hash) = hash else {
                // Not created by moor's reconciler (e.g. `moor dev run`): never touched.
                continue;
            };
            let instance = info.record.instance().to_string();
            let health = if state == ContainerState::Running {
                self.health.health(&name)
            } else {
                Health::None
            };
            let hold = match state {
                ContainerState::Running
                    if self.hierarchies().frozen(&info.record.cgroup_path()) =>
                {
                    Some(Hold::Paused)
                }
                // Stopped on purpose; or being started by `moor start`,
                // which keeps the mark until the container runs: between
                // its create and its start it shows as created, which the
                // reconciler must not take for an interrupted create.
                ContainerState::Exited { .. } | ContainerState::Created
                    if self.engine.manual_stop(&name).is_some() =>
                {
                    Some(Hold::Stopped)
                }
                _ => None,
            };
            let rank = instances::preference(
                state == ContainerState::Running,
                health,
                info.record.created_ms,
            );
            found.push((
                instance,
                rank,
                ObservedContainer {
                    id: name.clone(),
                    project,
                    resource: labels
                        .get(labels::RESOURCE)
                        .cloned()
                        .unwrap_or_else(|| name.clone()),
                    replica: labels
                        .get(labels::REPLICA)
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(1),
                    hash,
                    networks: attachments(&spec).into_iter().map(|a| a.network).collect(),
                    volumes: spec
                        .mounts
                        .iter()
                        .filter_map(|m| match &m.source {
                            MountSource::Volume { name } => Some(name.clone()),
                            _ => None,
                        })
                        .collect(),
                    spec: Some(spec),
                    state,
                    health,
                    restart_count: self.engine.restart_count(&name),
                    started_at,
                    finished_at,
                    fault,
                    hold,
                },
            ));
        }
        // One current container per instance; the others are superseded.
        found.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (instance, _, c) in found.into_iter().rev() {
            match o.containers.entry(instance) {
                std::collections::btree_map::Entry::Occupied(_) => {
                    o.superseded.insert(c.id.clone(), c);
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(c);
                }
            }
        }
        Ok(o)
    }

    /// A read-only `/etc/resolv.conf` pointing at the DNS server of the
    /// container's first network (the host's resolvers when it has none).
    fn resolv_conf_mount(
        &self,
        name: &str,
        spec: &ContainerSpec,
    ) -> Result<Option<moor_spec::Mount>, RuntimeError> {
        if spec.network_mode != NetworkMode::Bridge
            || spec.mounts.iter().any(|m| m.target == "/etc/resolv.conf")
        {
            return Ok(None);
        }
        let host_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let first = attachments(spec).into_iter().next().map(|a| a.network);
        // The implicit default network is made on first use: now, so that
        // the first containers on it get its DNS server too.
        if first.as_deref() == Some(DEFAULT_NETWORK)
            && !self
                .nets
                .state()
                .map_err(failed)?
                .networks
                .contains_key(DEFAULT_NETWORK)
        {
            self.nets
                .create_network(DEFAULT_NETWORK, &NetworkSpec::default())
                .map_err(failed)?;
        }
        let gateway =
            first.and_then(|n| self.nets.state().ok()?.networks.get(&n).map(|r| r.gateway));
        let text = match gateway {
            Some(gw) => crate::net::dns::resolv_conf(gw, &host_conf),
            None => host_conf,
        };
        let dir = self.state_dir.join("resolv");
        std::fs::create_dir_all(&dir)
            .map_err(|e| failed(format!("create {}: {e}", dir.display())))?;
        let path = dir.join(format!("{name}.conf"));
        crate::container::bundle::write_container_file(&path, text.as_bytes(), true)
            .map_err(failed)?;
        Ok(Some(moor_spec::Mount {
            target: "/etc/resolv.conf".into(),
            source: MountSource::Bind {
                source: path,
                content_digest: None,
            },
            read_only: true,
        }))
    }

    /// Plugs a created container (PID 1 `pid`, not yet running its process)
    /// into its networks; one with a network namespace and no network gets
    /// its loopback interface up.
    fn plug(&self, name: &str, spec: &ContainerSpec, pid: i32) -> Result<(), RuntimeError> {
        match spec.network_mode {
            NetworkMode::Bridge => {}
            NetworkMode::None => {
                let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
                return self.nets.loopback_only(&netns).map_err(failed);
            }
            NetworkMode::Host | NetworkMode::Container(_) => return Ok(()),
        }
        let mut attachments = attachments(spec);
        // The instance name finds the container in DNS whatever its id; while
        // two instances run, it finds both, then only the one that stays.
        if let Some(instance) = spec.labels.get(labels::INSTANCE).filter(|i| *i != name) {
            for a in &mut attachments {
                if !a.aliases.contains(instance) {
                    a.aliases.push(instance.clone());
                }
            }
        }
        if attachments.iter().any(|a| a.network == DEFAULT_NETWORK) {
            let exists = self
                .nets
                .state()
                .map_err(failed)?
                .networks
                .contains_key(DEFAULT_NETWORK);
            if !exists {
                self.nets
                    .create_network(DEFAULT_NETWORK, &NetworkSpec::default())
                    .map_err(failed)?;
            }
        }
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        self.nets
            .attach(name, &netns, &attachments, &spec.ports)
            .map_err(failed)?;
        Ok(())
    }
}

/// A container's networks; the implicit default network when it names none.
fn attachments(spec: &ContainerSpec) -> Vec<NetworkAttachment> {
    if spec.network_mode != NetworkMode::Bridge {
        return Vec::new();
    }
    if spec.networks.is_empty() {
        vec![NetworkAttachment {
            network: DEFAULT_NETWORK.to_string(),
            aliases: Vec::new(),
            ipv4_address: None,
        }]
    } else {
        spec.networks.clone()
    }
}

fn ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

struct EngineProbe(Arc<Inner>);

impl Probe for EngineProbe {
    fn exec(&self, name: &str, cmd: &[String], _timeout: Duration) -> Result<i32, String> {
        self.0
            .engine
            .exec(name, cmd, false)
            .map_err(|e| e.to_string())
    }

    fn paused(&self, name: &str) -> bool {
        self.0
            .engine
            .record(name)
            .is_ok_and(|r| self.0.hierarchies().frozen(&r.cgroup_path()))
    }

    fn address(&self, name: &str) -> Option<IpAddr> {
        let state = self.0.nets.state().ok()?;
        state
            .containers
            .get(name)
            .and_then(|c| c.leases.first())
            .map(|l| IpAddr::V4(l.address))
    }
}

impl Runtime for Host {
    async fn observe(&self) -> Result<Observed, RuntimeError> {
        self.blocking(|inner| inner.observe()).await
    }

    async fn pull(&self, reference: &ImageRef) -> Result<String, RuntimeError> {
        let r = reference.to_string();
        self.blocking(move |inner| {
            let images = inner.images.lock().expect("image store poisoned");
            let record = pull(&images, &r, &inner.pull, &|_| {})
                .map_err(|e| failed(format!("pulling {r}: {e}")))?;
            Ok(record.digest)
        })
        .await
    }

    async fn create_network(
        &self,
        project: &str,
        network: &Resource<NetworkSpec>,
    ) -> Result<(), RuntimeError> {
        let (project, network) = (project.to_string(), network.clone());
        self.blocking(move |inner| {
            // Ownership first: a crash after this leaves a network this
            // project can finish or remove, never one it takes for foreign.
            inner.with_owners(|o| {
                o.networks.insert(
                    network.name.clone(),
                    Owner {
                        project,
                        spec_hash: network.hash.clone(),
                        prune: true,
                    },
                );
            })?;
            inner
                .nets
                .create_network(&network.name, &network.spec)
                .map_err(failed)
                .map(drop)
        })
        .await
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            inner.nets.remove_network(&name).map_err(failed)?;
            inner.with_owners(|o| {
                o.networks.remove(&name);
            })
        })
        .await
    }

    async fn create_volume(
        &self,
        project: &str,
        volume: &Resource<VolumeSpec>,
    ) -> Result<(), RuntimeError> {
        let (project, volume) = (project.to_string(), volume.clone());
        self.blocking(move |inner| {
            // The directory itself is made by the first container that mounts
            // the volume, so that it is filled from that container's image.
            inner.with_owners(|o| {
                o.volumes.insert(
                    volume.name.clone(),
                    Owner {
                        project,
                        spec_hash: volume.hash.clone(),
                        prune: volume.spec.prune,
                    },
                );
            })?;
            if !volumes::data_dir(&inner.state_dir, &volume.name).is_dir() {
                volumes::ensure(&inner.state_dir, &volume.name, None).map_err(failed)?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            volumes::remove(&inner.state_dir, &name).map_err(failed)?;
            inner.with_owners(|o| {
                o.volumes.remove(&name);
            })
        })
        .await
    }

    async fn create_container(
        &self,
        project: &str,
        instance: &Instance<'_>,
    ) -> Result<(), RuntimeError> {
        let mut spec = instance.spec.clone();
        spec.labels
            .insert(labels::PROJECT.into(), project.to_string());
        spec.labels
            .insert(labels::RESOURCE.into(), instance.resource.to_string());
        spec.labels
            .insert(labels::REPLICA.into(), instance.replica.to_string());
        spec.labels
            .insert(labels::HASH.into(), instance.hash.to_string());
        spec.labels
            .insert(labels::IMAGE_DIGEST.into(), instance.image_digest.clone());
        spec.labels
            .insert(labels::INSTANCE.into(), instance.name.clone());
        // The container's own name is the instance's id: the instance name,
        // or a unique one while it runs beside the old instance (start-first).
        let name = instance.id.clone();
        moor_spec::check_name(&name)
            .map_err(|e| failed(format!("container id for {}: {e}", instance.name)))?;
        let reference = instance.spec.image.to_string();
        self.blocking(move |inner| {
            let mut spec = spec;
            let (config, lowers) = {
                let images = inner.images.lock().expect("image store poisoned");
                let record = images.resolve(&reference).map_err(failed)?.ok_or_else(|| {
                    failed(format!("image {reference} is not in the image store"))
                })?;
                let config = images.run_config(&record).map_err(failed)?;
                images
                    .hold(&record, &format!("container:{name}"))
                    .map_err(failed)?;
                (config, images.layer_dirs(&record))
            };
            if let Some(mount) = inner.resolv_conf_mount(&name, &spec)? {
                spec.mounts.push(mount);
            }
            // A leftover of the same name (a crash between remove and
            // create, or during create before its record was written) goes first.
            if inner.engine.record(&name).is_ok() {
                inner.engine.remove(&name, true).map_err(failed)?;
            } else {
                let dir = inner.engine.paths(&name).dir;
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| {
                        failed(format!("remove the leftover {}: {e}", dir.display()))
                    })?;
                }
            }
            inner
                .engine
                .create(&name, spec.clone(), config, lowers)
                .map_err(failed)?;
            inner.start(&name, &spec)
        })
        .await
    }

    async fn start_container(&self, name: &str) -> Result<(), RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            let record = inner.engine.record(&name).map_err(failed)?;
            // `moor start` and this never start one container at once, and
            // a container stopped on purpose since it was observed stays so.
            let _lock = inner.engine.lock_container(&name).map_err(failed)?;
            let info = inner.engine.inspect(&name).map_err(failed)?;
            if inner.engine.manual_stop(&name).is_some()
                || matches!(info.status, Status::Running { .. })
            {
                return Ok(());
            }
            let restarts = inner.engine.restart_count(&name) + 1;
            inner
                .engine
                .set_restart_count(&name, restarts)
                .map_err(failed)?;
            inner.nets.detach(&name).map_err(failed)?;
            inner.start(&name, &record.spec)
        })
        .await
    }

    async fn stop_container(
        &self,
        name: &str,
        _signal: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            inner.health.forget(&name);
            inner.engine.stop(&name, Some(grace)).map_err(failed)?;
            inner.nets.detach(&name).map_err(failed)
        })
        .await
    }

    async fn remove_container(
        &self,
        name: &str,
        _signal: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            inner.health.forget(&name);
            // Already gone is fine: removal is idempotent.
            if inner.engine.record(&name).is_ok() {
                inner.engine.stop(&name, Some(grace)).map_err(failed)?;
                inner.engine.remove(&name, true).map_err(failed)?;
            }
            inner.nets.release(&name).map_err(failed)?;
            let _ =
                std::fs::remove_file(inner.state_dir.join("resolv").join(format!("{name}.conf")));
            let images = inner.images.lock().expect("image store poisoned");
            images
                .release(&format!("container:{name}"))
                .map_err(failed)?;
            Ok(())
        })
        .await
    }

    async fn health(&self, name: &str) -> Result<Health, RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            let id = instances::resolve(&inner.engine, &name).map_err(failed)?;
            Ok(inner.health.health(&id))
        })
        .await
    }

    async fn state(&self, name: &str) -> Result<ContainerState, RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            let id = instances::resolve(&inner.engine, &name).map_err(failed)?;
            let info = match inner.engine.inspect(&id) {
                Err(crate::container::ContainerError::NotFound(_)) => {
                    return Err(RuntimeError::NotFound {
                        what: format!("container {name}"),
                    });
                }
                other => other.map_err(failed)?,
            };
            Ok(match info.status {
                Status::Created => ContainerState::Created,
                Status::Running { .. } => ContainerState::Running,
                Status::Exited(exit) => ContainerState::Exited {
                    code: exit.exit_code,
                    oom: exit.oom_killed,
                },
                Status::Lost { .. } => ContainerState::Dead,
            })
        })
        .await
    }
}

impl Inner {
    fn start(self: &Arc<Self>, name: &str, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        // Plugged in between create and start: a process that exits at once
        // still had its interfaces, and its namespace is there to plug into.
        self.engine
            .start_with(name, |pid| {
                self.plug(name, spec, pid).map_err(|e| e.to_string())
            })
            .map_err(failed)?;
        if let Some(check) = spec.healthcheck.clone() {
            self.health
                .watch(name, check, Arc::new(EngineProbe(self.clone())));
        }
        Ok(())
    }
}
