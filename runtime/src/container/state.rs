//! What is on disk about a container, and how it gets there: the record
//! written at creation, and the two files of the shim protocol.
//!
//! The shim writes `state.json` ([`ShimState`]) once the container runs and
//! `exit.json` ([`ExitRecord`]) once it has exited and its resources are
//! released. Both are written atomically (temp file, fsync, rename, fsync of
//! the directory), so a reader sees either nothing or the whole file, even
//! after a crash at any instruction.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

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
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| ContainerError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically (see [`write_json_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
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
    file.sync_all().map_err(ContainerError::io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(ContainerError::io("rename into place", path))?;
    if let Ok(d) = File::open(dir) {
        d.sync_all().map_err(ContainerError::io("fsync", dir))?;
    }
    Ok(())
}

/// Reads a JSON state file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
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
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state); field 22 is index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// True when process `pid` exists and is the one that started at `ticks`.
pub fn process_alive(pid: i32, ticks: u64) -> bool {
    pid > 0 && process_start_ticks(pid) == Some(ticks)
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
    fn start_ticks_of_self_and_of_nobody() {
        let me = std::process::id() as i32;
        let ticks = process_start_ticks(me).expect("own start time");
        assert!(process_alive(me, ticks));
        assert!(!process_alive(me, ticks + 1));
        assert!(!process_alive(0, ticks));
    }
}
