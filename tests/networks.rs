//! Networks against the real kernel, with network namespaces standing in for
//! containers (`ip netns add`) and busybox run inside them. Every address is
//! a 10.x address on a bridge the test creates, or loopback; upstream DNS is
//! a resolver the test runs on 127.0.0.1. Each test runs on an [`Instance`]
//! of its own: its state dir, and its slot's nftables table, bridge prefix
//! and subnets; namespaces and links the test makes are named after the
//! slot too, and guards remove everything on drop.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moor_runtime::net::{NetConfig, NetError, Networks, resolver};
use moor_spec::{NetworkAttachment, NetworkSpec, PortMapping, Protocol};

use crate::common::instance::Instance;
use crate::common::slot::Slot;
use crate::common::{KillOnDrop, alive, free_port, link_exists, require, wait_for};

fn ready() -> bool {
    require(&["ip", "nft", "busybox", "timeout"], true)
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

/// A network namespace named after a slot, deleted on drop (with its
/// `/etc/netns` files).
struct Netns {
    name: String,
}

impl Netns {
    fn new(slot: &Slot, tag: &str) -> Self {
        let name = slot.name(tag);
        let out = run("ip", &["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        Netns { name }
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Gives `ip netns exec` this resolv.conf (it bind-mounts
    /// `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf`).
    fn set_resolv_conf(&self, text: &str) {
        let dir = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns dir");
        std::fs::write(dir.join("resolv.conf"), text).expect("write resolv.conf");
    }

    fn busybox(&self, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.name, "busybox"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn spawn(&self, args: &[&str]) -> KillOnDrop {
        KillOnDrop::spawn(
            Command::new("ip")
                .args(["netns", "exec", &self.name, "busybox"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        crate::common::host::delete_netns(&self.name);
    }
}

/// A loopback DNS resolver standing in for the host's: answers
/// `example.test` with 10.99.0.99 and NXDOMAIN for everything else.
struct Upstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Self {
        // UDP and TCP on the same port, as a real resolver.
        let (sock, tcp) = (0..20)
            .find_map(|_| {
                let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = TcpListener::bind(sock.local_addr().ok()?).ok()?;
                Some((sock, tcp))
            })
            .expect("bind upstream resolver");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((mut conn, _)) = tcp.accept() {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    if let Some(reply) = read_framed(&mut conn).and_then(|q| answer(&q)) {
                        write_framed(&mut conn, &reply);
                    }
                }
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n]) {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        Upstream {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

fn read_framed(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    conn.read_exact(&mut len).ok()?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    conn.read_exact(&mut msg).ok()?;
    Some(msg)
}

fn write_framed(conn: &mut TcpStream, msg: &[u8]) {
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    let _ = conn.write_all(&framed);
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A hand-built reply to a one-question query.
fn answer(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // Walk the question name.
    let mut i = 12;
    let mut labels = Vec::new();
    while *q.get(i)? != 0 {
        let len = q[i] as usize;
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + len)?).to_ascii_lowercase());
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let end = i + 5;
    let mut r = q.get(..end)?.to_vec();
    r[2] = 0x81 | (q[2] & 0x01); // QR, RD copied
    r[3] = 0x80; // RA, NOERROR
    r[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    if labels.join(".") != "example.test" {
        r[3] |= 3; // NXDOMAIN
        return Some(r);
    }
    if qtype == 1 {
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 99, 0, 99]);
    }
    Some(r)
}

/// An upstream resolver that never answers: counts the queries it gets
/// and the source ports they come from.
struct BlackHole {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    ports: Arc<Mutex<BTreeSet<u16>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    fn start() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind black hole");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let (received, ports, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Mutex::new(BTreeSet::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (r, p, flag) = (received.clone(), ports.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                    r.fetch_add(1, Ordering::Relaxed);
                    p.lock().unwrap().insert(peer.port());
                }
            }
        });
        BlackHole {
            addr,
            received,
            ports,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One test's engine on an instance's state dir and slot; on drop every
/// container is released and every network removed, and the instance
/// removes the rest.
struct Env {
    nets: Networks,
    host: Instance,
    upstream: Upstream,
}

impl Env {
    fn new() -> Self {
        Self::with(None)
    }

    /// An engine relaying to `upstream` (the test's own resolver when `None`).
    fn with(upstream: Option<SocketAddr>) -> Self {
        let host = Instance::new();
        let own = Upstream::start();
        let cfg = config(
            host.dir(),
            &Names::of(host.slot()),
            upstream.unwrap_or(own.addr),
        );
        Env {
            nets: Networks::open(cfg).expect("open networks"),
            host,
            upstream: own,
        }
    }

    fn slot(&self) -> &Slot {
        self.host.slot()
    }

    fn dir(&self) -> &Path {
        self.host.dir()
    }

    /// The first two octets of the slot's pool (`10.107`).
    fn net(&self) -> String {
        self.slot().net()
    }

    /// A network namespace named after the slot.
    fn netns(&self, tag: &str) -> Netns {
        Netns::new(self.slot(), tag)
    }

    fn network(&self, name: &str, subnet: &str, internal: bool) {
        let spec = NetworkSpec {
            subnet: Some(subnet.parse().unwrap()),
            internal,
            ..NetworkSpec::default()
        };
        self.nets
            .create_network(name, &spec)
            .unwrap_or_else(|e| panic!("create network {name}: {e}"));
    }

    fn table_rules(&self) -> String {
        crate::common::host::nft_table(&self.slot().nft_table()).unwrap_or_default()
    }

    /// The host end of the veth that attaches `container` to `network`.
    fn veth(&self, container: &str, network: &str) -> String {
        naming(&self.slot().bridge_prefix()).veth_host(container, network)
    }
}

fn naming(prefix: &str) -> moor_runtime::net::names::Naming {
    moor_runtime::net::names::Naming::new(prefix).expect("the slot's bridge prefix")
}

/// The host-wide names an engine uses: a slot's, handed to the crash worker
/// (which claims no slot of its own) through the environment.
struct Names {
    table: String,
    prefix: String,
    pool: String,
}

impl Names {
    fn of(slot: &Slot) -> Self {
        Names {
            table: slot.nft_table(),
            prefix: slot.bridge_prefix(),
            pool: slot.pool(),
        }
    }
}

fn config(dir: &Path, names: &Names, upstream: SocketAddr) -> NetConfig {
    let mut cfg = NetConfig::new(dir);
    cfg.table.clone_from(&names.table);
    cfg.bridge_prefix.clone_from(&names.prefix);
    cfg.pool = names.pool.parse().expect("pool");
    cfg.upstreams = Some(vec![upstream]);
    cfg.resolv_conf = dir.join("host-resolv.conf");
    // DNS is served by `moor dns`, started on demand, as in production.
    cfg.resolver =
        Some(std::env::var_os(MOOR_BIN_ENV).map_or_else(crate::common::moor_bin, PathBuf::from));
    cfg
}

/// The moor binary, handed to the crash worker so that it builds nothing.
const MOOR_BIN_ENV: &str = "MOOR_TEST_MOOR_BIN";

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(state) = self.nets.state() {
            for c in state.containers.keys() {
                let _ = self.nets.release(c);
            }
            for name in state.networks.keys() {
                let _ = self.nets.remove_network(name);
            }
        }
    }
}

fn attach(network: &str, aliases: &[&str], ip: Option<&str>) -> NetworkAttachment {
    NetworkAttachment {
        network: network.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        ipv4_address: ip.map(|s| s.parse().unwrap()),
    }
}

fn tcp(host_ip: Option<&str>, host: u16, container: u16) -> PortMapping {
    PortMapping {
        host_ip: host_ip.map(|s| s.parse().unwrap()),
        host_port: Some(host),
        container_port: container,
        protocol: Protocol::Tcp,
    }
}

/// `busybox httpd` serving `body` on port 80 inside `ns`.
fn serve(ns: &Netns, dir: &Path, body: &str) -> KillOnDrop {
    std::fs::write(dir.join("index.html"), body).unwrap();
    let dir = dir.to_str().unwrap();
    let server = ns.spawn(&["httpd", "-f", "-p", "80", "-h", dir]);
    // Ready once a socket listens on port 80 (0x0050, state 0A) in the namespace.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tcp = ns.busybox(&["cat", "/proc/net/tcp", "/proc/net/tcp6"]);
        let listening = String::from_utf8_lossy(&tcp.stdout).lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1).is_some_and(|a| a.ends_with(":0050")) && f.get(3) == Some(&"0A")
        });
        if listening {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "httpd did not start in {}",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wget(ns: &Netns, url: &str) -> Output {
    // busybox 1.35's `wget -T` crashes; bound it from outside instead.
    run(
        "ip",
        &[
            "netns", "exec", &ns.name, "timeout", "5", "busybox", "wget", "-q", "-O", "-", url,
        ],
    )
}

fn nslookup(ns: &Netns, name: &str) -> String {
    let out = ns.busybox(&["nslookup", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asks a DNS server directly (from the host) for the A records of `name`,
/// over UDP or TCP; returns the response code and the addresses.
fn query_a_over(server: SocketAddr, name: &str, tcp: bool) -> (u8, Vec<Ipv4Addr>) {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let reply = if tcp {
        let mut conn = TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write_framed(&mut conn, &q);
        read_framed(&mut conn).expect("dns reply over tcp")
    } else {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        sock.send_to(&q, server).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("dns reply");
        buf[..n].to_vec()
    };
    assert_eq!(&reply[..2], &q[..2], "the reply carries the query's id");
    let rcode = reply[3] & 0x0f;
    // Answers are at the tail: each A record ends with its 4 address bytes.
    let count = u16::from_be_bytes([reply[6], reply[7]]) as usize;
    let mut ips = Vec::new();
    let mut end = reply.len();
    for _ in 0..count {
        ips.push(Ipv4Addr::new(
            reply[end - 4],
            reply[end - 3],
            reply[end - 2],
            reply[end - 1],
        ));
        end -= 16;
    }
    (rcode, ips)
}

fn query_a(server: SocketAddr, name: &str) -> (u8, Vec<Ipv4Addr>) {
    query_a_over(server, name, false)
}

/// A query for the A records of `name` with id `id`.
fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The number of open descriptors and of threads of process `pid`.
fn fds_and_threads(pid: i32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        .unwrap_or(0);
    (fds, threads)
}

#[test]
fn one_network_connects_by_name_and_other_networks_are_isolated() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let n = env.net();
    env.network("t-front", &format!("{n}.1.0/24"), false);
    env.network("t-back", &format!("{n}.2.0/24"), false);
    let (web, client, stranger) = (env.netns("web"), env.netns("client"), env.netns("stranger"));
    let ifs = env
        .nets
        .attach(
            "web",
            &web.path(),
            &[attach("t-front", &["www"], None)],
            &[],
        )
        .expect("attach web");
    assert_eq!(ifs[0].ifname, "eth0");
    assert_eq!(ifs[0].address.to_string(), format!("{n}.1.2"));
    env.nets
        .attach(
            "client",
            &client.path(),
            &[attach("t-front", &[], None)],
            &[],
        )
        .expect("attach client");
    env.nets
        .attach(
            "stranger",
            &stranger.path(),
            &[attach("t-back", &[], None)],
            &[],
        )
        .expect("attach stranger");
    for (ns, name) in [(&web, "web"), (&client, "client"), (&stranger, "stranger")] {
        ns.set_resolv_conf(&env.nets.resolv_conf(name).unwrap());
    }
    assert_eq!(
        env.nets.resolv_conf("client").unwrap(),
        format!("nameserver {n}.1.1\n")
    );
    assert!(
        env.nets
            .hosts("web")
            .unwrap()
            .contains(&format!("{n}.1.2\tweb www\n"))
    );
    let site = tempfile::tempdir().unwrap();
    let _httpd = serve(&web, site.path(), "hello from web\n");

    let ping = client.busybox(&["ping", "-c", "1", "-W", "2", &format!("{n}.1.2")]);
    assert!(ping.status.success(), "client pings web: {ping:?}");
    let got = wget(&client, &format!("http://{n}.1.2/"));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "hello from web\n",
        "{got:?}"
    );
    let lookup = nslookup(&client, "web");
    assert!(
        lookup.contains(&format!("{n}.1.2")),
        "client resolves web: {lookup}"
    );
    let lookup = nslookup(&client, "www");
    assert!(
        lookup.contains(&format!("{n}.1.2")),
        "client resolves the alias: {lookup}"
    );
    let by_name = wget(&client, "http://www/");
    assert_eq!(
        String::from_utf8_lossy(&by_name.stdout),
        "hello from web\n",
        "{by_name:?}"
    );

    // The namespace on t-back reaches its own gateway, but neither
    // resolves nor reaches t-front's containers.
    let gw = stranger.busybox(&["ping", "-c", "1", "-W", "2", &format!("{n}.2.1")]);
    assert!(gw.status.success(), "stranger pings its gateway: {gw:?}");
    let lookup = nslookup(&stranger, "web");
    assert!(
        !lookup.contains(&format!("{n}.1.2")),
        "stranger must not resolve web: {lookup}"
    );
    let (rcode, ips) = query_a(format!("{n}.2.1:53").parse().unwrap(), "web");
    assert_eq!(
        (rcode, ips),
        (3, vec![]),
        "t-back's server does not know web"
    );
    let blocked = stranger.busybox(&["ping", "-c", "1", "-W", "1", &format!("{n}.1.2")]);
    assert!(
        !blocked.status.success(),
        "stranger must not reach web: {blocked:?}"
    );
    let blocked = wget(&stranger, &format!("http://{n}.1.2/"));
    assert!(
        !blocked.status.success(),
        "stranger must not fetch from web"
    );

    // Detach and re-attach (a restart): same address; release frees it.
    env.nets.detach("web").unwrap();
    assert!(!link_exists(&ifs[0].host_veth));
    let again = env
        .nets
        .attach(
            "web",
            &web.path(),
            &[attach("t-front", &["www"], None)],
            &[],
        )
        .unwrap();
    assert_eq!(again[0].address, ifs[0].address);
    env.nets.release("web").unwrap();
    assert_eq!(
        env.nets.list().unwrap()[1].containers,
        vec!["client".to_string()]
    );
}

#[test]
fn published_port_answers_on_loopback_and_stops_after_removal() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let n = env.net();
    env.network("t-pub", &format!("{n}.3.0/24"), false);
    let web = env.netns("pubweb");
    let port = free_port();
    env.nets
        .attach(
            "pubweb",
            &web.path(),
            &[attach("t-pub", &[], None)],
            &[tcp(None, port, 80)],
        )
        .expect("attach with a published port");
    let site = tempfile::tempdir().unwrap();
    let _httpd = serve(&web, site.path(), "published\n");
    let fetch_from = |ip: [u8; 4]| -> std::io::Result<String> {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    };
    let fetch = || fetch_from([127, 0, 0, 1]);
    let body = fetch().expect("published port answers on 127.0.0.1");
    assert!(body.ends_with("published\n"), "{body}");
    // The host's own (non-loopback) address, from the host.
    let gateway: Ipv4Addr = env.slot().addr(3, 1).parse().unwrap();
    let body = fetch_from(gateway.octets()).expect("published port answers on a host address");
    assert!(body.ends_with("published\n"), "{body}");
    // From outside: a namespace behind a link of its own, asking the host's
    // address on that link (prerouting DNAT, forwarding, the reply back).
    let outside = env.netns("outside");
    let _link = OutsideLink::new(
        env.slot(),
        &outside,
        &format!("{n}.13.1"),
        &format!("{n}.13.2"),
    );
    let got = wget(&outside, &format!("http://{n}.13.1:{port}/"));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "published\n",
        "{got:?}"
    );
    // Hairpin: the container reaching its own published port via the host.
    let got = wget(&web, &format!("http://{n}.3.1:{port}/"));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "published\n",
        "{got:?}"
    );
    // Re-attaching (a restart) does not duplicate the rule.
    env.nets
        .attach(
            "pubweb",
            &web.path(),
            &[attach("t-pub", &[], None)],
            &[tcp(None, port, 80)],
        )
        .expect("re-attach");
    let rules = env.table_rules();
    assert_eq!(
        rules.matches(&format!("dport {port} dnat")).count(),
        1,
        "{rules}"
    );
    env.nets.release("pubweb").unwrap();
    assert!(fetch().is_err(), "the port stops answering after removal");
    assert!(!env.table_rules().contains(&format!("dport {port}")));
}

#[test]
fn internal_network_has_no_way_out() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let n = env.net();
    env.network("t-int", &format!("{n}.11.0/24"), true);
    env.network("t-ext", &format!("{n}.12.0/24"), false);
    let (walled, open) = (env.netns("walled"), env.netns("open"));
    env.nets
        .attach("walled", &walled.path(), &[attach("t-int", &[], None)], &[])
        .unwrap();
    env.nets
        .attach("open", &open.path(), &[attach("t-ext", &[], None)], &[])
        .unwrap();
    let routes = run("ip", &["netns", "exec", &walled.name, "ip", "route"]);
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(!routes.contains("default"), "no default route: {routes}");
    assert!(
        routes.contains(&format!("{n}.11.0/24 dev eth0")),
        "{routes}"
    );
    let ping = |ns: &Netns, ip: &str| {
        ns.busybox(&["ping", "-c", "1", "-W", "1", ip])
            .status
            .success()
    };
    assert!(
        ping(&walled, &format!("{n}.11.1")),
        "the gateway (and its DNS) is reachable"
    );
    assert!(
        !ping(&walled, &format!("{n}.12.2")),
        "no route out of an internal network"
    );
    // Even with a default route added by hand, the host does not forward.
    let added = run(
        "ip",
        &[
            "netns",
            "exec",
            &walled.name,
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("{n}.11.1"),
        ],
    );
    assert!(added.status.success(), "{added:?}");
    assert!(
        !ping(&walled, &format!("{n}.12.2")),
        "forwarding out of an internal network is dropped"
    );
    assert!(
        !ping(&open, &format!("{n}.11.2")),
        "forwarding into an internal network is dropped"
    );
    // A container on both gets its default route from the non-internal one.
    let both = env.netns("both");
    let ifs = env
        .nets
        .attach(
            "both",
            &both.path(),
            &[attach("t-int", &[], None), attach("t-ext", &[], None)],
            &[],
        )
        .unwrap();
    assert_eq!(
        (ifs[0].ifname.as_str(), ifs[1].ifname.as_str()),
        ("eth0", "eth1")
    );
    let routes = run("ip", &["netns", "exec", &both.name, "ip", "route"]);
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(
        routes.contains(&format!("default via {n}.12.1 dev eth1")),
        "{routes}"
    );
    assert!(ping(&both, &format!("{n}.11.2")) && ping(&both, &format!("{n}.12.2")));
}

#[test]
fn dns_forwards_other_names_to_the_hosts_resolver() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let n = env.net();
    env.network("t-fwd", &format!("{n}.4.0/24"), false);
    let ns = env.netns("fwd");
    env.nets
        .attach("asker", &ns.path(), &[attach("t-fwd", &[], None)], &[])
        .unwrap();
    ns.set_resolv_conf(&env.nets.resolv_conf("asker").unwrap());
    let lookup = nslookup(&ns, "example.test");
    assert!(lookup.contains("10.99.0.99"), "forwarded: {lookup}");
    let lookup = nslookup(&ns, "asker");
    assert!(lookup.contains(&format!("{n}.4.2")), "own name: {lookup}");
    let server: SocketAddr = format!("{n}.4.1:53").parse().unwrap();
    let (rcode, _) = query_a(server, "nothing.test");
    assert_eq!(rcode, 3, "upstream's NXDOMAIN is relayed");
    // The same over TCP, the fallback for truncated answers.
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(
        query_a_over(server, "example.test", true),
        (0, vec![ip("10.99.0.99")])
    );
    assert_eq!(query_a_over(server, "nothing.test", true).0, 3);
    // The host asking the gateway sees the network's containers, over both.
    assert_eq!(
        query_a_over(server, "asker", true),
        (0, vec![ip(&format!("{n}.4.2"))])
    );
    assert_eq!(
        query_a_over(server, "asker", false),
        (0, vec![ip(&format!("{n}.4.2"))])
    );
}

/// The resolver is a process of its own: started with the first network,
/// one per state dir whoever opens it, unbinding networks as they go, and
/// stopping with the last network or when the state dir is removed.
#[test]
fn resolver_starts_with_the_first_network_and_stops_with_the_last() {
    if !ready() {
        return;
    }
    let env = Env::with(None);
    let n = env.net();
    let dir = env.dir().to_path_buf();
    assert_eq!(resolver::pid(&dir), None, "no network, no resolver");
    env.network("dlife1", &format!("{n}.20.0/24"), false);
    let first = resolver::pid(&dir).expect("the first network starts the resolver");
    assert!(alive(first));
    env.network("dlife2", &format!("{n}.21.0/24"), false);
    assert_eq!(
        resolver::pid(&dir),
        Some(first),
        "one resolver per state dir"
    );
    // Both gateways answer at once (the upstream's NXDOMAIN is relayed).
    for gw in [&format!("{n}.20.1:53"), &format!("{n}.21.1:53")] {
        assert_eq!(query_a(gw.parse().unwrap(), "nothing.test").0, 3, "{gw}");
    }
    // Another engine on the same state dir (another moor process) uses it.
    let cfg = config(&dir, &Names::of(env.slot()), env.upstream.addr);
    Networks::open(cfg).unwrap().cleanup().expect("cleanup");
    assert_eq!(resolver::pid(&dir), Some(first));

    env.nets.remove_network("dlife2").unwrap();
    let log = std::fs::read_to_string(dir.join("net/dns.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("stopped serving network dlife2 on {n}.21.1:53")),
        "{log}"
    );
    assert!(alive(first), "a network is left");
    env.nets.remove_network("dlife1").unwrap();
    wait_for(
        "the resolver to stop with the last network",
        Duration::from_secs(30),
        || !alive(first),
    );
    assert_eq!(resolver::pid(&dir), None);

    // The next network starts a new one; removing the state dir stops it.
    env.network("dlife1", &format!("{n}.20.0/24"), false);
    let second = resolver::pid(&dir).expect("a new resolver");
    assert_ne!(second, first);
    assert_eq!(
        query_a(format!("{n}.20.1:53").parse().unwrap(), "nothing.test").0,
        3
    );
    let bridge = env.nets.list().unwrap()[0].bridge.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    wait_for(
        "the resolver to stop with its state dir",
        Duration::from_secs(30),
        || !alive(second),
    );
    let _ = run("ip", &["link", "del", &bridge]);
}

/// A hostile client cannot make the resolver grow: a flood of queries to
/// relay keeps at most 256 in flight on one upstream socket (the rest are
/// dropped) while local names still answer; garbage is ignored; a TCP
/// client that says nothing is cut off, and TCP clients are limited.
#[test]
fn resolver_bounds_forwarding_and_cuts_off_idle_clients() {
    if !ready() {
        return;
    }
    let hole = BlackHole::start();
    let env = Env::with(Some(hole.addr));
    let n = env.net();
    env.network("dhos", &format!("{n}.10.0/24"), false);
    let ns = env.netns("hos");
    env.nets
        .attach("asker", &ns.path(), &[attach("dhos", &[], None)], &[])
        .unwrap();
    let server: SocketAddr = format!("{n}.10.1:53").parse().unwrap();
    let asker = vec![format!("{n}.10.2").parse::<Ipv4Addr>().unwrap()];
    let pid = resolver::pid(env.dir()).expect("the resolver runs");
    assert_eq!(query_a(server, "asker"), (0, asker.clone()));
    let (base_fds, threads) = fds_and_threads(pid);
    assert_eq!(threads, 1, "the resolver is single-threaded");

    // Garbage: ignored, and the resolver answers on.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut response = a_query(7, "asker");
    response[2] |= 0x80;
    let mut lying = a_query(8, "asker");
    lying[5] = 9; // nine questions, one given
    for datagram in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        &response,
        &lying[..lying.len() - 3],
        &[0xffu8; 4000],
    ] {
        junk.send_to(datagram, server).unwrap();
    }
    assert_eq!(query_a(server, "asker"), (0, asker.clone()));

    // A flood of names to relay to an upstream that never answers.
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..3000u16 {
        let _ = flood.send_to(&a_query(i, &format!("n{i}.flood.test")), server);
    }
    // Local names answer while the relay is full (asked as a stub
    // resolver does, again after a moment: the flood may have filled the
    // socket's receive queue, where the kernel drops what does not fit).
    let ask = UdpSocket::bind("127.0.0.1:0").unwrap();
    ask.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let answered = (0..5).any(|_| {
        ask.send_to(&a_query(0x4242, "asker"), server).unwrap();
        let mut buf = [0u8; 512];
        ask.recv(&mut buf)
            .is_ok_and(|n| n > 12 && buf[..2] == [0x42, 0x42] && buf[3] & 0x0f == 0 && buf[7] == 1)
    });
    assert!(answered, "a local name answers while the relay is full");
    std::thread::sleep(Duration::from_millis(500));
    let relayed = hole.received.load(Ordering::Relaxed);
    assert!(
        (1..=256).contains(&relayed),
        "at most 256 queries in flight, {relayed} relayed"
    );
    assert_eq!(
        hole.ports.lock().unwrap().len(),
        1,
        "every query leaves from one reused socket"
    );
    let (fds, threads) = fds_and_threads(pid);
    assert!(fds <= base_fds + 1, "{fds} descriptors, {base_fds} before");
    assert_eq!(threads, 1);
    // Unanswered, the relayed ones time out into SERVFAIL, and there is
    // room again.
    flood
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = flood
        .recv(&mut buf)
        .expect("a SERVFAIL once upstream timed out");
    assert_eq!(buf[3] & 0x0f, 2, "SERVFAIL: {:?}", &buf[..n]);
    std::thread::sleep(Duration::from_secs(3));
    let _ = flood.send_to(&a_query(1, "later.flood.test"), server);
    wait_for(
        "a later query to be relayed",
        Duration::from_secs(30),
        || hole.received.load(Ordering::Relaxed) > relayed,
    );

    // TCP: a client that sends nothing is cut off; many are refused.
    let mut silent = TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut idle: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect_timeout(&server, Duration::from_secs(3)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (fds, _) = fds_and_threads(pid);
    assert!(
        fds <= base_fds + 1 + 32 + 2,
        "{fds} descriptors with 100 idle TCP clients, {base_fds} before"
    );
    let mut byte = [0u8; 1];
    match silent.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("a silent TCP client is cut off, not {other:?}"),
    }
    idle.clear();
    wait_for(
        "the idle connections to be closed",
        Duration::from_secs(30),
        || fds_and_threads(pid).0 <= base_fds + 1,
    );
    assert_eq!(query_a_over(server, "asker", true), (0, asker));
    assert!(alive(pid));
}

#[test]
fn bad_inputs_are_clear_errors_and_create_nothing() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let n = env.net();
    env.network("t-bad", &format!("{n}.5.0/24"), false);

    let overlap = NetworkSpec {
        subnet: Some(format!("{n}.5.128/25").parse().unwrap()),
        ..NetworkSpec::default()
    };
    let err = env.nets.create_network("t-bad2", &overlap).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("subnet {n}.5.128/25 of network t-bad2 overlaps {n}.5.0/24 of network t-bad")
    );
    assert!(!link_exists(&env.slot().bridge("t-bad2")));

    // A host route of our own making (a dummy interface) to collide with.
    let dummy = env.slot().name("xdummy");
    let _dummy = DummyLink::new(&dummy, &format!("{n}.6.1/24"));
    let routed = NetworkSpec {
        subnet: Some(format!("{n}.6.0/24").parse().unwrap()),
        ..NetworkSpec::default()
    };
    let err = env.nets.create_network("t-bad3", &routed).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "subnet {n}.6.0/24 of network t-bad3 collides with the host route {n}.6.0/24 on {dummy}"
        )
    );
    assert!(!link_exists(&env.slot().bridge("t-bad3")));
    assert_eq!(env.nets.list().unwrap().len(), 1);

    let ns = env.netns("bad");
    let err = env
        .nets
        .attach(
            "c1",
            &ns.path(),
            &[attach("t-bad", &[], Some(&format!("{n}.7.5")))],
            &[],
        )
        .unwrap_err();
    assert!(matches!(err, NetError::AddressOutside { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "ipv4_address {n}.7.5 of container c1 is not a free host address of network t-bad ({n}.5.0/24)"
        )
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap().port();
    let err = env
        .nets
        .attach(
            "c1",
            &ns.path(),
            &[attach("t-bad", &[], None)],
            &[tcp(Some("127.0.0.1"), taken, 80)],
        )
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "host port 127.0.0.1:{taken}/tcp of container c1 is already in use on the host"
        )),
        "{err}"
    );
    // N.99.1 is no address of this host (nothing is sent to it).
    let err = env
        .nets
        .attach(
            "c1",
            &ns.path(),
            &[attach("t-bad", &[], None)],
            &[tcp(Some(&format!("{n}.99.1")), free_port(), 80)],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("host address {n}.99.1 of container c1 is not an address of this host")
    );
    let err = env
        .nets
        .attach("c1", &ns.path(), &[attach("t-nope", &[], None)], &[])
        .unwrap_err();
    assert_eq!(err.to_string(), "network t-nope does not exist");

    // Nothing of c1 exists: no veth, no lease, no rule.
    let veth = env.veth("c1", "t-bad");
    assert!(!link_exists(&veth));
    assert!(env.nets.state().unwrap().containers.is_empty());
    assert!(!env.table_rules().contains(&format!("dport {taken}")));

    // A port another moor container publishes.
    let ns2 = env.netns("bad2");
    let port = free_port();
    env.nets
        .attach(
            "c2",
            &ns2.path(),
            &[attach("t-bad", &[], None)],
            &[tcp(None, port, 80)],
        )
        .unwrap();
    let err = env
        .nets
        .attach(
            "c1",
            &ns.path(),
            &[attach("t-bad", &[], None)],
            &[tcp(None, port, 81)],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("host port 0.0.0.0:{port}/tcp of container c1 is already published by c2")
    );
    let err = env.nets.remove_network("t-bad").unwrap_err();
    assert_eq!(err.to_string(), "network t-bad is still used by c2");
    drop(listener);
}

/// A veth pair from the host (`host_ip/24`) into `ns` (`ns_ip/24`, default
/// route via the host): a machine "outside" moor's networks.
struct OutsideLink(String);

impl OutsideLink {
    fn new(slot: &Slot, ns: &Netns, host_ip: &str, ns_ip: &str) -> Self {
        let (host, peer) = (slot.name("xout"), slot.name("xpeer"));
        let ok = |out: Output| assert!(out.status.success(), "{out:?}");
        ok(run(
            "ip",
            &["link", "add", &host, "type", "veth", "peer", "name", &peer],
        ));
        let link = OutsideLink(host.clone());
        ok(run("ip", &["link", "set", &peer, "netns", &ns.name]));
        ok(run(
            "ip",
            &["addr", "add", &format!("{host_ip}/24"), "dev", &host],
        ));
        ok(run("ip", &["link", "set", &host, "up"]));
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ok(run("ip", &all));
        };
        in_ns(&["addr", "add", &format!("{ns_ip}/24"), "dev", &peer]);
        in_ns(&["link", "set", &peer, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        in_ns(&["route", "add", "default", "via", host_ip]);
        link
    }
}

impl Drop for OutsideLink {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.0]);
    }
}

/// A bridge of the test's own with an address, which gives the host a
/// route (a bridge rather than a dummy: not every kernel has `dummy`).
struct DummyLink(String);

impl DummyLink {
    fn new(name: &str, addr: &str) -> Self {
        let out = run("ip", &["link", "add", name, "type", "bridge"]);
        assert!(out.status.success(), "{out:?}");
        let link = DummyLink(name.into());
        let out = run("ip", &["addr", "add", addr, "dev", name]);
        assert!(out.status.success(), "{out:?}");
        let out = run("ip", &["link", "set", name, "up"]);
        assert!(out.status.success(), "{out:?}");
        link
    }
}

impl Drop for DummyLink {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.0]);
    }
}

const CRASH_ENV: &str = "MOOR_TEST_NET_CRASH";

/// Worker for [`killed_mid_way_then_cleanup_leaves_one_bridge_and_no_stale_rules`]:
/// creates and tears down a network and an attachment in a loop until killed.
#[test]
#[ignore = "run as a child process by killed_mid_way_then_cleanup_leaves_one_bridge_and_no_stale_rules"]
fn crash_worker() {
    let spec =
        std::env::var(CRASH_ENV).expect("crash_worker runs only as a child of the crash test");
    let mut parts = spec.split('|');
    let mut part = || parts.next().expect("a part of the spec").to_string();
    let (dir, table, prefix, pool, upstream, netns, n) =
        (part(), part(), part(), part(), part(), part(), part());
    let names = Names {
        table,
        prefix,
        pool,
    };
    let nets = Networks::open(config(Path::new(&dir), &names, upstream.parse().unwrap())).unwrap();
    let netns = PathBuf::from(netns);
    let spec = |s: &str| NetworkSpec {
        subnet: Some(s.parse().unwrap()),
        ..NetworkSpec::default()
    };
    nets.create_network("t-crash", &spec(&format!("{n}.8.0/24")))
        .unwrap();
    let port = free_port();
    for i in 0.. {
        nets.create_network("t-crash2", &spec(&format!("{n}.9.0/24")))
            .unwrap();
        nets.attach(
            "victim",
            &netns,
            &[attach("t-crash", &[], None), attach("t-crash2", &[], None)],
            &[tcp(None, port, 80)],
        )
        .unwrap();
        nets.release("victim").unwrap();
        nets.remove_network("t-crash2").unwrap();
        println!("iteration {i}");
    }
}

#[test]
fn killed_mid_way_then_cleanup_leaves_one_bridge_and_no_stale_rules() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let n = env.net();
    let ns = env.netns("crash");
    // Interfaces that look like moor's but are not this instance's: another
    // state directory's bridge, and a veth pair of moor's name shape (with
    // this slot's salt; its peer marked as the slot's, for clean-up).
    let foreign_bridge = env.slot().bridge("fx");
    let _foreign = DummyLink::new(&foreign_bridge, &format!("{n}.14.1/24"));
    let alias = run(
        "ip",
        &[
            "link",
            "set",
            "dev",
            &foreign_bridge,
            "alias",
            "moor:ffffffff:network:f",
        ],
    );
    assert!(alias.status.success(), "{alias:?}");
    let slot_naming = naming(&env.slot().bridge_prefix());
    let foreign_veth = slot_naming.veth_host("someone", "else");
    let foreign_peer = slot_naming.veth_peer("someone", "else");
    let made = run(
        "ip",
        &[
            "link",
            "add",
            &foreign_veth,
            "type",
            "veth",
            "peer",
            "name",
            &foreign_peer,
        ],
    );
    assert!(made.status.success(), "{made:?}");
    let _foreign_veth = DummyLink(foreign_veth.clone());
    env.slot().mark(&foreign_peer);
    // A network whose bridge name another moor holds is refused, not adopted.
    let taken = NetworkSpec {
        subnet: Some(format!("{n}.15.0/24").parse().unwrap()),
        ..NetworkSpec::default()
    };
    let err = env.nets.create_network("fx", &taken).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "bridge {foreign_bridge} belongs to another moor (instance ffffffff (its mark \
             names no state dir; if that moor is gone, delete the bridge with \
             `ip link del {foreign_bridge}`)); use another network name or bridge prefix \
             (MOOR_BRIDGE_PREFIX)"
        )
    );
    assert!(env.nets.state().unwrap().networks.is_empty());
    let routes = run("ip", &["route", "show", &format!("{n}.15.0/24")]);
    assert!(routes.stdout.is_empty(), "nothing half-created: {routes:?}");
    let dir = env.dir().to_str().unwrap().to_string();
    let names = Names::of(env.slot());
    // Kill at six points spread over one iteration of the worker (whose
    // length is measured), so that the kills land in network creation,
    // attachment, release and removal alike.
    for step in 0..6u32 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "networks::crash_worker",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CRASH_ENV,
                format!(
                    "{dir}|{}|{}|{}|{}|{}|{n}",
                    names.table,
                    names.prefix,
                    names.pool,
                    env.upstream.addr,
                    ns.path().display()
                ),
            )
            .env(MOOR_BIN_ENV, crate::common::moor_bin())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut started = None;
        let period = loop {
            let line = lines.next().expect("worker output").unwrap();
            if line.starts_with("iteration 1") {
                started = Some(Instant::now());
            }
            if line.starts_with("iteration 2") {
                break started.expect("iteration 1 came first").elapsed();
            }
            assert!(Instant::now() < deadline, "worker made no progress");
        };
        let delay = period * step / 6;
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();

        // The next start.
        let nets = Networks::open(config(Path::new(&dir), &names, env.upstream.addr)).unwrap();
        let report = nets.cleanup().expect("cleanup");
        eprintln!("killed {delay:?} into an iteration of {period:?}: {report:?}");
        let state = nets.state().unwrap();
        let bridges = |name: &str| {
            let out = run("ip", &["-o", "link", "show", "type", "bridge"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| {
                    l.split(": ")
                        .nth(1)
                        .is_some_and(|n| n.split('@').next() == Some(name))
                })
                .count()
        };
        assert_eq!(
            bridges(&env.slot().bridge("t-crash")),
            1,
            "exactly one bridge of the kept network"
        );
        let second = usize::from(state.networks.contains_key("t-crash2"));
        assert_eq!(bridges(&env.slot().bridge("t-crash2")), second);
        // veths on the host are exactly the live attachments'.
        let out = run("ip", &["-o", "link", "show", "type", "veth"]);
        let mut veths: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| moor_runtime::net::names::is_veth(n))
            .filter(|n| {
                ["t-crash", "t-crash2"]
                    .iter()
                    .any(|net| env.veth("victim", net) == *n)
            })
            .collect();
        veths.sort();
        let mut expected: Vec<String> = state
            .containers
            .values()
            .filter(|c| c.netns.is_some())
            .flat_map(|c| c.leases.iter().map(|l| l.host_veth.clone()))
            .collect();
        expected.sort();
        assert_eq!(veths, expected, "veths match the recorded attachments");
        // The table holds exactly the recorded ports, once.
        let rules = env.table_rules();
        let published: usize = state
            .containers
            .values()
            .filter(|c| c.netns.is_some())
            .map(|c| c.ports.len())
            .sum();
        assert_eq!(rules.matches(" dnat to ").count(), published, "{rules}");
        assert!(
            link_exists(&foreign_bridge),
            "another moor's bridge is left alone"
        );
        assert!(
            link_exists(&foreign_veth),
            "a veth moor did not record is left alone"
        );
        // A second cleanup finds nothing to do.
        let again = nets.cleanup().unwrap();
        assert_eq!(again, Default::default());
        nets.release("victim").unwrap();
        let _ = nets.remove_network("t-crash2");
        drop(nets);
    }
}
