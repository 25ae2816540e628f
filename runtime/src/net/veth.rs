//! A veth pair per attachment: the host end on the network's bridge, the
//! other end moved into the container's network namespace and renamed.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use rtnetlink::packet_route::link::InfoBridgePort;
use rtnetlink::{LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::error::{NetError, Result};
use super::netlink::{self, find_link};

/// One end to plug into a container.
#[derive(Debug, Clone)]
pub(crate) struct Plug<'a> {
    /// The host end's name (see [`names::Naming::veth_host`]).
    pub host: &'a str,
    /// The container end's name until it is renamed `ifname`.
    pub peer: String,
    /// The alias marking the host end as this moor's.
    pub alias: String,
    pub network: &'a str,
    pub bridge: &'a str,
    pub ifname: &'a str,
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// The gateway, when this interface carries the default route.
    pub default_via: Option<Ipv4Addr>,
    pub mtu: u32,
}

/// Sets the loopback interface of the network namespace at `netns` up: a
/// namespace of its own with no network (`network_mode = "none"`) still has
/// a working `127.0.0.1`, as in Docker (whose runc does the same).
pub(crate) fn loopback_up(netns: &Path) -> Result<()> {
    netlink::run(Some(netns), |h| async move {
        if let Some(lo) = find_link(&h, "lo").await? {
            h.link()
                .set(LinkUnspec::new_with_index(lo.header.index).up().build())
                .execute()
                .await
                .map_err(NetError::netlink("set lo up"))?;
        }
        Ok(())
    })
}

/// Creates the pair, puts the host end on the bridge and configures the
/// container end inside `netns`. Idempotent: a pair left from an earlier
/// attempt is replaced.
pub(crate) fn attach(netns: &Path, plug: &Plug<'_>) -> Result<()> {
    let (host, peer) = (plug.host.to_string(), plug.peer.clone());
    let ns = File::open(netns).map_err(|e| NetError::io("open network namespace", netns, e))?;
    netlink::run(None, |h| {
        let (host, peer, ns) = (&host, &peer, &ns);
        async move {
            netlink::delete_link(&h, host).await?;
            netlink::delete_link(&h, peer).await?;
            let bridge =
                find_link(&h, plug.bridge)
                    .await?
                    .ok_or_else(|| NetError::UnknownNetwork {
                        network: plug.network.to_string(),
                    })?;
            h.link()
                .add(LinkVeth::new(host, peer).mtu(plug.mtu).build())
                .execute()
                .await
                .map_err(NetError::netlink(format!("create veth pair {host}/{peer}")))?;
            let host_link = find_link(&h, host).await?.ok_or_else(|| gone(host))?;
            let peer_link = find_link(&h, peer).await?.ok_or_else(|| gone(peer))?;
            let index = host_link.header.index;
            let set = |msg| {
                let h = h.clone();
                async move { h.link().set(msg).execute().await }
            };
            set(LinkUnspec::new_with_index(index)
                .alias(plug.alias.as_str())
                .controller(bridge.header.index)
                .build())
            .await
            .map_err(NetError::netlink(format!("put {host} on {}", plug.bridge)))?;
            // Hairpin lets a container reach itself through a published port.
            h.link()
                .set_port(
                    LinkBridgePort::new(index)
                        .append_info_data(InfoBridgePort::HairpinMode(true))
                        .build(),
                )
                .execute()
                .await
                .map_err(NetError::netlink(format!("set hairpin mode on {host}")))?;
            set(LinkUnspec::new_with_index(index).up().build())
                .await
                .map_err(NetError::netlink(format!("set {host} up")))?;
            set(LinkUnspec::new_with_index(peer_link.header.index)
                .setns_by_fd(ns.as_raw_fd())
                .build())
            .await
            .map_err(NetError::netlink(format!(
                "move {peer} into {}",
                netns.display()
            )))?;
            Ok(())
        }
    })?;
    let configured = netlink::run(Some(netns), |h| {
        let peer = &peer;
        async move {
            let link = find_link(&h, peer).await?.ok_or_else(|| gone(peer))?;
            let index = link.header.index;
            h.link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .name(plug.ifname)
                        .mtu(plug.mtu)
                        .build(),
                )
                .execute()
                .await
                .map_err(NetError::netlink(format!(
                    "rename {peer} to {}",
                    plug.ifname
                )))?;
            h.address()
                .add(index, plug.address.into(), plug.prefix)
                .replace()
                .execute()
                .await
                .map_err(NetError::netlink(format!(
                    "add {}/{} to {}",
                    plug.address, plug.prefix, plug.ifname
                )))?;
            h.link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(NetError::netlink(format!("set {} up", plug.ifname)))?;
            if let Some(lo) = find_link(&h, "lo").await? {
                h.link()
                    .set(LinkUnspec::new_with_index(lo.header.index).up().build())
                    .execute()
                    .await
                    .map_err(NetError::netlink("set lo up"))?;
            }
            if let Some(gw) = plug.default_via {
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gw)
                    .output_interface(index)
                    .build();
                h.route()
                    .add(route)
                    .replace()
                    .execute()
                    .await
                    .map_err(NetError::netlink(format!("add default route via {gw}")))?;
            }
            Ok(())
        }
    });
    if configured.is_err() {
        // Deleting the host end takes the peer with it, wherever it is.
        let _ = detach(&host, &peer);
    }
    configured
}

/// Puts the host end `host` back on `bridge` (hairpin on, up): what a
/// bridge that was deleted and made again lost.
pub(crate) fn replug(host: &str, bridge: &str) -> Result<()> {
    netlink::run(None, |h| async move {
        let port = find_link(&h, host).await?.ok_or_else(|| gone(host))?;
        let bridge_link = find_link(&h, bridge).await?.ok_or_else(|| gone(bridge))?;
        let index = port.header.index;
        h.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge_link.header.index)
                    .build(),
            )
            .execute()
            .await
            .map_err(NetError::netlink(format!("put {host} on {bridge}")))?;
        h.link()
            .set_port(
                LinkBridgePort::new(index)
                    .append_info_data(InfoBridgePort::HairpinMode(true))
                    .build(),
            )
            .execute()
            .await
            .map_err(NetError::netlink(format!("set hairpin mode on {host}")))?;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(NetError::netlink(format!("set {host} up")))
    })
}

/// Deletes the pair `host`/`peer`; a missing pair is fine.
pub(crate) fn detach(host: &str, peer: &str) -> Result<()> {
    netlink::run(None, |h| async move {
        netlink::delete_link(&h, host).await?;
        netlink::delete_link(&h, peer).await
    })
}

fn gone(name: &str) -> NetError {
    NetError::io(
        "find created link",
        name,
        std::io::Error::from_raw_os_error(libc::ENODEV),
    )
}
