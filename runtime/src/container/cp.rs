//! `cp`: copies between a running container and the host, with
//! `docker cp`'s rules:
//!
//! - The container's side is its own view of its files, mounts included:
//!   `/proc/PID/root` of its PID 1, in which every path is resolved with
//!   `RESOLVE_IN_ROOT` — a symlink (`/etc/evil -> /`) or a `..` in the
//!   container ends at the container's root, never the host's.
//! - Everything below the source and the destination is walked and written
//!   through directory fds ([`super::tree`]): symlinks are copied as links,
//!   never followed; a symlink where a directory is to be written is refused.
//! - `SRC` a file: copied to `DEST` when that is a file or does not exist
//!   (its parent must), into `DEST` when that is a directory. `SRC` a
//!   directory: copied as `DEST` when that does not exist, into `DEST`
//!   when it is a directory; `SRC/.` copies what it holds. A `DEST` ending
//!   in `/` must be a directory.
//! - Owners: what goes into a container belongs to its root, what comes out
//!   to the caller, unless `archive` keeps the source's; setuid and setgid
//!   bits are dropped from what comes out unless `archive`.
//! - `-` is a tar stream (stdin into a container directory, stdout out of
//!   a container); a tar entry with `..` is refused.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{CWD, FileType, Mode, OFlags};

use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::observe::Status;
use super::state::process_alive;
use super::tree::{self, DirSink, Owners, Sink, TarSink, WalkOptions};

/// How `cp` copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Keep the source's owners (and setuid bits), as `cp -a`.
    pub archive: bool,
    /// Follow a symlink that is the source itself.
    pub follow_link: bool,
}

/// The host's side of a copy out of a container.
pub enum CopyOut<'a> {
    /// A path on the host.
    Path(&'a Path),
    /// A tar stream.
    Tar(&'a mut dyn Write),
}

/// The host's side of a copy into a container.
pub enum CopyIn<'a> {
    /// A path on the host.
    Path(&'a Path),
    /// A tar stream.
    Tar(&'a mut dyn Read),
}

impl std::fmt::Debug for CopyOut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyOut::Path(p) => f.debug_tuple("Path").field(p).finish(),
            CopyOut::Tar(_) => f.write_str("Tar"),
        }
    }
}

impl std::fmt::Debug for CopyIn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyIn::Path(p) => f.debug_tuple("Path").field(p).finish(),
            CopyIn::Tar(_) => f.write_str("Tar"),
        }
    }
}

/// Where paths of one side of a copy are resolved: in a container's root,
/// or on the host as the caller means them.
#[derive(Clone, Copy)]
struct Side<'a> {
    root: Option<BorrowedFd<'a>>,
    /// For messages.
    what: &'a str,
}

impl Side<'_> {
    fn open(&self, path: &OsStr, flags: OFlags) -> std::io::Result<OwnedFd> {
        match self.root {
            Some(root) => tree::open_in_root(root, &path.to_string_lossy(), flags),
            None => {
                let p = if path.is_empty() {
                    OsStr::new(".")
                } else {
                    path
                };
                Ok(rustix::fs::openat(
                    CWD,
                    p,
                    flags | OFlags::CLOEXEC,
                    Mode::empty(),
                )?)
            }
        }
    }

    fn err(&self, path: &OsStr, message: impl std::fmt::Display) -> ContainerError {
        ContainerError::Invalid(format!(
            "{} {}: {message}",
            self.what,
            Path::new(path).display()
        ))
    }
}

/// The source of a copy, opened.
struct Source {
    fd: OwnedFd,
    is_dir: bool,
    /// Its last path component (none for `/`).
    name: Option<OsString>,
    /// `SRC/.`: what the directory holds, not itself.
    contents_only: bool,
}

fn open_source(side: Side<'_>, path: &OsStr, follow: bool) -> Result<Source> {
    let bytes = path.as_bytes();
    let contents_only = bytes == b"." || bytes.ends_with(b"/.");
    let mut flags = OFlags::PATH;
    if !follow && !contents_only {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = side
        .open(path, flags)
        .map_err(|e| side.err(path, format!("cannot open: {e}")))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| side.err(path, e))?;
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    if bytes.ends_with(b"/") && !is_dir {
        return Err(side.err(path, "not a directory"));
    }
    let name = Path::new(path)
        .file_name()
        .filter(|n| *n != "." && *n != "..")
        .map(OsStr::to_os_string);
    Ok(Source {
        fd,
        is_dir,
        name,
        contents_only: contents_only || (is_dir && name_is_root(path)),
    })
}

/// True for `/`, `//`, …: a source with no name of its own.
fn name_is_root(path: &OsStr) -> bool {
    !path.is_empty() && path.as_bytes().iter().all(|b| *b == b'/')
}

/// Where a copy goes: a directory and the name to give the source in it
/// (`None`: the source's contents go into the directory).
struct Target {
    dir: OwnedFd,
    name: Option<OsString>,
}

fn target(side: Side<'_>, dest: &OsStr, src: &Source) -> Result<Target> {
    let bytes = dest.as_bytes();
    match side.open(dest, OFlags::PATH) {
        Ok(fd) => {
            let st = rustix::fs::fstat(&fd).map_err(|e| side.err(dest, e))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let name = if src.contents_only {
                    None
                } else {
                    src.name.clone()
                };
                return Ok(Target { dir: fd, name });
            }
            if src.is_dir {
                return Err(side.err(dest, "cannot copy a directory onto a file"));
            }
            if bytes.ends_with(b"/") {
                return Err(side.err(dest, "not a directory"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if bytes.ends_with(b"/") {
                return Err(side.err(dest, "no such directory"));
            }
        }
        Err(e) => return Err(side.err(dest, format!("cannot open: {e}"))),
    }
    let p = Path::new(dest);
    let name = p
        .file_name()
        .filter(|n| *n != "." && *n != "..")
        .ok_or_else(|| side.err(dest, "not a name to create"))?;
    let parent = p.parent().map_or(OsStr::new(""), Path::as_os_str);
    let parent = if parent.is_empty() && side.root.is_some() {
        OsStr::new("/")
    } else {
        parent
    };
    let dir = side
        .open(parent, OFlags::PATH | OFlags::DIRECTORY)
        .map_err(|e| side.err(parent, format!("no such directory ({e})")))?;
    Ok(Target {
        dir,
        name: Some(name.to_os_string()),
    })
}

/// Copies `src` to `target` in `sink` (whose root is `target.dir`, or a
/// tar stream).
fn copy(src: &Source, name: Option<OsString>, sink: &mut dyn Sink) -> Result<()> {
    match name {
        Some(n) if !(src.contents_only && src.is_dir) => {
            tree::walk(&src.fd, vec![n], sink, WalkOptions::default())?
        }
        Some(n) => {
            // `SRC/.` to a new name: the directory is made, then filled.
            let st = rustix::fs::fstat(&src.fd)
                .map_err(|e| ContainerError::io("stat", n.clone())(e.into()))?;
            let meta = tree::Meta {
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
                mtime: (st.st_mtime, st.st_mtime_nsec as i64),
                xattrs: Vec::new(),
            };
            sink.dir(std::slice::from_ref(&n), &meta)?;
            tree::walk_contents(&src.fd, vec![n.clone()], sink, WalkOptions::default())?;
            sink.dir_done(&[n], &meta)?;
        }
        None if src.is_dir => {
            tree::walk_contents(&src.fd, Vec::new(), sink, WalkOptions::default())?
        }
        None => {
            return Err(ContainerError::Invalid(
                "a file has no contents to copy into a directory".into(),
            ));
        }
    }
    Ok(())
}

/// Copies `src` to `dest` on side `to`; returns the entries not copied.
fn copy_to(
    src: &Source,
    to: Side<'_>,
    dest: &OsStr,
    owners: Owners,
    strip_setid: bool,
) -> Result<Vec<String>> {
    let t = target(to, dest, src)?;
    let mut sink = DirSink::new(t.dir, owners).strip_setid(strip_setid);
    copy(src, t.name, &mut sink)?;
    Ok(sink.skipped_entries().to_vec())
}

impl Engine {
    /// The root of running (or paused) container `name` as its processes
    /// see it, mounts included.
    fn container_root(&self, name: &str) -> Result<OwnedFd> {
        let info = self.inspect(name)?;
        let (Status::Running { pid, .. }, Some(shim)) = (&info.status, &info.shim) else {
            return Err(ContainerError::NotRunning(name.to_string()));
        };
        let path = format!("/proc/{pid}/root");
        let fd = rustix::fs::openat(
            CWD,
            path.as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ContainerError::io("open", &path)(e.into()))?;
        // The PID is still the container's (not reused since it was read).
        if !process_alive(*pid, shim.pid_start_ticks) {
            return Err(ContainerError::NotRunning(name.to_string()));
        }
        Ok(fd)
    }

    /// Copies `src` in container `name` to the host; returns the entries
    /// not copied (device nodes, fifos, sockets), as `path (why)`.
    pub fn copy_from(
        &self,
        name: &str,
        src: &str,
        dest: CopyOut<'_>,
        opts: CopyOptions,
    ) -> Result<Vec<String>> {
        let root = self.container_root(name)?;
        let what = format!("in container {name}:");
        let side = Side {
            root: Some(root.as_fd()),
            what: &what,
        };
        let source = open_source(side, OsStr::new(src), opts.follow_link)?;
        match dest {
            CopyOut::Tar(out) => {
                let mut sink = TarSink::new(out);
                let name = if source.contents_only {
                    None
                } else {
                    source.name.clone()
                };
                copy(&source, name, &mut sink)?;
                let skipped = sink.skipped_entries().to_vec();
                sink.finish()
                    .map_err(|e| ContainerError::io("write the tar stream", "-")(e))?;
                Ok(skipped)
            }
            CopyOut::Path(path) => {
                let host = Side {
                    root: None,
                    what: "on the host:",
                };
                let owners = if opts.archive {
                    Owners::Keep
                } else {
                    Owners::Set(
                        rustix::process::getuid().as_raw(),
                        rustix::process::getgid().as_raw(),
                    )
                };
                copy_to(&source, host, path.as_os_str(), owners, !opts.archive)
            }
        }
    }

    /// Copies `src` on the host into container `name` at `dest`; returns
    /// the entries not copied, as `path (why)`.
    pub fn copy_into(
        &self,
        name: &str,
        src: CopyIn<'_>,
        dest: &str,
        opts: CopyOptions,
    ) -> Result<Vec<String>> {
        let root = self.container_root(name)?;
        let what = format!("in container {name}:");
        let side = Side {
            root: Some(root.as_fd()),
            what: &what,
        };
        let owners = if opts.archive {
            Owners::Keep
        } else {
            Owners::Set(0, 0)
        };
        match src {
            CopyIn::Tar(input) => {
                let dir = side
                    .open(OsStr::new(dest), OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(|e| {
                        side.err(
                            OsStr::new(dest),
                            format!("a tar stream goes into a directory ({e})"),
                        )
                    })?;
                let mut sink = DirSink::new(dir, owners);
                tree::read_tar(input, &[], &mut sink)?;
                Ok(sink.skipped_entries().to_vec())
            }
            CopyIn::Path(path) => {
                let host = Side {
                    root: None,
                    what: "on the host:",
                };
                let source = open_source(host, path.as_os_str(), opts.follow_link)?;
                copy_to(&source, side, OsStr::new(dest), owners, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A "container" root (resolved in root) and a host side.
    struct Sides {
        root: tempfile::TempDir,
        host: tempfile::TempDir,
        fd: OwnedFd,
    }

    impl Sides {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            let host = tempfile::tempdir().unwrap();
            fs::create_dir_all(root.path().join("etc")).unwrap();
            fs::write(root.path().join("etc/hostname"), "box\n").unwrap();
            fs::create_dir_all(root.path().join("data/sub")).unwrap();
            fs::write(root.path().join("data/sub/f"), "f").unwrap();
            let fd = tree::open_dir(root.path()).unwrap();
            Sides { root, host, fd }
        }

        fn ctr(&self) -> Side<'_> {
            Side {
                root: Some(self.fd.as_fd()),
                what: "in the container:",
            }
        }

        fn host_path(&self, p: &str) -> OsString {
            self.host.path().join(p).into_os_string()
        }

        /// Container to host.
        fn out(&self, src: &str, dest: &str) -> Result<Vec<String>> {
            let s = open_source(self.ctr(), OsStr::new(src), false)?;
            let host = Side {
                root: None,
                what: "on the host:",
            };
            copy_to(&s, host, &self.host_path(dest), Owners::Keep, true)
        }

        /// Host to container.
        fn put(&self, src: &str, dest: &str) -> Result<Vec<String>> {
            let host = Side {
                root: None,
                what: "on the host:",
            };
            let s = open_source(host, &self.host_path(src), false)?;
            copy_to(&s, self.ctr(), OsStr::new(dest), Owners::Set(0, 0), false)
        }
    }

    #[test]
    fn docker_cp_rules() {
        let x = Sides::new();
        let h = x.host.path();
        // A file to a new name, into a directory, over a file.
        x.out("/etc/hostname", "name").unwrap();
        assert_eq!(fs::read_to_string(h.join("name")).unwrap(), "box\n");
        fs::create_dir(h.join("dir")).unwrap();
        x.out("/etc/hostname", "dir").unwrap();
        assert!(h.join("dir/hostname").is_file());
        x.out("/etc/hostname", "dir/hostname").unwrap();
        // A directory to a new name, into a directory, its contents.
        x.out("/data", "copy").unwrap();
        assert!(h.join("copy/sub/f").is_file());
        x.out("/data", "dir").unwrap();
        assert!(h.join("dir/data/sub/f").is_file());
        x.out("/data/.", "dir").unwrap();
        assert!(h.join("dir/sub/f").is_file());
        x.out("/data/.", "fresh").unwrap();
        assert!(h.join("fresh/sub/f").is_file());
        // Errors: a directory onto a file, a missing directory, a missing source.
        assert!(x.out("/data", "name").is_err());
        assert!(x.out("/etc/hostname", "nodir/").is_err());
        assert!(x.out("/etc/hostname", "no/such/dir/f").is_err());
        assert!(x.out("/nothing", "x").is_err());
        assert!(x.out("/etc/hostname/", "x").is_err());
        // Into the container.
        fs::write(h.join("in"), "in").unwrap();
        x.put("in", "/etc/").unwrap();
        assert!(x.root.path().join("etc/in").is_file());
        x.put("copy", "/").unwrap();
        assert!(x.root.path().join("copy/sub/f").is_file());
    }

    #[test]
    fn container_symlinks_stay_in_the_container() {
        let x = Sides::new();
        let r = x.root.path();
        let h = x.host.path();
        symlink("/", r.join("etc/evil")).unwrap();
        symlink("/etc", r.join("etc/up")).unwrap();
        symlink("../../../../../../../../tmp", r.join("data/rel")).unwrap();
        fs::write(h.join("payload"), "payload").unwrap();
        // Writing through them lands in the container's root.
        x.put("payload", "/etc/evil/payload-1").unwrap();
        assert!(r.join("payload-1").is_file());
        x.put("payload", "/etc/up/payload-2").unwrap();
        assert!(r.join("etc/payload-2").is_file());
        // No /tmp in the container: refused, not the host's /tmp.
        assert!(x.put("payload", "/data/rel/payload-3").is_err());
        fs::create_dir(r.join("tmp")).unwrap();
        x.put("payload", "/data/rel/payload-3").unwrap();
        assert!(r.join("tmp/payload-3").is_file());
        assert!(!Path::new("/payload-1").exists());
        assert!(!Path::new("/etc/payload-2").exists());
        assert!(!Path::new("/tmp/payload-3").exists());
        // Reading through them reads the container's files.
        x.out("/etc/evil/etc/hostname", "read").unwrap();
        assert_eq!(fs::read_to_string(h.join("read")).unwrap(), "box\n");
        assert!(x.out("/etc/evil/etc/shadow", "shadow").is_err());
        // A symlink copied out stays a link, never followed on the host.
        x.out("/etc/evil", "evil").unwrap();
        assert_eq!(fs::read_link(h.join("evil")).unwrap(), Path::new("/"));
        x.out("/etc", "etc-copy").unwrap();
        assert!(h.join("etc-copy/evil").is_symlink());
        // A host directory whose entry meets a symlink in the container
        // replaces the link; nothing is written through it.
        fs::create_dir_all(h.join("data/up")).unwrap();
        fs::write(h.join("data/up/passwd"), "x").unwrap();
        symlink("/etc", r.join("data/up")).unwrap();
        x.put("data", "/").unwrap();
        assert!(r.join("data/up").is_dir() && !r.join("data/up").is_symlink());
        assert!(r.join("data/up/passwd").is_file());
    }
}
