//! The DNS resolver of a state dir: one small detached process that serves
//! every network's gateway, apart from whichever moor process created the
//! networks, so names keep resolving after a one-shot `moor apply` exits
//! (the aardvark-dns model).
//!
//! - **Started on demand** ([`ensure`]) by every moor process that creates a
//!   network or, at start-up, finds networks recorded: it runs the moor
//!   binary as `moor --state-dir DIR dns` ([`run`]), which forks, leaves the
//!   caller's session and reports on its stdout once it serves what the
//!   state records. A process that finds one running asks it to reload
//!   instead, over its control socket, and gets the same report: what is
//!   served and what could not be bound.
//! - **One per state dir**: it holds an exclusive `flock` on its pid file
//!   while it runs; a second one finds the lock taken and steps aside.
//! - **Reloads** when the network state changes: an inotify watch on the
//!   network state directory (no polling while nothing happens) plus the
//!   explicit reloads above; every answer also checks the state file's
//!   identity (one `stat`), so a container attached a moment ago resolves
//!   at once. It binds each network's gateway as networks come and unbinds
//!   it as they go, and relays other names to the host's resolvers
//!   (`forward`, bounded).
//! - **Stops** when the state records no network, when the state dir is
//!   removed, when its pid file is removed, or on SIGTERM/SIGINT ([`stop`]).
//!
//! Its files, under `<state>/net/`:
//!
//! ```text
//! dns.pid    its pid, flock-ed while it runs
//! dns.sock   control socket (`reload` -> a JSON report)
//! dns.log    its log (stderr)
//! dns.json   settings: port, upstream resolvers, the host's resolv.conf
//! ```
//!
//! The container engine and the network engine run in other processes; the
//! resolver only ever reads the state file (which is replaced whole, so no
//! lock is needed) and never takes the network state's lock.

mod client;
mod daemon;
mod forward;
mod serve;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) use client::{ensure, reload, running_with};
pub use client::{pid, stop};
pub use daemon::run;

/// Where a state dir's resolver keeps its files.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    /// `<state>/net`.
    pub(crate) dir: PathBuf,
}

impl Paths {
    pub(crate) fn new(state_dir: &Path) -> Self {
        Paths {
            dir: state_dir.join("net"),
        }
    }

    pub(crate) fn pid(&self) -> PathBuf {
        self.dir.join("dns.pid")
    }

    pub(crate) fn sock(&self) -> PathBuf {
        self.dir.join("dns.sock")
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("dns.log")
    }

    pub(crate) fn settings(&self) -> PathBuf {
        self.dir.join("dns.json")
    }

    pub(crate) fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
}

/// How the resolver serves: written by whoever starts or reloads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The port on each gateway.
    pub port: u16,
    /// The upstream resolvers; `None` reads them from `resolv_conf` at
    /// every reload, so a host whose resolvers change is followed.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// The host's resolver configuration.
    pub resolv_conf: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port: 53,
            upstreams: None,
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

impl Settings {
    /// The upstream resolvers.
    fn upstreams(&self) -> Vec<SocketAddr> {
        match &self.upstreams {
            Some(u) => u.clone(),
            None => super::dns::upstreams_from_resolv_conf(
                &std::fs::read_to_string(&self.resolv_conf).unwrap_or_default(),
            ),
        }
    }
}

/// What the resolver serves after a reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Served {
    /// Networks served, with their addresses.
    pub(crate) bound: Vec<(String, SocketAddr)>,
    /// Networks that could not be served.
    pub(crate) failed: Vec<Failed>,
}

/// A network whose address could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Failed {
    pub(crate) network: String,
    pub(crate) address: SocketAddr,
    pub(crate) error: String,
}
