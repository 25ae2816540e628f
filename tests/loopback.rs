//! The host's loopback stays the host's (issue 16 §5), end to end.
//!
//! moor sets `route_localnet` on its bridges so that a port published on
//! 127.0.0.1 works from the host; the same switch would let a container
//! reach 127.0.0.0/8 on the host by sending a packet for 127.0.0.1 to its
//! gateway's MAC address, which a raw socket does (Docker's default
//! capabilities include `CAP_NET_RAW`). The attacker here is a real
//! container; its packets are hand-made Ethernet frames sent from a thread
//! of the test that has entered the container's network namespace, as a
//! raw socket inside the container would send them.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::instance::Instance;
use crate::common::{free_port, http_get, wait_for};

const PROJECT: &str = "loopback";

/// What a thread inside the container's network namespace found out.
#[derive(Debug, Clone, Copy)]
struct Link {
    ifindex: i32,
    mac: [u8; 6],
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
}

/// Runs `f` on a thread that has joined the network namespace of `pid`.
fn in_netns<T: Send + 'static>(pid: i64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("open the netns");
    std::thread::spawn(move || {
        // SAFETY: setns on a namespace fd we hold; it moves only this thread.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the netns thread panicked")
}

/// eth0's index, MAC and address, and the default gateway (run in the netns).
fn link() -> Link {
    let route = std::fs::read_to_string("/proc/thread-self/net/route").expect("route table");
    let gateway = route
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[1] == "00000000")
        .map(|f| Ipv4Addr::from(u32::from_str_radix(f[2], 16).unwrap().swap_bytes()))
        .expect("a default route");
    // SAFETY: a plain datagram socket, owned at once.
    let sock = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)) };
    // SAFETY: ifreq is plain data; each ioctl fills the union member it names.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"eth0\0") {
            *d = *s as libc::c_char;
        }
        assert_eq!(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX, &raw mut req),
            0
        );
        let ifindex = req.ifr_ifru.ifru_ifindex;
        assert_eq!(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut req),
            0
        );
        let hw = req.ifr_ifru.ifru_hwaddr.sa_data;
        let mac = std::array::from_fn(|i| hw[i] as u8);
        assert_eq!(
            libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFADDR, &raw mut req),
            0
        );
        let sin = &*(&req.ifr_ifru.ifru_addr as *const libc::sockaddr).cast::<libc::sockaddr_in>();
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        Link {
            ifindex,
            mac,
            addr,
            gateway,
        }
    }
}

/// The MAC address of the host interface that holds `ip` (the bridge).
fn host_mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("ip addr");
    let text = String::from_utf8_lossy(&out.stdout);
    let dev = text
        .lines()
        .find(|l| l.contains(&format!(" inet {ip}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no host interface holds {ip}:\n{text}"));
    let mac = std::fs::read_to_string(Path::new("/sys/class/net").join(dev).join("address"))
        .expect("bridge MAC");
    let bytes: Vec<u8> = mac
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().expect("six bytes")
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame from `link` to `gw_mac` carrying an IPv4 packet for
/// `dst` with `proto` and `payload` (the transport header and data; its
/// checksum field is filled in for TCP).
fn frame(link: &Link, gw_mac: [u8; 6], dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut payload = payload.to_vec();
    if proto == 6 {
        let len = (payload.len() as u16).to_be_bytes();
        let pseudo = [&link.addr.octets()[..], &dst.octets(), &[0, 6], &len];
        let sum = checksum(&[&pseudo.concat(), &payload]);
        payload[16..18].copy_from_slice(&sum.to_be_bytes());
    }
    let total = (20 + payload.len() as u16).to_be_bytes();
    let mut ip = vec![
        0x45, 0, total[0], total[1], 0x12, 0x34, 0x40, 0, 64, proto, 0, 0,
    ];
    ip.extend_from_slice(&link.addr.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&gw_mac);
    f.extend_from_slice(&link.mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&payload);
    f
}

fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let len = (8 + data.len() as u16).to_be_bytes();
    let mut h = [
        &sport.to_be_bytes()[..],
        &dport.to_be_bytes(),
        &len,
        &[0, 0],
    ]
    .concat();
    h.extend_from_slice(data);
    h
}

fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&0x1000_0001u32.to_be_bytes()); // seq
    h.extend_from_slice(&0u32.to_be_bytes()); // ack
    h.extend_from_slice(&[0x50, 0x02]); // 5 words, SYN
    h.extend_from_slice(&0xffffu16.to_be_bytes()); // window
    h.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    h
}

/// A packet socket on `link`'s interface (run in the netns).
fn packet_socket(link: &Link) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket(2); the fd is owned at once and checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a new socket nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data, bound with its own size.
    unsafe {
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = link.ifindex;
        let rc = libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    fd
}

fn send(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: writes `frame` from a live buffer on a bound packet socket.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(
        n,
        frame.len() as isize,
        "send: {}",
        std::io::Error::last_os_error()
    );
}

/// Whether a SYN-ACK from TCP port `sport` to `link`'s address arrives on
/// `fd` within `wait` (run in the netns).
fn syn_ack_seen(fd: &OwnedFd, link: &Link, sport: u16, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        // SAFETY: reads into a live stack buffer of the given length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 34 {
            continue;
        }
        let f = &buf[..n as usize];
        let ihl = usize::from(f[14] & 0x0f) * 4;
        if f[12..14] != [0x08, 0x00] || f[23] != 6 || f[30..34] != link.addr.octets() {
            continue;
        }
        let t = &f[14 + ihl..];
        if t.len() >= 14 && u16::from_be_bytes([t[0], t[1]]) == sport && t[13] & 0x12 == 0x12 {
            return true;
        }
    }
    false
}

/// Sends a TCP SYN for `dst:dport` through the gateway's MAC and says whether
/// anything answered it with a SYN-ACK (run in the netns).
fn syn_answered(link: &Link, gw_mac: [u8; 6], dst: Ipv4Addr, dport: u16) -> bool {
    let fd = packet_socket(link);
    let sport = 40000 + (dport % 20000);
    send(&fd, &frame(link, gw_mac, dst, 6, &tcp_syn(sport, dport)));
    syn_ack_seen(&fd, link, dport, Duration::from_secs(2))
}

/// Sends a UDP datagram for `dst:dport` through the gateway's MAC (run in the netns).
fn udp_to(link: &Link, gw_mac: [u8; 6], dst: Ipv4Addr, dport: u16, data: &[u8]) {
    let fd = packet_socket(link);
    send(&fd, &frame(link, gw_mac, dst, 17, &udp(40000, dport, data)));
}

/// Whether `sock` receives `data` within two seconds.
fn received(sock: &UdpSocket, data: &[u8]) -> bool {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) if &buf[..n] == data => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    false
}

/// A host service bound to 127.0.0.1 (UDP and TCP) and a port published on
/// 127.0.0.1 are out of a container's reach, even with packets crafted for
/// 127.0.0.1 and sent to the gateway's MAC; the published port still
/// answers the host. Controls: the same crafted packets sent to the
/// gateway's own address arrive, so the frames are right and only the
/// destination decides.
#[test]
fn containers_cannot_reach_the_hosts_loopback() {
    let Some(host) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let published = free_port();
    let manifests = tempfile::tempdir().expect("manifests");
    std::fs::write(
        manifests.path().join("stack.toml"),
        format!(
            r#"
[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[networks.front]

[containers.web]
image    = "busybox"
command  = ["sh", "-c", "echo published > /www/index.html && exec httpd -f -p 80 -h /www"]
networks = ["front"]
ports    = ["127.0.0.1:{published}:80"]

[containers.attacker]
image    = "busybox"
command  = ["sleep", "3600"]
networks = ["front"]
"#
        ),
    )
    .expect("write manifest");
    let out = host.moor(&[
        "apply",
        "-p",
        PROJECT,
        "--timeout",
        "60s",
        manifests.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The port published on 127.0.0.1 answers the host.
    wait_for("the published port", Duration::from_secs(30), || {
        http_get(published, "/").is_some_and(|(code, body)| code == 200 && body == "published\n")
    });

    // Host services: on loopback only, and (controls) on every address.
    let udp_lo = UdpSocket::bind("127.0.0.1:0").expect("udp on loopback");
    let tcp_lo = TcpListener::bind("127.0.0.1:0").expect("tcp on loopback");
    let udp_any = UdpSocket::bind("0.0.0.0:0").expect("udp on any");
    let tcp_any = TcpListener::bind("0.0.0.0:0").expect("tcp on any");
    let port = |a: std::io::Result<std::net::SocketAddr>| a.expect("local addr").port();
    let (udp_lo_port, tcp_lo_port) = (port(udp_lo.local_addr()), port(tcp_lo.local_addr()));
    let (udp_any_port, tcp_any_port) = (port(udp_any.local_addr()), port(tcp_any.local_addr()));

    let inspect = host.moor(&["inspect", "attacker"]);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    let pid = info["shim"]["pid"].as_i64().expect("the attacker's PID");
    let link = in_netns(pid, link);
    let gw_mac = host_mac_of(link.gateway);
    let lo = Ipv4Addr::LOCALHOST;
    let gw = link.gateway;

    // Controls first: the crafted frames are good ones.
    in_netns(pid, move || {
        udp_to(&link, gw_mac, gw, udp_any_port, b"control");
    });
    assert!(
        received(&udp_any, b"control"),
        "control: a crafted datagram for the gateway's address arrives"
    );
    assert!(
        in_netns(pid, move || syn_answered(&link, gw_mac, gw, tcp_any_port)),
        "control: a crafted SYN for the gateway's address is answered"
    );

    // The attack: the same packets for 127.0.0.1.
    in_netns(pid, move || {
        udp_to(&link, gw_mac, lo, udp_lo_port, b"attack");
    });
    assert!(
        !received(&udp_lo, b"attack"),
        "a container's datagram reached a host socket bound to 127.0.0.1"
    );
    assert!(
        !in_netns(pid, move || syn_answered(&link, gw_mac, lo, tcp_lo_port)),
        "a container reached a host listener on 127.0.0.1"
    );
    assert!(
        !in_netns(pid, move || syn_answered(&link, gw_mac, lo, published)),
        "a container reached a port published on 127.0.0.1 through 127.0.0.1"
    );
    // The host still does.
    let (code, body) = http_get(published, "/").expect("the published port still answers");
    assert_eq!((code, body.as_str()), (200, "published\n"));
    drop(tcp_lo);
}
