//! The shim: one small supervisor process per container.
//!
//! `moor shim DIR` runs [`run`]. It forks once so that the caller can reap
//! it at once, then, single-threaded, in its own session and as a child
//! subreaper: creates the container with its executor (libcontainer or
//! `runc create` + `runc start`, stdio = pipes the shim holds), writes `state.json`,
//! reports `ok` (or `error: …`) on its stdout and closes it, then copies the
//! container's output into the log and reaps every child that is reparented
//! to it; once the container has run for a second it gives back the memory
//! that starting it took. When the container's PID 1 exits it drains the
//! pipes, reads the OOM counter, removes the cgroups and the runtime state,
//! unmounts the root filesystem and writes `exit.json` — last, so that an
//! exited container holds no mounts and no cgroups.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2, setsid};

use super::cgroups::Hierarchies;
use super::executor;
use super::logs::{LogWriter, Stream};
use super::paths::ContainerPaths;
use super::rootfs;
use super::state::{
    ContainerRecord, ExitRecord, ShimState, now_ms, process_start_ticks, read_json,
    write_json_replace,
};

/// How long output is still read after the container's PID 1 exited.
const DRAIN: Duration = Duration::from_secs(2);

/// How long the container runs before the shim gives back its start-up
/// memory ([`release_startup_memory`]); a container that exits sooner never
/// waits for it.
const SETTLE: Duration = Duration::from_secs(1);

/// The shim's entry point; returns the process exit code. `dir` is the
/// container's directory.
pub fn run(dir: &Path) -> i32 {
    // SAFETY: the shim is single-threaded here (called first thing from
    // main), so the child may do anything after fork.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report(&format!("error: fork the shim: {e}"));
            return 1;
        }
    }
    let _ = setsid();
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        report(&format!("error: become a child subreaper: {e}"));
        return 1;
    }
    let paths = ContainerPaths {
        dir: dir.to_path_buf(),
    };
    match supervise(&paths) {
        Ok(()) => 0,
        Err(msg) => {
            // Before the report: tell the caller; after: the shim log has it.
            report(&format!("error: {msg}"));
            eprintln!("shim: {msg}");
            1
        }
    }
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

fn supervise(paths: &ContainerPaths) -> Result<(), String> {
    let record: ContainerRecord = read_json(&paths.record())
        .map_err(|e| e.to_string())?
        .ok_or("the container's record is missing")?;
    let hierarchies = Hierarchies::detect();
    let mut log = LogWriter::open(&paths.log(), &paths.log_rotated(), record.log_max_bytes)
        .map_err(|e| format!("open the log {}: {e}", paths.log().display()))?;

    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| format!("block SIGCHLD: {e}"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;

    let (out_r, out_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;

    let fail = |msg: String| {
        executor::delete(&record);
        let _ = hierarchies.remove(&record.cgroup_path(), Duration::from_secs(2));
        let _ = rootfs::unmount_all(&paths.rootfs());
        msg
    };
    // The pipes' write ends are handed over (and closed here) so that the
    // shim sees EOF once the container's processes are gone.
    let pid = executor::create_and_start(&record, paths, out_w, err_w).map_err(fail)?;
    let pid_start_ticks = process_start_ticks(pid).unwrap_or(0);
    let started_ms = now_ms();
    let me = std::process::id() as i32;
    let state = ShimState {
        shim_pid: me,
        shim_start_ticks: process_start_ticks(me).unwrap_or(0),
        pid,
        pid_start_ticks,
        started_ms,
    };
    write_json_replace(&paths.shim_state(), &state).map_err(|e| fail(e.to_string()))?;
    report("ok");

    let status = pump(pid, &sigfd, out_r, err_r, &mut log);
    let _ = log.flush_partial(Stream::Stdout);
    let _ = log.flush_partial(Stream::Stderr);

    let oom_killed = hierarchies.oom_kills(&record.cgroup_path()) > 0;
    if let Err(left) = hierarchies.remove(&record.cgroup_path(), Duration::from_secs(5)) {
        eprintln!("shim: cgroups left behind: {left:?}");
    }
    executor::forget_exited(&record);
    if let Err(e) = rootfs::unmount_all(&paths.rootfs()) {
        eprintln!("shim: {e}");
    }
    // Reap whatever else was reparented to us meanwhile.
    while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
        waitpid(None, Some(WaitPidFlag::WNOHANG))
    {}
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (255, None),
    };
    let exit = ExitRecord {
        exit_code,
        signal,
        oom_killed,
        started_ms: Some(started_ms),
        finished_ms: now_ms(),
        reason: None,
    };
    write_json_replace(&paths.exit(), &exit).map_err(|e| e.to_string())
}

/// Gives back what starting the container took and supervising it does not
/// need: free heap (`malloc_trim`), and the mappings of the program's code
/// and read-only data that start-up touched (the command line, the executor,
/// serde: about 5 MB of the `moor` binary and libc). Only mappings of a file
/// that are not writable and hold no private (copied-on-write) page are
/// dropped, with `MADV_DONTNEED`: their pages stay in the page cache and are
/// mapped again, unchanged, when the supervisor touches them (with the
/// kernel's fault-around, 64 kB at a time): what comes back is what the log
/// pump uses, and at exit what the clean-up needs.
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut vma: Option<(usize, usize, bool)> = None;
    for line in smaps.lines() {
        if let Some(rest) = line.strip_prefix("Anonymous:") {
            let anon_kb: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(1);
            if let Some((start, end, true)) = vma.take()
                && anon_kb == 0
            {
                // SAFETY: a whole mapping of a file, read-only (so nothing in
                // this single-threaded process writes it while we look) and
                // with no private page: its content is the file's, which
                // MADV_DONTNEED brings back on the next access.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                };
            }
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        else {
            continue;
        };
        // A mapping's header: range, perms, offset, device, inode, path.
        let path = f.nth(3).unwrap_or("");
        let droppable = perms.len() == 4
            && !perms.contains('w')
            && perms.ends_with('p')
            && path.starts_with('/');
        vma = Some((start, end, droppable));
    }
}

/// Copies the container's output into the log and reaps children until
/// `pid` has exited and the pipes are drained; returns `pid`'s wait status.
fn pump(pid: i32, sigfd: &SignalFd, out: OwnedFd, err: OwnedFd, log: &mut LogWriter) -> WaitStatus {
    let mut pipes: [Option<File>; 2] = [Some(File::from(out)), Some(File::from(err))];
    let mut status: Option<WaitStatus> = None;
    let mut deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 32 * 1024];
    let mut settle = Some(Instant::now() + SETTLE);
    loop {
        if status.is_some()
            && (pipes.iter().all(Option::is_none) || deadline.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }
        if settle.is_some_and(|t| status.is_none() && Instant::now() >= t) {
            settle = None;
            release_startup_memory();
        }
        let timeout = match deadline.or(settle) {
            Some(d) => PollTimeout::try_from(d.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::ZERO),
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        let mut which = Vec::new();
        for (i, p) in pipes.iter().enumerate() {
            if let Some(f) = p {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                eprintln!("shim: poll: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (slot, i) in which.iter().enumerate() {
            if !ready[slot + 1] {
                continue;
            }
            let stream = if *i == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            let n = pipes[*i].as_mut().map_or(Ok(0), |f| f.read(&mut buf));
            match n {
                Ok(0) | Err(_) => pipes[*i] = None,
                Ok(n) => {
                    if let Err(e) = log.write(stream, &buf[..n]) {
                        eprintln!("shim: write log: {e}");
                    }
                }
            }
        }
        if ready[0] {
            while let Ok(Some(_)) = sigfd.read_signal() {}
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(ws) => {
                        if ws.pid() == Some(Pid::from_raw(pid)) {
                            status = Some(ws);
                            deadline = Some(Instant::now() + DRAIN);
                        }
                    }
                }
            }
        }
    }
    status.unwrap_or(WaitStatus::StillAlive)
}
