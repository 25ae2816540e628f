//! What a crash left behind: found and removed, or adopted, at start-up.
//!
//! The persisted state is the truth. Bridges and veths that carry moor's
//! mark (the alias, or a veth name of moor's shape) but no record are
//! deleted; recorded networks get their bridge and DNS server back;
//! containers whose namespace or veth is gone are marked detached (their
//! addresses stay leased); and the nftables table is rewritten whole from
//! the state, which drops any stale rule.

use serde::Serialize;

use super::error::Result;
use super::networks::Networks;
use super::{bridge, names, netlink, ports};

/// What [`Networks::cleanup`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Bridges deleted: moor's, but of no recorded network.
    pub removed_bridges: Vec<String>,
    /// veth ends deleted: moor's, but of no live attachment.
    pub removed_veths: Vec<String>,
    /// Containers marked detached: their namespace or veth was gone.
    pub detached: Vec<String>,
}

impl Networks {
    /// Repairs the host after a crash (see the module doc) and starts the
    /// DNS servers of the recorded networks. Idempotent; run at start-up.
    pub fn cleanup(&self) -> Result<CleanupReport> {
        let held = self.file().lock()?;
        let mut state = self.file().load(&held)?;
        let mut report = CleanupReport::default();
        let links = netlink::run(None, |h| async move { netlink::all_links(&h).await })?;
        let mut present = Vec::new();
        for link in &links {
            let Some(name) = netlink::link_name(link) else {
                continue;
            };
            let alias = netlink::link_alias(link).unwrap_or("");
            let network = alias
                .strip_prefix(names::ALIAS_PREFIX)
                .and_then(|a| a.strip_prefix("network:"));
            if let Some(network) = network {
                let recorded = state
                    .networks
                    .get(network)
                    .is_some_and(|n| n.bridge == name);
                if !recorded {
                    bridge::remove(name)?;
                    report.removed_bridges.push(name.to_string());
                }
                continue;
            }
            if names::is_veth(name) {
                let live = name.starts_with("mv-")
                    && state.containers.iter().any(|(_, c)| {
                        c.netns.is_some() && c.leases.iter().any(|l| l.host_veth == name)
                    });
                if live {
                    present.push(name.to_string());
                } else {
                    netlink::run(
                        None,
                        |h| async move { netlink::delete_link(&h, name).await },
                    )?;
                    report.removed_veths.push(name.to_string());
                }
            }
        }
        for (name, c) in state.containers.iter_mut() {
            let Some(ns) = &c.netns else {
                continue;
            };
            let intact = ns.exists() && c.leases.iter().all(|l| present.contains(&l.host_veth));
            if !intact {
                for l in &c.leases {
                    if present.contains(&l.host_veth) {
                        netlink::run(None, |h| {
                            let veth = l.host_veth.clone();
                            async move { netlink::delete_link(&h, &veth).await }
                        })?;
                        report.removed_veths.push(l.host_veth.clone());
                    }
                }
                c.netns = None;
                report.detached.push(name.clone());
            }
        }
        for n in state.networks.values() {
            bridge::create(
                &n.name,
                &n.bridge,
                n.gateway,
                n.subnet.prefix_len(),
                self.mtu(),
            )?;
            if !n.internal {
                netlink::sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
            }
        }
        ports::apply(
            &self.config().nft,
            &ports::ruleset(&self.config().table, &state),
        )?;
        self.file().save(&held, &state)?;
        self.publish(state.clone());
        for n in state.networks.values() {
            self.start_dns(n)?;
        }
        Ok(report)
    }
}
