//! The normalised v1 model: what a set of manifests asks for.
//!
//! Every value here is already normalised (image references qualified, sizes
//! in bytes, durations as [`Duration`], ranges expanded, relative paths
//! resolved), so two manifests that mean the same thing produce equal values.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::hash::SpecHash;
use crate::mounts::Mount;
use crate::node::Pos;
use crate::ports::PortMapping;
use crate::reference::ImageRef;

/// The four kinds of resource a manifest declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `[images.NAME]`
    Image,
    /// `[networks.NAME]`
    Network,
    /// `[volumes.NAME]`
    Volume,
    /// `[containers.NAME]`
    Container,
}

impl Kind {
    /// Every kind, in the order resources are created.
    pub const ALL: [Kind; 4] = [Kind::Image, Kind::Network, Kind::Volume, Kind::Container];

    /// The manifest's top-level table for this kind (`containers`).
    pub fn table(self) -> &'static str {
        match self {
            Kind::Image => "images",
            Kind::Network => "networks",
            Kind::Volume => "volumes",
            Kind::Container => "containers",
        }
    }

    /// The singular name (`container`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Network => "network",
            Kind::Volume => "volume",
            Kind::Container => "container",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a resource was declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The manifest file (shared by the resources declared in it).
    pub file: Arc<Path>,
    /// The position of the resource's name in it.
    pub pos: Pos,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.pos)
    }
}

/// One declared resource: its name, where it was written, its normalised spec and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource<T> {
    /// The resource's name (the key under its kind's table).
    pub name: String,
    /// Where it was declared.
    pub origin: Origin,
    /// The normalised spec: shared, since a load that reuses a file's
    /// decoding hands out the same spec again (change it with
    /// [`Arc::make_mut`], which copies it only when it is shared).
    pub spec: Arc<T>,
    /// The canonical hash of the fields that matter (see [`crate::hash`]).
    pub hash: SpecHash,
    /// The hosts it is for (its own `target`, else its document's); `None`
    /// means every host. Not part of the hash: see [`crate::target`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<crate::target::Target>,
}

/// When to pull an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Re-resolve the tag on every reconcile and pull when it moved.
    Always,
    /// Pull only when the image is not in the store (the default).
    #[default]
    IfNotPresent,
    /// Never pull: the image must have been imported or pulled by hand.
    Never,
}

/// `[images.NAME]`: an image the host must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// The normalised reference.
    pub reference: ImageRef,
    /// When to pull it (a built image is never pulled).
    pub pull: PullPolicy,
    /// Build it from a Dockerfile rather than pull it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,
    /// Keep it current from its registry (`update = { interval, policy }`);
    /// never with `build`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<crate::update::UpdateSpec>,
    /// `verify = { key = "…" }`: a pull must find a signature of the
    /// image by this key (as well as any the agent's `[[verify]]` rules
    /// ask for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
}

/// `verify = { key = "…" }` of an `[images]` entry: the public key a pulled
/// image's signature must be made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifySpec {
    /// Where the key was read (absolute; a relative path resolved against
    /// the manifest's directory), for messages.
    pub key: PathBuf,
    /// The key itself, an ECDSA P-256 public key in PEM, read once when
    /// the manifest was loaded (so the key checked is the key validated).
    pub pem: String,
}

/// `build = { context, dockerfile, args, target }`: how an image is built
/// from a Dockerfile next to the manifests (as `moor build` would).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildSpec {
    /// The context directory: absolute, resolved against the manifest's
    /// directory, inside the source's tree.
    pub context: PathBuf,
    /// The Dockerfile, relative to the context (`Dockerfile` by default);
    /// `..` and links may lead out of the context but not out of the tree.
    pub dockerfile: PathBuf,
    /// `--build-arg`s.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// The stage to build (`--target`); the last when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `[networks.NAME]`: a bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The subnet; allocated from a pool when absent.
    pub subnet: Option<Ipv4Net>,
    /// The gateway (the bridge's address); the subnet's first host when absent.
    pub gateway: Option<Ipv4Addr>,
    /// No outbound route: containers reach only each other.
    pub internal: bool,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
}

/// `[volumes.NAME]`: a named volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// Delete the volume's data when it disappears from the manifests (kept otherwise).
    pub prune: bool,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
}

/// How a container is networked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "container")]
pub enum NetworkMode {
    /// Attached to the networks it lists (or the implicit default network).
    #[default]
    Bridge,
    /// The host's network namespace.
    Host,
    /// Only a loopback interface.
    None,
    /// Shares the network namespace of another container.
    Container(String),
}

/// One network a container is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// The network's name.
    pub network: String,
    /// Extra names the container answers to on this network.
    pub aliases: Vec<String>,
    /// A fixed address inside the network's subnet.
    pub ipv4_address: Option<Ipv4Addr>,
}

/// `restart = …`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum RestartPolicy {
    /// Never restart (the default, as in Docker).
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times if given.
    OnFailure {
        /// Upper bound on restarts.
        max_retries: Option<u32>,
    },
    /// Always restart.
    Always,
    /// Always restart, unless a person stopped it.
    UnlessStopped,
}

impl RestartPolicy {
    /// Whether the policy starts a container again after it exited with
    /// `exit_code` (before any `on-failure:N` limit): when it does not, the
    /// exit is where the container stays — a one-shot job that has done its work.
    pub fn restarts_after(&self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { .. } => exit_code != 0,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }
}

/// Limits enforced through cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU limit in cores (0.5 = half a core).
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    pub pids: Option<u64>,
}

/// What a health check runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthTest {
    /// A command run inside the container; exit 0 is healthy.
    Cmd(Vec<String>),
    /// An HTTP GET from inside the container's network namespace; 2xx/3xx is healthy.
    Http(String),
    /// A TCP connect to `host:port` (or `port` on localhost) from inside the container's network namespace.
    Tcp(String),
}

/// `healthcheck = { … }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// What to run.
    pub test: HealthTest,
    /// Time between checks (default 30 s, as in Docker).
    pub interval: Duration,
    /// Time a check may take (default 30 s).
    pub timeout: Duration,
    /// Consecutive failures before unhealthy (default 3).
    pub retries: u32,
    /// Failures during this time after start do not count (default 0).
    pub start_period: Duration,
}

/// The condition a `depends_on` entry waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DependCondition {
    /// The dependency has been started.
    #[default]
    Started,
    /// The dependency's health check passes.
    Healthy,
    /// The dependency (a one-shot job: a migration) has run and exited 0
    /// (Compose's `service_completed_successfully`).
    Completed,
}

/// How a changed container is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old container, then start the new one (the default).
    #[default]
    StopFirst,
    /// Start the new container, then stop the old one.
    StartFirst,
}

/// Which seccomp filter a container's processes run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Seccomp {
    /// moor's default profile, like Docker's: the system calls that reach
    /// past the container (kernel modules, keyrings, clocks, namespaces,
    /// mounts, tracing…) fail with EPERM unless `cap_add` grants the
    /// capability they need.
    #[default]
    Default,
    /// No filter (Docker's `--security-opt seccomp=unconfined`).
    Unconfined,
}

impl Seccomp {
    /// Whether this is the default profile.
    pub fn is_default(&self) -> bool {
        *self == Seccomp::Default
    }
}

/// `[containers.NAME]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The image, normalised.
    pub image: ImageRef,
    /// The `[images]` entry the image refers to, when it names or matches one.
    pub image_entry: Option<String>,
    /// Overrides the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's command.
    pub command: Option<Vec<String>>,
    /// Environment: `env_file` entries first, then `env`, which wins.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container.
    pub working_dir: Option<String>,
    /// `user[:group]`, by name or number.
    pub user: Option<String>,
    /// Host name inside the container (the container's name when absent).
    pub hostname: Option<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// How it is networked.
    pub network_mode: NetworkMode,
    /// Networks it is attached to, the first one carrying the default route.
    pub networks: Vec<NetworkAttachment>,
    /// Published ports, sorted.
    pub ports: Vec<PortMapping>,
    /// Mounts, sorted by target.
    pub mounts: Vec<Mount>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Run a minimal reaping init as PID 1.
    pub init: bool,
    /// cgroup limits.
    pub resources: Resources,
    /// Health check, if any.
    pub healthcheck: Option<Healthcheck>,
    /// Containers this one waits for, and for what.
    pub depends_on: BTreeMap<String, DependCondition>,
    /// Signal that asks it to stop (default `SIGTERM`).
    pub stop_signal: String,
    /// Time between the stop signal and SIGKILL (default 10 s).
    pub stop_grace_period: Duration,
    /// Root filesystem mounted read-only.
    pub read_only: bool,
    /// Capabilities added to Docker's default set (`CAP_…`, or `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities removed from it.
    pub cap_drop: Vec<String>,
    /// The seccomp filter (`"default"` or `"unconfined"`).
    #[serde(default, skip_serializing_if = "Seccomp::is_default")]
    pub seccomp: Seccomp,
    /// Extra `/etc/hosts` entries.
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// How many identical copies to run.
    pub replicas: u32,
    /// Stop-first or start-first replacement.
    pub update_order: UpdateOrder,
    /// Secrets mounted at `/run/secrets/NAME` (or their target), sorted by target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretMount>,
}

/// A secret's value: held in memory only. It is never serialised (a spec
/// read back from disk has none), and its `Debug` shows only its length.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretValue(Option<std::sync::Arc<Vec<u8>>>);

impl SecretValue {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Some(std::sync::Arc::new(bytes)))
    }

    /// The value's bytes; `None` in a spec read back from disk.
    pub fn expose(&self) -> Option<&[u8]> {
        self.0.as_deref().map(Vec::as_slice)
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => write!(f, "<secret: {} bytes>", v.len()),
            None => f.write_str("<secret: not loaded>"),
        }
    }
}

/// One `secrets` entry of a container: which secret, where and as whom.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretMount {
    /// The absolute path of the file in the container (`/run/secrets/NAME`).
    pub target: String,
    /// The `[secrets]` entry.
    pub source: String,
    /// The file's owner; the container's user when absent.
    pub uid: Option<u32>,
    /// The file's group; the container's user's group when absent.
    pub gid: Option<u32>,
    /// The file's mode (0400 by default).
    pub mode: u32,
    /// `hmac-sha256:<hex>` of the value under the host's secret key (see
    /// `LoadOptions::secret_key`): rotating the value changes the container's
    /// hash without the value itself appearing anywhere.
    pub digest: String,
    /// The value; empty in a spec read back from disk.
    #[serde(skip)]
    pub value: SecretValue,
}

/// Everything a set of manifests declares, by kind and name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DesiredState {
    /// `[images]`
    pub images: BTreeMap<String, Resource<ImageSpec>>,
    /// `[networks]`
    pub networks: BTreeMap<String, Resource<NetworkSpec>>,
    /// `[volumes]`
    pub volumes: BTreeMap<String, Resource<VolumeSpec>>,
    /// `[containers]`
    pub containers: BTreeMap<String, Resource<ContainerSpec>>,
    /// What the load warned about (Compose keys moor ignores): shown to
    /// the user, never a reason to refuse the state, and not stored.
    #[serde(skip)]
    pub warnings: Box<crate::diag::Diagnostics>,
}

impl DesiredState {
    /// How many resources of each kind, in [`Kind::ALL`] order.
    pub fn counts(&self) -> [(Kind, usize); 4] {
        [
            (Kind::Image, self.images.len()),
            (Kind::Network, self.networks.len()),
            (Kind::Volume, self.volumes.len()),
            (Kind::Container, self.containers.len()),
        ]
    }

    /// The total number of resources.
    pub fn len(&self) -> usize {
        self.counts().iter().map(|(_, n)| n).sum()
    }

    /// True when nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
