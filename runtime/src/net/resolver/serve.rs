//! The resolver's listeners (UDP and TCP on one network's gateway) and the
//! records they answer from.

use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket,
    sockopt,
};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::forward::{Forwarder, forward_tcp, read_framed, send_now, write_framed};
use crate::net::dns::{self, Local};
use crate::net::state::State;

/// TCP clients served at once per network; more are disconnected at once.
pub(crate) const MAX_TCP_CLIENTS: usize = 32;

/// How long a TCP client may stay silent before it is cut off.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one TCP connection may last, however busy.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// The network state as its file holds it now: every lookup checks the
/// file's identity (one `stat`) and reads it again when it was replaced,
/// so an answer always reflects the last saved state — a container
/// attached a moment ago resolves at once, without waiting for a
/// notification.
#[derive(Debug)]
pub(crate) struct Records {
    path: PathBuf,
    cached: Mutex<(Option<FileId>, Arc<State>)>,
}

/// What tells one version of the state file from another: every save
/// renames a new file into place. (An inode number can be reused and a
/// timestamp be coarse, so two saves in a row may look alike: the
/// notification that follows every save makes the resolver read the file
/// again regardless, [`Records::reload`].)
type FileId = (u64, u64, i64, i64, i64, i64, u64);

fn file_id(path: &std::path::Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.size(),
    ))
}

impl Records {
    pub(crate) fn new(path: PathBuf) -> Self {
        Records {
            path,
            cached: Mutex::new((None, Arc::new(State::default()))),
        }
    }

    /// The current state (empty when there is no state file). A file that
    /// cannot be read or parsed leaves the last good state in force.
    pub(crate) fn current(&self) -> Arc<State> {
        self.read(false)
    }

    /// The state read from the file whatever its identity says.
    pub(crate) fn reload(&self) -> Arc<State> {
        self.read(true)
    }

    fn read(&self, force: bool) -> Arc<State> {
        let id = file_id(&self.path);
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if force || cached.0 != id || id.is_none() {
            match id {
                None => cached.1 = Arc::new(State::default()),
                Some(_) => match std::fs::read(&self.path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                {
                    Ok(state) => cached.1 = Arc::new(state),
                    Err(e) => tracing::warn!(
                        "read the network state {}: {e}; keeping the last one",
                        self.path.display()
                    ),
                },
            }
            cached.0 = id;
        }
        cached.1.clone()
    }
}

/// The server of one network: a UDP socket and a TCP listener on its
/// gateway, each served by a task; both stop when this is dropped.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) network: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Listener {
    /// Binds `address` (UDP and TCP) and serves `network` on it.
    pub(crate) fn bind(
        address: SocketAddrV4,
        network: &str,
        records: Arc<Records>,
        forwarder: Arc<Forwarder>,
    ) -> std::io::Result<Self> {
        let udp = Arc::new(UdpSocket::from_std(bind_udp(address)?)?);
        let tcp = TcpListener::from_std(bind_tcp(address)?)?;
        let udp_task = tokio::spawn(serve_udp(
            network.to_string(),
            udp,
            records.clone(),
            forwarder.clone(),
        ));
        let tcp_task = tokio::spawn(serve_tcp(network.to_string(), tcp, records, forwarder));
        Ok(Listener {
            network: network.to_string(),
            tasks: vec![udp_task, tcp_task],
        })
    }
}

/// A socket of `ty` bound to `address` with `IP_FREEBIND`: the bind holds
/// even when the address is not (yet, or any longer) on the bridge — a
/// bridge being created, or re-created by clean-up — and packets arrive
/// once it is.
fn bound_socket(address: SocketAddrV4, ty: SockType) -> std::io::Result<std::os::fd::OwnedFd> {
    let fd = socket(
        AddressFamily::Inet,
        ty,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    if ty == SockType::Stream {
        // A restarted resolver binds again despite connections in TIME_WAIT.
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrIn::from(address))?;
    Ok(fd)
}

fn bind_udp(address: SocketAddrV4) -> std::io::Result<std::net::UdpSocket> {
    Ok(bound_socket(address, SockType::Datagram)?.into())
}

fn bind_tcp(address: SocketAddrV4) -> std::io::Result<std::net::TcpListener> {
    let fd = bound_socket(address, SockType::Stream)?;
    listen(&fd, Backlog::new(64).map_err(std::io::Error::from)?)?;
    Ok(fd.into())
}

async fn serve_udp(
    network: String,
    socket: Arc<UdpSocket>,
    records: Arc<Records>,
    forwarder: Arc<Forwarder>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = &buf[..len];
        let state = records.current();
        match dns::answer_locally(&state, &network, peer.ip(), query) {
            // Garbage, or an answer someone sent us: not worth a reply.
            Local::Ignore => {}
            Local::Reply(reply) => {
                send_now(&socket, Some(peer), &reply);
            }
            Local::Forward => forwarder.forward(query, peer, &socket),
        }
    }
}

/// DNS over TCP (RFC 7766), which clients fall back to when a UDP answer
/// comes back truncated: as many queries as the client sends on one
/// connection, within [`IDLE_TIMEOUT`] of each other and
/// [`CONNECTION_LIFETIME`] in all; at most [`MAX_TCP_CLIENTS`] at once.
async fn serve_tcp(
    network: String,
    listener: TcpListener,
    records: Arc<Records>,
    forwarder: Arc<Forwarder>,
) {
    let limit = Arc::new(Semaphore::new(MAX_TCP_CLIENTS));
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors, say: let the moment pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            drop(conn);
            continue;
        };
        let (network, records, forwarder) = (network.clone(), records.clone(), forwarder.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let serve = serve_connection(conn, peer, &network, &records, &forwarder);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, serve).await;
        });
    }
}

async fn serve_connection(
    mut conn: TcpStream,
    peer: SocketAddr,
    network: &str,
    records: &Records,
    forwarder: &Forwarder,
) {
    while let Ok(Ok(query)) = tokio::time::timeout(IDLE_TIMEOUT, read_framed(&mut conn)).await {
        let local = dns::answer_locally(&records.current(), network, peer.ip(), &query);
        let reply = match local {
            Local::Ignore => return,
            Local::Reply(reply) => Some(reply),
            Local::Forward => forward_tcp(&query, &forwarder.upstreams())
                .await
                .or_else(|| dns::servfail(&query)),
        };
        let Some(reply) = reply else { return };
        if write_framed(&mut conn, &reply).await.is_err() {
            return;
        }
    }
}
