//! `exec --tty` with the built-in executor. The runtime opens the
//! pseudo-terminal inside the container's own devpts, makes its slave the
//! process's controlling terminal and stdio, and hands the master to moor
//! over a console socket (runc's `--console-socket` protocol: a Unix stream
//! socket carrying one `SCM_RIGHTS` message). moor then puts its own
//! terminal in raw mode, copies the window size (again on every SIGWINCH)
//! and relays bytes both ways until the process exits.

use std::fs;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::error::{ContainerError, Result};

/// A listening console socket in a private (0700) temporary directory,
/// which is removed on drop. The directory also holds the exec's
/// `process.json`.
#[derive(Debug)]
pub(crate) struct ConsoleSocket {
    dir: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Creates the directory and listens on `console.sock` in it.
    pub(crate) fn new() -> Result<Self> {
        let template = std::env::temp_dir().join("moor-exec-XXXXXX");
        let dir = nix::unistd::mkdtemp(&template).map_err(ContainerError::sys(
            "create a directory for the console socket",
        ))?;
        let path = dir.join("console.sock");
        match UnixListener::bind(&path) {
            Ok(listener) => Ok(Self { dir, listener }),
            Err(source) => {
                let _ = fs::remove_dir_all(&dir);
                Err(ContainerError::Io {
                    action: "listen on the console socket",
                    path,
                    source,
                })
            }
        }
    }

    /// The socket's path, for the runtime.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    /// The private directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits up to `timeout` for the runtime to connect and send the
    /// pseudo-terminal's master.
    pub(crate) fn receive_master(&self, timeout: Duration) -> Result<OwnedFd> {
        let timed_out = || ContainerError::Sys {
            action: "wait for the runtime to send the terminal over the console socket".into(),
            source: Errno::ETIMEDOUT,
        };
        if !wait_readable(self.listener.as_fd(), timeout)? {
            return Err(timed_out());
        }
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|source| ContainerError::Io {
                action: "accept on the console socket",
                path: self.path(),
                source,
            })?;
        if !wait_readable(stream.as_fd(), timeout)? {
            return Err(timed_out());
        }
        let mut name = [0u8; 256];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let msg = recvmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(ContainerError::sys(
            "receive the terminal from the console socket",
        ))?;
        let mut master = None;
        for cmsg in msg
            .cmsgs()
            .map_err(ContainerError::sys("read the console socket's message"))?
        {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in this process
                    // for this message; nothing else owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    master.get_or_insert(fd);
                }
            }
        }
        master.ok_or_else(|| {
            ContainerError::Invalid("the runtime sent no terminal over the console socket".into())
        })
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `fd` is readable (or hung up); false after `timeout`.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> Result<bool> {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(ContainerError::sys("poll the console socket")(e)),
        }
    }
}

/// This process's terminal in raw mode; the saved settings come back on
/// drop, on every way out.
struct RawMode {
    stdin: std::io::Stdin,
    saved: Termios,
}

impl RawMode {
    /// Puts stdin in raw mode; `None` when stdin is no terminal.
    fn enter() -> Result<Option<Self>> {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return Ok(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)
            .map_err(ContainerError::sys("put the terminal in raw mode"))?;
        Ok(Some(Self { stdin, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.stdin, SetArg::TCSANOW, &self.saved);
    }
}

/// Blocks signals for this process until dropped.
struct BlockedSignals {
    old: SigSet,
}

impl BlockedSignals {
    fn block(set: &SigSet) -> Result<Self> {
        let mut old = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(set), Some(&mut old))
            .map_err(ContainerError::sys("block SIGWINCH and SIGCHLD"))?;
        Ok(Self { old })
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Copies the window size of `from` (when it is a terminal) to `to`; the
/// kernel then sends SIGWINCH to the foreground process group of `to`.
fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // points to a live local of that type.
    if unsafe { libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0 {
        // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer.
        unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
}

/// The exit code of a finished process (128 + N for death by signal N).
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Whether `pid` has exited: its exit code, reaping it; `block` waits.
fn reap(pid: Pid, block: bool) -> Result<Option<i32>> {
    let flags = (!block).then_some(WaitPidFlag::WNOHANG);
    loop {
        match waitpid(pid, flags) {
            Ok(status) => match exit_code(status) {
                Some(code) => return Ok(Some(code)),
                None if block => continue,
                None => return Ok(None),
            },
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(ContainerError::sys("wait for the exec'd process")(e)),
        }
    }
}

/// Writes all of `data` to the non-blocking `fd`, waiting while it is full.
fn write_all_nonblocking(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(ContainerError::sys("poll the terminal")(e)),
                }
            }
            Err(Errno::EINTR) => {}
            // The process is gone and its terminal with it: nothing reads.
            Err(Errno::EIO) => return Ok(()),
            Err(e) => return Err(ContainerError::sys("write to the terminal")(e)),
        }
    }
    Ok(())
}

/// What a read from the master gave.
enum Output {
    /// Some bytes, now on stdout.
    Copied,
    /// Nothing more for now.
    Empty,
    /// The slave side is closed: every process holding it has exited.
    Closed,
}

/// Copies what `master` has to stdout.
fn copy_output(master: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Output> {
    match nix::unistd::read(master, buf) {
        Ok(0) | Err(Errno::EIO) => Ok(Output::Closed),
        Ok(n) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf[..n])
                .and_then(|()| out.flush())
                .map_err(|source| ContainerError::Io {
                    action: "write the terminal output to",
                    path: "stdout".into(),
                    source,
                })?;
            Ok(Output::Copied)
        }
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(Output::Empty),
        Err(e) => Err(ContainerError::sys("read from the terminal")(e)),
    }
}

/// Relays this process's stdin to `master` and `master` to stdout until
/// `pid` (a child of this process) exits; returns its exit code (128 + N
/// for death by signal N). Stdin, when a terminal, is in raw mode
/// meanwhile and its window size follows to the container's terminal.
pub(crate) fn relay(master: OwnedFd, pid: Pid) -> Result<i32> {
    let stdin = std::io::stdin();
    let raw = RawMode::enter()?;
    copy_window_size(stdin.as_fd(), master.as_fd());
    let flags = fcntl(&master, FcntlArg::F_GETFL).map_err(ContainerError::sys("read flags"))?;
    fcntl(
        &master,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(ContainerError::sys("make the terminal non-blocking"))?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGWINCH);
    mask.add(Signal::SIGCHLD);
    let _blocked = BlockedSignals::block(&mask)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(ContainerError::sys("create a signalfd"))?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdin_open = true;
    let code = loop {
        if let Some(code) = reap(pid, false)? {
            // Whatever the process wrote before it exited.
            while let Output::Copied = copy_output(master.as_fd(), &mut buf)? {}
            break code;
        }
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(ContainerError::sys("poll the terminal")(e)),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        let (master_ready, signal_ready, stdin_ready) = (ready(0), ready(1), ready(2));
        drop(fds);
        if master_ready && let Output::Closed = copy_output(master.as_fd(), &mut buf)? {
            // Nobody holds the terminal any more: the process is gone.
            break reap(pid, true)?.unwrap_or(0);
        }
        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo == Signal::SIGWINCH as u32 {
                    copy_window_size(stdin.as_fd(), master.as_fd());
                }
            }
        }
        if stdin_ready {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) => write_all_nonblocking(master.as_fd(), &buf[..n])?,
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => stdin_open = false,
            }
        }
    };
    drop(raw);
    Ok(code)
}
