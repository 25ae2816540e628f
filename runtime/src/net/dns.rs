//! Name resolution for containers: what the resolver answers, like
//! podman's aardvark-dns and Docker's embedded DNS. The server itself is a
//! process of its own ([`super::resolver`]); this file is the pure part.
//!
//! It answers `A` queries for the names and aliases of containers that share
//! a network with the asker (found by its source address; a host-side asker
//! sees the network the server belongs to), answers other types for those
//! names with an empty NOERROR (so they never leak upstream), and forwards
//! every other query unchanged to the host's resolvers. Built on
//! `hickory-proto` for the wire format rather than `hickory-server`: the
//! whole job is one lookup in the engine's state plus a relay.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

use super::state::State;

/// Time to live of the answers; addresses are stable, but a short TTL keeps
/// a replaced container's peers honest.
const TTL: u32 = 10;

/// The host's resolvers, from a `resolv.conf`.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The `/etc/resolv.conf` of a container whose first network's gateway is
/// `gateway`: that server, plus the host's `search` and `options` lines.
pub fn resolv_conf(gateway: Ipv4Addr, host_resolv_conf: &str) -> String {
    let mut out = format!("nameserver {gateway}\n");
    for line in host_resolv_conf.lines() {
        let first = line.split_whitespace().next();
        if matches!(first, Some("search") | Some("options")) {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

/// The `/etc/hosts` of a container: loopback, and its own addresses with its
/// name and aliases.
pub fn hosts(name: &str, addresses: &[(Ipv4Addr, Vec<String>)]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (ip, aliases) in addresses {
        out.push_str(&format!("{ip}\t{name}"));
        for a in aliases.iter().filter(|a| a.as_str() != name) {
            out.push(' ');
            out.push_str(a);
        }
        out.push('\n');
    }
    out
}

/// The addresses `name` has for an asker at `source` via the server of
/// `network`: names of attached containers on any network the asker is on,
/// or on `network` alone when the asker is not a container there.
pub fn lookup(state: &State, network: &str, source: IpAddr, name: &str) -> Option<Vec<Ipv4Addr>> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let asker = state.containers.values().find(|c| {
        c.leases
            .iter()
            .any(|l| l.network == network && IpAddr::V4(l.address) == source)
    });
    let visible: Vec<&str> = match asker {
        Some(c) => c.leases.iter().map(|l| l.network.as_str()).collect(),
        None => vec![network],
    };
    let mut found = Vec::new();
    // Only attached containers answer: a stopped one keeps its lease, but
    // nobody is there to reach.
    for (cname, c) in state.containers.iter().filter(|(_, c)| c.netns.is_some()) {
        for l in c
            .leases
            .iter()
            .filter(|l| visible.contains(&l.network.as_str()))
        {
            let hit = cname.eq_ignore_ascii_case(&name)
                || l.aliases.iter().any(|a| a.eq_ignore_ascii_case(&name));
            if hit && !found.contains(&l.address) {
                found.push(l.address);
            }
        }
    }
    (!found.is_empty()).then_some(found)
}

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Local {
    /// Send this reply.
    Reply(Vec<u8>),
    /// Not about a container: relay it upstream.
    Forward,
    /// Not a DNS query at all.
    Ignore,
}

pub(crate) fn answer_locally(state: &State, network: &str, source: IpAddr, query: &[u8]) -> Local {
    let Ok(msg) = Message::from_vec(query) else {
        return Local::Ignore;
    };
    if msg.metadata.message_type != MessageType::Query {
        return Local::Ignore;
    }
    let [q] = msg.queries.as_slice() else {
        return Local::Forward;
    };
    if msg.metadata.op_code != OpCode::Query {
        return Local::Forward;
    }
    let Some(addrs) = lookup(state, network, source, &q.name().to_ascii()) else {
        return Local::Forward;
    };
    let mut reply = Message::response(msg.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = msg.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_query(q.clone());
    if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
        for ip in addrs {
            reply.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
        }
    }
    reply.to_vec().map_or(Local::Ignore, Local::Reply)
}

/// A SERVFAIL answer to `query` (`None` when it is no query to answer).
pub(crate) fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::error_msg(
        msg.metadata.id,
        msg.metadata.op_code,
        ResponseCode::ServFail,
    );
    reply.metadata.recursion_desired = msg.metadata.recursion_desired;
    reply.add_queries(msg.queries);
    reply.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::state::{ContainerRecord, Lease};
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn lease(network: &str, ip: &str, aliases: &[&str]) -> Lease {
        Lease {
            network: network.into(),
            address: ip.parse().unwrap(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ifname: "eth0".into(),
            host_veth: "mv-x".into(),
        }
    }

    fn state() -> State {
        let mut s = State::default();
        let mut add = |name: &str, leases: Vec<Lease>| {
            s.containers.insert(
                name.into(),
                ContainerRecord {
                    leases,
                    netns: Some(format!("/run/netns/{name}").into()),
                    ports: vec![],
                },
            );
        };
        add("web", vec![lease("front", "10.89.0.2", &["www"])]);
        add("db", vec![lease("back", "10.89.1.2", &[])]);
        add(
            "api",
            vec![
                lease("front", "10.89.0.3", &[]),
                lease("back", "10.89.1.3", &[]),
            ],
        );
        s
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_resolve_only_on_shared_networks() {
        let s = state();
        let web = ip("10.89.0.2");
        assert_eq!(
            lookup(&s, "front", web, "api."),
            Some(vec!["10.89.0.3".parse().unwrap()])
        );
        assert_eq!(
            lookup(&s, "front", web, "WWW"),
            Some(vec!["10.89.0.2".parse().unwrap()])
        );
        assert_eq!(lookup(&s, "front", web, "db"), None);
        // api is on both networks, so it sees db through front's server.
        assert_eq!(
            lookup(&s, "front", ip("10.89.0.3"), "db"),
            Some(vec!["10.89.1.2".parse().unwrap()])
        );
        // The host asking front's server sees front only.
        assert_eq!(lookup(&s, "front", ip("10.89.0.1"), "db"), None);
        // A detached (stopped) container keeps its lease but does not answer.
        let mut stopped = s.clone();
        stopped.containers.get_mut("api").unwrap().netns = None;
        assert_eq!(lookup(&stopped, "front", web, "api"), None);
    }

    #[test]
    fn local_answers_are_authoritative_a_records() {
        let s = state();
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("www.").unwrap(),
            RecordType::A,
        ));
        let Local::Reply(reply) =
            answer_locally(&s, "front", ip("10.89.0.3"), &q.to_vec().unwrap())
        else {
            panic!("www is answered locally");
        };
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, q.metadata.id);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(
            reply.answers[0].data,
            RData::A(A("10.89.0.2".parse().unwrap()))
        );
        let mut aaaa = Message::query();
        aaaa.add_query(Query::query(
            Name::from_ascii("www.").unwrap(),
            RecordType::AAAA,
        ));
        let Local::Reply(reply) =
            answer_locally(&s, "front", ip("10.89.0.3"), &aaaa.to_vec().unwrap())
        else {
            panic!("www is answered locally");
        };
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.answers.is_empty());
        let mut other = Message::query();
        other.add_query(Query::query(
            Name::from_ascii("example.org.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(
            answer_locally(&s, "front", ip("10.89.0.3"), &other.to_vec().unwrap()),
            Local::Forward
        );
        assert_eq!(
            answer_locally(&s, "front", ip("10.89.0.3"), b"junk"),
            Local::Ignore
        );
    }

    #[test]
    fn resolv_conf_and_hosts() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch corp.example\noptions edns0 trust-ad\n";
        assert_eq!(
            upstreams_from_resolv_conf(host),
            vec![
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            resolv_conf("10.89.0.1".parse().unwrap(), host),
            "nameserver 10.89.0.1\nsearch corp.example\noptions edns0 trust-ad\n"
        );
        let h = hosts("web", &[("10.89.0.2".parse().unwrap(), vec!["www".into()])]);
        assert!(h.ends_with("10.89.0.2\tweb www\n"), "{h}");
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
    }
}
