//! Relaying queries that are not about containers to the host's resolvers.
//!
//! UDP: one connected socket per upstream, made on first use and reused for
//! every query (rather than a socket and a task per query). Each relayed
//! query gets a fresh random id on that socket; a pending map remembers
//! whose query it was, and an answer is relayed back only when its id and
//! its question match a pending query (a stray or spoofed datagram is
//! dropped). At most [`MAX_IN_FLIGHT`] queries are pending at once; beyond
//! that a query is dropped, not answered (see [`Forwarder::forward`]). A
//! query unanswered after [`UPSTREAM_TIMEOUT`] goes to the next upstream,
//! and after the last one the client gets SERVFAIL. A socket is replaced by
//! a fresh one (a new source port) once it has carried [`ROTATE_AFTER`]
//! queries and nothing is pending on it.
//!
//! TCP (the fallback for truncated answers): one upstream connection per
//! client query, bounded by the listener's limit on client connections.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::net::dns;

/// How long to wait for one upstream resolver.
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The most relayed UDP queries waiting for an answer at once.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// Queries an upstream socket carries before it is replaced (when idle).
const ROTATE_AFTER: u32 = 1000;

/// How long an upstream whose socket could not be made is skipped.
const BROKEN_FOR: Duration = Duration::from_secs(30);

/// The UDP relay; see the module doc.
#[derive(Debug)]
pub(crate) struct Forwarder {
    inner: Mutex<Inner>,
    /// Wakes the sweeper when a query becomes pending.
    wake: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    upstreams: Vec<SocketAddr>,
    sockets: Vec<Option<Upstream>>,
    /// Upstreams whose socket could not be made, skipped until then.
    broken: Vec<Option<Instant>>,
    /// Pending queries by (upstream index, id on that upstream's socket).
    pending: HashMap<(usize, u16), Pending>,
    /// Keys the id generator (SipHash of a counter: unpredictable ids).
    keys: std::collections::hash_map::RandomState,
    counter: u64,
    /// Queries dropped because [`MAX_IN_FLIGHT`] were pending.
    dropped: u64,
}

#[derive(Debug)]
struct Upstream {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    used: u32,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A relayed query: who asked, with which id, and where to answer from.
#[derive(Debug)]
struct Pending {
    client: SocketAddr,
    via: Arc<UdpSocket>,
    id: u16,
    query: Vec<u8>,
    deadline: Instant,
}

impl Forwarder {
    pub(crate) fn new() -> Arc<Self> {
        let me = Arc::new(Forwarder {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
        });
        tokio::spawn(sweep(me.clone()));
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the upstream resolvers; a change drops the old sockets and
    /// forgets what was pending on them (those clients ask again).
    pub(crate) fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        let mut inner = self.lock();
        if inner.upstreams != upstreams {
            inner.pending.clear();
            inner.sockets = upstreams.iter().map(|_| None).collect();
            inner.broken = upstreams.iter().map(|_| None).collect();
            inner.upstreams = upstreams;
        }
    }

    /// The upstream resolvers.
    pub(crate) fn upstreams(&self) -> Vec<SocketAddr> {
        self.lock().upstreams.clone()
    }

    /// How many queries wait for an upstream answer, and how many were
    /// dropped for want of room.
    pub(crate) fn load(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.pending.len(), inner.dropped)
    }

    /// Relays `query` from `client`, who asked on `via`. With
    /// [`MAX_IN_FLIGHT`] queries pending the query is dropped rather than
    /// answered SERVFAIL: the client asks again after its timeout, by
    /// when there may be room, whereas a SERVFAIL ends the lookup at once
    /// (and some stub resolvers cache it), turning a passing flood from one
    /// container into failed lookups for all. Dropping costs nothing under
    /// the flood itself.
    pub(crate) fn forward(
        self: &Arc<Self>,
        query: &[u8],
        client: SocketAddr,
        via: &Arc<UdpSocket>,
    ) {
        let Some(id) = query.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            return;
        };
        let mut inner = self.lock();
        if inner.pending.len() >= MAX_IN_FLIGHT {
            inner.dropped += 1;
            return;
        }
        let pending = Pending {
            client,
            via: via.clone(),
            id,
            query: query.to_vec(),
            deadline: Instant::now(),
        };
        self.send(&mut inner, 0, pending);
    }

    /// Sends `p` to upstream `first` or, failing that, the next ones; with
    /// none left the client gets SERVFAIL.
    fn send(self: &Arc<Self>, inner: &mut Inner, first: usize, mut p: Pending) {
        for index in first..inner.upstreams.len() {
            let Some(socket) = self.socket(inner, index) else {
                continue;
            };
            let id = inner.fresh_id(index);
            let mut bytes = p.query.clone();
            bytes[..2].copy_from_slice(&id.to_be_bytes());
            if !send_now(&socket, None, &bytes) {
                continue;
            }
            if let Some(u) = inner.sockets[index].as_mut() {
                u.used = u.used.saturating_add(1);
            }
            p.deadline = Instant::now() + UPSTREAM_TIMEOUT;
            inner.pending.insert((index, id), p);
            self.wake.notify_one();
            return;
        }
        answer_servfail(&p);
    }

    /// The socket of upstream `index`, made (with its reader) on first use.
    fn socket(self: &Arc<Self>, inner: &mut Inner, index: usize) -> Option<Arc<UdpSocket>> {
        if let Some(u) = &inner.sockets[index] {
            return Some(u.socket.clone());
        }
        if inner.broken[index].is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let upstream = inner.upstreams[index];
        let local: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = std::net::UdpSocket::bind(local)
            .and_then(|s| s.connect(upstream).map(|()| s))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(UdpSocket::from_std)
            .map(Arc::new);
        let socket = match socket {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "connect a socket to the upstream resolver {upstream}: {e}; skipping it for {BROKEN_FOR:?}"
                );
                inner.broken[index] = Some(Instant::now() + BROKEN_FOR);
                return None;
            }
        };
        let reader = tokio::spawn(read_answers(Arc::downgrade(self), index, socket.clone()));
        inner.sockets[index] = Some(Upstream {
            socket: socket.clone(),
            reader,
            used: 0,
        });
        Some(socket)
    }

    /// An answer from upstream `index` (on `socket`, which may since have
    /// been replaced): relayed when it matches a pending query.
    fn answer(&self, index: usize, socket: &Arc<UdpSocket>, reply: &mut [u8]) {
        let Some(id) = reply.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            return;
        };
        let mut inner = self.lock();
        let current = inner.sockets.get(index).and_then(Option::as_ref);
        if !current.is_some_and(|u| Arc::ptr_eq(&u.socket, socket)) {
            return;
        }
        let matches = inner
            .pending
            .get(&(index, id))
            .is_some_and(|p| same_question(&p.query, reply));
        if !matches {
            return;
        }
        let p = inner.pending.remove(&(index, id)).expect("just found");
        reply[..2].copy_from_slice(&p.id.to_be_bytes());
        send_now(&p.via, Some(p.client), reply);
        inner.rotate_if_idle(index);
    }

    /// Moves every query past its deadline on to the next upstream; the
    /// earliest deadline left, if any.
    fn expire(self: &Arc<Self>) -> Option<Instant> {
        let mut inner = self.lock();
        let now = Instant::now();
        let late: Vec<(usize, u16)> = inner
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            if let Some(p) = inner.pending.remove(&key) {
                self.send(&mut inner, key.0 + 1, p);
                inner.rotate_if_idle(key.0);
            }
        }
        inner.pending.values().map(|p| p.deadline).min()
    }
}

impl Inner {
    /// A random id not pending on upstream `index`.
    fn fresh_id(&mut self, index: usize) -> u16 {
        loop {
            self.counter += 1;
            let id = self.keys.hash_one(self.counter) as u16;
            if !self.pending.contains_key(&(index, id)) {
                return id;
            }
        }
    }

    /// Replaces the socket of upstream `index` (a new source port next
    /// time) once it is well used and nothing waits on it.
    fn rotate_if_idle(&mut self, index: usize) {
        let worn = self.sockets[index]
            .as_ref()
            .is_some_and(|u| u.used >= ROTATE_AFTER);
        if worn && !self.pending.keys().any(|(i, _)| *i == index) {
            self.sockets[index] = None;
        }
    }
}

fn answer_servfail(p: &Pending) {
    if let Some(reply) = dns::servfail(&p.query) {
        send_now(&p.via, Some(p.client), &reply);
    }
}

/// Sends one datagram at once, without waiting (a full buffer drops it, as
/// the network would); `to` is `None` on a connected socket. Straight to
/// the kernel rather than through tokio's `try_send`, which refuses with
/// `WouldBlock` until the reactor has seen the socket writable once — so
/// the first query on a new socket would be lost. True when sent.
pub(crate) fn send_now(socket: &UdpSocket, to: Option<SocketAddr>, bytes: &[u8]) -> bool {
    use nix::sys::socket::{MsgFlags, SockaddrStorage, send, sendto};
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let sent = match to {
        Some(to) => sendto(
            fd,
            bytes,
            &SockaddrStorage::from(to),
            MsgFlags::MSG_DONTWAIT,
        ),
        None => send(fd, bytes, MsgFlags::MSG_DONTWAIT),
    };
    sent.is_ok()
}

/// True when the answer is to the same question as the query.
fn same_question(query: &[u8], reply: &[u8]) -> bool {
    match (Message::from_vec(query), Message::from_vec(reply)) {
        (Ok(q), Ok(r)) => q.queries == r.queries,
        _ => false,
    }
}

async fn read_answers(forwarder: std::sync::Weak<Forwarder>, index: usize, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65535];
    loop {
        // Errors (an ICMP port unreachable on the connected socket) are
        // transient; the queries they concern time out.
        let Ok(n) = socket.recv(&mut buf).await else {
            continue;
        };
        let Some(f) = forwarder.upgrade() else { return };
        f.answer(index, &socket, &mut buf[..n]);
    }
}

/// Times out pending queries; sleeps while nothing is pending.
async fn sweep(f: Arc<Forwarder>) {
    loop {
        match f.expire() {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = f.wake.notified() => {}
                }
            }
            None => f.wake.notified().await,
        }
    }
}

/// Relays one query over TCP to the first upstream that answers.
pub(crate) async fn forward_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let attempt = async {
            let mut conn = TcpStream::connect(up).await?;
            write_framed(&mut conn, query).await?;
            read_framed(&mut conn).await
        };
        if let Ok(Ok(reply)) = tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            return Some(reply);
        }
    }
    None
}

/// Reads one DNS message framed for TCP (two-byte length, message).
pub(crate) async fn read_framed(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = conn.read_u16().await?;
    let mut msg = vec![0u8; usize::from(len)];
    conn.read_exact(&mut msg).await?;
    Ok(msg)
}

/// Writes one DNS message framed for TCP.
pub(crate) async fn write_framed(conn: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    conn.write_all(&framed).await
}
