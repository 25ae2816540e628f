//! Talking to a state dir's resolver from other moor processes: start it
//! when needed, ask it to reload, find or stop it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{Paths, Served, Settings};

/// How long starting (or reaching) the resolver may take.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes sure the resolver of `state_dir` runs with `settings` and serves
/// what the state records now: asks a running one to reload, or starts one
/// with `exe` (the moor binary). Returns what it serves.
pub(crate) fn ensure(exe: &Path, state_dir: &Path, settings: &Settings) -> Result<Served, String> {
    let paths = Paths::new(state_dir);
    write_settings(&paths, settings)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(served) = request(&paths) {
            return Ok(served);
        }
        match spawn(exe, state_dir, &paths)? {
            Spawned::Ready(served) => return Ok(served),
            // Another resolver holds the lock but did not answer: it is
            // starting, or stopping (it found no network a moment ago).
            Spawned::Busy => {}
        }
        if Instant::now() > deadline {
            return Err(format!(
                "it did not start within {START_TIMEOUT:?}; see {}",
                paths.log().display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when the resolver of `state_dir` runs and its settings file holds
/// `settings`: then [`ensure`] would only ask it to reload, which it does by
/// itself when the state or its settings change, and every 30 s.
pub(crate) fn running_with(state_dir: &Path, settings: &Settings) -> bool {
    let paths = Paths::new(state_dir);
    let bytes = serde_json::to_vec_pretty(settings).expect("settings serialise");
    std::fs::read(paths.settings()).is_ok_and(|b| b == bytes) && pid(state_dir).is_some()
}

/// Asks the running resolver of `state_dir`, if any, to reload (a network
/// is gone: it unbinds that gateway, and stops when none is left).
pub(crate) fn reload(state_dir: &Path) -> Option<Served> {
    request(&Paths::new(state_dir)).ok()
}

/// The pid of the resolver of `state_dir`, if one runs.
pub fn pid(state_dir: &Path) -> Option<i32> {
    let path = Paths::new(state_dir).pid();
    let mut file = File::open(path).ok()?;
    // The lock is free when no resolver holds it; taken shared, it keeps
    // none from starting for an instant only.
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared).is_ok() {
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    // A resolver that has just taken the lock may not have written its pid
    // yet: the file still names its predecessor, whose pid may be reused.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline
        .split(|b| *b == 0)
        .rfind(|a| !a.is_empty())
        .is_some_and(|last| last == b"dns")
        .then_some(pid)
}

/// Stops the resolver of `state_dir` (SIGTERM, then SIGKILL after 5 s) and
/// waits until it is gone; true when one was running.
pub fn stop(state_dir: &Path) -> bool {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut found = false;
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut sent = false;
        while let Some(p) = pid(state_dir) {
            found = true;
            if !sent {
                let _ = kill(Pid::from_raw(p), signal);
                sent = true;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if pid(state_dir).is_none() {
            break;
        }
    }
    found
}

fn write_settings(paths: &Paths, settings: &Settings) -> Result<(), String> {
    let path = paths.settings();
    let bytes = serde_json::to_vec_pretty(settings).expect("settings serialise");
    if std::fs::read(&path).is_ok_and(|b| b == bytes) {
        return Ok(());
    }
    let tmp = paths.dir.join(format!(".dns.json.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::options()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("write {}: {e}", path.display())
    })
}

/// One `reload` over the control socket.
fn request(paths: &Paths) -> std::io::Result<Served> {
    let mut conn = UnixStream::connect(paths.sock())?;
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    conn.write_all(b"reload\n")?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    serde_json::from_str(reply.trim()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{e}: {:?}", reply.trim()),
        )
    })
}

enum Spawned {
    Ready(Served),
    Busy,
}

/// Runs `exe --state-dir DIR dns` and reads its report.
fn spawn(exe: &Path, state_dir: &Path, paths: &Paths) -> Result<Spawned, String> {
    let log = File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(paths.log())
        .map_err(|e| format!("open {}: {e}", paths.log().display()))?;
    let mut child = Command::new(exe)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("dns")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("run {}: {e}", exe.display()))?;
    let mut out = child.stdout.take().expect("piped");
    let read = read_report(&mut out, Instant::now() + START_TIMEOUT);
    drop(out);
    // The first process exits as soon as it has forked: reap it.
    let _ = child.wait();
    let report = read?;
    let report = report.trim();
    if report == "busy" {
        return Ok(Spawned::Busy);
    }
    if let Some(json) = report.strip_prefix("ok ") {
        return serde_json::from_str(json)
            .map(Spawned::Ready)
            .map_err(|e| format!("unreadable report {json:?}: {e}"));
    }
    if let Some(msg) = report.strip_prefix("error: ") {
        return Err(msg.to_string());
    }
    let log = std::fs::read_to_string(paths.log()).unwrap_or_default();
    let last = log.lines().last().unwrap_or("no diagnostics");
    Err(format!("it exited without reporting ({last})"))
}

/// Reads the report to its end (the resolver closes its stdout once it
/// has reported), giving up at `deadline`.
fn read_report(out: &mut std::process::ChildStdout, deadline: Instant) -> Result<String, String> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::from(u16::try_from(left.as_millis()).unwrap_or(u16::MAX));
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => return Err(format!("it did not report within {START_TIMEOUT:?}")),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("wait for its report: {e}")),
        }
        let n = out
            .read(&mut buf)
            .map_err(|e| format!("read its report: {e}"))?;
        if n == 0 || bytes.len() > 64 * 1024 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
