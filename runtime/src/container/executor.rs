//! What creates a container from its bundle: youki's `libcontainer`, built
//! in, or an external OCI runtime (`runc`).
//!
//! Both fork and clone, which is only sound in a single-threaded process:
//! containers are created by the shim, execs by the single-threaded CLI.
//! Both are driven the same way: create, then start (with what the caller
//! needs done in between, networking, done by then), with the shim's pipes as
//! the container's stdout and stderr (PID 1 becomes the shim's child, the
//! shim being a child subreaper), exec with the caller's stdio (or a
//! pseudo-terminal the runtime creates in the container and hands over a
//! console socket, see `tty.rs`), and a forced delete of the
//! runtime's state afterwards.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use super::error::{ContainerError, Result};
use super::paths::ContainerPaths;
use super::runc::{self, Runc};
use super::state::ContainerRecord;

/// Which executor runs a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Executor {
    /// youki's `libcontainer`, in the shim itself.
    Builtin,
    /// An external OCI runtime with runc's command line.
    Runc {
        /// The binary.
        path: PathBuf,
    },
}

impl Executor {
    /// Parses `builtin`, `runc` (found on PATH) or the path of a
    /// runc-compatible binary.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "builtin" | "libcontainer" | "youki" => Ok(Executor::Builtin),
            "runc" => find_program("runc")
                .map(|path| Executor::Runc { path })
                .ok_or_else(|| ContainerError::Invalid("executor runc: no runc on PATH".into())),
            p if p.contains('/') => Ok(Executor::Runc { path: p.into() }),
            other => Err(ContainerError::Invalid(format!(
                "unknown executor \"{other}\": use builtin, runc or the path of an OCI runtime"
            ))),
        }
    }

    /// `builtin` or the runtime's path.
    pub fn name(&self) -> String {
        match self {
            Executor::Builtin => "builtin".into(),
            Executor::Runc { path } => path.display().to_string(),
        }
    }

    /// The subdirectory of the runtime state root this executor uses.
    pub fn state_subdir(&self) -> &'static str {
        match self {
            Executor::Builtin => "builtin",
            Executor::Runc { .. } => "runc",
        }
    }
}

/// A program's full path, from PATH or the sbin directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn runc_of(record: &ContainerRecord, path: &Path) -> Runc {
    Runc {
        program: path.to_path_buf(),
        root: record.runtime_root.clone(),
        id: record.id.clone(),
    }
}

/// A container its executor has created and not yet started: its PID 1
/// exists, in the container's namespaces and cgroups, and waits for
/// [`Created::start`] to run the container's process. What sits between
/// the two (networking: see `Engine::start_with`) finds the namespaces in
/// place and the process not yet running.
pub(crate) struct Created {
    pid: i32,
    /// libcontainer's handle; `runc start` needs none.
    builtin: Option<libcontainer::container::Container>,
}

impl Created {
    /// The container's PID 1 as the host sees it.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Runs the container's process.
    pub(crate) fn start(
        self,
        record: &ContainerRecord,
        paths: &ContainerPaths,
    ) -> Result<(), String> {
        match (&record.executor, self.builtin) {
            (Executor::Builtin, Some(mut container)) => container
                .start()
                .map_err(|e| format!("start the container: {e}")),
            (Executor::Runc { path }, _) => runc_of(record, path)
                .run(&["start", &record.id], Some(&paths.runtime_log()))
                .map_err(|e| e.to_string()),
            (Executor::Builtin, None) => Err("the container was not created".into()),
        }
    }
}

/// Creates the container of `record` from its bundle with
/// `stdout`/`stderr` as its output, without starting its process (`runc
/// create`, libcontainer's build). Must run in a single-threaded process
/// whose children the container's PID 1 becomes.
pub(crate) fn create(
    record: &ContainerRecord,
    paths: &ContainerPaths,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Created, String> {
    match &record.executor {
        Executor::Runc { path } => {
            let runc = runc_of(record, path);
            let bundle = paths.dir.to_string_lossy().into_owned();
            let pid_file = paths.pid_file().to_string_lossy().into_owned();
            let log = paths.runtime_log();
            let status = runc
                .command(&[])
                .arg("--log")
                .arg(&log)
                .arg("--log-format")
                .arg("json")
                .args([
                    "create",
                    "--bundle",
                    &bundle,
                    "--pid-file",
                    &pid_file,
                    &record.id,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::from(stdout))
                .stderr(Stdio::from(stderr))
                .status()
                .map_err(|e| format!("run {}: {e}", path.display()))?;
            if !status.success() {
                return Err(format!(
                    "runc create failed ({status}): {}",
                    runc::last_error(&log)
                ));
            }
            let pid: i32 = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| format!("runc wrote no pid to {pid_file}"))?;
            Ok(Created { pid, builtin: None })
        }
        Executor::Builtin => builtin_create(record, paths, stdout, stderr),
    }
}

fn builtin_create(
    record: &ContainerRecord,
    paths: &ContainerPaths,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Created, String> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    let stdin: OwnedFd = File::open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?
        .into();
    let container = ContainerBuilder::new(record.id.clone(), SyscallType::default())
        .with_root_path(&record.runtime_root)
        .and_then(|b| b.with_pid_file(Some(paths.pid_file())))
        .map(|b| b.with_stdin(stdin).with_stdout(stdout).with_stderr(stderr))
        .and_then(|b| b.validate_id())
        .and_then(|b| {
            b.as_init(&paths.dir)
                .with_systemd(false)
                .with_detach(true)
                .build()
        })
        .map_err(|e| format!("create the container: {e}"))?;
    let pid = container
        .pid()
        .map(|p| p.as_raw())
        .ok_or_else(|| "the container has no pid after create".to_string())?;
    Ok(Created {
        pid,
        builtin: Some(container),
    })
}

/// Deletes the executor's state of the container, killing what is left of
/// it; a container the executor does not know is fine.
pub(crate) fn delete(record: &ContainerRecord) {
    match &record.executor {
        Executor::Runc { path } => runc_of(record, path).delete_force(),
        Executor::Builtin => {
            let dir = record.runtime_root.join(&record.id);
            if dir.exists() {
                match libcontainer::container::Container::load(dir.clone()) {
                    Ok(mut c) => {
                        if let Err(e) = c.delete(true) {
                            eprintln!("delete container state {}: {e}", dir.display());
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                    }
                    Err(_) => {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
        }
    }
}

/// Forgets a container whose PID 1 has exited (and been reaped) and whose
/// cgroups are removed: all that `runc delete` or libcontainer's delete
/// still do then is remove the runtime's state directory (moor's bundles
/// have no hooks), so the shim does that itself, without starting another
/// runtime process (`runc delete` costs an exec of runc) or going through
/// libcontainer's status checks and cgroup manager. Falls back to
/// [`delete`] when the directory cannot be removed.
pub(crate) fn forget_exited(record: &ContainerRecord) {
    let dir = record.runtime_root.join(&record.id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("remove the runtime state {}: {e}", dir.display());
            delete(record);
        }
        _ => {}
    }
}

/// A private (0700) temporary directory for an exec's `process.json`,
/// removed on drop.
#[derive(Debug)]
struct ExecDir {
    dir: PathBuf,
}

impl ExecDir {
    fn new() -> Result<Self> {
        let template = std::env::temp_dir().join("moor-exec-XXXXXX");
        let dir = nix::unistd::mkdtemp(&template)
            .map_err(ContainerError::sys("create a directory for the exec"))?;
        Ok(Self { dir })
    }

    /// Writes `process` as `process.json` in the directory; returns its path.
    fn write_process(&self, process: &oci_spec::runtime::Process) -> Result<PathBuf> {
        let path = self.dir.join("process.json");
        let json = serde_json::to_vec(process).map_err(|source| ContainerError::Corrupt {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, json).map_err(ContainerError::io("write", &path))?;
        Ok(path)
    }
}

impl Drop for ExecDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `process` (the container's own process with another command, user,
/// working dir or environment: see `exec.rs`) in the running container with
/// the caller's stdio, or a new pseudo-terminal in the container when the
/// process asks for a terminal; returns the exit code (128 + N for death by
/// signal N). Both executors take the process whole, as a `process.json`.
pub(crate) fn exec(
    record: &ContainerRecord,
    paths: &ContainerPaths,
    process: &oci_spec::runtime::Process,
) -> Result<i32> {
    let tty = process.terminal().unwrap_or(false);
    match &record.executor {
        Executor::Runc { path } => {
            let dir = ExecDir::new()?;
            let file = dir.write_process(process)?;
            let runc = runc_of(record, path);
            // A terminal process gets a pseudo-terminal that runc relays.
            let status = runc
                .command(&["exec"])
                .arg("--process")
                .arg(&file)
                .arg(&record.id)
                .stdin(Stdio::inherit())
                .status()
                .map_err(|source| ContainerError::Spawn {
                    program: path.clone(),
                    source,
                })?;
            use std::os::unix::process::ExitStatusExt;
            Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }
        Executor::Builtin if tty => builtin_exec_tty(record, paths, process),
        Executor::Builtin => {
            use libcontainer::container::builder::ContainerBuilder;
            use libcontainer::syscall::syscall::SyscallType;
            use nix::sys::wait::{WaitStatus, waitpid};
            let filter = ExecSeccomp::of(paths)?;
            let dir = ExecDir::new()?;
            let file = dir.write_process(process)?;
            let pid = ContainerBuilder::new(record.id.clone(), SyscallType::default())
                .with_root_path(&record.runtime_root)
                .map(|b| {
                    b.with_executor(filter)
                        .as_tenant()
                        .with_process(Some(&file))
                        .with_detach(false)
                })
                .and_then(|b| b.build())
                .map_err(|e| ContainerError::Start {
                    name: record.name.clone(),
                    message: format!("exec: {e}"),
                })?;
            let pid = nix::unistd::Pid::from_raw(pid.as_raw());
            loop {
                match waitpid(pid, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(e) => {
                        return Err(ContainerError::Sys {
                            action: "wait for the exec'd process".into(),
                            source: e,
                        });
                    }
                }
            }
        }
    }
}

/// libcontainer's exec builds the process's Linux settings afresh, without
/// the bundle's seccomp filter (runc keeps it): this workload executor
/// loads the filter in the new process, after its capabilities are dropped
/// and `no_new_privs` is set, right before it executes the command.
#[derive(Clone)]
struct ExecSeccomp {
    filter: Option<libcontainer::oci_spec::runtime::LinuxSeccomp>,
}

impl ExecSeccomp {
    /// The filter of the container's bundle, if it has one.
    fn of(paths: &ContainerPaths) -> Result<Self> {
        let spec = libcontainer::oci_spec::runtime::Spec::load(paths.config()).map_err(|e| {
            ContainerError::Invalid(format!("read {}: {e}", paths.config().display()))
        })?;
        Ok(Self {
            filter: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
        })
    }
}

impl libcontainer::workload::Executor for ExecSeccomp {
    fn exec(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        if let Some(filter) = &self.filter {
            libcontainer::seccomp::initialize_seccomp(filter).map_err(|e| {
                libcontainer::workload::ExecutorError::Other(format!(
                    "load the seccomp filter: {e}"
                ))
            })?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// The process of the container's bundle: what an exec starts from.
pub(super) fn bundle_process(paths: &ContainerPaths) -> Result<oci_spec::runtime::Process> {
    let spec = oci_spec::runtime::Spec::load(paths.config())
        .map_err(|e| ContainerError::Invalid(format!("read {}: {e}", paths.config().display())))?;
    spec.process()
        .clone()
        .ok_or_else(|| ContainerError::Invalid("the bundle's config.json has no process".into()))
}

/// `exec --tty` with libcontainer: `process` with a terminal, which the
/// runtime creates in the container's devpts and sends over a console
/// socket; then the terminal is relayed to this process's stdio.
fn builtin_exec_tty(
    record: &ContainerRecord,
    paths: &ContainerPaths,
    process: &oci_spec::runtime::Process,
) -> Result<i32> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;

    let filter = ExecSeccomp::of(paths)?;
    let console = super::tty::ConsoleSocket::new()?;
    let process_file = console.dir().join("process.json");
    let json = serde_json::to_vec(process).map_err(|source| ContainerError::Corrupt {
        path: process_file.clone(),
        source,
    })?;
    std::fs::write(&process_file, json).map_err(|source| ContainerError::Io {
        action: "write",
        path: process_file.clone(),
        source,
    })?;
    let pid = ContainerBuilder::new(record.id.clone(), SyscallType::default())
        .with_root_path(&record.runtime_root)
        .map(|b| {
            b.with_console_socket(Some(console.path()))
                .with_executor(filter)
                .as_tenant()
                .with_process(Some(&process_file))
                // Detached: the terminal, not the caller's stdio, is the
                // process's; it is still this process's child.
                .with_detach(true)
        })
        .and_then(|b| b.build())
        .map_err(|e| ContainerError::Start {
            name: record.name.clone(),
            message: format!("exec: {e}"),
        })?;
    let pid = nix::unistd::Pid::from_raw(pid.as_raw());
    let master = match console.receive_master(std::time::Duration::from_secs(10)) {
        Ok(m) => m,
        Err(e) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(e);
        }
    };
    drop(console);
    super::tty::relay(master, pid)
}
