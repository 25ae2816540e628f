//! Helpers shared by the test modules. End-to-end tests get a host of
//! their own from [`instance::Instance`], whose host-wide names come from a
//! [`slot::Slot`]; servers a test starts take a [`free_port`] and are
//! [`KillOnDrop`]; conditions are waited for with [`wait_for`].

#![allow(dead_code)]

pub mod debimage;
pub mod host;
pub mod instance;
pub mod slot;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub use host::{alive, link_exists};

/// The `moor` binary built for this test run: Cargo builds it before the
/// tests (the root package owns it) and says where it is.
pub fn moor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moor"))
}

/// The `moor-shim` binary built for this test run, beside `moor`: what the
/// engine starts for each container.
pub fn shim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moor-shim"))
}

/// A `moor` command for work that needs no host (validate, images): no
/// state dir from the environment, and a bridge prefix moor refuses, so
/// that a command that would open the host's networks fails rather than
/// use moor's defaults. Tests that need the host use an
/// [`instance::Instance`].
pub fn moor_command() -> Command {
    let mut c = Command::new(moor_bin());
    c.env_remove("MOOR_STATE_DIR")
        .env("MOOR_BRIDGE_PREFIX", "use-an-Instance");
    c
}

/// Runs `moor ARGS...` (see [`moor_command`]) and returns its output.
pub fn moor(args: &[&str]) -> Output {
    moor_command().args(args).output().expect("run moor")
}

/// Runs `moor ARGS...` in `dir`, so that relative paths in its arguments and
/// its diagnostics are relative to `dir`.
pub fn moor_in(dir: &Path, args: &[&str]) -> Output {
    moor_command()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run moor")
}

/// Copies the directory tree `from` into `to` (created if missing).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
    }
}

/// The repository root (where Cargo.toml of the workspace is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when running on CI, where a missing prerequisite is a failure.
pub fn on_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Checks that every tool is on PATH (and that we are root when `root` is
/// set). On CI a missing prerequisite panics; elsewhere it prints why the
/// test did not run and returns false.
pub fn require(tools: &[&str], root: bool) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| which(t).is_none())
        .map(|t| format!("`{t}` not on PATH"))
        .collect();
    if root && !nix_is_root() {
        missing.push("not running as root".into());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("prerequisites missing: {}", missing.join(", "));
    if on_ci() {
        panic!("{msg} (CI must install them: see .ci/run)");
    }
    eprintln!("SKIPPED (not on CI): {msg}");
    false
}

/// [`require`] (as root) of busybox, and of `runc` when it is `executor`:
/// what a test of containers run by `executor` needs.
pub fn require_executor(executor: &str) -> bool {
    let tools: &[&str] = match executor {
        "runc" => &["busybox", "runc"],
        _ => &["busybox"],
    };
    require(tools, true)
}

/// The full path of a tool on PATH (or in /usr/sbin and /sbin).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process (a server a test started) killed and reaped on drop.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Spawns `cmd`.
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}")))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `request` to 127.0.0.1:port and reads the answer to the end: the
/// status code and the body.
fn http(port: u16, request: &[u8], timeout: Duration) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(request).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// `GET path` on 127.0.0.1:port over HTTP/1.0: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, &[])
}

/// [`http_get`] with `headers`.
pub fn http_get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    http(port, request.as_bytes(), Duration::from_secs(10))
}

/// `POST path` with `headers` and `body` on 127.0.0.1:port: the status code and the body.
pub fn http_post(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut request = req.into_bytes();
    request.extend_from_slice(body);
    http(port, &request, Duration::from_secs(10))
}

/// Polls `f` until it is true; panics naming `what` after `timeout`.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "test timeout expired waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// A command's stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Replaces the first `from` in the file `path` with `to`; panics when the
/// file does not contain `from`.
#[track_caller]
pub fn edit(path: &Path, from: &str, to: &str) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        text.contains(from),
        "{} does not contain {from:?}",
        path.display()
    );
    std::fs::write(path, text.replacen(from, to, 1))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A new temporary directory holding a bare repository `fleet.git` and a
/// work tree `work` that pushes to it (as `origin`), both on `main`:
/// (the directory, the bare repository, the work tree).
pub fn fleet_repo() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (bare, work) = (tmp.path().join("fleet.git"), tmp.path().join("work"));
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "fleet.git"],
    );
    git(tmp.path(), &["init", "-q", "-b", "main", "work"]);
    git(
        &work,
        &["remote", "add", "origin", bare.to_str().expect("utf-8")],
    );
    (tmp, bare, work)
}

/// Commits everything in `work` (git options `before` the subcommand, e.g.
/// signing) and force-pushes it to origin's `main`; returns the commit id.
#[track_caller]
pub fn commit_and_push(work: &Path, subject: &str, before: &[&str]) -> String {
    git(work, &["add", "-A"]);
    let mut args = before.to_vec();
    args.extend_from_slice(&["commit", "-q", "--allow-empty", "-m", subject]);
    git(work, &args);
    git(work, &["push", "-q", "-f", "origin", "HEAD:main"]);
    git(work, &["rev-parse", "HEAD"])
}

/// Runs `git ARGS…` in `dir` with no user or system configuration (a test
/// identity, no signing unless ARGS ask); asserts that it succeeded and
/// returns its stdout, trimmed.
#[track_caller]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=moor test",
            "-c",
            "user.email=test@moor.invalid",
        ])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `on_every_executor!(a, b)` makes, in the module it stands in, one
/// `#[test]` per executor for each scenario `fn a(executor: &str)`:
/// `builtin::a` and `runc::a` call `a("builtin")` and `a("runc")`.
macro_rules! on_every_executor {
    ($($name:ident),* $(,)?) => {
        mod builtin {
            $( #[test] fn $name() { super::$name("builtin") } )*
        }
        mod runc {
            $( #[test] fn $name() { super::$name("runc") } )*
        }
    };
}
pub(crate) use on_every_executor;
