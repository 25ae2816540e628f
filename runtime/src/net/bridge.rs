//! A Linux bridge per network, with the gateway address on it.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::{LinkBridge, LinkUnspec};

use super::error::{NetError, Result};
use super::names;
use super::netlink::{self, find_link};

/// Creates (or completes) the bridge `bridge`, marked with `alias`, with `gateway/prefix`
/// on it, up, and with `route_localnet` so that DNAT from 127.0.0.1 can leave
/// through it. Idempotent: an existing bridge is adopted and fixed up.
pub(crate) fn create(
    alias: &str,
    bridge: &str,
    gateway: Ipv4Addr,
    prefix: u8,
    mtu: u32,
) -> Result<()> {
    netlink::run(None, |h| async move {
        let link = match find_link(&h, bridge).await? {
            // Adopted: ours from an earlier run (or one that crashed before
            // its alias was set), but never another moor instance's.
            Some(link) => match netlink::link_alias(&link) {
                Some(other) if other.starts_with(names::ALIAS_PREFIX) && other != alias => {
                    return Err(NetError::BridgeTaken {
                        bridge: bridge.to_string(),
                        alias: other.to_string(),
                    });
                }
                _ => link,
            },
            None => {
                let msg = LinkBridge::new(bridge).mtu(mtu).build();
                h.link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(NetError::netlink(format!("create bridge {bridge}")))?;
                find_link(&h, bridge)
                    .await?
                    .ok_or_else(|| NetError::io("find created bridge", bridge, not_found()))?
            }
        };
        let index = link.header.index;
        let addrs: Vec<AddressMessage> = h
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(NetError::netlink(format!("list addresses of {bridge}")))?;
        let has = addrs.iter().any(|a| {
            a.header.prefix_len == prefix
                && a.attributes.iter().any(|attr| {
                    matches!(attr, AddressAttribute::Local(std::net::IpAddr::V4(ip)) if *ip == gateway)
                })
        });
        if !has {
            h.address()
                .add(index, gateway.into(), prefix)
                .replace()
                .execute()
                .await
                .map_err(NetError::netlink(format!(
                    "add {gateway}/{prefix} to {bridge}"
                )))?;
        }
        // The kernel ignores an alias in RTM_NEWLINK; set it now. A crash
        // before this leaves a bridge that the state still records.
        h.link()
            .set(LinkUnspec::new_with_index(index).alias(alias).up().build())
            .execute()
            .await
            .map_err(NetError::netlink(format!("set {bridge} up")))?;
        Ok(())
    })?;
    netlink::sysctl(
        &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    )
}

/// Deletes the bridge; a missing one is not an error.
pub(crate) fn remove(bridge: &str) -> Result<()> {
    netlink::run(
        None,
        |h| async move { netlink::delete_link(&h, bridge).await },
    )
}

/// True when a link of that name exists.
pub(crate) fn exists(bridge: &str) -> Result<bool> {
    netlink::run(None, |h| async move {
        Ok(find_link(&h, bridge).await?.is_some())
    })
}

fn not_found() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENODEV)
}
