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
//! container's `/etc/passwd`.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::fs::{
    AtFlags, CWD, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps, Uid,
    XattrFlags,
};

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

type Result<T, E = CopyError> = std::result::Result<T, E>;

fn io_err<'a>(
    action: &'static str,
    path: &'a [OsString],
) -> impl FnOnce(io::Error) -> CopyError + 'a {
    move |source| CopyError::Io {
        action,
        path: show(path),
        source,
    }
}

fn errno<'a>(
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
    fn of(st: &Stat) -> Self {
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
fn plain(name: &OsStr) -> bool {
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

// ---------------------------------------------------------------------------
// Sources.

/// How a walk reads its source.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOptions {
    /// Read extended attributes of files and directories.
    pub xattrs: bool,
}

/// Copies the object `fd` (opened with `O_PATH`, following its last
/// symlink or not) to `dest` in `sink`: a symlink as a link, a directory
/// with everything under it, a file with its content.
pub fn walk(
    fd: &OwnedFd,
    dest: Vec<OsString>,
    sink: &mut dyn Sink,
    opts: WalkOptions,
) -> Result<()> {
    let mut w = Walker {
        sink,
        opts,
        links: HashMap::new(),
    };
    let st = rustix::fs::fstat(fd).map_err(errno("stat", &dest))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(fd, c"", Vec::new())
                .map_err(errno("read symlink", &dest))?;
            w.sink
                .symlink(&dest, OsStr::from_bytes(target.as_bytes()), &Meta::of(&st))
        }
        FileType::Directory => {
            let dir = rustix::fs::openat(
                fd,
                c".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno("open directory", &dest))?;
            w.dir(dir, dest, 0)
        }
        FileType::RegularFile => {
            let file = reopen(
                fd.as_fd(),
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
            )
            .map_err(io_err("open", &dest))?;
            w.file(file, dest)
        }
        other => {
            w.sink.skipped(&dest, kind_name(other));
            Ok(())
        }
    }
}

/// Copies what directory `fd` (opened with `O_PATH`) holds into `prefix`
/// in `sink`, without the directory itself (`cp SRC/. DEST`).
pub fn walk_contents(
    fd: &OwnedFd,
    prefix: Vec<OsString>,
    sink: &mut dyn Sink,
    opts: WalkOptions,
) -> Result<()> {
    let dir = rustix::fs::openat(
        fd,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno("open directory", &prefix))?;
    let mut w = Walker {
        sink,
        opts,
        links: HashMap::new(),
    };
    w.children(&dir, &prefix, 0)
}

struct Walker<'a> {
    sink: &'a mut dyn Sink,
    opts: WalkOptions,
    /// Files with more than one link, by (device, inode): where the first was copied.
    links: HashMap<(u64, u64), Vec<OsString>>,
}

impl Walker<'_> {
    fn dir(&mut self, dir: OwnedFd, path: Vec<OsString>, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(CopyError::TooDeep { path: show(&path) });
        }
        let st = rustix::fs::fstat(&dir).map_err(errno("stat", &path))?;
        let mut meta = Meta::of(&st);
        if self.opts.xattrs {
            meta.xattrs = xattrs(dir.as_fd());
        }
        self.sink.dir(&path, &meta)?;
        self.children(&dir, &path, depth)?;
        self.sink.dir_done(&path, &meta)
    }

    fn children(&mut self, dir: &OwnedFd, path: &[OsString], depth: usize) -> Result<()> {
        let mut names = Vec::new();
        for entry in Dir::read_from(dir).map_err(errno("read directory", path))? {
            let entry = entry.map_err(errno("read directory", path))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if plain(name) {
                names.push(name.to_os_string());
            }
        }
        // A stable order: the same tree gives the same tar.
        names.sort();
        for name in names {
            let mut child = path.to_vec();
            child.push(name.clone());
            self.entry(dir.as_fd(), &name, child, depth + 1)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: Vec<OsString>,
        depth: usize,
    ) -> Result<()> {
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we looked.
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(errno("stat", &path)(e)),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(parent, name, Vec::new())
                    .map_err(errno("read symlink", &path))?;
                self.sink
                    .symlink(&path, OsStr::from_bytes(target.as_bytes()), &Meta::of(&st))
            }
            FileType::Directory => {
                // O_NOFOLLOW: a directory swapped for a symlink since the
                // stat is refused, never entered.
                match rustix::fs::openat(
                    parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(dir) => self.dir(dir, path, depth),
                    Err(rustix::io::Errno::NOENT) => Ok(()),
                    Err(e) => Err(errno("open directory", &path)(e)),
                }
            }
            FileType::RegularFile => {
                match rustix::fs::openat(
                    parent,
                    name,
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(file) => self.file(file, path),
                    Err(rustix::io::Errno::NOENT) => Ok(()),
                    Err(e) => Err(errno("open", &path)(e)),
                }
            }
            other => {
                self.sink.skipped(&path, kind_name(other));
                Ok(())
            }
        }
    }

    fn file(&mut self, file: OwnedFd, path: Vec<OsString>) -> Result<()> {
        let st = rustix::fs::fstat(&file).map_err(errno("stat", &path))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            // Swapped for something else since it was listed.
            self.sink.skipped(&path, kind_name(kind));
            return Ok(());
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                return self.sink.hardlink(&path, first);
            }
            self.links.insert(key, path.clone());
        }
        let mut meta = Meta::of(&st);
        if self.opts.xattrs {
            meta.xattrs = xattrs(file.as_fd());
        }
        let size = st.st_size as u64;
        let mut content = ExactReader::new(File::from(file), size);
        self.sink.file(&path, &meta, size, &mut content)
    }
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Fifo => "a fifo",
        FileType::Socket => "a socket",
        _ => "not a file, directory or symlink",
    }
}

/// The extended attributes of `fd`; best effort (none when unsupported).
fn xattrs(fd: BorrowedFd<'_>) -> Vec<(CString, Vec<u8>)> {
    let mut names = vec![0u8; rustix::fs::flistxattr_query(fd).unwrap_or(0)];
    let Ok(len) = rustix::fs::flistxattr(fd, &mut names[..]) else {
        return Vec::new();
    };
    names[..len]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| {
            let name = CString::new(n).ok()?;
            let size = rustix::fs::fgetxattr_query(fd, name.as_c_str()).ok()?;
            let mut value = vec![0u8; size];
            let len = rustix::fs::fgetxattr(fd, name.as_c_str(), &mut value[..]).ok()?;
            value.truncate(len);
            Some((name, value))
        })
        .collect()
}

/// Exactly `size` bytes of a file that may shrink or grow while it is
/// read: a tar entry's length is fixed by its header.
struct ExactReader<R> {
    inner: io::Take<R>,
    left: u64,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, size: u64) -> Self {
        Self {
            inner: inner.take(size),
            left: size,
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.left -= n as u64;
            return Ok(n);
        }
        // The file shrank: pad with zeros.
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads a tar stream into `prefix` in `sink`. Entries are relative to the
/// destination: a leading `/` or `./` is dropped, and an entry whose name
/// or hard link target holds `..` is refused, as is every entry after it.
pub fn read_tar(input: &mut dyn Read, prefix: &[OsString], sink: &mut dyn Sink) -> Result<()> {
    let mut archive = tar::Archive::new(input);
    let mut dirs: Vec<(Vec<OsString>, Meta)> = Vec::new();
    let tar_err = |source: io::Error| CopyError::Io {
        action: "read the tar stream",
        path: "-".into(),
        source,
    };
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = tar_path(&raw).ok_or_else(|| CopyError::Unsafe {
            path: name.clone(),
            reason: "its name holds \"..\"".into(),
        })?;
        let mut path = prefix.to_vec();
        path.extend(rel);
        if path.len() > MAX_DEPTH {
            return Err(CopyError::TooDeep { path: name });
        }
        let h = entry.header();
        let meta = Meta {
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mtime: (h.mtime().unwrap_or(0) as i64, 0),
            xattrs: Vec::new(),
        };
        let kind = h.entry_type();
        if path.len() == prefix.len() {
            // `./`: the destination itself.
            continue;
        }
        match kind {
            tar::EntryType::Directory => {
                sink.dir(&path, &meta)?;
                dirs.push((path, meta));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                sink.file(&path, &meta, size, &mut entry)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                sink.symlink(&path, OsStr::from_bytes(&target), &meta)?;
            }
            tar::EntryType::Link => {
                let raw_target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let target = tar_path(&raw_target).ok_or_else(|| CopyError::Unsafe {
                    path: name.clone(),
                    reason: "its hard link target holds \"..\"".into(),
                })?;
                let mut full = prefix.to_vec();
                full.extend(target);
                sink.hardlink(&path, &full)?;
            }
            tar::EntryType::Char => sink.skipped(&path, "a character device"),
            tar::EntryType::Block => sink.skipped(&path, "a block device"),
            tar::EntryType::Fifo => sink.skipped(&path, "a fifo"),
            _ => sink.skipped(&path, "an entry of an unsupported type"),
        }
    }
    // Directory times last: writing into a directory changes its own.
    for (path, meta) in dirs.iter().rev() {
        sink.dir_done(path, meta)?;
    }
    Ok(())
}

/// The components of a tar entry's name, without a leading `/` or `.`
/// parts; `None` when one is `..`.
fn tar_path(raw: &[u8]) -> Option<Vec<OsString>> {
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            p if p.contains(&0) => return None,
            p => out.push(OsString::from_vec(p.to_vec())),
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Sinks.

/// Whose files a [`DirSink`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// The source's owners.
    Keep,
    /// This user and group.
    Set(u32, u32),
}

/// Writes a copy under a directory. Every entry is created relative to
/// its parent's fd, which is opened with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS` from the sink's root: a symlink where a directory
/// is expected (planted beforehand, or by the copy itself) is refused,
/// never followed. An existing file or symlink in an entry's place is
/// replaced (as `tar -x` does); a directory is merged into.
#[derive(Debug)]
pub struct DirSink {
    root: OwnedFd,
    owners: Owners,
    /// Drop setuid and setgid bits (files leaving a container for the host).
    strip_setid: bool,
    /// Set extended attributes.
    xattrs: bool,
    skipped: Vec<String>,
}

impl DirSink {
    /// A sink writing under directory `root` (an fd, `O_PATH` is enough).
    pub fn new(root: OwnedFd, owners: Owners) -> Self {
        Self {
            root,
            owners,
            strip_setid: false,
            xattrs: false,
            skipped: Vec::new(),
        }
    }

    /// Drops setuid and setgid bits from what it writes.
    pub fn strip_setid(mut self, yes: bool) -> Self {
        self.strip_setid = yes;
        self
    }

    /// Sets extended attributes it is given (best effort).
    pub fn with_xattrs(mut self, yes: bool) -> Self {
        self.xattrs = yes;
        self
    }

    /// What was not copied, as `path (why)`.
    pub fn skipped_entries(&self) -> &[String] {
        &self.skipped
    }

    /// The directory holding `path`'s last component, and that component.
    fn parent<'p>(&self, path: &'p [OsString]) -> Result<(OwnedFd, &'p OsStr)> {
        let Some((name, dirs)) = path.split_last() else {
            return Err(CopyError::Unsafe {
                path: show(path),
                reason: "an empty path".into(),
            });
        };
        if let Some(bad) = path.iter().find(|p| !plain(p)) {
            return Err(CopyError::Unsafe {
                path: show(path),
                reason: format!("\"{}\" is not a plain name", bad.to_string_lossy()),
            });
        }
        let rel = if dirs.is_empty() {
            OsString::from(".")
        } else {
            OsString::from_vec(dirs.join(OsStr::new("/")).into_vec())
        };
        let fd = rustix::fs::openat2(
            &self.root,
            rel.as_os_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR | rustix::io::Errno::XDEV => {
                CopyError::Unsafe {
                    path: show(path),
                    reason: "a symlink or file stands where a directory is expected; refusing to write through it".into(),
                }
            }
            e => errno("open the directory of", path)(e),
        })?;
        Ok((fd, name.as_os_str()))
    }

    /// Makes room for a new entry: removes a file or symlink in its
    /// place; a directory there is a conflict.
    fn clear(&self, parent: &OwnedFd, name: &OsStr, path: &[OsString]) -> Result<()> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                Err(CopyError::Conflict {
                    path: show(path),
                    reason: "a directory is in the way".into(),
                })
            }
            Ok(_) => {
                rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(errno("remove", path))
            }
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(errno("stat", path)(e)),
        }
    }

    fn mode(&self, meta: &Meta) -> Mode {
        let mut m = meta.mode & 0o7777;
        if self.strip_setid {
            m &= !0o6000;
        }
        Mode::from_raw_mode(m)
    }

    fn owner(&self, meta: &Meta) -> (Uid, Gid) {
        let (u, g) = match self.owners {
            Owners::Keep => (meta.uid, meta.gid),
            Owners::Set(u, g) => (u, g),
        };
        (Uid::from_raw(u), Gid::from_raw(g))
    }

    /// Owner, mode, extended attributes, in that order (a chown clears
    /// setuid bits and file capabilities).
    fn finish(&self, fd: BorrowedFd<'_>, meta: &Meta, path: &[OsString]) -> Result<()> {
        let (u, g) = self.owner(meta);
        rustix::fs::fchown(fd, Some(u), Some(g)).map_err(errno("chown", path))?;
        rustix::fs::fchmod(fd, self.mode(meta)).map_err(errno("chmod", path))?;
        if self.xattrs {
            for (name, value) in &meta.xattrs {
                let _ = rustix::fs::fsetxattr(fd, name.as_c_str(), value, XattrFlags::empty());
            }
        }
        Ok(())
    }
}

fn times(meta: &Meta) -> Timestamps {
    let t = Timespec {
        tv_sec: meta.mtime.0,
        tv_nsec: meta.mtime.1 as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Sink for DirSink {
    fn dir(&mut self, path: &[OsString], meta: &Meta) -> Result<()> {
        let (parent, name) = self.parent(path)?;
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                let st = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(errno("stat", path))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    self.clear(&parent, name, path)?;
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                        .map_err(errno("create directory", path))?;
                }
            }
            Err(e) => return Err(errno("create directory", path)(e)),
        }
        let dir = rustix::fs::openat(
            &parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno("open directory", path))?;
        self.finish(dir.as_fd(), meta, path)
    }

    fn dir_done(&mut self, path: &[OsString], meta: &Meta) -> Result<()> {
        let (parent, name) = self.parent(path)?;
        rustix::fs::utimensat(&parent, name, &times(meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno("set times of", path))
    }

    fn file(
        &mut self,
        path: &[OsString],
        meta: &Meta,
        _size: u64,
        content: &mut dyn Read,
    ) -> Result<()> {
        let (parent, name) = self.parent(path)?;
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::NOCTTY
            | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&parent, name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => {
                self.clear(&parent, name, path)?;
                rustix::fs::openat(&parent, name, flags, Mode::from_raw_mode(0o600))
                    .map_err(errno("create", path))?
            }
            Err(e) => return Err(errno("create", path)(e)),
        };
        let mut file = File::from(fd);
        io::copy(content, &mut file).map_err(io_err("write", path))?;
        self.finish(file.as_fd(), meta, path)?;
        rustix::fs::futimens(&file, &times(meta)).map_err(errno("set times of", path))
    }

    fn symlink(&mut self, path: &[OsString], target: &OsStr, meta: &Meta) -> Result<()> {
        let (parent, name) = self.parent(path)?;
        match rustix::fs::symlinkat(target, &parent, name) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                self.clear(&parent, name, path)?;
                rustix::fs::symlinkat(target, &parent, name)
                    .map_err(errno("create symlink", path))?;
            }
            Err(e) => return Err(errno("create symlink", path)(e)),
        }
        let (u, g) = self.owner(meta);
        rustix::fs::chownat(&parent, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno("chown", path))?;
        rustix::fs::utimensat(&parent, name, &times(meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno("set times of", path))
    }

    fn hardlink(&mut self, path: &[OsString], target: &[OsString]) -> Result<()> {
        let (tparent, tname) = self.parent(target)?;
        let (parent, name) = self.parent(path)?;
        match rustix::fs::linkat(&tparent, tname, &parent, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => {
                self.clear(&parent, name, path)?;
                rustix::fs::linkat(&tparent, tname, &parent, name, AtFlags::empty())
                    .map_err(errno("create hard link", path))
            }
            Err(e) => Err(errno("create hard link", path)(e)),
        }
    }

    fn skipped(&mut self, path: &[OsString], what: &'static str) {
        self.skipped.push(format!("{} ({what})", show(path)));
    }
}

/// Writes a copy as a tar stream, with the source's owners and modes.
pub struct TarSink<W: Write> {
    builder: tar::Builder<W>,
    skipped: Vec<String>,
}

impl<W: Write> std::fmt::Debug for TarSink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarSink")
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl<W: Write> TarSink<W> {
    /// A tar stream into `out`.
    pub fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Complete);
        Self {
            builder,
            skipped: Vec::new(),
        }
    }

    /// Writes the end of the archive and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }

    /// What was not copied, as `path (why)`.
    pub fn skipped_entries(&self) -> &[String] {
        &self.skipped
    }

    fn header(kind: tar::EntryType, meta: &Meta, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode);
        h.set_uid(u64::from(meta.uid));
        h.set_gid(u64::from(meta.gid));
        h.set_mtime(meta.mtime.0.max(0) as u64);
        h.set_size(size);
        h
    }
}

fn tar_name(path: &[OsString], dir: bool) -> OsString {
    let mut name = OsString::from_vec(path.join(OsStr::new("/")).into_vec());
    if dir {
        name.push("/");
    }
    name
}

impl<W: Write> Sink for TarSink<W> {
    fn dir(&mut self, path: &[OsString], meta: &Meta) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, meta, 0);
        self.builder
            .append_data(&mut h, tar_name(path, true), io::empty())
            .map_err(io_err("write the tar entry of", path))
    }

    fn dir_done(&mut self, _path: &[OsString], _meta: &Meta) -> Result<()> {
        Ok(())
    }

    fn file(
        &mut self,
        path: &[OsString],
        meta: &Meta,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, meta, size);
        self.builder
            .append_data(&mut h, tar_name(path, false), content)
            .map_err(io_err("write the tar entry of", path))
    }

    fn symlink(&mut self, path: &[OsString], target: &OsStr, meta: &Meta) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, meta, 0);
        self.builder
            .append_link(&mut h, tar_name(path, false), target)
            .map_err(io_err("write the tar entry of", path))
    }

    fn hardlink(&mut self, path: &[OsString], target: &[OsString]) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Link, &Meta::default(), 0);
        self.builder
            .append_link(&mut h, tar_name(path, false), tar_name(target, false))
            .map_err(io_err("write the tar entry of", path))
    }

    fn skipped(&mut self, path: &[OsString], what: &'static str) {
        self.skipped.push(format!("{} ({what})", show(path)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn os(parts: &[&str]) -> Vec<OsString> {
        parts.iter().map(OsString::from).collect()
    }

    #[test]
    fn copies_a_tree_with_owners_modes_links_and_times() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path().join("data");
        std::fs::create_dir_all(s.join("sub")).unwrap();
        std::fs::write(s.join("sub/f"), "hello").unwrap();
        std::fs::hard_link(s.join("sub/f"), s.join("g")).unwrap();
        symlink("/etc/passwd", s.join("abs")).unwrap();
        std::os::unix::fs::chown(s.join("sub/f"), Some(33), Some(44)).unwrap();
        std::fs::set_permissions(s.join("sub/f"), std::fs::Permissions::from_mode(0o4750)).unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o751)).unwrap();
        let top =
            rustix::fs::openat(CWD, &s, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty()).unwrap();
        let mut sink = DirSink::new(open_dir(dst.path()).unwrap(), Owners::Keep);
        walk(&top, os(&["out"]), &mut sink, WalkOptions::default()).unwrap();
        let out = dst.path().join("out");
        assert_eq!(std::fs::read_to_string(out.join("sub/f")).unwrap(), "hello");
        let m = std::fs::metadata(out.join("sub/f")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (33, 44, 0o4750));
        assert_eq!(m.nlink(), 2, "the hard link is kept");
        assert_eq!(std::fs::metadata(out.join("g")).unwrap().ino(), m.ino());
        assert_eq!(
            std::fs::read_link(out.join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(
            std::fs::metadata(&out).unwrap().mtime(),
            std::fs::metadata(&s).unwrap().mtime()
        );

        // Set owners, setuid bits dropped.
        let dst2 = tempfile::tempdir().unwrap();
        let mut sink =
            DirSink::new(open_dir(dst2.path()).unwrap(), Owners::Set(7, 8)).strip_setid(true);
        walk(&top, os(&["out"]), &mut sink, WalkOptions::default()).unwrap();
        let m = std::fs::metadata(dst2.path().join("out/sub/f")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (7, 8, 0o750));
    }

    #[test]
    fn never_writes_through_a_planted_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        symlink(outside.path(), dst.path().join("evil")).unwrap();
        let mut sink = DirSink::new(open_dir(dst.path()).unwrap(), Owners::Keep);
        let meta = Meta {
            mode: 0o644,
            ..Meta::default()
        };
        // Through it: refused.
        let err = sink
            .file(&os(&["evil", "x"]), &meta, 1, &mut &b"x"[..])
            .unwrap_err();
        assert!(matches!(err, CopyError::Unsafe { .. }), "{err}");
        // In its place: the link is replaced, its target untouched.
        sink.file(&os(&["evil"]), &meta, 1, &mut &b"x"[..]).unwrap();
        assert!(dst.path().join("evil").is_file());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // A dir over a file replaces it; a file over a dir is a conflict.
        sink.dir(&os(&["evil"]), &meta).unwrap();
        assert!(dst.path().join("evil").is_dir());
        let err = sink
            .file(&os(&["evil"]), &meta, 0, &mut io::empty())
            .unwrap_err();
        assert!(matches!(err, CopyError::Conflict { .. }), "{err}");
        // Names are plain.
        for bad in [&["..", "x"][..], &["a/b"], &["."]] {
            assert!(sink.file(&os(bad), &meta, 0, &mut io::empty()).is_err());
        }
        assert!(!dst.path().parent().unwrap().join("x").exists());
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    // Raw names: the builder would refuse `..`.
                    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_link_name(data).unwrap();
                    h.set_cksum();
                    b.append(&h, io::empty()).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_cksum();
                    b.append(&h, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn hostile_tar_streams_are_refused() {
        use tar::EntryType::*;
        let cases: &[(&str, Vec<(&str, tar::EntryType, &str)>)] = &[
            ("dot-dot name", vec![("../escape", Regular, "x")]),
            ("dot-dot inside", vec![("a/../../escape", Regular, "x")]),
            (
                "symlink then through it",
                vec![("link", Symlink, "/"), ("link/escape", Regular, "x")],
            ),
            (
                "relative symlink out",
                vec![("up", Symlink, "../.."), ("up/escape", Regular, "x")],
            ),
            ("hard link out", vec![("h", Link, "../escape")]),
        ];
        for (what, entries) in cases {
            let base = tempfile::tempdir().unwrap();
            let dst = base.path().join("dst");
            std::fs::create_dir(&dst).unwrap();
            std::fs::write(base.path().join("escape"), "original").unwrap();
            let mut sink = DirSink::new(open_dir(&dst).unwrap(), Owners::Set(0, 0));
            let data = tar_of(entries);
            let r = read_tar(&mut &data[..], &[], &mut sink);
            assert!(r.is_err(), "{what}: accepted");
            assert_eq!(
                std::fs::read_to_string(base.path().join("escape")).unwrap(),
                "original",
                "{what}"
            );
            assert!(!Path::new("/escape").exists(), "{what}");
        }
        // A good one goes in, with a leading "./" and "/" dropped.
        let dst = tempfile::tempdir().unwrap();
        let data = tar_of(&[
            ("./", Directory, ""),
            ("./a/", Directory, ""),
            ("/a/f", Regular, "hi"),
            ("a/l", Symlink, "/etc"),
            ("a/h", Link, "a/f"),
        ]);
        let mut sink = DirSink::new(open_dir(dst.path()).unwrap(), Owners::Set(0, 0));
        read_tar(&mut &data[..], &[], &mut sink).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("a/h")).unwrap(),
            "hi"
        );
        assert_eq!(
            std::fs::read_link(dst.path().join("a/l")).unwrap(),
            Path::new("/etc")
        );
    }

    #[test]
    fn tar_round_trip_and_in_root_reads() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/f"), "content").unwrap();
        symlink("/", src.path().join("d/root")).unwrap();
        let top = rustix::fs::openat(
            CWD,
            &src.path().join("d"),
            OFlags::PATH | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .unwrap();
        let mut tar = TarSink::new(Vec::new());
        walk(&top, os(&["d"]), &mut tar, WalkOptions::default()).unwrap();
        let bytes = tar.finish().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let mut sink = DirSink::new(open_dir(dst.path()).unwrap(), Owners::Keep);
        read_tar(&mut &bytes[..], &[], &mut sink).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("d/f")).unwrap(),
            "content"
        );

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
