//! The resolver process itself: `moor --state-dir DIR dns` runs [`run`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{ForkResult, fork, setsid};
use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

use super::forward::{Forwarder, MAX_IN_FLIGHT};
use super::serve::{Listener, Records};
use super::{Failed, Paths, Served, Settings};

/// How often the state dir is checked without a notification: a safety
/// net for file systems where inotify misses events.
const POLL: Duration = Duration::from_secs(30);

/// How long a control client has to send its request, and to take the reply.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// A log this large is started afresh when the resolver starts.
const LOG_MAX: u64 = 1024 * 1024;

/// The resolver's entry point; returns the process exit code. Forks at once
/// (the caller reaps the first process), leaves the caller's session, and
/// reports `ok {json}`, `busy` (another runs) or `error: …` on stdout,
/// which it then closes.
pub fn run(state_dir: &Path) -> i32 {
    // SAFETY: called first thing from main, while single-threaded, so the
    // child may do anything after fork.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report(&format!("error: fork the resolver: {e}"));
            return 1;
        }
    }
    let _ = setsid();
    let state_dir = match state_dir.canonicalize() {
        Ok(d) => d,
        Err(e) => {
            report(&format!("error: state dir {}: {e}", state_dir.display()));
            return 1;
        }
    };
    let paths = Paths::new(&state_dir);
    let lock = match take_lock(&paths) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            report("busy");
            return 0;
        }
        Err(e) => {
            report(&format!("error: {e}"));
            return 1;
        }
    };
    redirect_stdio(&paths);
    let _ = std::env::set_current_dir("/");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&format!("error: start the runtime: {e}"));
            return 1;
        }
    };
    let code = rt.block_on(serve(&paths));
    drop(lock);
    code
}

/// Writes the one-line report to stdout and closes it (replaced by /dev/null).
fn report(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 replaces the report pipe; both fds are valid.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

/// The pid file, locked: `None` when another resolver holds it.
fn take_lock(paths: &Paths) -> Result<Option<File>, String> {
    let path = paths.pid();
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => return Err(format!("lock {}: {e}", path.display())),
    }
    let pid = std::process::id();
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{pid}\n").as_bytes()))
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(Some(file))
}

/// stdin from /dev/null, stderr to the log (restarted when large).
fn redirect_stdio(paths: &Paths) {
    let log = paths.log();
    if std::fs::metadata(&log).is_ok_and(|m| m.len() > LOG_MAX) {
        let _ = std::fs::remove_file(&log);
    }
    let file = File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log);
    if let Ok(file) = file {
        // SAFETY: dup2 onto fd 2 replaces stderr with the log; both fds are valid.
        unsafe { libc::dup2(file.as_raw_fd(), 2) };
    }
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: as above, for stdin.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
}

/// The served networks and what they share.
struct Server {
    paths: Paths,
    records: Arc<Records>,
    forwarder: Arc<Forwarder>,
    listeners: BTreeMap<SocketAddrV4, Listener>,
    /// Whether the state recorded a network at the last reload.
    networks: bool,
}

impl Server {
    /// Reads the settings and the state again; binds the gateways of new
    /// networks and unbinds those of networks gone.
    async fn reload(&mut self) -> Served {
        let settings = std::fs::read(self.paths.settings())
            .ok()
            .and_then(|b| serde_json::from_slice::<Settings>(&b).ok())
            .unwrap_or_default();
        let state = self.records.reload();
        let wanted: BTreeMap<SocketAddrV4, String> = state
            .networks
            .values()
            .map(|n| (SocketAddrV4::new(n.gateway, settings.port), n.name.clone()))
            .collect();
        // Never relay to ourselves.
        let mut upstreams = settings.upstreams();
        upstreams.retain(|u| !matches!(u, SocketAddr::V4(a) if wanted.contains_key(a)));
        self.forwarder.set_upstreams(upstreams);

        let before = self.listeners.len();
        self.listeners.retain(|address, l| {
            let keep = wanted.get(address) == Some(&l.network);
            if !keep {
                tracing::info!("stopped serving network {} on {address}", l.network);
            }
            keep
        });
        if self.listeners.len() < before {
            // Let the stopped tasks drop their sockets before binding again.
            tokio::task::yield_now().await;
        }
        let mut served = Served::default();
        for (address, network) in &wanted {
            if self.listeners.contains_key(address) {
                continue;
            }
            match Listener::bind(
                *address,
                network,
                self.records.clone(),
                self.forwarder.clone(),
            ) {
                Ok(l) => {
                    tracing::info!("serving network {network} on {address}");
                    self.listeners.insert(*address, l);
                }
                Err(e) => {
                    tracing::warn!("cannot serve network {network} on {address}: {e}");
                    served.failed.push(Failed {
                        network: network.clone(),
                        address: SocketAddr::V4(*address),
                        error: e.to_string(),
                    });
                }
            }
        }
        served.bound = self
            .listeners
            .iter()
            .map(|(a, l)| (l.network.clone(), SocketAddr::V4(*a)))
            .collect();
        self.networks = !state.networks.is_empty();
        served
    }
}

async fn serve(paths: &Paths) -> i32 {
    let control = match bind_control(&paths.sock()) {
        Ok(c) => c,
        Err(e) => {
            report(&format!("error: {e}"));
            return 1;
        }
    };
    let mut watch = match Watch::new(&paths.dir) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "cannot watch {}: {e}; checking every {POLL:?}",
                paths.dir.display()
            );
            None
        }
    };
    let mut server = Server {
        paths: paths.clone(),
        records: Arc::new(Records::new(paths.state())),
        forwarder: Forwarder::new(),
        listeners: BTreeMap::new(),
        networks: false,
    };
    let served = server.reload().await;
    report(&format!(
        "ok {}",
        serde_json::to_string(&served).unwrap_or_default()
    ));
    tracing::info!(
        "resolver {} started for {}",
        std::process::id(),
        paths.dir.display()
    );
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = signals else {
        tracing::warn!("cannot handle signals; stopping");
        return 1;
    };
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    let mut reported_drops = 0;
    let why = loop {
        if !server.networks {
            break "the state records no network".to_string();
        }
        tokio::select! {
            accepted = control.listener.accept() => {
                if let Ok((conn, _)) = accepted {
                    answer_control(conn, &mut server).await;
                }
            }
            seen = next_event(&mut watch) => match seen {
                Ok(Seen::Changed) => {
                    server.reload().await;
                }
                Ok(Seen::Stop(why)) => break why,
                Err(e) => {
                    tracing::warn!("watching {}: {e}; checking every {POLL:?}", paths.dir.display());
                    watch = None;
                }
            },
            _ = poll.tick() => {
                if !paths.dir.is_dir() {
                    break format!("{} is gone", paths.dir.display());
                }
                server.reload().await;
                let (pending, dropped) = server.forwarder.load();
                if dropped > reported_drops {
                    tracing::warn!(
                        "dropped {} queries with {MAX_IN_FLIGHT} already waiting for upstream resolvers ({pending} now)",
                        dropped - reported_drops
                    );
                    reported_drops = dropped;
                }
            }
            _ = hup.recv() => {
                server.reload().await;
            }
            _ = term.recv() => break "SIGTERM".to_string(),
            _ = int.recv() => break "SIGINT".to_string(),
        }
    };
    tracing::info!("resolver {} stopping: {why}", std::process::id());
    control.remove();
    0
}

/// The control socket, removed on exit if it is still this one.
struct Control {
    listener: UnixListener,
    path: std::path::PathBuf,
    id: (u64, u64),
}

impl Control {
    fn remove(&self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn bind_control(path: &Path) -> Result<Control, String> {
    // The lock is ours, so a socket left here is a dead resolver's.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(Control {
        listener,
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    })
}

/// One control request: `reload`, answered with the JSON of [`Served`].
/// A client that says nothing is cut off after [`CONTROL_TIMEOUT`].
async fn answer_control(conn: UnixStream, server: &mut Server) {
    let mut conn = BufReader::new(conn);
    let mut line = String::new();
    let mut limited = (&mut conn).take(64);
    let read = limited.read_line(&mut line);
    if !matches!(tokio::time::timeout(CONTROL_TIMEOUT, read).await, Ok(Ok(_))) {
        return;
    }
    let reply = match line.trim() {
        "reload" => serde_json::to_string(&server.reload().await).unwrap_or_default(),
        other => format!("error: unknown request {other:?}"),
    };
    let reply = format!("{reply}\n");
    let write = conn.get_mut().write_all(reply.as_bytes());
    let _ = tokio::time::timeout(CONTROL_TIMEOUT, write).await;
}

/// What a batch of notifications means.
enum Seen {
    /// The state or the settings changed: reload.
    Changed,
    /// Stop: the state dir, or this resolver's pid file, is gone.
    Stop(String),
}

/// An inotify watch on the network state directory.
struct Watch {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<MaybeUninit<u8>>,
}

impl Watch {
    fn new(dir: &Path) -> std::io::Result<Self> {
        use inotify::{CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        inotify::add_watch(
            &fd,
            dir,
            WatchFlags::MOVED_TO
                | WatchFlags::CLOSE_WRITE
                | WatchFlags::DELETE
                | WatchFlags::MOVED_FROM
                | WatchFlags::DELETE_SELF
                | WatchFlags::MOVE_SELF,
        )?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which alone closes
        // it, so it stays open and the same descriptor while registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Watch {
            fd,
            buf: vec![MaybeUninit::uninit(); 4096],
        })
    }

    async fn next(&mut self) -> std::io::Result<Seen> {
        use inotify::ReadFlags;
        loop {
            let mut guard = self.fd.readable().await?;
            let mut changed = false;
            let mut reader = inotify::Reader::new(guard.get_inner(), &mut self.buf);
            loop {
                let event = match reader.next() {
                    Ok(event) => event,
                    Err(rustix::io::Errno::WOULDBLOCK) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                };
                let flags = event.events();
                if flags
                    .intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::IGNORED)
                {
                    return Ok(Seen::Stop("the state dir is gone".into()));
                }
                let name = event.file_name().map(|n| n.to_bytes()).unwrap_or_default();
                match name {
                    b"state.json" | b"dns.json" => changed = true,
                    b"dns.pid" if flags.intersects(ReadFlags::DELETE | ReadFlags::MOVED_FROM) => {
                        return Ok(Seen::Stop("its pid file is gone".into()));
                    }
                    _ => {}
                }
            }
            guard.clear_ready();
            if changed {
                return Ok(Seen::Changed);
            }
        }
    }
}

async fn next_event(watch: &mut Option<Watch>) -> std::io::Result<Seen> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}
