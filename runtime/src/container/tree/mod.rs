//! Copying file trees through directory file descriptors, so that nothing a
//! container controls — a symlink, a `..`, a directory swapped for a link
//! while the copy runs — can make moor read or write outside the trees it
//! means to.
//!
//! A copy is a walk of a source tree — a directory opened by fd
//! ([`walk`], [`walk_contents`]) or a tar stream ([`read_tar`]) — into a
//! [`Sink`]: a directory ([`DirSink`]) or a tar stream ([`TarSink`]).
//! Inside a copy, a path is a list of plain names (never `..`, `.` or a
//! `/`). Symlinks are copied as links and never followed; a directory is
//! only ever entered by `openat` of a single name with `O_NOFOLLOW`, or by
//! `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; device nodes,
//! fifos and sockets are skipped (and reported). Paths *in a container*
//! are resolved with `openat2(RESOLVE_IN_ROOT)` ([`open_in_root`]), which
//! clamps every symlink and `..` to the container's root, as the kernel
//! would for a process inside it.
//!
//! Used by `moor cp`, to fill named volumes from the image, and to read a
//! container's `/etc/passwd`. Sources are in `walk.rs` and `stream.rs`
//! (tar), sinks in `dir.rs` and `stream.rs`.

mod dir;
mod stream;
mod walk;

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{CWD, FileType, Mode, OFlags, ResolveFlags, Stat};

pub use dir::{DirSink, Owners};
pub use stream::{TarSink, read_tar};
pub use walk::{WalkOptions, walk, walk_contents};

/// How deep a copied tree may nest.
pub const MAX_DEPTH: usize = 256;

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A system call on an entry failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The entry (in the copy, or as given).
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The input asks for something that would leave the destination.
    #[error("refusing {path}: {reason}")]
    Unsafe {
        /// The entry.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The destination holds something the copy cannot replace.
    #[error("cannot copy to {path}: {reason}")]
    Conflict {
        /// The entry.
        path: String,
        /// Why.
        reason: String,
    },
    /// The tree nests deeper than [`MAX_DEPTH`].
    #[error("{path} nests more than {MAX_DEPTH} directories deep")]
    TooDeep {
        /// Where the limit was reached.
        path: String,
    },
}

pub(crate) type Result<T, E = CopyError> = std::result::Result<T, E>;

pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a [OsString],
) -> impl FnOnce(io::Error) -> CopyError + 'a {
    move |source| CopyError::Io {
        action,
        path: show(path),
        source,
    }
}

pub(super) fn errno<'a>(
    action: &'static str,
    path: &'a [OsString],
) -> impl FnOnce(rustix::io::Errno) -> CopyError + 'a {
    move |e| CopyError::Io {
        action,
        path: show(path),
        source: e.into(),
    }
}

/// A copy path for messages: `a/b/c`.
pub fn show(path: &[OsString]) -> String {
    let parts: Vec<_> = path.iter().map(|p| p.to_string_lossy()).collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// What an entry carries besides its content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// Permission bits, with setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Extended attributes (files and directories only).
    pub xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    pub(super) fn of(st: &Stat) -> Self {
        Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            xattrs: Vec::new(),
        }
    }
}

/// Where a copy goes. Paths are relative to the sink's root and hold plain
/// names only; a directory comes before what it holds, and `dir_done`
/// after it.
pub trait Sink {
    /// A directory.
    fn dir(&mut self, path: &[OsString], meta: &Meta) -> Result<()>;
    /// Everything in directory `path` has been copied.
    fn dir_done(&mut self, path: &[OsString], meta: &Meta) -> Result<()>;
    /// A regular file of `size` bytes read from `content`.
    fn file(
        &mut self,
        path: &[OsString],
        meta: &Meta,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<()>;
    /// A symbolic link (its target is data: never followed).
    fn symlink(&mut self, path: &[OsString], target: &OsStr, meta: &Meta) -> Result<()>;
    /// A second name for the file already copied to `target`.
    fn hardlink(&mut self, path: &[OsString], target: &[OsString]) -> Result<()>;
    /// An entry that is not copied (device node, fifo, socket).
    fn skipped(&mut self, path: &[OsString], what: &'static str);
}

/// Checks that `name` is one plain path component.
pub(super) fn plain(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

// ---------------------------------------------------------------------------
// Opening things safely.

/// Opens `path` as if `root` were `/`: every symlink and `..` stays inside
/// `root` (`openat2` with `RESOLVE_IN_ROOT`), and magic links
/// (`/proc/self/root`…) are refused. With `O_NOFOLLOW` the last component
/// is opened as is (a symlink stays one, with `O_PATH`).
pub fn open_in_root(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    Ok(rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Opens directory `path` (as the caller's own path: symlinks followed) for
/// use as a root or a directory fd.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        CWD,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Reads the regular file at `path` inside `root` (see [`open_in_root`]),
/// at most `max` bytes; `None` when it is missing, not a regular file (a
/// fifo would block) or unreadable.
pub fn read_in_root(root: &Path, path: &str, max: u64) -> Option<Vec<u8>> {
    let root = open_dir(root).ok()?;
    let fd = open_in_root(
        root.as_fd(),
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
    )
    .ok()?;
    if FileType::from_raw_mode(rustix::fs::fstat(&fd).ok()?.st_mode) != FileType::RegularFile {
        return None;
    }
    let mut out = Vec::new();
    File::from(fd).take(max).read_to_end(&mut out).ok()?;
    Some(out)
}

/// Opens the object `fd` (an `O_PATH` fd) again, for reading.
pub fn reopen(fd: BorrowedFd<'_>, flags: OFlags) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::openat(
        CWD,
        path.as_str(),
        flags | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

#[cfg(test)]
pub(super) fn os(parts: &[&str]) -> Vec<OsString> {
    parts.iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn in_root_reads_stay_in_the_root() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        symlink("/", src.path().join("d/root")).unwrap();
        // In a root, "/" and ".." stay inside it.
        let root = src.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "mine").unwrap();
        symlink("/", root.join("etc/evil")).unwrap();
        for p in [
            "/etc/passwd",
            "../../etc/passwd",
            "/etc/evil/etc/passwd",
            "/d/root/etc/passwd",
        ] {
            assert_eq!(
                read_in_root(root, p, 100).as_deref(),
                Some(&b"mine"[..]),
                "{p}"
            );
        }
        // A fifo is not read (it would block).
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert_eq!(read_in_root(root, "/fifo", 100), None);
        assert_eq!(
            read_in_root(root, "/etc/passwd", 2).as_deref(),
            Some(&b"mi"[..])
        );
    }
}
