//! git over ssh with the system's OpenSSH client: a libgit2 transport for
//! `ssh://` (and scp-like `user@host:path`) remotes that runs
//! `ssh … git-upload-pack '<path>'` and speaks git's protocol over the
//! child's stdin and stdout, as git itself does.
//!
//! ssh runs with moor's options only (`-F none`: no ssh_config is read), the
//! source's key, known_hosts and timeouts, from an argv (never a shell). Each
//! fetch gets a private work directory inside the source's cache (the
//! known_hosts text, a 0600 copy of the key, an askpass script when the key
//! has a passphrase, ssh's stderr), removed when the fetch ends.
//!
//! libgit2 keeps transports in a process-wide table, so the transport is
//! registered once ([`register`]) and reads the settings of the fetch under
//! way from a thread-local set by the [`Session`] guard around it: libgit2
//! calls the transport on the thread that fetches. Only fetching is
//! supported (upload-pack); a push is refused.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::known_hosts::HostKeyError;

/// The prefix of the work directories in a source's cache.
const WORK_PREFIX: &str = ".ssh-work-";
/// The child's environment variable the askpass script prints.
const PASSPHRASE_VAR: &str = "MOOR_SSH_KEY_PASSPHRASE";
/// How much of the end of ssh's stderr is read for a message.
const STDERR_TAIL: u64 = 8192;
/// The longest line of ssh's stderr a message holds, in characters.
const MAX_LINE: usize = 300;
/// The largest file ssh may write (its stderr): a server that floods it
/// does not fill the cache's file system (ssh gets SIGXFSZ).
const MAX_FILE_SIZE: u64 = 1 << 20;

/// What one fetch over ssh uses.
pub(crate) struct Settings {
    /// The remote URL libgit2 is given: the transport serves only it.
    pub url: String,
    pub user: String,
    pub host: String,
    pub port: Option<u16>,
    /// The repository's path as the URL spells it (see [`remote_path`]).
    pub path: String,
    /// The private key file (copied, 0600, into the work directory).
    pub key: PathBuf,
    pub passphrase: Option<String>,
    /// The text of the known_hosts files, one after the other.
    pub known_hosts: String,
    pub connect_timeout: Duration,
    /// The longest a read from ssh may wait.
    pub io_timeout: Duration,
    /// The ssh program: `ssh` from PATH (tests put another here).
    pub program: PathBuf,
}

impl Settings {
    /// Refuses what ssh could take for an option, or what could not be one
    /// argument: a user or host starting with `-`, with white space or
    /// control characters; a path starting with `-` (git-upload-pack's
    /// option) or with control characters.
    pub fn check(&self) -> Result<(), String> {
        let bad = |s: &str| s.chars().any(|c| c.is_control() || c.is_whitespace());
        for (what, value) in [("ssh user", &self.user), ("ssh host", &self.host)] {
            if value.is_empty() {
                return Err(format!("the {what} is empty"));
            }
            if bad(value) {
                return Err(format!(
                    "the {what} contains white space or control characters"
                ));
            }
            if value.starts_with('-') {
                return Err(format!("the {what} `{value}` starts with `-`: refused"));
            }
        }
        let path = remote_path(&self.path);
        if path.is_empty() {
            return Err("the ssh URL names no repository path".into());
        }
        if path.starts_with('-') {
            return Err(format!(
                "the repository path `{path}` starts with `-`: refused"
            ));
        }
        if path.chars().any(char::is_control) {
            return Err("the repository path contains control characters".into());
        }
        Ok(())
    }
}

/// The repository path sent to the server: the URL's, less the `/` before
/// a `~` (`ssh://host/~user/r` is `~user/r`, as git and libgit2 send it).
fn remote_path(path: &str) -> &str {
    if path.starts_with("/~") {
        &path[1..]
    } else {
        path
    }
}

/// `s` single-quoted for a POSIX shell, as git quotes the path it sends
/// (`'` becomes `'\''`, `!` becomes `'\!'`).
fn sq_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' || c == '!' {
            out.push_str("'\\");
            out.push(c);
            out.push('\'');
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A path as the value of an ssh `-o` option: double-quoted (it may hold
/// spaces), `%` doubled (ssh expands `%` tokens there). Quotes,
/// backslashes, `$` (ssh expands `${VAR}`) and control characters cannot
/// be spelled safely: refused.
fn option_path(p: &Path) -> Result<String, String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))?;
    if s.chars()
        .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\' | '$'))
    {
        return Err(format!(
            "{} contains a character ssh options cannot hold (quote, backslash, `$` or a control character)",
            p.display()
        ));
    }
    Ok(format!("\"{}\"", s.replace('%', "%%")))
}

/// Whole seconds, rounded up, at least 1.
fn secs(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

/// ssh's arguments for one fetch.
fn ssh_args(s: &Settings, key: &Path, known_hosts: &Path) -> Result<Vec<String>, String> {
    let mut args: Vec<String> = ["-F", "none", "-T"].map(String::from).to_vec();
    let mut opt = |o: String| {
        args.push("-o".into());
        args.push(o);
    };
    if s.passphrase.is_none() {
        opt("BatchMode=yes".into());
    }
    for o in [
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "PreferredAuthentications=publickey",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "StrictHostKeyChecking=yes",
        "GlobalKnownHostsFile=/dev/null",
        "UpdateHostKeys=no",
        "CheckHostIP=no",
        "ForwardAgent=no",
        "ForwardX11=no",
        "ClearAllForwardings=yes",
        "PermitLocalCommand=no",
        "ControlMaster=no",
        "ControlPath=none",
        "LogLevel=ERROR",
        "ServerAliveCountMax=3",
    ] {
        opt(o.into());
    }
    opt(format!("IdentityFile={}", option_path(key)?));
    opt(format!("UserKnownHostsFile={}", option_path(known_hosts)?));
    opt(format!("ConnectTimeout={}", secs(s.connect_timeout)));
    opt(format!("ServerAliveInterval={}", secs(s.io_timeout / 3)));
    if let Some(p) = s.port {
        args.extend(["-p".into(), p.to_string()]);
    }
    args.extend(["-l".into(), s.user.clone(), "--".into(), s.host.clone()]);
    args.push(format!(
        "git-upload-pack {}",
        sq_quote(remote_path(&s.path))
    ));
    Ok(args)
}

/// The state one fetch's transports share: settings and work files. The
/// work directory goes when the last user (the session, a transport, a
/// stream) does.
struct Shared {
    settings: Settings,
    dir: PathBuf,
    args: Vec<String>,
    askpass: Option<PathBuf>,
    /// ssh's stderr files, one per run; the last one written.
    stderr: Mutex<(u32, Option<PathBuf>)>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// Registers the ssh transport with libgit2, once per process (from
/// [`super::GitSource::open`], before any fetch).
pub(crate) fn register() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        // SAFETY: libgit2's transport table is process-global and not
        // locked; the OnceLock registers once, and sources call this from
        // `GitSource::open`, before their first fetch.
        unsafe { git2::transport::register("ssh", factory) }.map_err(|e| e.message().to_string())
    });
    if let Err(e) = result {
        tracing::error!("cannot register the ssh transport with libgit2: {e}");
    }
}

fn factory(remote: &git2::Remote<'_>) -> Result<Transport, git2::Error> {
    // An error returned here loses its message (git2 does not hand it to
    // libgit2): the transport is always made, and refuses in `action`.
    let shared = match CURRENT.with(|c| c.borrow().clone()) {
        None => Err("the ssh transport was used outside a fetch: it has no settings"),
        Some(s) if remote.url_bytes() != s.settings.url.as_bytes() => Err(
            "the ssh transport has no settings for this URL (rewritten by url.*.insteadOf in a git config?)",
        ),
        Some(s) => Ok(s),
    };
    Transport::smart(remote, false, Subtransport { shared })
}

/// One fetch's ssh settings in force on this thread, and its work
/// directory; both go on drop.
pub(crate) struct Session {
    /// Keeps the work directory at least as long as the session.
    _shared: Arc<Shared>,
    previous: Option<Arc<Shared>>,
}

impl Session {
    /// Makes the work directory in `cache` (removing any a process that is
    /// gone left behind) and puts `settings` in force on this thread.
    pub fn start(settings: Settings, cache: &Path) -> Result<Session, StartError> {
        settings.check().map_err(StartError::Config)?;
        remove_stale(cache);
        let s = &settings;
        let key_text = std::fs::read(&s.key).map_err(|e| {
            StartError::Config(format!("cannot read ssh key {}: {e}", s.key.display()))
        })?;
        Self::with_key(settings, &key_text, cache).map_err(StartError::Local)
    }

    fn with_key(settings: Settings, key_text: &[u8], cache: &Path) -> Result<Session, String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = cache.join(format!(
            "{WORK_PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut shared = Shared {
            settings,
            dir: dir.clone(),
            args: Vec::new(),
            askpass: None,
            stderr: Mutex::new((0, None)),
        };
        // From here on, dropping `shared` removes the directory.
        let dir = std::fs::canonicalize(&dir)
            .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
        let s = &shared.settings;
        let key = dir.join("key");
        write_private(&key, key_text, 0o600)?;
        let known_hosts = dir.join("known_hosts");
        write_private(&known_hosts, s.known_hosts.as_bytes(), 0o600)?;
        if s.passphrase.is_some() {
            let script = dir.join("askpass");
            let text = format!("#!/bin/sh\nprintf '%s\\n' \"${PASSPHRASE_VAR}\"\n");
            write_private(&script, text.as_bytes(), 0o700)?;
            shared.askpass = Some(script);
        }
        shared.args = ssh_args(&shared.settings, &key, &known_hosts)?;
        shared.dir = dir;
        let shared = Arc::new(shared);
        let previous = CURRENT.with(|c| c.borrow_mut().replace(shared.clone()));
        Ok(Session {
            _shared: shared,
            previous,
        })
    }
}

/// Why a [`Session`] could not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The settings: a refused host, user or path, an unreadable key.
    Config(String),
    /// The work directory.
    Local(String),
}

/// Removes the work directories of processes that are gone (a crash, a
/// kill): named `<prefix><pid>-<n>`, by this process or one that no longer
/// runs.
fn remove_stale(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(WORK_PREFIX)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid
            .is_some_and(|p| p != std::process::id() && Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Why ssh failed in the session in force on this thread, from the end of
/// its last run's stderr: None when there is no session, ssh has not run,
/// or it said nothing.
pub(crate) fn failure() -> Option<Failure> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|s| s.failure()))
}

impl Shared {
    fn failure(&self) -> Option<Failure> {
        let path = self.stderr.lock().ok()?.1.clone()?;
        classify(&read_tail(&path)?)
    }
}

/// Why ssh failed, from what it wrote on stderr.
fn classify(text: &str) -> Option<Failure> {
    if text.contains("Host key verification failed.") {
        let problem = if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            HostKeyError::Mismatch
        } else if text.contains("REVOKED HOST KEY") {
            HostKeyError::Revoked
        } else {
            HostKeyError::Unknown
        };
        return Some(Failure::HostKey(problem));
    }
    // The server's words, shown in logs: without control characters
    // (terminal escapes), each line cut short.
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let l: String = l.chars().filter(|c| !c.is_control()).collect();
            let l = l.trim();
            match l.char_indices().nth(MAX_LINE) {
                Some((i, _)) => format!("{}…", &l[..i]),
                None => l.to_string(),
            }
        })
        .filter(|l| !l.is_empty())
        .collect();
    let last = &lines[lines.len().saturating_sub(3)..];
    (!last.is_empty()).then(|| Failure::Said(last.join("; ")))
}

impl Drop for Session {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// What ssh's stderr says went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// "Host key verification failed.", and why.
    HostKey(HostKeyError),
    /// Its last lines (e.g. "Permission denied (publickey).").
    Said(String),
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The last [`STDERR_TAIL`] bytes of a file, as text.
fn read_tail(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(STDERR_TAIL)))
        .ok()?;
    let mut bytes = Vec::new();
    f.take(STDERR_TAIL).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

struct Subtransport {
    /// The fetch's settings, or why there are none.
    shared: Result<Arc<Shared>, &'static str>,
}

impl SmartSubtransport for Subtransport {
    fn action(
        &self,
        _url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        match action {
            // git2 hands libgit2 the stream of UploadPackLs again for
            // UploadPack (one ssh session, as git's protocol over ssh is).
            Service::UploadPackLs | Service::UploadPack => {}
            Service::ReceivePackLs | Service::ReceivePack => {
                return Err(git2::Error::from_str(
                    "pushing over ssh is not supported: moor only fetches",
                ));
            }
        }
        let shared = self.shared.as_ref().map_err(|e| git2::Error::from_str(e))?;
        let stream = spawn(shared).map_err(|e| git2::Error::from_str(&e))?;
        Ok(Box::new(stream))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// Starts ssh for one session.
fn spawn(shared: &Arc<Shared>) -> Result<Stream, String> {
    let s = &shared.settings;
    let stderr_path = {
        let mut st = shared
            .stderr
            .lock()
            .map_err(|_| "the ssh state is poisoned".to_string())?;
        st.0 += 1;
        let p = shared.dir.join(format!("stderr-{}", st.0));
        st.1 = Some(p.clone());
        p
    };
    let stderr = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&stderr_path)
        .map_err(|e| format!("cannot create {}: {e}", stderr_path.display()))?;
    let mut cmd = Command::new(&s.program);
    cmd.args(&shared.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    scrub_env(&mut cmd, std::env::vars_os().map(|(k, _)| k));
    if let (Some(script), Some(passphrase)) = (&shared.askpass, &s.passphrase) {
        cmd.env("SSH_ASKPASS", script)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env(PASSPHRASE_VAR, passphrase);
    }
    // SAFETY: setsid and setrlimit are system calls, async-signal-safe. A
    // session of its own: ssh has no terminal to prompt on, and its process
    // group can be killed whole. The file size limit bounds its stderr file.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_FSIZE,
                MAX_FILE_SIZE,
                MAX_FILE_SIZE,
            )?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            format!(
                "cannot run {}: not found; ssh remotes need the OpenSSH client (`ssh`, Debian package openssh-client)",
                s.program.display()
            )
        } else {
            format!("cannot run {}: {e}", s.program.display())
        }
    })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        kill(&mut child);
        return Err("ssh started without its pipes".into());
    };
    let nonblocking = nix::fcntl::fcntl(
        stdin.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    if let Err(e) = nonblocking {
        kill(&mut child);
        return Err(format!("cannot set up ssh's stdin: {e}"));
    }
    Ok(Stream {
        child,
        reaped: false,
        stdin,
        stdout,
        io_timeout: s.io_timeout,
        _shared: shared.clone(),
    })
}

/// Keeps the agent's ssh-agent socket and askpass settings from `cmd`
/// (`names`: the agent's environment variables).
fn scrub_env(cmd: &mut Command, names: impl Iterator<Item = OsString>) {
    for k in names {
        if k == OsStr::new("SSH_AUTH_SOCK") || k.as_bytes().starts_with(b"SSH_ASKPASS") {
            cmd.env_remove(k);
        }
    }
}

/// Kills ssh's process group (its own session: see [`spawn`]) and reaps it.
/// Only for a child not reaped yet: its pid (a zombie's, at worst) is still
/// its own.
fn kill(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// git's protocol over ssh's stdin and stdout. Each read or write waits at
/// most the io timeout; ssh is killed and reaped on drop.
struct Stream {
    child: Child,
    /// ssh was killed and reaped (its pid may belong to another process).
    reaped: bool,
    stdin: ChildStdin,
    stdout: ChildStdout,
    io_timeout: Duration,
    /// Keeps the work directory (the key, the askpass script) while ssh runs.
    _shared: Arc<Shared>,
}

impl Stream {
    fn stop(&mut self) {
        if !self.reaped {
            kill(&mut self.child);
            self.reaped = true;
        }
    }

    /// Waits until `fd` is ready for `events`, at most the io timeout; on
    /// timeout kills ssh and fails with `TimedOut`.
    fn wait(&mut self, events: PollFlags, what: &str) -> io::Result<()> {
        let deadline = Instant::now() + self.io_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.stop();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "ssh: nothing could be {what} for {}s; ssh was stopped",
                        self.io_timeout.as_secs_f32()
                    ),
                ));
            }
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let ready = if events == PollFlags::POLLIN {
                nix::poll::poll(&mut [PollFd::new(self.stdout.as_fd(), events)], timeout)
            } else {
                nix::poll::poll(&mut [PollFd::new(self.stdin.as_fd(), events)], timeout)
            };
            match ready {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.wait(PollFlags::POLLIN, "read")?;
            match self.stdout.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            self.wait(PollFlags::POLLOUT, "written")?;
            match self.stdin.write(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) =>
                {
                    continue;
                }
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, program: &Path) -> Settings {
        let key = dir.join("id");
        if !key.exists() {
            std::fs::write(&key, "not a key\n").unwrap();
        }
        Settings {
            url: "ssh://git@127.0.0.1:2222/srv/r.git".into(),
            user: "git".into(),
            host: "127.0.0.1".into(),
            port: Some(2222),
            path: "/srv/r.git".into(),
            key,
            passphrase: None,
            known_hosts: "[127.0.0.1]:2222 ssh-ed25519 AAAA\n".into(),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(1),
            program: program.to_path_buf(),
        }
    }

    /// An executable script (the fake `ssh`).
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        write_private(&p, format!("#!/bin/sh\n{body}").as_bytes(), 0o700).unwrap();
        p
    }

    /// The work directories left in `cache`.
    fn work_dirs(cache: &Path) -> Vec<String> {
        std::fs::read_dir(cache)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(WORK_PREFIX))
            .collect()
    }

    /// Connects an anonymous remote of a scratch repository to `url` for
    /// fetching, with the session's settings in force.
    fn connect(dir: &Path, url: &str) -> Result<(), git2::Error> {
        register();
        let repo = git2::Repository::init_bare(dir.join("scratch.git")).unwrap();
        let mut remote = repo.remote_anonymous(url)?;
        remote.connect(git2::Direction::Fetch)?;
        remote.list().map(|_| ())
    }

    #[test]
    fn quoting_is_gits() {
        assert_eq!(sq_quote("/srv/r.git"), "'/srv/r.git'");
        assert_eq!(sq_quote("it's"), "'it'\\''s'");
        assert_eq!(sq_quote("a!b"), "'a'\\!'b'");
        assert_eq!(sq_quote("$(touch x)`y`"), "'$(touch x)`y`'");
        assert_eq!(remote_path("/~alice/r"), "~alice/r");
        assert_eq!(remote_path("/srv/~r"), "/srv/~r");
        assert_eq!(remote_path("org/r.git"), "org/r.git");
    }

    #[test]
    fn argv_is_moors_own() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = settings(tmp.path(), Path::new("ssh"));
        let key = tmp.path().join("with space/100%/key");
        let args = ssh_args(&s, &key, Path::new("/w/known_hosts")).unwrap();
        let joined = args.join("\n");
        for want in [
            "-F\nnone",
            "-o\nBatchMode=yes",
            "-o\nIdentitiesOnly=yes",
            "-o\nIdentityAgent=none",
            "-o\nStrictHostKeyChecking=yes",
            "-o\nUserKnownHostsFile=\"/w/known_hosts\"",
            "-o\nGlobalKnownHostsFile=/dev/null",
            "-o\nConnectTimeout=5",
            "-o\nServerAliveInterval=1",
            "-o\nControlPath=none",
            "-p\n2222\n-l\ngit\n--\n127.0.0.1\ngit-upload-pack '/srv/r.git'",
        ] {
            assert!(joined.contains(want), "{want:?} not in {args:?}");
        }
        assert!(
            joined.contains(&format!(
                "IdentityFile=\"{}/with space/100%%/key\"",
                tmp.path().display()
            )),
            "{args:?}"
        );
        // The command is the last argument, the host right before it.
        assert_eq!(args[args.len() - 2], "127.0.0.1");
        // With a passphrase, ssh must be allowed to ask (askpass).
        s.passphrase = Some("s3cret-passphrase".into());
        s.port = None;
        let args = ssh_args(&s, &key, Path::new("/w/k")).unwrap();
        assert!(!args.iter().any(|a| a.starts_with("BatchMode")), "{args:?}");
        assert!(!args.iter().any(|a| a == "-p"), "{args:?}");
        assert!(!args.iter().any(|a| a.contains("s3cret")), "{args:?}");
        // Paths ssh would expand or split are refused.
        for bad in ["/a/${HOME}/k", "/a/\"/k", "/a/\\/k", "/a/\n/k"] {
            assert!(
                ssh_args(&s, Path::new(bad), Path::new("/w/k")).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn what_ssh_said_is_classified() {
        // OpenSSH 9's words, as LogLevel=ERROR keeps them.
        let unknown = "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.\r\n";
        let changed = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n@@@@\r\nIT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\nHost key verification failed.\r\n";
        let revoked = "@@@\r\n@       WARNING: REVOKED HOST KEY DETECTED!               @\r\n@@@\r\nHost key verification failed.\r\n";
        assert_eq!(
            classify(unknown),
            Some(Failure::HostKey(HostKeyError::Unknown))
        );
        assert_eq!(
            classify(changed),
            Some(Failure::HostKey(HostKeyError::Mismatch))
        );
        assert_eq!(
            classify(revoked),
            Some(Failure::HostKey(HostKeyError::Revoked))
        );
        assert_eq!(
            classify("one\n\ntwo\r\nthree\ngit@host: Permission denied (publickey).\r\n"),
            Some(Failure::Said(
                "two; three; git@host: Permission denied (publickey).".into()
            ))
        );
        assert_eq!(classify("\n \n"), None);
        let long = classify(&"x".repeat(5000)).unwrap();
        assert_eq!(long, Failure::Said(format!("{}…", "x".repeat(MAX_LINE))));
    }

    #[test]
    fn the_agents_ssh_agent_and_askpass_are_not_passed_on() {
        let mut cmd = Command::new("ssh");
        let names = [
            "SSH_AUTH_SOCK",
            "SSH_ASKPASS",
            "SSH_ASKPASS_REQUIRE",
            "PATH",
            "HOME",
        ];
        scrub_env(&mut cmd, names.iter().map(OsString::from));
        let removed: Vec<&OsStr> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            removed,
            ["SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "SSH_AUTH_SOCK"].map(OsStr::new)
        );
    }

    #[test]
    fn hostile_settings_are_refused_before_ssh_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("pwned");
        let touch = format!("-oProxyCommand=touch {}", marker.display());
        let program = script(
            tmp.path(),
            "fake-ssh",
            &format!("touch {}\n", marker.display()),
        );
        let cache = tmp.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let cases = [
            ("host", touch.as_str()),
            ("host", "-oProxyCommand=x"),
            ("host", "a\tb"),
            ("host", ""),
            ("user", touch.as_str()),
            ("user", "-lroot"),
            ("user", "a\nb"),
            ("path", "--upload-pack=touch x"),
            ("path", "/r\u{0}x"),
            ("path", ""),
        ];
        for (what, value) in cases {
            let mut s = settings(tmp.path(), &program);
            match what {
                "host" => s.host = value.into(),
                "user" => s.user = value.into(),
                _ => s.path = value.into(),
            }
            let e = match Session::start(s, &cache) {
                Err(StartError::Config(e)) => e,
                Err(e) => panic!("{value:?}: {e:?}"),
                Ok(_) => panic!("{value:?} accepted"),
            };
            assert!(e.contains(what), "{value:?}: {e}");
        }
        assert!(!marker.exists(), "ssh ran");
        assert_eq!(work_dirs(&cache), Vec::<String>::new());
    }

    #[test]
    fn only_the_work_directories_of_gone_processes_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut gone = Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let names = [
            format!("{WORK_PREFIX}{}-0", gone.id()),
            format!("{WORK_PREFIX}{}-3", std::process::id()),
            format!("{WORK_PREFIX}garbage"),
            // pid 1 runs: another process's fetch under way.
            format!("{WORK_PREFIX}1-0"),
            "repo.git".to_string(),
        ];
        for n in &names {
            std::fs::create_dir(tmp.path().join(n)).unwrap();
        }
        remove_stale(tmp.path());
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [format!("{WORK_PREFIX}1-0"), "repo.git".to_string()]);
    }

    #[test]
    fn no_settings_no_push_no_ssh() {
        let tmp = tempfile::tempdir().unwrap();
        let url = "ssh://git@127.0.0.1:2222/srv/r.git";
        // Outside a fetch: an error, never defaults.
        let e = connect(tmp.path(), url).unwrap_err();
        assert!(e.message().contains("outside a fetch"), "{e}");

        let marker = tmp.path().join("ran");
        let program = script(
            tmp.path(),
            "fake-ssh",
            &format!("touch {}\n", marker.display()),
        );
        let cache = tmp.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let session = Session::start(settings(tmp.path(), &program), &cache).unwrap();
        // Another URL than the session's.
        let e = connect(tmp.path(), "ssh://git@127.0.0.1:2222/other.git").unwrap_err();
        assert!(e.message().contains("no settings for this URL"), "{e}");
        // Pushing.
        let repo = git2::Repository::open_bare(tmp.path().join("scratch.git")).unwrap();
        let mut remote = repo.remote_anonymous(url).unwrap();
        let e = remote.connect(git2::Direction::Push).unwrap_err();
        assert!(e.message().contains("moor only fetches"), "{e}");
        assert!(!marker.exists(), "ssh ran");
        drop(session);

        // No ssh program.
        let mut s = settings(tmp.path(), &tmp.path().join("no-such-ssh"));
        s.url = url.into();
        let session = Session::start(s, &cache).unwrap();
        let e = connect(tmp.path(), url).unwrap_err();
        assert!(e.message().contains("openssh-client"), "{e}");
        drop(session);
        assert_eq!(work_dirs(&cache), Vec::<String>::new());
    }

    #[test]
    fn a_flood_on_stderr_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let program = script(
            tmp.path(),
            "fake-ssh",
            "e=$(printf '\\033')\nyes \"flood ${e}[31m\" | head -c 3000000 >&2\nexit 1\n",
        );
        let cache = tmp.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let s = settings(tmp.path(), &program);
        let url = s.url.clone();
        let session = Session::start(s, &cache).unwrap();
        connect(tmp.path(), &url).unwrap_err();
        let dirs = work_dirs(&cache);
        let stderr = cache.join(&dirs[0]).join("stderr-1");
        let size = std::fs::metadata(&stderr).unwrap().len();
        assert!(size <= MAX_FILE_SIZE, "{size}");
        // The end of what fits, without the terminal escapes.
        let Some(Failure::Said(said)) = failure() else {
            panic!("no failure read")
        };
        assert!(said.starts_with("flood [31m; flood [31m; "), "{said:?}");
        assert!(!said.chars().any(char::is_control), "{said:?}");
        drop(session);
        assert_eq!(work_dirs(&cache), Vec::<String>::new());
    }

    #[test]
    fn a_silent_ssh_times_out_and_is_reaped() {
        let tmp = tempfile::tempdir().unwrap();
        let pid_file = tmp.path().join("pid");
        let program = script(
            tmp.path(),
            "fake-ssh",
            &format!("echo $$ > {}\nexec sleep 60\n", pid_file.display()),
        );
        let cache = tmp.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let s = settings(tmp.path(), &program);
        let url = s.url.clone();
        let session = Session::start(s, &cache).unwrap();
        let started = Instant::now();
        let e = connect(tmp.path(), &url).unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "took {took:?}");
        assert!(took >= Duration::from_millis(900), "took {took:?}");
        assert!(e.message().contains("ssh was stopped"), "{e}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
        // Killed and reaped: not even a zombie is left.
        assert!(!proc.exists(), "ssh {} is still there", pid.trim());
        drop(session);
        assert_eq!(work_dirs(&cache), Vec::<String>::new());
    }

    #[test]
    fn scp_like_urls_reach_the_transport_with_gits_quoting() {
        let tmp = tempfile::tempdir().unwrap();
        let argv = tmp.path().join("argv");
        let env = tmp.path().join("env");
        let program = script(
            tmp.path(),
            "fake-ssh",
            &format!(
                "for a in \"$@\"; do printf '%s\\n' \"$a\"; done > {}\nenv > {}\necho 'fake: Permission denied (publickey).' >&2\nexit 255\n",
                argv.display(),
                env.display()
            ),
        );
        let cache = tmp.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let mut s = settings(tmp.path(), &program);
        s.url = "alice@git.example.com:it's!/r.git".into();
        s.user = "alice".into();
        s.host = "git.example.com".into();
        s.port = None;
        s.path = "it's!/r.git".into();
        s.passphrase = Some("hunter2".into());
        let url = s.url.clone();
        let session = Session::start(s, &cache).unwrap();
        let e = connect(tmp.path(), &url).unwrap_err();
        assert!(!e.message().is_empty());
        assert_eq!(
            failure(),
            Some(Failure::Said("fake: Permission denied (publickey).".into()))
        );
        let argv = std::fs::read_to_string(&argv).unwrap();
        let lines: Vec<&str> = argv.lines().collect();
        assert_eq!(
            lines[lines.len() - 5..],
            [
                "-l",
                "alice",
                "--",
                "git.example.com",
                "git-upload-pack 'it'\\''s'\\!'/r.git'"
            ]
        );
        assert!(!argv.contains("hunter2"), "{argv}");
        let env = std::fs::read_to_string(&env).unwrap();
        assert!(!env.contains("SSH_AUTH_SOCK"), "{env}");
        assert!(env.contains("SSH_ASKPASS_REQUIRE=force"), "{env}");
        assert!(env.contains(&format!("{PASSPHRASE_VAR}=hunter2")), "{env}");
        drop(session);
        assert_eq!(failure(), None);
        assert_eq!(work_dirs(&cache), Vec::<String>::new());
    }
}
