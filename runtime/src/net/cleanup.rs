//! What a crash left behind: found and removed, or adopted, at start-up.
//!
//! The persisted state is the truth, and it is written before the host is
//! touched, so every bridge or veth moor creates is recorded while it
//! exists. Clean-up therefore:
//! - deletes the veth pair of every recorded lease that is not live
//!   (container detached, its namespace gone, or half its pair missing);
//! - deletes bridges and veths carrying this instance's alias but no record;
//! - recreates (adopts) the bridge of every recorded network that is not
//!   intact (missing, unmarked, down, or without its gateway address);
//! - marks containers whose namespace or veth is gone as detached (their
//!   addresses stay leased), and puts back on its bridge every live host
//!   end that is not on it (its bridge was deleted and made again);
//! - rewrites the nftables table whole from the state unless the kernel
//!   provably holds it already (which drops any stale rule), and makes sure
//!   the DNS resolver runs.
//!
//! Every `moor apply` runs it, so a host with nothing to repair costs two
//! netlink dumps (links, addresses; read as `dump` says) and an nftables
//! handle query on the calling thread, a few reads, and no writes: see
//! `bench/stack.sh`.
//!
//! It never touches an interface that is not provably this instance's: not
//! by name shape alone, since another moor (a second state directory) or a
//! user may own a `mo-…` bridge or an `mv-…` veth.

use std::collections::BTreeSet;

use serde::Serialize;

use super::error::Result;
use super::networks::Networks;
use super::{bridge, dump, names, netlink, veth};

/// What [`Networks::cleanup`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Bridges deleted: this moor's, but of no recorded network.
    pub removed_bridges: Vec<String>,
    /// veth ends deleted: this moor's, but of no live attachment.
    pub removed_veths: Vec<String>,
    /// Containers marked detached: their namespace or veth was gone.
    pub detached: Vec<String>,
    /// Bridges of recorded networks made whole again: missing, unmarked,
    /// down, or without their gateway address.
    pub repaired_bridges: Vec<String>,
    /// Host ends of live attachments put back on their bridges.
    pub replugged: Vec<String>,
}

impl Networks {
    /// Repairs the host after a crash (see the module doc) and makes sure
    /// the DNS resolver of the recorded networks runs. Idempotent; run at
    /// start-up.
    pub fn cleanup(&self) -> Result<CleanupReport> {
        let held = self.file().lock()?;
        let mut state = self.file().load(&held)?;
        let mut report = CleanupReport::default();
        let (links, addrs) = dump::links_and_addresses()?;
        let present: BTreeSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
        let delete = |name: &str, report: &mut Vec<String>| -> Result<()> {
            netlink::run(
                None,
                |h| async move { netlink::delete_link(&h, name).await },
            )?;
            report.push(name.to_string());
            Ok(())
        };

        // Attachments: live ones are kept, all others lose their pairs.
        for (name, c) in state.containers.iter_mut() {
            let intact = c.netns.as_ref().is_some_and(|ns| ns.exists())
                && c.leases
                    .iter()
                    .all(|l| present.contains(l.host_veth.as_str()));
            if c.netns.is_some() && !intact {
                c.netns = None;
                report.detached.push(name.clone());
            }
            if c.netns.is_some() {
                continue;
            }
            for l in &c.leases {
                for end in [
                    l.host_veth.clone(),
                    self.naming().veth_peer(name, &l.network),
                ] {
                    if present.contains(end.as_str()) {
                        delete(&end, &mut report.removed_veths)?;
                    }
                }
            }
        }

        // Marked links of this instance that no record accounts for.
        let recorded_veths: BTreeSet<&str> = state
            .containers
            .values()
            .filter(|c| c.netns.is_some())
            .flat_map(|c| c.leases.iter().map(|l| l.host_veth.as_str()))
            .collect();
        let recorded_bridges: BTreeSet<&str> =
            state.networks.values().map(|n| n.bridge.as_str()).collect();
        for link in &links {
            let (name, Some(alias)) = (link.name.as_str(), link.alias.as_deref()) else {
                continue;
            };
            match names::owned_by(alias, self.instance()) {
                Some(true) if !recorded_bridges.contains(name) => {
                    bridge::remove(name)?;
                    report.removed_bridges.push(name.to_string());
                }
                Some(false)
                    if !recorded_veths.contains(name)
                        && !report.removed_veths.iter().any(|v| v == name) =>
                {
                    delete(name, &mut report.removed_veths)?;
                }
                _ => {}
            }
        }

        for n in state.networks.values() {
            let alias = self.bridge_alias(&n.name);
            let prefix = n.subnet.prefix_len();
            if !bridge::intact(&links, &addrs, &alias, &n.bridge, n.gateway, prefix) {
                bridge::create(&alias, &n.bridge, n.gateway, prefix, self.mtu())?;
                report.repaired_bridges.push(n.bridge.clone());
            }
            if !n.internal {
                netlink::sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
            }
        }
        // Live host ends not on their network's bridge (as dumped above: a
        // bridge made again has none).
        let index = |name: &str| links.iter().find(|l| l.name == name).map(|l| l.index);
        for c in state.containers.values().filter(|c| c.netns.is_some()) {
            for l in &c.leases {
                let Some(n) = state.networks.get(&l.network) else {
                    continue;
                };
                let on_bridge = links
                    .iter()
                    .find(|link| link.name == l.host_veth)
                    .and_then(|link| link.controller);
                if on_bridge.is_none() || on_bridge != index(&n.bridge) {
                    veth::replug(&l.host_veth, &n.bridge)?;
                    report.replugged.push(l.host_veth.clone());
                }
            }
        }
        self.load_rules(&state, true)?;
        for n in state.networks.values() {
            bridge::allow_localnet(&n.bridge)?;
        }
        self.file().save(&held, &state)?;
        if state.networks.is_empty() {
            self.reload_dns();
        } else if report != CleanupReport::default() || !self.dns_runs() {
            // A running resolver follows the state by itself (it watches
            // it, and reloads every 30 s); after a repair it is asked now.
            self.start_dns(None)?;
        }
        Ok(report)
    }
}
