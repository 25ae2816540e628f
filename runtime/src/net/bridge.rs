//! A Linux bridge per network, with the gateway address on it.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::{LinkBridge, LinkUnspec};

use super::dump::{Addr, Link};
use super::error::{NetError, Result};
use super::names;
use super::netlink::{self, find_link};

/// Creates (or completes) the bridge `bridge`, marked with `alias`, with `gateway/prefix`
/// on it, and up. Idempotent: an existing bridge is adopted and fixed up.
/// [`allow_localnet`] comes after, once the rules guard it.
///
/// A bridge of that name marked by another moor instance is refused while
/// that instance lives, and replaced (with a warning) once it is gone: see
/// [`claim`].
pub(crate) fn create(
    alias: &str,
    bridge: &str,
    gateway: Ipv4Addr,
    prefix: u8,
    mtu: u32,
) -> Result<()> {
    let me = names::BridgeOwner::parse(alias).map(|o| o.instance);
    netlink::run(None, |h| async move {
        let mut existing = find_link(&h, bridge).await?;
        // Adopted: ours from an earlier run (or one that crashed before its
        // alias was set, or marked in the older form), but never a live
        // moor instance's.
        let other = existing
            .as_ref()
            .and_then(netlink::link_alias)
            .and_then(names::BridgeOwner::parse)
            .filter(|o| Some(&o.instance) != me.as_ref());
        if let Some(owner) = other {
            match claim(&owner, bridge) {
                Claim::Live(owner) => {
                    return Err(NetError::BridgeTaken {
                        bridge: bridge.to_string(),
                        owner,
                    });
                }
                Claim::Stale(why) => {
                    tracing::warn!(
                        bridge,
                        "replacing bridge {bridge} left by another moor instance: {why}"
                    );
                    netlink::delete_link(&h, bridge).await?;
                    existing = None;
                }
            }
        }
        let link = match existing {
            Some(link) => link,
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
    })
}

/// Sets `route_localnet` on `bridge`, so that a connection from the host's
/// 127.0.0.1 to a port published there, DNAT'd to a container, can leave
/// through it. Only once the ruleset's `guard` chain is loaded (see
/// `ports`): the same switch lets packets *to* 127.0.0.0/8 in.
pub(crate) fn allow_localnet(bridge: &str) -> Result<()> {
    netlink::sysctl(
        &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    )
}

/// True when the bridge `bridge` is as [`create`] leaves it, judged from a
/// dump of the host's links and addresses: present, marked with `alias`, up,
/// and with `gateway/prefix` on it. A bridge that is not is given to
/// [`create`], which repairs what is missing.
pub(crate) fn intact(
    links: &[Link],
    addrs: &[Addr],
    alias: &str,
    bridge: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> bool {
    let Some(link) = links.iter().find(|l| l.name == bridge) else {
        return false;
    };
    link.alias.as_deref() == Some(alias)
        && link.up
        && addrs
            .iter()
            .any(|a| a.index == link.index && a.prefix_len == prefix && a.local == Some(gateway))
}

/// Whether another moor instance still holds a bridge its alias marks.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// It does (or it cannot be told): who, for the error.
    Live(String),
    /// It does not: why, for the log.
    Stale(String),
}

/// A bridge is stale when the state dir its alias names no longer exists,
/// or that state dir's network state no longer records the bridge (its
/// network was removed, or the dir was reset). An alias of the older form
/// names no state dir: such a bridge is taken for live, since nothing tells
/// a live owner from a gone one, and the error says how to remove it.
fn claim(owner: &names::BridgeOwner, bridge: &str) -> Claim {
    let Some(dir) = &owner.state_dir else {
        return Claim::Live(format!(
            "instance {} (its mark names no state dir; if that moor is gone, delete the bridge with `ip link del {bridge}`)",
            owner.instance
        ));
    };
    if !dir.is_dir() {
        return Claim::Stale(format!("its state dir {} no longer exists", dir.display()));
    }
    match super::state::records_bridge(dir, bridge) {
        Ok(false) => Claim::Stale(format!(
            "its state dir {} no longer records it",
            dir.display()
        )),
        Ok(true) => Claim::Live(format!(
            "state dir {}, network {}",
            dir.display(),
            owner.network
        )),
        Err(e) => Claim::Live(format!(
            "state dir {}, whose network state cannot be read: {e}",
            dir.display()
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::state::{NetworkRecord, State, StateFile};

    fn owner(dir: Option<&std::path::Path>) -> names::BridgeOwner {
        names::BridgeOwner {
            instance: "0123abcd".into(),
            network: "default".into(),
            state_dir: dir.map(Into::into),
        }
    }

    fn record(bridge: &str) -> NetworkRecord {
        NetworkRecord {
            name: "default".into(),
            bridge: bridge.into(),
            subnet: "10.89.0.0/24".parse().unwrap(),
            gateway: "10.89.0.1".parse().unwrap(),
            internal: false,
            allocated: true,
        }
    }

    #[test]
    fn a_bridge_is_stale_once_its_state_dir_is_gone_or_forgets_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        // The directory is gone: stale.
        let gone = claim(&owner(Some(&dir)), "mo-default");
        assert!(
            matches!(&gone, Claim::Stale(why) if why.contains("no longer exists")),
            "{gone:?}"
        );
        // It exists but has no network state (reset, or never got that far).
        std::fs::create_dir_all(&dir).unwrap();
        let empty = claim(&owner(Some(&dir)), "mo-default");
        assert!(
            matches!(&empty, Claim::Stale(why) if why.contains("no longer records it")),
            "{empty:?}"
        );
        // Its state records the bridge: live, and the error names the owner.
        let file = StateFile::new(&dir).unwrap();
        let held = file.lock().unwrap();
        let mut state = State::default();
        state
            .networks
            .insert("default".into(), record("mo-default"));
        file.save(&held, &state).unwrap();
        assert_eq!(
            claim(&owner(Some(&dir)), "mo-default"),
            Claim::Live(format!("state dir {}, network default", dir.display()))
        );
        // It records other bridges only: stale.
        state.networks.insert("default".into(), record("mo-other"));
        file.save(&held, &state).unwrap();
        assert!(matches!(
            claim(&owner(Some(&dir)), "mo-default"),
            Claim::Stale(_)
        ));
        // A state that cannot be read: taken for live, never replaced.
        std::fs::write(dir.join("net/state.json"), b"{ not json").unwrap();
        assert!(matches!(
            claim(&owner(Some(&dir)), "mo-default"),
            Claim::Live(why) if why.contains("cannot be read")
        ));
    }

    #[test]
    fn an_alias_of_the_older_form_is_taken_for_live() {
        let Claim::Live(why) = claim(&owner(None), "mo-default") else {
            panic!("an owner that names no state dir cannot be told gone");
        };
        assert!(why.contains("ip link del mo-default"), "{why}");
    }
}
