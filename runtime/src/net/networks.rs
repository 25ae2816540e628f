//! [`Networks`]: the network engine's front door.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ipnet::Ipv4Net;
use moor_spec::{NetworkAttachment, NetworkSpec, PortMapping};
use serde::Serialize;

use super::dns;
use super::error::{NetError, Result};
use super::state::{ContainerRecord, Lease, NetworkRecord, Published, State, StateFile};
use super::{bridge, ipam, names, netlink, nfnl, ports, resolver, veth};

/// How the network engine runs.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// moor's state directory; the engine keeps `net/` under it.
    pub state_dir: PathBuf,
    /// Where subnets come from when a network names none.
    pub pool: Ipv4Net,
    /// MTU of bridges and veths; `None` takes the MTU of the interface of
    /// the host's default route (1500 without one).
    pub mtu: Option<u32>,
    /// The `nft` binary.
    pub nft: String,
    /// The nftables table (family `ip`) moor owns.
    pub table: String,
    /// The prefix of this instance's bridge names (`mo-`); see [`names::Naming`].
    pub bridge_prefix: String,
    /// The host's resolver configuration.
    pub resolv_conf: PathBuf,
    /// Upstream resolvers; `None` reads them from `resolv_conf`.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// The moor binary, run detached as the state dir's DNS resolver
    /// (`moor dns`, see [`resolver`]); `None` serves no DNS.
    pub resolver: Option<PathBuf>,
    /// The DNS port on the gateway.
    pub dns_port: u16,
}

impl NetConfig {
    /// The defaults under `state_dir`: pool 10.89.0.0/16, table `ip moor`,
    /// bridges `mo-NAME`, DNS on port 53 of each gateway, resolvers from
    /// `/etc/resolv.conf`, and no resolver binary: set
    /// [`NetConfig::resolver`] to serve DNS.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        NetConfig {
            state_dir: state_dir.into(),
            pool: "10.89.0.0/16".parse().expect("valid pool"),
            mtu: None,
            nft: "nft".into(),
            table: ports::TABLE.into(),
            bridge_prefix: names::DEFAULT_BRIDGE_PREFIX.into(),
            resolv_conf: "/etc/resolv.conf".into(),
            upstreams: None,
            resolver: None,
            dns_port: 53,
        }
    }
}

/// A network as `moor networks` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInfo {
    /// Its name.
    pub name: String,
    /// Its bridge.
    pub bridge: String,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// Its gateway.
    pub gateway: Ipv4Addr,
    /// No outbound traffic.
    pub internal: bool,
    /// Containers holding an address on it.
    pub containers: Vec<String>,
}

/// One interface plugged into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// The network.
    pub network: String,
    /// Its name inside the container.
    pub ifname: String,
    /// Its address.
    pub address: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The network's gateway.
    pub gateway: Ipv4Addr,
    /// The host end of the veth pair.
    pub host_veth: String,
}

/// The network engine. Safe to share between threads; operations are
/// serialised by a lock on the state file, which also keeps a second moor
/// process (a CLI next to the agent) from interleaving.
#[derive(Debug)]
pub struct Networks {
    cfg: NetConfig,
    file: StateFile,
    instance: String,
    /// The canonical state dir, named in bridge aliases.
    state_dir: PathBuf,
    naming: names::Naming,
    /// The bridges' MTU: `cfg.mtu`, else found when a bridge is first
    /// made (a command that makes none does not look).
    mtu: OnceLock<u32>,
    /// The ruleset this process last loaded into nftables: loading the
    /// same one again (a container without ports attached or detached) is
    /// skipped, which spares a run of `nft` per container.
    rules: Mutex<Option<String>>,
}

impl Networks {
    /// Opens the engine's state under `cfg.state_dir`. Call
    /// [`Networks::cleanup`] once at start-up to repair what a crash left
    /// and to make sure the DNS resolver of existing networks runs.
    pub fn open(cfg: NetConfig) -> Result<Self> {
        let naming = names::Naming::new(&cfg.bridge_prefix)
            .map_err(|message| NetError::Config { message })?;
        let file = StateFile::new(&cfg.state_dir)?;
        {
            let held = file.lock()?;
            file.load(&held)?;
        }
        Ok(Networks {
            instance: names::instance(&cfg.state_dir),
            state_dir: names::canonical_state_dir(&cfg.state_dir),
            naming,
            cfg,
            file,
            mtu: OnceLock::new(),
            rules: Mutex::new(None),
        })
    }

    /// Loads the nftables ruleset for `state` unless the kernel provably
    /// holds it already: this process loaded exactly that one, or (`verify`:
    /// at start-up and on roll-backs, when this process's memory is not
    /// enough) the stamp left by the last load names the same ruleset, this
    /// boot, and the handle the table still has — so a table deleted or a
    /// firewall reloaded since is loaded again.
    pub(super) fn load_rules(&self, state: &State, verify: bool) -> Result<()> {
        let ruleset = ports::ruleset(&self.cfg.table, state);
        let mut loaded = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.as_deref() == Some(ruleset.as_str()) && !verify {
            return Ok(());
        }
        let stamp_path = self.cfg.state_dir.join("net").join("rules.applied");
        let handle = || nfnl::table_handle(&self.cfg.table).ok();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let stamp = |handle: Option<u64>| {
            format!(
                "{}\n{}\n{ruleset}",
                boot.trim(),
                handle.map_or("-".into(), |h| h.to_string())
            )
        };
        // Only a verifying caller can find the stamp current: otherwise this
        // process loaded the table last, and its cache already said no.
        let current = verify
            .then(|| std::fs::read_to_string(&stamp_path).ok())
            .flatten();
        if current.is_some_and(|s| !boot.is_empty() && handle().is_some_and(|h| s == stamp(h))) {
            *loaded = Some(ruleset);
            return Ok(());
        }
        // Forget what was loaded until the new one is: a failed load may
        // have left the table in any state.
        *loaded = None;
        let _ = std::fs::remove_file(&stamp_path);
        ports::apply(&self.cfg.nft, &ruleset)?;
        // The stamp is a cache: when it cannot be written (or is lost),
        // the next start-up loads the rules again.
        // The table must be there exactly when the ruleset has one.
        if let Some(h) = handle()
            && h.is_some() != state.networks.is_empty()
        {
            let _ = std::fs::write(&stamp_path, stamp(h));
        }
        *loaded = Some(ruleset);
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// A copy of the persisted state.
    pub fn state(&self) -> Result<State> {
        let held = self.file.lock()?;
        self.file.load(&held)
    }

    /// Creates network `name` (bridge, gateway address, rules, DNS served
    /// on the gateway), or completes and adopts it when it already exists
    /// as asked.
    pub fn create_network(&self, name: &str, spec: &NetworkSpec) -> Result<NetworkInfo> {
        let held = self.file.lock()?;
        let mut state = self.file.load(&held)?;
        let bridge_name = self.naming.bridge(name);
        let record = match state.networks.get(name) {
            Some(existing) => {
                check_same(existing, spec)?;
                existing.clone()
            }
            None => {
                let routes = ipam::host_routes()?;
                let (subnet, gateway, allocated) =
                    ipam::choose_subnet(name, &bridge_name, spec, &state, &routes, self.cfg.pool)?;
                NetworkRecord {
                    name: name.to_string(),
                    bridge: bridge_name,
                    subnet,
                    gateway,
                    internal: spec.internal,
                    allocated,
                }
            }
        };
        let before = state.clone();
        // A failure removes the bridge only if this call made it.
        let existed = bridge::exists(&record.bridge)?;
        state.networks.insert(name.to_string(), record.clone());
        // Intent first: a crash from here on leaves a record that cleanup
        // completes or removes, never an unrecorded bridge.
        self.file.save(&held, &state)?;
        let done = self.realise_network(&record, &state);
        if let Err(e) = done {
            if !existed && !before.networks.contains_key(name) {
                let _ = bridge::remove(&record.bridge);
            }
            self.file.save(&held, &before)?;
            let _ = self.load_rules(&before, true);
            self.reload_dns();
            return Err(e);
        }
        Ok(info(&record, &state))
    }

    fn realise_network(&self, record: &NetworkRecord, state: &State) -> Result<()> {
        bridge::create(
            &self.bridge_alias(&record.name),
            &record.bridge,
            record.gateway,
            record.subnet.prefix_len(),
            self.mtu(),
        )?;
        if !record.internal {
            netlink::sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        }
        self.load_rules(state, false)?;
        bridge::allow_localnet(&record.bridge)?;
        self.start_dns(Some(record))
    }

    /// The alias that marks this instance's bridge of `network`.
    pub(super) fn bridge_alias(&self, network: &str) -> String {
        names::bridge_alias(&self.instance, network, &self.state_dir)
    }

    /// Removes network `name`; refused while containers hold addresses on it.
    pub fn remove_network(&self, name: &str) -> Result<()> {
        let held = self.file.lock()?;
        let mut state = self.file.load(&held)?;
        let Some(record) = state.networks.get(name).cloned() else {
            return Ok(());
        };
        let users = state.users(name);
        if !users.is_empty() {
            return Err(NetError::InUse {
                network: name.to_string(),
                containers: users.join(", "),
            });
        }
        state.networks.remove(name);
        let prefix = format!("{name}/");
        state.recent.retain(|k, _| !k.starts_with(&prefix));
        self.load_rules(&state, false)?;
        bridge::remove(&record.bridge)?;
        self.file.save(&held, &state)?;
        self.reload_dns();
        Ok(())
    }

    /// The networks, sorted by name.
    pub fn list(&self) -> Result<Vec<NetworkInfo>> {
        let state = self.state()?;
        Ok(state.networks.values().map(|n| info(n, &state)).collect())
    }

    /// Plugs `container` into the network namespace at `netns` (a path such
    /// as `/proc/PID/ns/net` or `/run/netns/NAME`): one interface per
    /// attachment (`eth0`, `eth1`, …; the first non-internal one carries the
    /// default route),
    /// with addresses from IPAM, and publishes `ports` on the host.
    /// Re-attaching (after a restart) keeps the addresses.
    pub fn attach(
        &self,
        container: &str,
        netns: &Path,
        attachments: &[NetworkAttachment],
        ports: &[PortMapping],
    ) -> Result<Vec<Interface>> {
        let held = self.file.lock()?;
        let mut state = self.file.load(&held)?;
        let before = state.clone();
        let previous = state.containers.remove(container).unwrap_or_default();
        let mut record = ContainerRecord {
            leases: Vec::new(),
            netns: Some(netns.to_path_buf()),
            ports: Vec::new(),
        };
        for (i, a) in attachments.iter().enumerate() {
            if record.leases.iter().any(|l| l.network == a.network) {
                return Err(NetError::DuplicateAttachment {
                    container: container.to_string(),
                    network: a.network.clone(),
                });
            }
            // Offer the container its current lease, as the state without it
            // would not know it.
            let mut view = state.clone();
            view.containers
                .insert(container.to_string(), previous.clone());
            for other in &record.leases {
                view.containers
                    .get_mut(container)
                    .expect("just inserted")
                    .leases
                    .retain(|l| l.network != other.network);
            }
            let address = ipam::lease(&view, &a.network, container, a.ipv4_address)?;
            record.leases.push(Lease {
                network: a.network.clone(),
                address,
                aliases: a.aliases.clone(),
                ifname: names::container_ifname(i),
                host_veth: self.naming.veth_host(container, &a.network),
            });
        }
        if !ports.is_empty() && record.leases.is_empty() {
            return Err(NetError::PortsWithoutNetwork {
                container: container.to_string(),
            });
        }
        record.ports = self.resolve_ports(container, ports, &previous, &state)?;
        // Pairs on networks the container leaves go first.
        for old in &previous.leases {
            if !record.leases.iter().any(|l| l.network == old.network) {
                veth::detach(
                    &old.host_veth,
                    &self.naming.veth_peer(container, &old.network),
                )?;
            }
        }
        state
            .containers
            .insert(container.to_string(), record.clone());
        self.file.save(&held, &state)?;
        let plugged = self.plug(container, netns, &record, &state);
        match plugged {
            Ok(interfaces) => Ok(interfaces),
            Err(e) => {
                for l in &record.leases {
                    let _ =
                        veth::detach(&l.host_veth, &self.naming.veth_peer(container, &l.network));
                }
                let mut restored = before;
                if let Some(c) = restored.containers.get_mut(container) {
                    c.netns = None;
                }
                self.file.save(&held, &restored)?;
                let _ = self.load_rules(&restored, true);
                Err(e)
            }
        }
    }

    fn plug(
        &self,
        container: &str,
        netns: &Path,
        record: &ContainerRecord,
        state: &State,
    ) -> Result<Vec<Interface>> {
        let mut out = Vec::new();
        // The default route goes via the first network that has a way out;
        // internal networks give none, so a container on internal networks
        // only reaches their subnets.
        let default_network = record
            .leases
            .iter()
            .position(|l| state.networks.get(&l.network).is_some_and(|n| !n.internal));
        for (i, l) in record.leases.iter().enumerate() {
            let net = state
                .networks
                .get(&l.network)
                .ok_or_else(|| NetError::UnknownNetwork {
                    network: l.network.clone(),
                })?;
            let plug = veth::Plug {
                host: &l.host_veth,
                peer: self.naming.veth_peer(container, &l.network),
                alias: names::veth_alias(&self.instance, container, &l.network),
                network: &l.network,
                bridge: &net.bridge,
                ifname: &l.ifname,
                address: l.address,
                prefix: net.subnet.prefix_len(),
                default_via: (default_network == Some(i)).then_some(net.gateway),
                mtu: self.mtu(),
            };
            veth::attach(netns, &plug)?;
            out.push(Interface {
                network: l.network.clone(),
                ifname: l.ifname.clone(),
                address: l.address,
                prefix: net.subnet.prefix_len(),
                gateway: net.gateway,
                host_veth: l.host_veth.clone(),
            });
        }
        self.load_rules(state, false)?;
        Ok(out)
    }

    fn resolve_ports(
        &self,
        container: &str,
        wanted: &[PortMapping],
        previous: &ContainerRecord,
        state: &State,
    ) -> Result<Vec<Published>> {
        let mut out: Vec<Published> = Vec::new();
        for m in wanted {
            let host_ip = match m.host_ip {
                None => None,
                Some(std::net::IpAddr::V4(ip)) => Some(ip).filter(|ip| !ip.is_unspecified()),
                Some(address) => {
                    return Err(NetError::Ipv6Port {
                        container: container.to_string(),
                        address,
                    });
                }
            };
            let host_port = match m.host_port {
                Some(p) => p,
                None => match previous.ports.iter().find(|p| {
                    p.container_port == m.container_port
                        && p.protocol == m.protocol
                        && p.host_ip == host_ip
                }) {
                    Some(p) => p.host_port,
                    None => ports::ephemeral(host_ip, m.protocol).map_err(|source| {
                        let port = format!(
                            "{}:0/{}",
                            host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                            m.protocol
                        );
                        port_error(container, port, host_ip, source)
                    })?,
                },
            };
            let p = Published {
                host_ip,
                host_port,
                container_port: m.container_port,
                protocol: m.protocol,
            };
            let holder = state
                .containers
                .iter()
                .filter(|(name, c)| name.as_str() != container && c.netns.is_some())
                .find(|(_, c)| c.ports.iter().any(|o| o.conflicts_with(&p)));
            if let Some((holder, _)) = holder {
                return Err(NetError::PortTaken {
                    container: container.to_string(),
                    port: p.describe(),
                    holder: holder.clone(),
                });
            }
            ports::check_free(&p)
                .map_err(|source| port_error(container, p.describe(), p.host_ip, source))?;
            out.push(p);
        }
        Ok(out)
    }

    /// Brings up the loopback interface of the network namespace at
    /// `netns`, for a container with a namespace of its own and no network.
    pub fn loopback_only(&self, netns: &Path) -> Result<()> {
        veth::loopback_up(netns)
    }

    /// Unplugs `container` (its namespace is going away or gone): deletes
    /// its veth pairs and unpublishes its ports. Its addresses stay leased,
    /// so a restart gets them back.
    pub fn detach(&self, container: &str) -> Result<()> {
        self.unplug(container, false)
    }

    /// Detaches `container` and releases its addresses (it was removed).
    /// The addresses are remembered and offered again should a container of
    /// the same name come back (a replacement).
    pub fn release(&self, container: &str) -> Result<()> {
        self.unplug(container, true)
    }

    /// Detaches `container`, and with `release` forgets it: one load of the
    /// rules and one save of the state.
    fn unplug(&self, container: &str, release: bool) -> Result<()> {
        let held = self.file.lock()?;
        let mut state = self.file.load(&held)?;
        let Some(record) = state.containers.get_mut(container) else {
            return Ok(());
        };
        record.netns = None;
        let leases = record.leases.clone();
        if release {
            state.containers.remove(container);
            for l in &leases {
                state
                    .recent
                    .insert(format!("{}/{container}", l.network), l.address);
            }
        }
        self.load_rules(&state, false)?;
        for l in &leases {
            veth::detach(&l.host_veth, &self.naming.veth_peer(container, &l.network))?;
        }
        self.file.save(&held, &state)?;
        Ok(())
    }

    /// The `/etc/resolv.conf` for `container`: its first network's DNS
    /// server, or the host's file when it has no network.
    pub fn resolv_conf(&self, container: &str) -> Result<String> {
        let host = std::fs::read_to_string(&self.cfg.resolv_conf).unwrap_or_default();
        let state = self.state()?;
        let gateway = state
            .containers
            .get(container)
            .and_then(|c| c.leases.first())
            .and_then(|l| state.networks.get(&l.network))
            .map(|n| n.gateway);
        Ok(match gateway {
            Some(gw) => dns::resolv_conf(gw, &host),
            None => host,
        })
    }

    /// The `/etc/hosts` for `container`.
    pub fn hosts(&self, container: &str) -> Result<String> {
        let state = self.state()?;
        let addresses: Vec<_> = state
            .containers
            .get(container)
            .map(|c| {
                c.leases
                    .iter()
                    .map(|l| (l.address, l.aliases.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(dns::hosts(container, &addresses))
    }

    /// Makes sure the state dir's resolver runs and serves the networks
    /// the state records (it reads them from the state file, saved by now).
    /// With `network`, an error when that network could not be served;
    /// without, when any could not.
    pub(super) fn start_dns(&self, network: Option<&NetworkRecord>) -> Result<()> {
        let Some(exe) = &self.cfg.resolver else {
            return Ok(());
        };
        let settings = self.dns_settings();
        let served = resolver::ensure(exe, &self.cfg.state_dir, &settings).map_err(|message| {
            NetError::Resolver {
                state_dir: self.cfg.state_dir.clone(),
                message,
            }
        })?;
        let failed = served
            .failed
            .into_iter()
            .find(|f| network.is_none_or(|n| n.name == f.network));
        if let Some(f) = failed {
            return Err(NetError::Dns {
                network: f.network,
                address: f.address,
                message: f.error,
            });
        }
        match network {
            Some(n) if !served.bound.iter().any(|(name, _)| *name == n.name) => {
                Err(NetError::Dns {
                    network: n.name.clone(),
                    address: SocketAddr::new(n.gateway.into(), self.cfg.dns_port),
                    message: "the resolver did not find it in the network state".into(),
                })
            }
            _ => Ok(()),
        }
    }

    /// True when the state dir's resolver runs with this engine's settings:
    /// what [`Networks::start_dns`] would find without asking it anything.
    pub(super) fn dns_runs(&self) -> bool {
        self.cfg.resolver.is_none()
            || resolver::running_with(&self.cfg.state_dir, &self.dns_settings())
    }

    fn dns_settings(&self) -> resolver::Settings {
        resolver::Settings {
            port: self.cfg.dns_port,
            upstreams: self.cfg.upstreams.clone(),
            resolv_conf: self.cfg.resolv_conf.clone(),
        }
    }

    /// Tells a running resolver that networks went: it unbinds their
    /// gateways, and stops once none is left.
    pub(super) fn reload_dns(&self) {
        if self.cfg.resolver.is_some() {
            let _ = resolver::reload(&self.cfg.state_dir);
        }
    }

    pub(super) fn file(&self) -> &StateFile {
        &self.file
    }

    pub(super) fn instance(&self) -> &str {
        &self.instance
    }

    pub(super) fn naming(&self) -> &names::Naming {
        &self.naming
    }

    pub(super) fn mtu(&self) -> u32 {
        *self
            .mtu
            .get_or_init(|| self.cfg.mtu.unwrap_or_else(default_mtu))
    }
}

/// Why a host port cannot be had: the address is not the host's, or
/// something holds the port.
fn port_error(
    container: &str,
    port: String,
    host_ip: Option<Ipv4Addr>,
    source: std::io::Error,
) -> NetError {
    match (source.kind(), host_ip) {
        (std::io::ErrorKind::AddrNotAvailable, Some(address)) => NetError::NotLocal {
            container: container.to_string(),
            address,
        },
        _ => NetError::PortInUse {
            container: container.to_string(),
            port,
            source,
        },
    }
}

fn check_same(existing: &NetworkRecord, spec: &NetworkSpec) -> Result<()> {
    let subnet_ok = spec.subnet.is_none_or(|s| s.trunc() == existing.subnet);
    let gateway_ok = spec.gateway.is_none_or(|g| g == existing.gateway);
    if subnet_ok && gateway_ok && spec.internal == existing.internal {
        return Ok(());
    }
    let describe = |subnet: String, gw: String, internal: bool| {
        format!(
            "subnet {subnet}, gateway {gw}{}",
            if internal { ", internal" } else { "" }
        )
    };
    Err(NetError::Exists {
        network: existing.name.clone(),
        existing: describe(
            existing.subnet.to_string(),
            existing.gateway.to_string(),
            existing.internal,
        ),
        wanted: describe(
            spec.subnet.map_or("any".into(), |s| s.to_string()),
            spec.gateway.map_or("any".into(), |g| g.to_string()),
            spec.internal,
        ),
    })
}

fn info(n: &NetworkRecord, state: &State) -> NetworkInfo {
    NetworkInfo {
        name: n.name.clone(),
        bridge: n.bridge.clone(),
        subnet: n.subnet,
        gateway: n.gateway,
        internal: n.internal,
        containers: state.users(&n.name).into_iter().map(String::from).collect(),
    }
}

/// The MTU of the interface the default route leaves by, else 1500.
fn default_mtu() -> u32 {
    let dev = ipam::host_routes().ok().and_then(|routes| {
        routes
            .into_iter()
            .find(|r| r.destination.prefix_len() == 0)
            .map(|r| r.device)
    });
    dev.and_then(|d| std::fs::read_to_string(format!("/sys/class/net/{d}/mtu")).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500)
}
