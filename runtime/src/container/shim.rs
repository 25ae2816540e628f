//! The shim: one small supervisor process per container.
//!
//! `moor-shim DIR` (`src/bin/moor-shim.rs`) runs [`run`]. It forks once so
//! that the caller can reap it at once, then, single-threaded, in its own
//! session and as a child subreaper: creates the container with its
//! executor (libcontainer or `runc create`, stdio = pipes the shim holds),
//! reports `created PID` on its
//! stdout and waits for the caller's `start` on its stdin (end of file: it
//! removes the container and exits, nothing started), starts it, writes
//! `state.json`, reports `ok` (or `error: …`) and closes stdout, then copies the
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

/// Writes a line of the report to stdout.
fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Writes the report's last line to stdout and closes it (replaced by /dev/null).
fn report(line: &str) {
    say(line);
    null_onto(1);
}

/// Points file descriptor `fd` at /dev/null.
fn null_onto(fd: i32) {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        // SAFETY: dup2 onto a standard fd replaces the caller's pipe; both fds are valid.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

/// Waits for the caller's go: `start` and a newline on stdin. Anything else,
/// or end of file (the caller failed, or died), is no. Stdin is let go
/// either way.
fn wait_for_go() -> bool {
    let mut line = [0u8; 8];
    let mut len = 0;
    let go = loop {
        // SAFETY: reads into the unfilled tail of a stack buffer.
        let n = unsafe {
            libc::read(
                0,
                line[len..].as_mut_ptr().cast::<libc::c_void>(),
                line.len() - len,
            )
        };
        match n {
            n if n > 0 => {
                len += n as usize;
                if let Some(end) = line[..len].iter().position(|b| *b == b'\n') {
                    break &line[..end] == b"start";
                }
                if len == line.len() {
                    break false;
                }
            }
            n if n < 0 && nix::Error::last() == nix::Error::EINTR => {}
            _ => break false,
        }
    };
    null_onto(0);
    go
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
    let created = executor::create(&record, paths, out_w, err_w).map_err(fail)?;
    let pid = created.pid();
    // The caller prepares what must be in place before the process runs
    // (its networks, in the container's network namespace), then says go.
    say(&format!("created {pid}"));
    if !wait_for_go() {
        return Err(fail(
            "the caller gave up before the start; the container was removed".into(),
        ));
    }
    created.start(&record, paths).map_err(fail)?;
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
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    // First find what to drop, then drop it all in one tight loop: code
    // that runs after a mapping is dropped maps its pages back, so as little
    // as possible runs in between.
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let mut ranges = Vec::new();
    let mut pagemap = File::open("/proc/self/pagemap").ok();
    for m in mappings(&smaps) {
        match m.kind {
            MappingKind::FileClean => ranges.push((m.start, m.end)),
            // Relocated read-only data (RELRO): the pages the loader wrote
            // are private copies and must stay; the others are the file's.
            MappingKind::FileWithCopies => {
                if let Some(pm) = pagemap.as_mut() {
                    ranges.extend(file_page_runs(pm, m.start, m.end));
                }
            }
            // The stack below the deepest frame start-up needed and far
            // below this one is dead: dropped, it reads as zeroes if ever
            // reached again.
            MappingKind::Stack => {
                let below = sp.saturating_sub(STACK_KEEP) & !(PAGE - 1);
                if below > m.start {
                    ranges.push((m.start, below));
                }
            }
            MappingKind::Other => {}
        }
    }
    drop(smaps);
    drop(pagemap);
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    for &(start, end) in &ranges {
        // SAFETY: each range is either clean pages of a read-only file
        // mapping (their content is the file's, which MADV_DONTNEED brings
        // back on the next access; nothing in this single-threaded process
        // writes them meanwhile), or stack below the live frames.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

const PAGE: usize = 4096;

/// Stack kept below the frame that releases memory: the pump's frames and
/// the system calls it makes stay well within it.
const STACK_KEEP: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MappingKind {
    /// A private, read-only mapping of a file with no copied page.
    FileClean,
    /// The same, but some pages were written before it was made read-only.
    FileWithCopies,
    /// The main thread's stack.
    Stack,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    kind: MappingKind,
}

/// The mappings listed in `smaps`, classified.
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize, MappingKind)> = None;
    for line in smaps.lines() {
        if let Some(rest) = line.strip_prefix("Anonymous:") {
            let anon_kb: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(1);
            if let Some((start, end, mut kind)) = current.take() {
                if kind == MappingKind::FileClean && anon_kb > 0 {
                    kind = MappingKind::FileWithCopies;
                }
                out.push(Mapping { start, end, kind });
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
        let kind = if path == "[stack]" {
            MappingKind::Stack
        } else if perms.len() == 4
            && !perms.contains('w')
            && perms.ends_with('p')
            && path.starts_with('/')
        {
            MappingKind::FileClean
        } else {
            MappingKind::Other
        };
        current = Some((start, end, kind));
    }
    out
}

/// The runs of pages in `[start, end)` that are present and are the file's
/// own pages, not private copies (`/proc/self/pagemap`: bit 63 present, bit
/// 61 file page).
fn file_page_runs(pagemap: &mut File, start: usize, end: usize) -> Vec<(usize, usize)> {
    use std::io::{Seek, SeekFrom};
    let pages = (end - start) / PAGE;
    let mut raw = vec![0u8; pages * 8];
    if pagemap
        .seek(SeekFrom::Start((start / PAGE * 8) as u64))
        .and_then(|_| pagemap.read_exact(&mut raw))
        .is_err()
    {
        return Vec::new();
    }
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, entry) in raw.chunks_exact(8).enumerate() {
        let e = u64::from_ne_bytes(entry.try_into().expect("8 bytes"));
        if e & (1 << 63) == 0 || e & (1 << 61) == 0 {
            continue;
        }
        let page = start + i * PAGE;
        match runs.last_mut() {
            Some(last) if last.1 == page => last.1 = page + PAGE,
            _ => runs.push((page, page + PAGE)),
        }
    }
    runs
}

/// Copies the container's output into the log and reaps children until
/// `pid` has exited and the pipes are drained; returns `pid`'s wait status.
fn pump(pid: i32, sigfd: &SignalFd, out: OwnedFd, err: OwnedFd, log: &mut LogWriter) -> WaitStatus {
    let mut pipes: [Option<File>; 2] = [Some(File::from(out)), Some(File::from(err))];
    let mut status: Option<WaitStatus> = None;
    let mut deadline: Option<Instant> = None;
    // Allocated at the first output: a silent container never needs it.
    let mut buf: Vec<u8> = Vec::new();
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
        // Fixed arrays, not vectors: an idle container's shim runs this loop
        // without touching the allocator (see release_startup_memory).
        let mut fds = [
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::empty()),
            PollFd::new(sigfd.as_fd(), PollFlags::empty()),
        ];
        let mut which = [0usize; 2];
        let mut n = 1;
        for (i, p) in pipes.iter().enumerate() {
            if let Some(f) = p {
                fds[n] = PollFd::new(f.as_fd(), PollFlags::POLLIN);
                which[n - 1] = i;
                n += 1;
            }
        }
        match poll(&mut fds[..n], timeout) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                eprintln!("shim: poll: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut ready = [false; 3];
        for (r, f) in ready.iter_mut().zip(&fds[..n]) {
            *r = f.revents().is_some_and(|r| !r.is_empty());
        }
        for (slot, i) in which[..n - 1].iter().enumerate() {
            if !ready[slot + 1] {
                continue;
            }
            let stream = if *i == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            if buf.is_empty() {
                buf = vec![0u8; 32 * 1024];
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_mappings_are_classified() {
        let smaps = "\
00400000-00500000 r-xp 00000000 fe:00 12 /usr/bin/moor
Rss: 64 kB
Anonymous: 0 kB
00500000-00600000 r--p 00100000 fe:00 12 /usr/bin/moor
Anonymous: 8 kB
00600000-00610000 rw-p 00200000 fe:00 12 /usr/bin/moor
Anonymous: 4 kB
7ffd0000-7ffe0000 rw-p 00000000 00:00 0 [stack]
Anonymous: 12 kB
7f000000-7f001000 r--s 00000000 fe:00 13 /dev/shm/x
Anonymous: 0 kB
";
        let kinds: Vec<(usize, MappingKind)> =
            mappings(smaps).iter().map(|m| (m.start, m.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (0x400000, MappingKind::FileClean),
                (0x500000, MappingKind::FileWithCopies),
                (0x600000, MappingKind::Other),
                (0x7ffd0000, MappingKind::Stack),
                (0x7f000000, MappingKind::Other),
            ]
        );
    }

    #[test]
    fn copied_pages_of_a_file_mapping_are_never_dropped() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&vec![7u8; 4 * PAGE]).unwrap();
        // SAFETY: a new private mapping of our own temporary file, unmapped
        // at the end of the test.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let start = base as usize;
        // SAFETY: all four pages are inside the mapping.
        unsafe {
            let p = base.cast::<u8>();
            assert_eq!(std::ptr::read_volatile(p), 7); // page 0: the file's
            std::ptr::write_volatile(p.add(PAGE), 1); // page 1: a private copy
            assert_eq!(std::ptr::read_volatile(p.add(2 * PAGE)), 7); // page 2
        }
        let mut pagemap = File::open("/proc/self/pagemap").unwrap();
        let runs = file_page_runs(&mut pagemap, start, start + 4 * PAGE);
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(base, 4 * PAGE) };
        // Pages 0 and 2 are the file's (fault-around may map page 3 too);
        // page 1 is a private copy and must never be dropped.
        let covers = |page: usize| {
            runs.iter()
                .any(|(a, b)| *a <= start + page * PAGE && start + page * PAGE < *b)
        };
        assert!(covers(0) && covers(2), "{runs:x?}");
        assert!(!covers(1), "the copied page is in {runs:x?}");
    }
}
