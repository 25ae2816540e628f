//! The live host as the reconciler sees it: [`Host`] implements
//! [`moor_reconcile::Runtime`] over the image store, the container engine and
//! the network engine. The host composes those engines; neither knows of it.
//!
//! Every operation is blocking (files, netlink, processes) and runs on
//! tokio's blocking pool. Ownership is recorded so that a project only ever
//! removes what it created: containers carry `moor.*` [`labels`] in their own
//! records; networks and volumes are listed in `owners.json` ([`owners`]).
//! One process mutates a state dir at a time: [`Host::open`] takes an
//! exclusive lock on `<state>/host.lock`. Commands beside a running agent
//! open it without the lock, to read ([`HostView`], `moor plan`) or to act
//! on single containers ([`SharedHost`], `moor stop`…): see `shared.rs`.
//!
//! Start at `runtime.rs`, the [`Runtime`](moor_reconcile::Runtime) verbs.
//! Then, one concern per file: `config.rs` ([`HostConfig`], from the
//! environment), `open.rs` (the lock and the access modes), `observe.rs`
//! (what is on the host, as the reconciler sees it), `start.rs` (starting a
//! container: its `container:NAME` peer, its networks, its health checks),
//! `plug.rs` (a container's networks), `resolv.rs` (its `/etc/resolv.conf`),
//! [`instances`] (which container an instance name means), `error.rs`.

mod config;
mod error;
mod health;
pub mod instances;
mod observe;
mod open;
pub mod owners;
mod plug;
mod registry;
pub use registry::digest_of;
mod resolv;
mod runtime;
mod shared;
mod start;
pub mod stats;
pub mod usage;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use moor_reconcile::RuntimeError;

use crate::container::Engine;
use crate::image::Images;
use crate::image::pull::PullOptions;
use crate::net::Networks;

pub use crate::container::labels;
pub use config::HostConfig;
use error::host;
pub use error::{ErrorContext, HostError};
pub use health::{Monitor, Probe, read_health};
use owners::Owners;
pub use shared::{HostView, SharedHost};

/// The implicit network of containers that name none (Docker's `bridge`).
pub const DEFAULT_NETWORK: &str = "default";

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
    /// Where each `pull = "always"` tag pointed in its registry, and when
    /// that was asked ([`Inner::tag_moved`]).
    heads: Mutex<std::collections::HashMap<String, (std::time::Instant, String)>>,
    /// The state-dir lock, when this process holds it (`Access::Exclusive`).
    _lock: Option<File>,
}

impl Host {
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
            .map_err(|e| host(ErrorContext::new("engine task failed")(e)))?
    }
}

impl Inner {
    fn hierarchies(&self) -> &crate::container::cgroups::Hierarchies {
        self.hierarchies
            .get_or_init(crate::container::cgroups::Hierarchies::detect)
    }

    fn with_owners<T>(&self, f: impl FnOnce(&mut Owners) -> T) -> Result<T, RuntimeError> {
        let _guard = self.owners.lock().expect("owners lock poisoned");
        let mut owners = Owners::load(&self.state_dir).map_err(host)?;
        let out = f(&mut owners);
        owners.save(&self.state_dir).map_err(host)?;
        Ok(out)
    }
}
