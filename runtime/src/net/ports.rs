//! Published ports, masquerade and isolation through nftables.
//!
//! moor owns one table, `ip moor` (its name is configurable so that tests
//! run side by side), and always rewrites it whole from the
//! persisted [`State`] in a single `nft -f -` transaction (`table`, `delete
//! table`, `table { … }`): the kernel swaps old for new atomically, a restart
//! regenerates exactly the same rules (never a duplicate), and rules of a
//! removed container or network vanish with its record. No other table is
//! touched.
//!
//! Isolation drops forwarding between different moor bridges, and out of
//! and into internal ones, except for connections to a published port
//! (`ct status dnat`): a published port is public, whoever asks.
//!
//! Loopback stays the host's own. A port published on 127.0.0.1 is DNAT'd
//! in `output` and leaves through a bridge with its loopback source, which
//! the kernel allows only with `route_localnet` on that bridge; but that
//! switch also lets a packet *to* 127.0.0.0/8 arrive on the bridge, so a
//! container that sends one to the gateway's MAC (a raw socket, as any
//! container with `CAP_NET_RAW` may) would reach whatever listens on the
//! host's 127.0.0.1 (the agent's metrics, a database bound to loopback) and
//! every port published on 127.0.0.1 (the hole kube-proxy had as
//! CVE-2020-8558). The `guard` chain drops every packet to 127.0.0.0/8 that did
//! not come from `lo`, before conntrack and DNAT (priority `raw`): the
//! kernel's own rule for martian destinations, back in force on every
//! interface. Replies of connections the host made to a loopback-published
//! port are not caught: they arrive for the gateway's address (masquerade)
//! and are mapped back to 127.0.0.1 only later, at `dstnat`. The bridge
//! gets `route_localnet` only after a ruleset with this chain is loaded.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::process::{Command, Stdio};

use moor_spec::Protocol;

use super::error::{NetError, Result};
use super::state::{Published, State};

/// The name of moor's table (family `ip`) unless configured otherwise.
pub const TABLE: &str = "moor";

/// The whole ruleset for `state`; empty networks still get isolation and
/// masquerade, containers' ports only while they are attached.
pub fn ruleset(table: &str, state: &State) -> String {
    let mut out = format!("table ip {table}\ndelete table ip {table}\n");
    if state.networks.is_empty() {
        return out;
    }
    let mut dnat = String::new();
    for c in state.containers.values().filter(|c| c.netns.is_some()) {
        let Some(first) = c.leases.first() else {
            continue;
        };
        for p in &c.ports {
            let daddr = p
                .host_ip
                .filter(|ip| !ip.is_unspecified())
                .map(|ip| format!("ip daddr {ip} "))
                .unwrap_or_default();
            let _ = writeln!(
                dnat,
                "    {daddr}{proto} dport {} dnat to {}:{}",
                p.host_port,
                first.address,
                p.container_port,
                proto = p.protocol
            );
        }
    }
    let bridges: Vec<&str> = state.networks.values().map(|n| n.bridge.as_str()).collect();
    let mut post = String::new();
    let mut forward = String::new();
    for n in state.networks.values() {
        let (br, subnet) = (&n.bridge, n.subnet);
        // DNAT from the host's own 127.0.0.1 leaves through the bridge with a
        // loopback source (route_localnet): give it the gateway's address.
        let _ = writeln!(post, "    oifname \"{br}\" ip saddr 127.0.0.0/8 masquerade");
        // Hairpin: a container reaching a published port of a peer on the
        // same bridge must see the reply come back through the host.
        let _ = writeln!(
            post,
            "    oifname \"{br}\" ip saddr {subnet} ct status dnat masquerade"
        );
        if n.internal {
            let _ = writeln!(forward, "    iifname \"{br}\" oifname != \"{br}\" drop");
            let _ = writeln!(forward, "    oifname \"{br}\" iifname != \"{br}\" drop");
        } else {
            let _ = writeln!(post, "    ip saddr {subnet} oifname != \"{br}\" masquerade");
            let others: Vec<String> = bridges
                .iter()
                .filter(|b| **b != br.as_str())
                .map(|b| format!("\"{b}\""))
                .collect();
            if !others.is_empty() {
                let _ = writeln!(
                    forward,
                    "    iifname \"{br}\" oifname {{ {} }} drop",
                    others.join(", ")
                );
            }
        }
    }
    let _ = write!(
        out,
        "table ip {table} {{\n\
         \x20 chain guard {{\n    type filter hook prerouting priority raw; policy accept;\n    iifname != \"lo\" ip daddr 127.0.0.0/8 drop\n  }}\n\
         \x20 chain published {{\n{dnat}  }}\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump published\n  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump published\n  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{post}  }}\n\
         \x20 chain forward {{\n    type filter hook forward priority filter; policy accept;\n    ct status dnat accept\n{forward}  }}\n\
         }}\n"
    );
    out
}

/// Applies `ruleset` atomically with `nft -f -`.
pub fn apply(nft: &str, ruleset: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(nft);
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // `nft` dies with us: a moor killed mid-load must not leave an orphan
    // that commits a stale ruleset later, over a newer one (the kernel
    // applies a transaction whole or not at all, so killing it is safe).
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent
            {
                return Err(std::io::Error::other("the parent is gone"));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| NetError::io("run nft", nft, e))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(ruleset.as_bytes())
        .map_err(|e| NetError::io("write to nft", nft, e))?;
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::io("wait for nft", nft, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Nft {
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Checks that no process on the host listens on the port, by binding it
/// for a moment (`SO_REUSEADDR`, as std sets it, so only a live listener or
/// bound UDP socket counts, not a connection in `TIME_WAIT`).
pub fn check_free(p: &Published) -> std::io::Result<()> {
    let addr = SocketAddrV4::new(p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), p.host_port);
    match p.protocol {
        Protocol::Tcp => TcpListener::bind(addr).map(drop),
        Protocol::Udp => UdpSocket::bind(addr).map(drop),
    }
}

/// A free host port for `protocol` on `ip`, chosen by the kernel.
pub fn ephemeral(ip: Option<Ipv4Addr>, protocol: Protocol) -> std::io::Result<u16> {
    let addr = SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
    match protocol {
        Protocol::Tcp => TcpListener::bind(addr)?.local_addr().map(|a| a.port()),
        Protocol::Udp => UdpSocket::bind(addr)?.local_addr().map(|a| a.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::state::{ContainerRecord, Lease, NetworkRecord};

    fn network(name: &str, subnet: &str, internal: bool) -> NetworkRecord {
        let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
        NetworkRecord {
            name: name.into(),
            bridge: format!("mo-{name}"),
            subnet,
            gateway: subnet.hosts().next().unwrap(),
            internal,
            allocated: false,
        }
    }

    #[test]
    fn no_networks_removes_the_table() {
        assert_eq!(
            ruleset(TABLE, &State::default()),
            "table ip moor\ndelete table ip moor\n"
        );
    }

    #[test]
    fn ruleset_publishes_isolates_and_masquerades() {
        let mut state = State::default();
        for n in [
            network("a", "10.89.0.0/24", false),
            network("b", "10.89.1.0/24", false),
            network("i", "10.89.2.0/24", true),
        ] {
            state.networks.insert(n.name.clone(), n);
        }
        let lease = Lease {
            network: "a".into(),
            address: "10.89.0.2".parse().unwrap(),
            aliases: vec![],
            ifname: "eth0".into(),
            host_veth: "mv-1".into(),
        };
        let ports = vec![
            Published {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
            },
            Published {
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: 5353,
                container_port: 53,
                protocol: Protocol::Udp,
            },
        ];
        state.containers.insert(
            "web".into(),
            ContainerRecord {
                leases: vec![lease.clone()],
                netns: Some("/run/netns/x".into()),
                ports: ports.clone(),
            },
        );
        // A detached container's ports are not published.
        state.containers.insert(
            "old".into(),
            ContainerRecord {
                leases: vec![lease],
                netns: None,
                ports: vec![Published {
                    host_port: 9999,
                    ..ports[0].clone()
                }],
            },
        );
        let rules = ruleset(TABLE, &state);
        assert!(
            rules.contains("    tcp dport 8080 dnat to 10.89.0.2:80\n"),
            "{rules}"
        );
        assert!(
            rules.contains("    ip daddr 127.0.0.1 udp dport 5353 dnat to 10.89.0.2:53\n"),
            "{rules}"
        );
        assert!(!rules.contains("9999"), "{rules}");
        assert!(rules.contains("ip saddr 10.89.0.0/24 oifname != \"mo-a\" masquerade"));
        assert!(!rules.contains("ip saddr 10.89.2.0/24 oifname != \"mo-i\" masquerade"));
        assert!(rules.contains("iifname \"mo-a\" oifname { \"mo-b\", \"mo-i\" } drop"));
        assert!(rules.contains("iifname \"mo-i\" oifname != \"mo-i\" drop"));
        assert!(rules.contains("oifname \"mo-i\" iifname != \"mo-i\" drop"));
        assert!(rules.starts_with("table ip moor\ndelete table ip moor\ntable ip moor {"));
        // Loopback is not reachable from any interface but lo, before DNAT.
        assert!(
            rules.contains(
                "type filter hook prerouting priority raw; policy accept;\n    iifname != \"lo\" ip daddr 127.0.0.0/8 drop\n"
            ),
            "{rules}"
        );
        // In the forward chain, published ports pass before any isolation drop.
        let forward = &rules[rules.find("chain forward").expect("a forward chain")..];
        let accept = forward
            .find("ct status dnat accept")
            .expect("published ports pass");
        assert!(accept < forward.find("drop").unwrap(), "{rules}");
    }

    #[test]
    fn a_listening_port_is_not_free() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let p = Published {
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_port: port,
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        assert!(check_free(&p).is_err());
        drop(l);
        assert!(check_free(&p).is_ok());
    }
}
