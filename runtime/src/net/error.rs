//! The one error type of the network engine.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// A failed network operation. Every variant says what was being done and
/// with what; none of them leaves anything half-created behind.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The network engine's configuration is wrong.
    #[error("{message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A netlink request failed.
    #[error("netlink: {op}")]
    Netlink {
        /// What was being done.
        op: String,
        /// The kernel's (or the library's) answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A file, socket or `/proc/sys` operation failed.
    #[error("{what}: {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The network state file does not parse.
    #[error("read network state {path}")]
    State {
        /// The state file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A network of this name exists with a different subnet, gateway or mode.
    #[error("network {network} already exists with {existing}, not {wanted}")]
    Exists {
        /// The network.
        network: String,
        /// What it has.
        existing: String,
        /// What was asked for.
        wanted: String,
    },
    /// The subnet overlaps the subnet of another moor network.
    #[error("subnet {subnet} of network {network} overlaps {other_subnet} of network {other}")]
    SubnetOverlap {
        /// The network being created.
        network: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// The other network.
        other: String,
        /// The other network's subnet.
        other_subnet: Ipv4Net,
    },
    /// The subnet collides with a route the host already has.
    #[error(
        "subnet {subnet} of network {network} collides with the host route {route} on {device}"
    )]
    HostRoute {
        /// The network being created.
        network: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// The host's route.
        route: Ipv4Net,
        /// The route's interface.
        device: String,
    },
    /// No free subnet is left in the default pool.
    #[error("no free /{prefix} left in the address pool {pool} for network {network}")]
    PoolExhausted {
        /// The network being created.
        network: String,
        /// The pool.
        pool: Ipv4Net,
        /// The size asked for.
        prefix: u8,
    },
    /// The gateway is not a usable host address of the subnet.
    #[error("gateway {gateway} of network {network} is not a host address of {subnet}")]
    BadGateway {
        /// The network.
        network: String,
        /// The gateway asked for.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// A subnet too small to hold a gateway and a container.
    #[error("subnet {subnet} of network {network} is too small (at most /30)")]
    SubnetTooSmall {
        /// The network.
        network: String,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// The bridge's name is taken by another live moor (another state
    /// directory that still records it).
    #[error(
        "bridge {bridge} belongs to another moor ({owner}); use another network name or bridge prefix (MOOR_BRIDGE_PREFIX)"
    )]
    BridgeTaken {
        /// The bridge.
        bridge: String,
        /// Its owner, as its alias and the owner's state tell.
        owner: String,
    },
    /// The network is not known.
    #[error("network {network} does not exist")]
    UnknownNetwork {
        /// Its name.
        network: String,
    },
    /// The network still has containers attached.
    #[error("network {network} is still used by {containers}")]
    InUse {
        /// The network.
        network: String,
        /// The containers holding addresses on it, comma-separated.
        containers: String,
    },
    /// A static address outside the network's subnet, or one that is the
    /// network, broadcast or gateway address.
    #[error(
        "ipv4_address {address} of container {container} is not a free host address of network {network} ({subnet})"
    )]
    AddressOutside {
        /// The container.
        container: String,
        /// The network.
        network: String,
        /// The address asked for.
        address: Ipv4Addr,
        /// The network's subnet.
        subnet: Ipv4Net,
    },
    /// A static address already leased to another container.
    #[error(
        "ipv4_address {address} of container {container} on network {network} is already used by {holder}"
    )]
    AddressTaken {
        /// The container.
        container: String,
        /// The network.
        network: String,
        /// The address asked for.
        address: Ipv4Addr,
        /// The container holding it.
        holder: String,
    },
    /// Every address of the subnet is leased.
    #[error("network {network} ({subnet}) has no free address left")]
    SubnetFull {
        /// The network.
        network: String,
        /// Its subnet.
        subnet: Ipv4Net,
    },
    /// The container is attached to the same network twice.
    #[error("container {container} is attached to network {network} twice")]
    DuplicateAttachment {
        /// The container.
        container: String,
        /// The network.
        network: String,
    },
    /// Ports were given but no network to publish them from.
    #[error("container {container} publishes ports but is attached to no network")]
    PortsWithoutNetwork {
        /// The container.
        container: String,
    },
    /// A host port already published by another moor container.
    #[error("host port {port} of container {container} is already published by {holder}")]
    PortTaken {
        /// The container.
        container: String,
        /// `ip:port/proto`.
        port: String,
        /// The container publishing it.
        holder: String,
    },
    /// A host port some other process listens on.
    #[error("host port {port} of container {container} is already in use on the host")]
    PortInUse {
        /// The container.
        container: String,
        /// `ip:port/proto`.
        port: String,
        /// Why binding it failed.
        #[source]
        source: io::Error,
    },
    /// The host address to publish on is not one of this host's.
    #[error("host address {address} of container {container} is not an address of this host")]
    NotLocal {
        /// The container.
        container: String,
        /// The address.
        address: std::net::Ipv4Addr,
    },
    /// Published ports are IPv4 only for now.
    #[error(
        "host address {address} of container {container} is IPv6; published ports are IPv4 only"
    )]
    Ipv6Port {
        /// The container.
        container: String,
        /// The address.
        address: std::net::IpAddr,
    },
    /// `nft` failed to apply the ruleset.
    #[error("apply nftables ruleset: {message}")]
    Nft {
        /// nft's diagnostics.
        message: String,
    },
    /// The resolver could not serve a network on its gateway.
    #[error("serve dns for network {network} on {address}: {message}")]
    Dns {
        /// The network.
        network: String,
        /// Where it was to listen.
        address: std::net::SocketAddr,
        /// Why not, as the resolver reported it.
        message: String,
    },
    /// The resolver process could not be started or reached.
    #[error("dns resolver of {state_dir}: {message}")]
    Resolver {
        /// The state dir it serves.
        state_dir: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl NetError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let op = op.into();
        move |source| NetError::Netlink { op, source }
    }
}

/// The network engine's result.
pub type Result<T, E = NetError> = std::result::Result<T, E>;
