//! Address management: a subnet per network, an address per attachment.
//!
//! Pure functions over [`State`] and the host's routes, so every rule here is
//! unit-tested without touching the host; the caller persists the result.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use moor_spec::NetworkSpec;

use super::error::{NetError, Result};
use super::state::State;

/// The prefix of subnets allocated from the pool.
pub const POOL_PREFIX: u8 = 24;

/// A route of the host's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// Where it leads.
    pub destination: Ipv4Net,
    /// Its interface.
    pub device: String,
}

/// The host's IPv4 routes, from `/proc/net/route`.
pub fn host_routes() -> Result<Vec<HostRoute>> {
    let path = "/proc/net/route";
    let text = std::fs::read_to_string(path).map_err(|e| NetError::io("read routes", path, e))?;
    Ok(parse_routes(&text))
}

fn parse_routes(text: &str) -> Vec<HostRoute> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.swap_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, mask) = (hex(f.get(1)?)?, hex(f.get(7)?)?);
            let prefix = u32::from(mask).leading_ones() as u8;
            Some(HostRoute {
                destination: Ipv4Net::new(dest, prefix).ok()?.trunc(),
                device: f[0].to_string(),
            })
        })
        .collect()
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The subnet and gateway for a new network `name`, whose bridge is `bridge`.
/// Returns `(subnet, gateway, allocated_from_pool)`.
pub fn choose_subnet(
    name: &str,
    bridge: &str,
    spec: &NetworkSpec,
    state: &State,
    routes: &[HostRoute],
    pool: Ipv4Net,
) -> Result<(Ipv4Net, Ipv4Addr, bool)> {
    let others: Vec<_> = state.networks.values().filter(|n| n.name != name).collect();
    // Routes through the network's own bridge (left by an earlier attempt)
    // and the default route collide with nothing.
    let routes: Vec<_> = routes
        .iter()
        .filter(|r| r.device != bridge && r.destination.prefix_len() > 0)
        .collect();
    let (subnet, allocated) = match spec.subnet {
        Some(subnet) => {
            let subnet = subnet.trunc();
            if let Some(o) = others.iter().find(|o| overlaps(&o.subnet, &subnet)) {
                return Err(NetError::SubnetOverlap {
                    network: name.to_string(),
                    subnet,
                    other: o.name.clone(),
                    other_subnet: o.subnet,
                });
            }
            if let Some(r) = routes.iter().find(|r| overlaps(&r.destination, &subnet)) {
                return Err(NetError::HostRoute {
                    network: name.to_string(),
                    subnet,
                    route: r.destination,
                    device: r.device.clone(),
                });
            }
            (subnet, false)
        }
        None => {
            let prefix = POOL_PREFIX.max(pool.prefix_len());
            let free = pool
                .subnets(prefix)
                .map_err(|_| NetError::PoolExhausted {
                    network: name.to_string(),
                    pool,
                    prefix,
                })?
                .find(|s| {
                    !others.iter().any(|o| overlaps(&o.subnet, s))
                        && !routes.iter().any(|r| overlaps(&r.destination, s))
                });
            let subnet = free.ok_or(NetError::PoolExhausted {
                network: name.to_string(),
                pool,
                prefix,
            })?;
            (subnet, true)
        }
    };
    if subnet.prefix_len() > 30 {
        return Err(NetError::SubnetTooSmall {
            network: name.to_string(),
            subnet,
        });
    }
    let gateway = match spec.gateway {
        Some(gw) => {
            if !is_host(&subnet, gw) {
                return Err(NetError::BadGateway {
                    network: name.to_string(),
                    gateway: gw,
                    subnet,
                });
            }
            gw
        }
        None => subnet.hosts().next().expect("a /30 or larger has hosts"),
    };
    Ok((subnet, gateway, allocated))
}

fn is_host(subnet: &Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// The address of `container` on `network`: the static one when given
/// (checked), else its current lease, else the one it had last, else the
/// lowest free one.
pub fn lease(
    state: &State,
    network: &str,
    container: &str,
    wanted: Option<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let net = state
        .networks
        .get(network)
        .ok_or_else(|| NetError::UnknownNetwork {
            network: network.to_string(),
        })?;
    let taken: HashSet<Ipv4Addr> = state
        .containers
        .iter()
        .filter(|(name, _)| name.as_str() != container)
        .flat_map(|(_, c)| c.leases.iter())
        .filter(|l| l.network == network)
        .map(|l| l.address)
        .collect();
    let free = |ip: Ipv4Addr| is_host(&net.subnet, ip) && ip != net.gateway && !taken.contains(&ip);
    if let Some(ip) = wanted {
        if !is_host(&net.subnet, ip) || ip == net.gateway {
            return Err(NetError::AddressOutside {
                container: container.to_string(),
                network: network.to_string(),
                address: ip,
                subnet: net.subnet,
            });
        }
        if let Some(holder) = state.holder(network, ip).filter(|h| *h != container) {
            return Err(NetError::AddressTaken {
                container: container.to_string(),
                network: network.to_string(),
                address: ip,
                holder: holder.to_string(),
            });
        }
        return Ok(ip);
    }
    let current = state
        .containers
        .get(container)
        .and_then(|c| c.leases.iter().find(|l| l.network == network))
        .map(|l| l.address);
    let recent = state.recent.get(&format!("{network}/{container}")).copied();
    if let Some(ip) = current.or(recent).filter(|ip| free(*ip)) {
        return Ok(ip);
    }
    net.subnet
        .hosts()
        .find(|ip| free(*ip))
        .ok_or(NetError::SubnetFull {
            network: network.to_string(),
            subnet: net.subnet,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::state::{Lease, NetworkRecord};

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn pool() -> Ipv4Net {
        net("10.89.0.0/16")
    }

    fn with_network(name: &str, subnet: &str) -> State {
        let mut state = State::default();
        add_network(&mut state, name, subnet);
        state
    }

    fn add_network(state: &mut State, name: &str, subnet: &str) {
        let subnet = net(subnet);
        state.networks.insert(
            name.into(),
            NetworkRecord {
                name: name.into(),
                bridge: format!("mo-{name}"),
                subnet,
                gateway: subnet.hosts().next().unwrap(),
                internal: false,
                allocated: false,
            },
        );
    }

    fn give(state: &mut State, container: &str, network: &str, ip: &str) {
        state
            .containers
            .entry(container.into())
            .or_default()
            .leases
            .push(Lease {
                network: network.into(),
                address: ip.parse().unwrap(),
                aliases: vec![],
                ifname: "eth0".into(),
                host_veth: "mv-x".into(),
            });
    }

    #[test]
    fn parses_proc_net_route() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_routes(text);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].destination, net("0.0.0.0/0"));
        assert_eq!(routes[1].destination, net("192.0.2.0/24"));
        assert_eq!(routes[1].device, "eth0");
    }

    #[test]
    fn pool_skips_other_networks_and_host_routes() {
        let state = with_network("a", "10.89.0.0/24");
        let routes = vec![
            HostRoute {
                destination: net("0.0.0.0/0"),
                device: "eth0".into(),
            },
            HostRoute {
                destination: net("10.89.1.0/24"),
                device: "wg0".into(),
            },
        ];
        let spec = NetworkSpec::default();
        let (subnet, gw, allocated) =
            choose_subnet("b", "mo-b", &spec, &state, &routes, pool()).unwrap();
        assert_eq!(subnet, net("10.89.2.0/24"));
        assert_eq!(gw, "10.89.2.1".parse::<Ipv4Addr>().unwrap());
        assert!(allocated);
        // Its own bridge's route does not count.
        let own = vec![HostRoute {
            destination: net("10.89.0.0/24"),
            device: "mo-a".into(),
        }];
        let (again, _, _) = choose_subnet("a", "mo-a", &spec, &state, &own, pool()).unwrap();
        assert_eq!(again, net("10.89.0.0/24"));
    }

    #[test]
    fn manifest_subnets_are_checked() {
        let state = with_network("a", "10.90.0.0/16");
        let spec = |s: &str| NetworkSpec {
            subnet: Some(net(s)),
            ..NetworkSpec::default()
        };
        let err =
            choose_subnet("b", "mo-b", &spec("10.90.3.0/24"), &state, &[], pool()).unwrap_err();
        assert!(
            matches!(err, NetError::SubnetOverlap { ref other, .. } if other == "a"),
            "{err}"
        );
        let routes = vec![HostRoute {
            destination: net("192.0.2.0/24"),
            device: "eth0".into(),
        }];
        let err =
            choose_subnet("b", "mo-b", &spec("192.0.2.0/25"), &state, &routes, pool()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subnet 192.0.2.0/25 of network b collides with the host route 192.0.2.0/24 on eth0"
        );
        let err =
            choose_subnet("b", "mo-b", &spec("10.91.0.0/31"), &state, &[], pool()).unwrap_err();
        assert!(matches!(err, NetError::SubnetTooSmall { .. }), "{err}");
        let bad_gw = NetworkSpec {
            subnet: Some(net("10.91.0.0/24")),
            gateway: Some("10.91.0.255".parse().unwrap()),
            ..NetworkSpec::default()
        };
        let err = choose_subnet("b", "mo-b", &bad_gw, &state, &[], pool()).unwrap_err();
        assert!(matches!(err, NetError::BadGateway { .. }), "{err}");
    }

    #[test]
    fn exhausted_pool_is_an_error() {
        let state = with_network("a", "10.89.0.0/24");
        let err = choose_subnet(
            "b",
            "mo-b",
            &NetworkSpec::default(),
            &state,
            &[],
            net("10.89.0.0/24"),
        )
        .unwrap_err();
        assert!(matches!(err, NetError::PoolExhausted { .. }), "{err}");
    }

    #[test]
    fn leases_are_lowest_free_stable_and_remembered() {
        let mut state = with_network("a", "10.89.0.0/24");
        assert_eq!(
            lease(&state, "a", "web", None).unwrap().to_string(),
            "10.89.0.2"
        );
        give(&mut state, "web", "a", "10.89.0.2");
        assert_eq!(
            lease(&state, "a", "web", None).unwrap().to_string(),
            "10.89.0.2"
        );
        assert_eq!(
            lease(&state, "a", "db", None).unwrap().to_string(),
            "10.89.0.3"
        );
        state.containers.remove("web");
        state
            .recent
            .insert("a/db".into(), "10.89.0.9".parse().unwrap());
        assert_eq!(
            lease(&state, "a", "db", None).unwrap().to_string(),
            "10.89.0.9"
        );
    }

    #[test]
    fn static_addresses_are_checked() {
        let mut state = with_network("a", "10.89.0.0/24");
        give(&mut state, "web", "a", "10.89.0.5");
        let ip = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        assert_eq!(
            lease(&state, "a", "db", ip("10.89.0.7")).unwrap(),
            ip("10.89.0.7").unwrap()
        );
        assert_eq!(
            lease(&state, "a", "web", ip("10.89.0.5")).unwrap(),
            ip("10.89.0.5").unwrap()
        );
        for bad in ["10.89.1.7", "10.89.0.0", "10.89.0.255", "10.89.0.1"] {
            let err = lease(&state, "a", "db", ip(bad)).unwrap_err();
            assert!(
                matches!(err, NetError::AddressOutside { .. }),
                "{bad}: {err}"
            );
        }
        let err = lease(&state, "a", "db", ip("10.89.0.5")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ipv4_address 10.89.0.5 of container db on network a is already used by web"
        );
        let err = lease(&state, "nope", "db", None).unwrap_err();
        assert!(matches!(err, NetError::UnknownNetwork { .. }));
    }

    #[test]
    fn full_subnet_is_an_error() {
        let mut state = with_network("a", "10.89.0.0/30");
        give(&mut state, "web", "a", "10.89.0.2");
        let err = lease(&state, "a", "db", None).unwrap_err();
        assert!(matches!(err, NetError::SubnetFull { .. }), "{err}");
    }
}
