//! What is on disk about a container, and how it gets there: the record
//! written at creation, and the two files of the shim protocol.
//!
//! The shim writes `state.json` ([`ShimState`]) once the container runs and
//! `exit.json` ([`ExitRecord`]) once it has exited and its resources are
//! released. Every file is written atomically (temp file, rename), so a
//! reader sees either nothing or the whole file, even after a crash of any
//! process at any instruction. The record is also made durable (fsync of the
//! file and of the directory: [`write_json_atomic`]); the files that describe
//! processes — the bundle, `state.json`, `exit.json` — are not
//! ([`write_json_replace`]): a power loss ends those processes anyway, and a
//! file it left empty reads as absent ([`read_json`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use moor_spec::ContainerSpec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{ContainerError, Result};

/// What a container was created from; written once, by `create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The container's name (unique on the host).
    pub name: String,
    /// Unique per creation: the OCI runtime's container id and the cgroup's name.
    pub id: String,
    /// The normalised spec.
    pub spec: ContainerSpec,
    /// The image's configuration (entrypoint, cmd, env, working dir, user), if any.
    pub image_config: Option<oci_spec::image::Config>,
    /// The read-only layers of the root filesystem, bottom first.
    pub lowers: Vec<PathBuf>,
    /// What creates the container: the built-in executor or an OCI runtime.
    pub executor: super::Executor,
    /// The executor's state root.
    pub runtime_root: PathBuf,
    /// The cgroup parent the container's cgroup is created under.
    pub cgroup_parent: String,
    /// Size at which the log file is rotated.
    pub log_max_bytes: u64,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
}

impl ContainerRecord {
    /// The instance name it was created for (its `moor.instance` label): the
    /// name people and DNS use. Its own name when it has no such label (made
    /// before the label existed, or not by the reconciler).
    pub fn instance(&self) -> &str {
        self.spec
            .labels
            .get(super::labels::INSTANCE)
            .map_or(self.name.as_str(), String::as_str)
    }

    /// The cgroup path, relative to each hierarchy's root: `/PARENT/ID`.
    pub fn cgroup_path(&self) -> String {
        format!("/{}/{}", self.cgroup_parent.trim_matches('/'), self.id)
    }
}

/// Written by the shim once the container's process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    /// The shim's PID.
    pub shim_pid: i32,
    /// The shim's start time in clock ticks since boot (`/proc/PID/stat`
    /// field 22): tells the shim from a later process that reused its PID.
    pub shim_start_ticks: u64,
    /// The container's PID 1, as the host sees it.
    pub pid: i32,
    /// The container's start time in clock ticks since boot.
    pub pid_start_ticks: u64,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
}

/// Written by the shim (or by recovery, when the shim was lost) once the
/// container has exited and its mounts and cgroups are released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code; 128 + N for death by signal N.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// When it started (ms since the epoch), if it ever ran.
    pub started_ms: Option<u64>,
    /// When the exit was seen (ms since the epoch).
    pub finished_ms: u64,
    /// Why it ended, when not by itself: `supervisor lost`, `start failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes `value` as JSON to `path` atomically: a temp file beside it,
/// fsync, rename, fsync of the directory. Mode 0600: state is not
/// world-readable.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_file(path, &to_json(path, value)?, true)
}

/// Writes `value` as JSON to `path` atomically for every reader and against
/// a crash of any process (temp file, rename), but without fsync: for the
/// files that describe processes (the bundle, `state.json`, `exit.json`),
/// rewritten on every start and exit, which a power loss makes moot. Two
/// fsyncs per file cost milliseconds on every start and exit, tens of them
/// while other writers keep the disk busy.
pub fn write_json_replace<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_file(path, &to_json(path, value)?, false)
}

fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|source| ContainerError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` atomically and durably (see [`write_json_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, true)
}

/// Writes `bytes` to `path` atomically, but not durably (see
/// [`write_json_replace`]): for status files rewritten often.
pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, false)
}

fn write_file(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(ContainerError::io("create", &tmp))?;
    file.write_all(bytes)
        .map_err(ContainerError::io("write", &tmp))?;
    if durable {
        file.sync_all().map_err(ContainerError::io("fsync", &tmp))?;
    }
    drop(file);
    fs::rename(&tmp, path).map_err(ContainerError::io("rename into place", path))?;
    if durable && let Ok(d) = File::open(dir) {
        d.sync_all().map_err(ContainerError::io("fsync", dir))?;
    }
    Ok(())
}

/// Reads a JSON state file; `Ok(None)` when it does not exist or is empty
/// (what a power loss can leave of a file written without fsync).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) if bytes.is_empty() => Ok(None),
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ContainerError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ContainerError::Io {
            action: "read",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// A process's start time in clock ticks since boot, or `None` when there
/// is no such process (or it is a zombie, which is as good as gone).
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    // One read: the line is a few hundred bytes, made anew by the kernel
    // for every read call.
    let mut buf = [0u8; 1024];
    let n = {
        use std::io::Read;
        let mut f = File::open(format!("/proc/{pid}/stat")).ok()?;
        f.read(&mut buf).ok()?
    };
    let stat = std::str::from_utf8(&buf[..n]).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    // `rest` starts at field 3 (state); field 22 is 19 further.
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// True when process `pid` exists and is the one that started at `ticks`.
pub fn process_alive(pid: i32, ticks: u64) -> bool {
    pid > 0 && process_start_ticks(pid) == Some(ticks)
}

/// Blocks until process `pid` (the one that started at `ticks`) has exited
/// or `timeout` has passed, on a pidfd: no polling, woken the moment it
/// exits. Returns `false` when the kernel offers no pidfd (before 5.3), so
/// that the caller polls instead; `true` otherwise (which does not say that
/// it exited: look).
pub fn wait_process_exit(pid: i32, ticks: u64, timeout: Duration) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: pidfd_open(2) takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        // ESRCH: gone already. Anything else: no pidfds here.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // The pidfd names whatever process has `pid` now: make sure it is ours.
    if !process_alive(pid, ticks) {
        return true;
    }
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let _ = poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    );
    true
}

/// The exits of a set of processes (containers' shims), awaited from async
/// code on their pidfds: what the agent needs to react to a container's
/// exit at once without looking at every container twice a second. A
/// shim exits right after it has recorded its container's exit, and a shim
/// that is killed exits too, so this wakes for both.
#[derive(Debug, Default)]
pub struct ExitWatch {
    fds: Vec<tokio::io::unix::AsyncFd<OwnedFd>>,
}

impl ExitWatch {
    /// Watches each process `(pid, start ticks)` that still runs (must be
    /// called within a tokio runtime). Returns `None` when the kernel has no
    /// pidfds (before 5.3).
    pub fn new(procs: impl IntoIterator<Item = (i32, u64)>) -> Option<Self> {
        let mut fds = Vec::new();
        for (pid, ticks) in procs {
            if pid <= 0 {
                continue;
            }
            // SAFETY: pidfd_open(2) takes two integers and returns a new fd or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            if fd < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
                    continue;
                }
                return None;
            }
            // SAFETY: a new fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
            if !process_alive(pid, ticks) {
                continue;
            }
            // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the
            // same until the AsyncFd is dropped.
            let fd = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            if let Ok(fd) = fd {
                fds.push(fd);
            }
        }
        Some(Self { fds })
    }

    /// How many processes are watched.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// True when no process is watched.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Completes when one of the watched processes has exited (never, when
    /// none is watched).
    pub async fn any_exit(&self) {
        std::future::poll_fn(|cx| {
            for fd in &self.fds {
                if fd.poll_read_ready(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_round_trips_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            started_ms: Some(1),
            finished_ms: 2,
            reason: None,
        };
        write_json_atomic(&path, &rec).unwrap();
        assert_eq!(read_json::<ExitRecord>(&path).unwrap(), Some(rec));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left behind"
        );
        assert_eq!(
            read_json::<ExitRecord>(&dir.path().join("none")).unwrap(),
            None
        );
    }

    #[test]
    fn replace_write_round_trips_and_an_empty_file_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let state = ShimState {
            shim_pid: 1,
            shim_start_ticks: 2,
            pid: 3,
            pid_start_ticks: 4,
            started_ms: 5,
        };
        write_json_replace(&path, &state).unwrap();
        assert_eq!(read_json::<ShimState>(&path).unwrap(), Some(state));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // What a power loss can leave of a file written without fsync.
        fs::write(&path, b"").unwrap();
        assert_eq!(read_json::<ShimState>(&path).unwrap(), None);
        fs::write(&path, b"{").unwrap();
        assert!(
            read_json::<ShimState>(&path).is_err(),
            "garbage is still an error"
        );
    }

    #[test]
    fn waits_for_a_process_to_exit_without_polling() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let ticks = process_start_ticks(pid).unwrap();
        let t0 = std::time::Instant::now();
        assert!(wait_process_exit(pid, ticks, Duration::from_secs(20)));
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        assert!(!process_alive(pid, ticks));
        child.wait().unwrap();
        // Gone, or a PID that another process has now: returns at once.
        assert!(wait_process_exit(pid, ticks, Duration::from_secs(20)));
        // A timeout ends the wait on a process that keeps running.
        let me = std::process::id() as i32;
        let t0 = std::time::Instant::now();
        assert!(wait_process_exit(
            me,
            process_start_ticks(me).unwrap(),
            Duration::from_millis(50)
        ));
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn exit_watch_wakes_when_a_process_exits() {
        let mut long = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut short = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let ids = [&long, &short].map(|c| {
            let pid = c.id() as i32;
            (pid, process_start_ticks(pid).unwrap())
        });
        let watch = ExitWatch::new(ids).expect("pidfds");
        assert_eq!(watch.len(), 2);
        let t0 = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(20), watch.any_exit())
            .await
            .expect("woken by the exit");
        assert!(t0.elapsed() >= Duration::from_millis(150));
        assert!(!process_alive(ids[1].0, ids[1].1));
        short.wait().unwrap();
        // A process that is gone is not watched; no process, no wake-up.
        let watch = ExitWatch::new([ids[1]]).expect("pidfds");
        assert!(watch.is_empty());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), watch.any_exit())
                .await
                .is_err()
        );
        long.kill().unwrap();
        long.wait().unwrap();
    }

    #[test]
    fn start_ticks_of_self_and_of_nobody() {
        let me = std::process::id() as i32;
        let ticks = process_start_ticks(me).expect("own start time");
        assert!(process_alive(me, ticks));
        assert!(!process_alive(me, ticks + 1));
        assert!(!process_alive(0, ticks));
    }
}
