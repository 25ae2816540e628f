//! The namespace's links and IPv4 addresses, as clean-up reads them.
//!
//! Every `moor apply` lists every link and address of the host (see
//! `cleanup`), and needs five fields of each. Through rtnetlink each reply
//! is decoded whole — every attribute of every link (its IPv6 settings,
//! its bridge port state, its XDP and link info) into owned values — on a
//! tokio runtime started for the purpose; on a no-op that decoding was a
//! twentieth of the command's time. Here the dump runs on a blocking
//! netlink socket of the calling thread, and the replies are walked with
//! the same crates' views (`NetlinkBuffer`, the fixed headers,
//! `NlasIterator`), reading only the attributes named below. Requests are
//! built from their message types, as rtnetlink builds them.

use std::io;
use std::net::Ipv4Addr;

use rtnetlink::packet_core::{
    DecodeError, Emitable, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NetlinkBuffer, NetlinkMessage, NlasIterator,
};
use rtnetlink::packet_route::address::{AddressHeader, AddressMessage};
use rtnetlink::packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkHeader, LinkMessage,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::error::{NetError, Result};

const RTM_NEWLINK: u16 = libc::RTM_NEWLINK;
const RTM_NEWADDR: u16 = libc::RTM_NEWADDR;
const IFLA_IFNAME: u16 = libc::IFLA_IFNAME;
const IFLA_MASTER: u16 = libc::IFLA_MASTER;
const IFLA_IFALIAS: u16 = libc::IFLA_IFALIAS;
const IFA_LOCAL: u16 = libc::IFA_LOCAL;

/// How often a dump the kernel marks interrupted (the set of links changed
/// while it was read) is asked again before its answer is taken as is.
const DUMP_TRIES: usize = 3;

/// A link: what clean-up reads of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
    /// The index of its controller (the bridge it is a port of).
    pub controller: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// An IPv4 address of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addr {
    /// The link's index.
    pub index: u32,
    pub prefix_len: u8,
    /// `IFA_LOCAL`: the address itself.
    pub local: Option<Ipv4Addr>,
}

/// Every link and every IPv4 address in the calling thread's network
/// namespace.
pub(crate) fn links_and_addresses() -> Result<(Vec<Link>, Vec<Addr>)> {
    let err = |what: &'static str| move |e: io::Error| NetError::io(what, "", e);
    // Unbound and unconnected: the kernel binds it at the first send.
    let socket = Socket::new(NETLINK_ROUTE).map_err(err("open netlink socket"))?;
    let mut buf = vec![0u8; 64 * 1024];

    let mut get_links = LinkMessage::default();
    get_links.header.interface_family = AddressFamily::Unspec;
    // Without their statistics: most of what the kernel would otherwise
    // write per link.
    get_links
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let links = dump(
        &socket,
        &mut buf,
        RouteNetlinkMessage::GetLink(get_links),
        1,
        |kind, payload| (kind == RTM_NEWLINK).then(|| link(payload)).transpose(),
    )
    .map_err(err("list links"))?;

    let mut get_addrs = AddressMessage::default();
    get_addrs.header.family = AddressFamily::Inet;
    let addrs = dump(
        &socket,
        &mut buf,
        RouteNetlinkMessage::GetAddress(get_addrs),
        2,
        |kind, payload| match kind {
            RTM_NEWADDR => addr(payload),
            _ => Ok(None),
        },
    )
    .map_err(err("list addresses"))?;
    Ok((links, addrs))
}

/// Sends `request` as a dump and collects what `each` makes of every reply
/// message (its type and payload), until the kernel says it is done. A
/// dump marked interrupted is asked again, up to [`DUMP_TRIES`] times.
fn dump<T>(
    socket: &Socket,
    buf: &mut [u8],
    request: RouteNetlinkMessage,
    seq: u32,
    each: impl Fn(u16, &[u8]) -> io::Result<Option<T>>,
) -> io::Result<Vec<T>> {
    let mut out = Vec::new();
    let mut message = NetlinkMessage::from(request);
    message.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.header.sequence_number = seq;
    message.finalize();
    let mut bytes = vec![0u8; message.header.length as usize];
    message.serialize(&mut bytes);
    for attempt in 1..=DUMP_TRIES {
        socket.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;
        let mut interrupted = false;
        'dump: loop {
            let n = socket.recv(&mut &mut buf[..], 0)?;
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let m = NetlinkBuffer::new_checked(rest).map_err(bad)?;
                let len = m.length() as usize;
                let payload = m.payload();
                if m.sequence_number() == seq {
                    interrupted |= m.flags() & NLM_F_DUMP_INTR != 0;
                    match m.message_type() {
                        NLMSG_DONE => {
                            // A dump that failed part way says why here.
                            match payload.get(..4).map(errno) {
                                Some(code) if code < 0 => {
                                    return Err(io::Error::from_raw_os_error(-code));
                                }
                                _ => break 'dump,
                            }
                        }
                        NLMSG_ERROR => {
                            let code = payload.get(..4).map(errno).unwrap_or(0);
                            let errno = if code < 0 { -code } else { libc::EIO };
                            return Err(io::Error::from_raw_os_error(errno));
                        }
                        kind => out.extend(each(kind, payload)?),
                    }
                }
                rest = rest.get(align(len)..).unwrap_or_default();
            }
        }
        if !interrupted || attempt == DUMP_TRIES {
            break;
        }
        out.clear();
    }
    Ok(out)
}

/// The link in an `RTM_NEWLINK` payload.
fn link(payload: &[u8]) -> io::Result<Link> {
    let header = LinkHeader::parse(payload).map_err(bad)?;
    let mut link = Link {
        index: header.index,
        up: header.flags.contains(LinkFlags::Up),
        ..Link::default()
    };
    for nla in NlasIterator::new(&payload[header.buffer_len()..]) {
        let nla = nla.map_err(bad)?;
        match nla.kind() {
            IFLA_IFNAME => link.name = text(nla.value())?,
            IFLA_IFALIAS => link.alias = Some(text(nla.value())?),
            IFLA_MASTER => link.controller = Some(u32_ne(nla.value())?),
            _ => {}
        }
    }
    Ok(link)
}

/// The IPv4 address in an `RTM_NEWADDR` payload; `None` for another family.
fn addr(payload: &[u8]) -> io::Result<Option<Addr>> {
    let header = AddressHeader::parse(payload).map_err(bad)?;
    if header.family != AddressFamily::Inet {
        return Ok(None);
    }
    let mut addr = Addr {
        index: header.index,
        prefix_len: header.prefix_len,
        local: None,
    };
    for nla in NlasIterator::new(&payload[header.buffer_len()..]) {
        let nla = nla.map_err(bad)?;
        if nla.kind() == IFA_LOCAL {
            let octets: [u8; 4] = nla
                .value()
                .try_into()
                .map_err(|_| invalid("IFA_LOCAL of an IPv4 address is not 4 bytes"))?;
            addr.local = Some(Ipv4Addr::from(octets));
        }
    }
    Ok(Some(addr))
}

/// A string attribute: its bytes up to the first NUL.
fn text(value: &[u8]) -> io::Result<String> {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8(value[..end].to_vec())
        .map_err(|_| invalid("a link's name or alias is not UTF-8"))
}

fn u32_ne(value: &[u8]) -> io::Result<u32> {
    let bytes: [u8; 4] = value
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("a u32 attribute is short"))?;
    Ok(u32::from_ne_bytes(bytes))
}

fn errno(bytes: &[u8]) -> i32 {
    i32::from_ne_bytes(bytes.try_into().unwrap_or([0; 4]))
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn bad(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink reply: {e}"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink reply: {what}"))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::address::AddressAttribute;

    use super::*;
    use crate::net::netlink;

    /// Runs `ip ARGS` (in the calling thread's network namespace).
    fn ip(args: &str) {
        let ok = Command::new("ip")
            .args(args.split(' '))
            .status()
            .expect("run ip")
            .success();
        assert!(ok, "ip {args}");
    }

    /// Links and addresses as rtnetlink decodes them, whole.
    fn decoded_whole() -> (Vec<Link>, Vec<Addr>) {
        netlink::run(None, |h| async move {
            let links: Vec<LinkMessage> = h.link().get().execute().try_collect().await.unwrap();
            let mut request = h.address().get();
            request.message_mut().header.family = AddressFamily::Inet;
            let addrs: Vec<AddressMessage> = request.execute().try_collect().await.unwrap();
            let links = links
                .into_iter()
                .map(|l| {
                    let mut link = Link {
                        index: l.header.index,
                        up: l.header.flags.contains(LinkFlags::Up),
                        ..Link::default()
                    };
                    for a in l.attributes {
                        match a {
                            LinkAttribute::IfName(n) => link.name = n,
                            LinkAttribute::IfAlias(a) => link.alias = Some(a),
                            LinkAttribute::Controller(c) => link.controller = Some(c),
                            _ => {}
                        }
                    }
                    link
                })
                .collect();
            let addrs = addrs
                .into_iter()
                .map(|a| Addr {
                    index: a.header.index,
                    prefix_len: a.header.prefix_len,
                    local: a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Local(std::net::IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    }),
                })
                .collect();
            Ok((links, addrs))
        })
        .unwrap()
    }

    #[test]
    fn a_dump_reads_what_rtnetlink_decodes_in_a_namespace_of_its_own() {
        // On a thread in a new network namespace: nothing of the host's is
        // seen or touched, and the namespace goes with the thread.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            ip("link add mdbr0 type bridge");
            ip("link set mdbr0 alias moor-dump-test");
            ip("addr add 10.200.0.1/24 dev mdbr0");
            ip("link set mdbr0 up");
            ip("link add mdv0 type veth peer name mdv1");
            ip("link set mdv0 master mdbr0");
            ip("addr add 10.201.0.9/16 dev mdv1");
            ip("addr add 10.201.0.10/16 dev mdv1");
            ip("-6 addr add fd00::1/64 dev mdv1");

            let (links, addrs) = links_and_addresses().unwrap();
            assert_eq!((links.clone(), addrs.clone()), decoded_whole());

            let by_name = |n: &str| links.iter().find(|l| l.name == n).unwrap();
            let (br, v0, v1) = (by_name("mdbr0"), by_name("mdv0"), by_name("mdv1"));
            assert_eq!(br.alias.as_deref(), Some("moor-dump-test"));
            assert!(br.up && !v0.up && !by_name("lo").up);
            assert_eq!(v0.controller, Some(br.index));
            assert_eq!((br.controller, v1.alias.as_deref()), (None, None));
            let on = |l: &Link| {
                let mut a: Vec<_> = addrs
                    .iter()
                    .filter(|a| a.index == l.index)
                    .map(|a| (a.local.unwrap().to_string(), a.prefix_len))
                    .collect();
                a.sort();
                a
            };
            assert_eq!(on(br), [("10.200.0.1".to_string(), 24)]);
            // IPv4 only: the IPv6 address is not listed.
            assert_eq!(
                on(v1),
                [
                    ("10.201.0.10".to_string(), 16),
                    ("10.201.0.9".to_string(), 16)
                ]
            );
        })
        .join()
        .unwrap();
    }

    /// A `RTM_NEWLINK` payload: the 16-byte header (index 7, `flags`) and
    /// `attrs` as (type, value).
    fn link_payload(flags: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut p = vec![0u8; 4];
        p.extend_from_slice(&7u32.to_ne_bytes());
        p.extend_from_slice(&flags.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        for (kind, value) in attrs {
            p.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            p.extend_from_slice(&kind.to_ne_bytes());
            p.extend_from_slice(value);
            p.resize(align(p.len()), 0);
        }
        p
    }

    #[test]
    fn link_payloads_are_read_and_malformed_ones_refused() {
        let ok = link_payload(
            libc::IFF_UP as u32,
            &[
                (IFLA_IFNAME, b"mo-x\0"),
                (IFLA_MASTER, &3u32.to_ne_bytes()),
                // A nested attribute's flag is masked off its type.
                (IFLA_IFALIAS | 0x8000, b"moor:abc\0"),
                (999, b"ignored"),
            ],
        );
        assert_eq!(
            link(&ok).unwrap(),
            Link {
                index: 7,
                name: "mo-x".into(),
                alias: Some("moor:abc".into()),
                controller: Some(3),
                up: true,
            }
        );
        // Short header, attribute longer than the message, short u32, name
        // that is not UTF-8: errors, never a panic or a made-up link.
        assert!(link(&ok[..15]).is_err());
        let mut long = link_payload(0, &[(IFLA_IFNAME, b"a\0")]);
        long[16] = 200;
        assert!(link(&long).is_err());
        assert!(link(&link_payload(0, &[(IFLA_MASTER, &[1, 2])])).is_err());
        assert!(link(&link_payload(0, &[(IFLA_IFNAME, &[0xff, 0])])).is_err());
        let mut addr = vec![libc::AF_INET as u8, 24, 0, 0];
        addr.extend_from_slice(&5u32.to_ne_bytes());
        addr.extend_from_slice(&6u16.to_ne_bytes());
        addr.extend_from_slice(&IFA_LOCAL.to_ne_bytes());
        addr.extend_from_slice(&[10, 0]);
        addr.resize(align(addr.len()), 0);
        assert!(super::addr(&addr).is_err(), "a 2-byte IPv4 address");
    }
}
