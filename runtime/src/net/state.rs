//! The network engine's persistent state: networks, leases, published ports.
//!
//! One small JSON file, `<state>/net/state.json`, rewritten atomically (temp
//! file, fsync, rename, fsync of the directory) under an exclusive `flock` on
//! `<state>/net/lock`, so a crash at any instruction leaves the old or the new
//! state, and two moor processes (the agent and a CLI) never interleave.
//! It is a file rather than tables in the store's database because it is a
//! handful of records, read and written whole on every change, owned by this
//! module alone, and the nftables ruleset is regenerated from it whole.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use moor_spec::Protocol;
use serde::{Deserialize, Serialize};

use super::error::{NetError, Result};

/// A network moor created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Its name.
    pub name: String,
    /// Its bridge.
    pub bridge: String,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// The bridge's address, the containers' gateway and DNS server.
    pub gateway: Ipv4Addr,
    /// No outbound traffic.
    pub internal: bool,
    /// Whether the subnet came from the pool (rather than the manifest).
    pub allocated: bool,
}

/// A container's address on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The network.
    pub network: String,
    /// The address.
    pub address: Ipv4Addr,
    /// Extra DNS names on that network.
    pub aliases: Vec<String>,
    /// The interface inside the container.
    pub ifname: String,
    /// The host end of the veth pair.
    pub host_veth: String,
}

/// One published port, resolved to a host port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The host address, `None` for every local address.
    pub host_ip: Option<Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl Published {
    /// `ip:port/proto` for messages.
    pub fn describe(&self) -> String {
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        format!("{ip}:{}/{}", self.host_port, self.protocol)
    }

    /// True when both would claim the same host socket.
    pub fn conflicts_with(&self, other: &Published) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// A container's networking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Its leases, in attachment order (the first carries the default route).
    pub leases: Vec<Lease>,
    /// The namespace it is plugged into; `None` when detached (leases kept).
    pub netns: Option<PathBuf>,
    /// Its published ports (active only while attached).
    pub ports: Vec<Published>,
}

/// Everything the network engine remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Networks by name.
    pub networks: BTreeMap<String, NetworkRecord>,
    /// Containers by name.
    pub containers: BTreeMap<String, ContainerRecord>,
    /// The last address a removed container had on a network
    /// (`network/container`), offered again when it comes back, so that a
    /// replaced container keeps its address and peers that cached it still
    /// reach it.
    pub recent: BTreeMap<String, Ipv4Addr>,
}

impl State {
    /// The container holding `address` on `network`.
    pub fn holder(&self, network: &str, address: Ipv4Addr) -> Option<&str> {
        self.containers.iter().find_map(|(name, c)| {
            c.leases
                .iter()
                .any(|l| l.network == network && l.address == address)
                .then_some(name.as_str())
        })
    }

    /// Containers holding a lease on `network`.
    pub fn users(&self, network: &str) -> Vec<&str> {
        self.containers
            .iter()
            .filter(|(_, c)| c.leases.iter().any(|l| l.network == network))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// Whether the network state under the state dir `state_dir` (another moor
/// instance's, read without its lock: the file is only ever replaced whole)
/// records a network on the bridge `bridge`. No state file records nothing.
pub(crate) fn records_bridge(state_dir: &Path, bridge: &str) -> std::result::Result<bool, String> {
    let path = state_dir.join("net").join("state.json");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let state: State =
        serde_json::from_slice(&bytes).map_err(|e| format!("parse {}: {e}", path.display()))?;
    Ok(state.networks.values().any(|n| n.bridge == bridge))
}

/// The state file and its lock.
#[derive(Debug, Clone)]
pub(crate) struct StateFile {
    dir: PathBuf,
}

/// An exclusive hold on the state; released on drop.
#[derive(Debug)]
pub(crate) struct Locked {
    _lock: File,
}

impl StateFile {
    pub(crate) fn new(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("net");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| NetError::io("create network state directory", &dir, e))?;
        Ok(StateFile { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Takes the exclusive lock (blocking).
    pub(crate) fn lock(&self) -> Result<Locked> {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir);
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| NetError::io("open network state lock", &path, e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| NetError::io("lock network state", &path, e.into()))?;
        Ok(Locked { _lock: file })
    }

    /// Reads the state (empty when there is none yet).
    pub(crate) fn load(&self, _held: &Locked) -> Result<State> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| NetError::State { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(NetError::io("read network state", path, e)),
        }
    }

    /// Replaces the state atomically; does nothing (no write, no fsync)
    /// when the file already holds exactly this state.
    pub(crate) fn save(&self, _held: &Locked, state: &State) -> Result<()> {
        let path = self.path();
        let bytes = serde_json::to_vec_pretty(state).expect("network state serialises");
        if std::fs::read(&path).is_ok_and(|on_disk| on_disk == bytes) {
            return Ok(());
        }
        let tmp = self.dir.join(format!(".state.json.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            NetError::io("write network state", &path, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path()).unwrap();
        let held = file.lock().unwrap();
        assert_eq!(file.load(&held).unwrap(), State::default());
        let mut state = State::default();
        state.networks.insert(
            "front".into(),
            NetworkRecord {
                name: "front".into(),
                bridge: "mo-front".into(),
                subnet: "10.89.0.0/24".parse().unwrap(),
                gateway: "10.89.0.1".parse().unwrap(),
                internal: false,
                allocated: true,
            },
        );
        state
            .recent
            .insert("front/web".into(), "10.89.0.2".parse().unwrap());
        file.save(&held, &state).unwrap();
        assert_eq!(file.load(&held).unwrap(), state);
        let mode = std::fs::metadata(dir.path().join("net/state.json"))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o077, 0, "state is not world-readable");
    }
}
