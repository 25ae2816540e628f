//! Helpers shared by the test modules.

#![allow(dead_code)]

pub mod debimage;
pub mod instance;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Runs `moor ARGS...` with a private state dir and returns its output.
pub fn moor(args: &[&str]) -> Output {
    Command::new(moor_bin())
        .args(args)
        .env_remove("MOOR_STATE_DIR")
        .output()
        .expect("run moor")
}

/// Runs `moor ARGS...` in `dir`, so that relative paths in its arguments and
/// its diagnostics are relative to `dir`.
pub fn moor_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(moor_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("MOOR_STATE_DIR")
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

/// Removes an (empty) cgroup parent a test made, under every v1 controller
/// and the v2 tree; cgroups of containers are removed by the engine itself.
pub fn remove_cgroup_parent(parent: &str) {
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(parent));
    if let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") {
        for root in roots.filter_map(|e| e.ok()) {
            let _ = std::fs::remove_dir(root.path().join(parent));
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `GET path` on 127.0.0.1:port over HTTP/1.0: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// Polls `f` until it is true; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "test timeout expired waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
