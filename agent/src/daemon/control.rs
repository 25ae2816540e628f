//! The agent's control socket, `<state dir>/control.sock`: `moor suspend`,
//! `moor resume`, `moor reconcile` and `moor rollback` talk to the running
//! agent through it.
//! Start at [`serve`] (the agent's side) or [`call`] (the client's).
//!
//! One request per connection: a JSON line (`{"op":"suspend","source":"web"}`)
//! answered by a JSON line (`{"ok":true,"message":"…"}`). The socket is
//! `0600` and owned by root; a peer whose uid (`SO_PEERCRED`) is neither
//! root nor the agent's is refused even if the mode was loosened. A client
//! cannot hold the agent up: a request must arrive within
//! [`REQUEST_TIMEOUT`] and fit in [`MAX_REQUEST`] bytes, and at most
//! [`MAX_CLIENTS`] connections are served at once (others wait in the
//! kernel's backlog, then time out on their side).
//!
//! Suspension is kept as a file per source under `<state dir>/suspended/`,
//! so it survives agent restarts.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moor_reconcile::{Status, Trigger};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use crate::source::SharedStatus;

/// The socket's file name in the state dir.
pub const SOCKET: &str = "control.sock";
/// The longest request accepted, newline included.
pub const MAX_REQUEST: usize = 4096;
/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CLIENTS: usize = 16;
/// How long `moor reconcile` waits for the pass (and the fetch) it asked for.
const PASS_TIMEOUT: Duration = Duration::from_secs(300);

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Stop applying source changes and correcting drift.
    Suspend {
        /// The source.
        source: String,
    },
    /// Apply again.
    Resume {
        /// The source.
        source: String,
    },
    /// Reconcile now (correcting drift a `drift = "report"` source left),
    /// fetching the source first when `fetch`.
    Reconcile {
        /// The source.
        source: String,
        /// Fetch the source first.
        #[serde(default)]
        fetch: bool,
    },
    /// Roll back to an earlier healthy revision.
    Rollback {
        /// The source.
        source: String,
        /// The revision (or a prefix of it); the last healthy one before
        /// the revision in force when absent.
        #[serde(default)]
        to: Option<String>,
    },
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether it was done.
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
}

impl Reply {
    fn ok(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
        }
    }

    fn err(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
        }
    }
}

/// Where suspensions are recorded.
fn suspended_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("suspended")
}

/// Whether `source` was suspended (by this agent or one before it).
pub fn is_suspended(state_dir: &Path, source: &str) -> bool {
    suspended_dir(state_dir).join(source).exists()
}

/// Records or clears `source`'s suspension. Source names are checked names
/// (no `/`, no `..`), so the file stays in its directory.
fn set_suspended(state_dir: &Path, source: &str, suspended: bool) -> anyhow::Result<()> {
    let dir = suspended_dir(state_dir);
    let file = dir.join(source);
    if suspended {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&file, b"")
            .and_then(|()| std::fs::File::open(&dir)?.sync_all())
            .with_context(|| format!("recording the suspension in {}", file.display()))
    } else {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", file.display()))
            }
            _ => Ok(()),
        }
    }
}

/// What the server needs of one source.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Its controller.
    pub triggers: mpsc::Sender<Trigger>,
    /// What its controller last said.
    pub controller: watch::Receiver<Status>,
    /// Wakes its fetch (git).
    pub wake: Arc<Notify>,
    /// Its task's status (fetch attempts).
    pub status: SharedStatus,
    /// Whether it is a polled (git) source.
    pub polled: bool,
}

/// Called when a source is suspended or resumed (for the metric).
pub type OnSuspend = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// Whether a peer with `uid` may use the socket of an agent running as `own`.
pub fn peer_allowed(uid: u32, own: u32) -> bool {
    uid == 0 || uid == own
}

/// Binds `<state_dir>/control.sock` (`0600`), replacing a stale one.
pub fn bind(state_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = state_dir.join(SOCKET);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing the stale socket {}", path.display()));
        }
        _ => {}
    }
    // The umask is the process's, shared with every thread: set the mode
    // after binding instead. A peer that connects in between is still
    // refused by its uid (`SO_PEERCRED`).
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("making {} 0600", path.display()))?;
    Ok(listener)
}

/// Serves the control socket until the task is aborted.
pub async fn serve(
    listener: UnixListener,
    state_dir: PathBuf,
    sources: BTreeMap<String, Handle>,
    on_suspend: OnSuspend,
) {
    let own = nix::unistd::geteuid().as_raw();
    let sources = Arc::new(sources);
    let permits = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (sources, state_dir, on_suspend) =
            (sources.clone(), state_dir.clone(), on_suspend.clone());
        tokio::spawn(async move {
            let _permit = permit;
            connection(stream, own, &state_dir, &sources, &on_suspend).await;
        });
    }
}

async fn connection(
    mut stream: UnixStream,
    own: u32,
    state_dir: &Path,
    sources: &BTreeMap<String, Handle>,
    on_suspend: &OnSuspend,
) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::warn!("control socket: no peer credentials: {e}");
            return;
        }
    };
    let reply = if !peer_allowed(uid, own) {
        tracing::warn!(uid, "control socket: refused a peer that is not root");
        Reply::err(format!("uid {uid} may not control the agent (root only)"))
    } else {
        match read_request(&mut stream).await {
            Ok(req) => handle(req, state_dir, sources, on_suspend).await,
            Err(why) => Reply::err(why),
        }
    };
    let mut line = serde_json::to_vec(&reply).expect("plain data");
    line.push(b'\n');
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(&line)).await;
}

/// Reads one request line: within the timeout, at most [`MAX_REQUEST`] bytes.
async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(stream).take(MAX_REQUEST as u64);
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => return Err("no request within 5 s".into()),
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() >= MAX_REQUEST {
            format!("request longer than {MAX_REQUEST} bytes")
        } else {
            "the request ended without a newline".into()
        });
    }
    serde_json::from_slice(&line).map_err(|e| format!("not a request: {e}"))
}

async fn handle(
    req: Request,
    state_dir: &Path,
    sources: &BTreeMap<String, Handle>,
    on_suspend: &OnSuspend,
) -> Reply {
    let name = match &req {
        Request::Suspend { source } | Request::Resume { source } => source,
        Request::Reconcile { source, .. } | Request::Rollback { source, .. } => source,
    };
    let Some(h) = sources.get(name) else {
        let known: Vec<&str> = sources.keys().map(String::as_str).collect();
        return Reply::err(format!(
            "no source named {name:?} (the agent runs: {})",
            known.join(", ")
        ));
    };
    match req {
        Request::Suspend { source } => suspend(&source, true, state_dir, h, on_suspend).await,
        Request::Resume { source } => suspend(&source, false, state_dir, h, on_suspend).await,
        Request::Reconcile { source, fetch } => reconcile(&source, fetch, h).await,
        Request::Rollback { source, to } => rollback(&source, to, h).await,
    }
}

/// Rolls back by hand and waits until the controller has taken it in.
async fn rollback(source: &str, to: Option<String>, h: &Handle) -> Reply {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if h.triggers
        .send(Trigger::Rollback { to, reply })
        .await
        .is_err()
    {
        return Reply::err("the source's controller has stopped");
    }
    match tokio::time::timeout(PASS_TIMEOUT, answer).await {
        Ok(Ok(Ok(message))) => {
            tracing::warn!(source = %source, "{message}");
            Reply::ok(format!("{source}: {message}"))
        }
        Ok(Ok(Err(why))) => Reply::err(format!("{source}: {why}")),
        Ok(Err(_)) => Reply::err("the source's controller has stopped"),
        Err(_) => Reply::err(format!(
            "{source}: the controller did not answer within {} s",
            PASS_TIMEOUT.as_secs()
        )),
    }
}

/// Suspends or resumes: recorded first (so a crash right after keeps what
/// the client was told), then the controller told.
async fn suspend(
    source: &str,
    on: bool,
    state_dir: &Path,
    h: &Handle,
    on_suspend: &OnSuspend,
) -> Reply {
    let dir = state_dir.to_path_buf();
    let name = source.to_string();
    let recorded = tokio::task::spawn_blocking(move || set_suspended(&dir, &name, on))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|r| r);
    if let Err(e) = recorded {
        return Reply::err(format!("{e:#}"));
    }
    let t = if on {
        Trigger::Suspend
    } else {
        Trigger::Resume
    };
    if h.triggers.send(t).await.is_err() {
        return Reply::err("the source's controller has stopped");
    }
    // Answered once the controller has taken it in, so that `/status`
    // says what the client was told. A controller in the middle of a long
    // pass takes it in after that pass; the record above already holds.
    let mut seen = h.controller.clone();
    let taken = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        seen.wait_for(|s| s.suspended == on),
    )
    .await;
    if !matches!(taken, Ok(Ok(_))) {
        tracing::warn!(source = %source, "the controller has not taken the request in yet; it will after its current pass");
    }
    on_suspend(source, on);
    tracing::info!(source = %source, "{}", if on { "suspended by request" } else { "resumed by request" });
    Reply::ok(if on {
        format!(
            "{source} suspended: neither source changes nor drift correction apply until `moor resume {source}`"
        )
    } else {
        format!("{source} resumed")
    })
}

/// Reconciles now (fetching first, when asked) and waits for the pass.
async fn reconcile(source: &str, fetch: bool, h: &Handle) -> Reply {
    if h.controller.borrow().suspended {
        return Reply::err(format!(
            "{source} is suspended: `moor resume {source}` first"
        ));
    }
    let work = async {
        if fetch && h.polled {
            let attempt = |h: &Handle| h.status.lock().expect("status poisoned").last_attempt;
            let before = attempt(h);
            h.wake.notify_one();
            while attempt(h) == before {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut rx = h.controller.clone();
        let before = rx.borrow_and_update().reconciles;
        if h.triggers.send(Trigger::Correct).await.is_err() {
            return Reply::err("the source's controller has stopped");
        }
        loop {
            if rx.changed().await.is_err() {
                return Reply::err("the source's controller has stopped");
            }
            let s = rx.borrow_and_update();
            if s.reconciles > before {
                let revision = s.revision.as_deref().unwrap_or("-");
                let fetch_error = h.status.lock().expect("status poisoned").error.clone();
                return match (&s.last_error, fetch_error.filter(|_| fetch)) {
                    (Some(e), _) => Reply::err(format!("{source}: the pass failed: {e}")),
                    (None, Some(e)) => Reply::err(format!(
                        "{source}: reconciled revision {revision}, but the fetch failed: {e}"
                    )),
                    (None, None) => Reply::ok(format!("{source}: reconciled revision {revision}")),
                };
            }
        }
    };
    match tokio::time::timeout(PASS_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Reply::err(format!(
            "{source}: no pass finished within {} s",
            PASS_TIMEOUT.as_secs()
        )),
    }
}

/// Sends `req` to the agent whose state dir is `state_dir` and returns its reply.
pub fn call(state_dir: &Path, req: &Request) -> anyhow::Result<Reply> {
    let path = state_dir.join(SOCKET);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "no moor agent answers on {} (is `moor agent` running with this --state-dir? are you root?)",
            path.display()
        )
    })?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_read_timeout(Some(PASS_TIMEOUT + Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req).expect("plain data");
    line.push(b'\n');
    stream.write_all(&line).context("sending the request")?;
    let mut answer = String::new();
    std::io::BufReader::new(std::io::Read::take(stream, 64 * 1024))
        .read_line(&mut answer)
        .context("reading the agent's reply")?;
    serde_json::from_str(&answer)
        .with_context(|| format!("the agent's reply is not understood: {answer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_agents_own_uid_may_connect() {
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1000, 0));
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(!peer_allowed(65534, 1000));
    }

    #[test]
    fn requests_are_strict_json() {
        let r: Request =
            serde_json::from_str(r#"{"op":"reconcile","source":"web","fetch":true}"#).expect("ok");
        assert_eq!(
            r,
            Request::Reconcile {
                source: "web".into(),
                fetch: true
            }
        );
        for bad in [
            r#"{"op":"rm","source":"web"}"#,
            r#"{"op":"suspend"}"#,
            r#"{"op":"suspend","source":"web","extra":1}"#,
            r#"{"op":"rollback","source":"web","to":5}"#,
            r#"{"op":"rollback","to":"abc"}"#,
            "suspend web",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    use std::io::Read;
    use std::os::unix::net::UnixStream as StdStream;

    use crate::source::SourceStatus;

    /// A server on a fresh state dir with one source, `web`, whose
    /// controller's triggers come out of the receiver.
    fn server() -> (
        tempfile::TempDir,
        mpsc::Receiver<Trigger>,
        tokio::task::JoinHandle<()>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = bind(dir.path()).expect("bind");
        let (tx, rx) = mpsc::channel(8);
        let (_status_tx, status_rx) = watch::channel(Status::default());
        let handle = Handle {
            triggers: tx,
            controller: status_rx,
            wake: Arc::new(Notify::new()),
            status: Arc::new(std::sync::Mutex::new(SourceStatus::new(
                "web",
                "directory",
                "/m".into(),
                None,
                false,
            ))),
            polled: false,
        };
        let task = tokio::spawn(serve(
            listener,
            dir.path().to_path_buf(),
            BTreeMap::from([("web".to_string(), handle)]),
            Arc::new(|_: &str, _: bool| {}),
        ));
        (dir, rx, task)
    }

    /// Sends raw bytes and reads the reply, off the runtime's threads.
    async fn raw(dir: &Path, bytes: Vec<u8>) -> Reply {
        let path = dir.join(SOCKET);
        tokio::task::spawn_blocking(move || {
            let mut s = StdStream::connect(&path).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            // A huge request may be cut off by the server: ignore a broken pipe.
            let _ = s.write_all(&bytes);
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            serde_json::from_str(&answer).expect("a JSON reply")
        })
        .await
        .expect("client thread")
    }

    #[tokio::test]
    async fn suspend_is_recorded_and_sent_to_the_controller() {
        let (dir, mut rx, task) = server();
        let mode = std::fs::metadata(dir.path().join(SOCKET)).expect("socket");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let path = dir.path().to_path_buf();
        let reply = tokio::task::spawn_blocking(move || {
            call(
                &path,
                &Request::Suspend {
                    source: "web".into(),
                },
            )
        })
        .await
        .expect("thread")
        .expect("call");
        assert!(reply.ok, "{reply:?}");
        assert!(matches!(rx.recv().await, Some(Trigger::Suspend)));
        assert!(is_suspended(dir.path(), "web"));
        let reply = raw(
            dir.path(),
            b"{\"op\":\"resume\",\"source\":\"nope\"}\n".to_vec(),
        )
        .await;
        assert!(
            !reply.ok && reply.message.contains("no source named \"nope\""),
            "{reply:?}"
        );
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_clients_do_not_block_the_agent() {
        let (dir, _rx, task) = server();
        // Clients that connect and send nothing, more than are served at once.
        let idle: Vec<StdStream> = (0..MAX_CLIENTS + 4)
            .map(|_| StdStream::connect(dir.path().join(SOCKET)).expect("connect"))
            .collect();
        // Garbage, a line without end and a huge line are refused; each
        // answer comes once the idle ones time out at the latest.
        let started = std::time::Instant::now();
        let garbage = raw(dir.path(), b"\x00\xffrm -rf /\n".to_vec()).await;
        assert!(
            !garbage.ok && garbage.message.contains("not a request"),
            "{garbage:?}"
        );
        let huge = raw(dir.path(), vec![b'a'; 1 << 20]).await;
        assert!(!huge.ok && huge.message.contains("longer than"), "{huge:?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the idle clients held the socket for {:?}",
            started.elapsed()
        );
        // The idle ones are told and dropped.
        for mut s in idle {
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            assert!(answer.contains("no request within"), "{answer:?}");
        }
        task.abort();
    }

    #[tokio::test]
    async fn a_peer_of_another_uid_is_refused_even_if_the_mode_allows_it() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let (dir, mut rx, task) = server();
        let p = |m| std::os::unix::fs::PermissionsExt::from_mode(m);
        std::fs::set_permissions(dir.path(), p(0o755)).expect("chmod dir");
        std::fs::set_permissions(dir.path().join(SOCKET), p(0o666)).expect("chmod socket");
        let path = dir.path().join(SOCKET);
        let answer = tokio::task::spawn_blocking(move || {
            // A thread of its own, whose credentials alone change (the raw
            // syscall, not glibc's wrapper that changes every thread's).
            std::thread::spawn(move || {
                // SAFETY: setresuid on this thread only; no memory is involved.
                let r =
                    unsafe { nix::libc::syscall(nix::libc::SYS_setresuid, 65534, 65534, 65534) };
                assert_eq!(r, 0, "setresuid");
                let mut s = StdStream::connect(&path).expect("connect as nobody");
                s.set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("timeout");
                let _ = s.write_all(b"{\"op\":\"suspend\",\"source\":\"web\"}\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer
            })
            .join()
            .expect("nobody thread")
        })
        .await
        .expect("thread");
        assert!(answer.contains("uid 65534 may not control"), "{answer:?}");
        assert!(rx.try_recv().is_err(), "nothing reached the controller");
        assert!(!is_suspended(dir.path(), "web"));
        task.abort();
    }

    #[test]
    fn suspension_is_a_file_that_survives() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_suspended(dir.path(), "web"));
        set_suspended(dir.path(), "web", true).expect("suspend");
        assert!(is_suspended(dir.path(), "web"));
        set_suspended(dir.path(), "web", true).expect("suspend twice");
        set_suspended(dir.path(), "web", false).expect("resume");
        assert!(!is_suspended(dir.path(), "web"));
        set_suspended(dir.path(), "web", false).expect("resume twice");
    }
}
