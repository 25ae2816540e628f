//! The layer extractor: applies one layer tar to an empty directory in
//! overlayfs form, and cannot write outside that directory.
//!
//! Safety does not rest on string checks alone. Every entry's parent
//! directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! relative to the root, so a symlink in the path that leads out (absolute,
//! or climbing with `..`) fails in the kernel; the entry itself is then made
//! with `*at` calls on that directory that never follow a final symlink
//! (`O_CREAT | O_EXCL | O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`).
//!
//! Policy, per entry:
//! - a path with a `..` component, or an absolute path, is an error (Docker
//!   quietly rewrites them; a layer that carries them was not made by a build
//!   and is refused);
//! - a path whose parent goes through a symlink out of the root is an error;
//! - a hard link must name an entry of the same layer, by a path obeying the
//!   same rules, and not a directory;
//! - a directory entry over a symlink is an error (it would chmod and chown
//!   the symlink's target);
//! - character and block devices are skipped and reported (images have no
//!   business carrying them; containers get a fresh `/dev`);
//! - whiteouts become overlayfs whiteouts (`.wh.name` → a 0/0 character
//!   device `name`; `.wh..wh..opq` → `trusted.overlay.opaque=y` on the
//!   directory), and `trusted.overlay.*` attributes from the layer itself are
//!   dropped so a layer cannot forge them;
//! - a component over 255 bytes or a path over 4096 bytes is an error;
//! - the uncompressed stream is capped ([`UnpackLimits::max_bytes`]), which
//!   catches decompression bombs and PAX headers that declare absurd sizes.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use moor_store::Digest;
use rustix::fs::{
    AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

/// Longest file name component Linux accepts.
const MAX_NAME: usize = 255;
/// Longest path Linux accepts.
const MAX_PATH: usize = 4096;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Caps on what one layer may expand to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Bytes of uncompressed tar stream.
    pub max_bytes: u64,
    /// Number of entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 30,
            max_entries: 4_000_000,
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone)]
pub struct UnpackReport {
    /// The digest of the uncompressed tar (the layer's diff ID).
    pub diff_id: Digest,
    /// Bytes of regular-file content written.
    pub size: u64,
    /// Entries left out, with why.
    pub skipped: Vec<Skipped>,
}

/// An entry the extractor left out on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry's path in the layer.
    pub path: String,
    /// Why it was left out.
    pub reason: &'static str,
}

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The archive could not be read (truncated, corrupt, not a tar).
    #[error("read layer archive")]
    Read(#[source] io::Error),
    /// A path has a `..` component.
    #[error("layer entry \"{entry}\" has a `..` path component")]
    DotDot {
        /// The entry's path.
        entry: String,
    },
    /// A path is absolute.
    #[error("layer entry \"{entry}\" has an absolute path")]
    Absolute {
        /// The entry's path.
        entry: String,
    },
    /// A name or path is longer than Linux allows.
    #[error("layer entry \"{entry}…\" has a name of {len} bytes, longer than Linux allows")]
    NameTooLong {
        /// The start of the entry's path.
        entry: String,
        /// Its length.
        len: usize,
    },
    /// A path resolves outside the root through a symlink.
    #[error("layer entry \"{entry}\" leads outside the layer through a symlink in its path")]
    Escape {
        /// The entry's path.
        entry: String,
    },
    /// A path goes through something that is not a directory.
    #[error("layer entry \"{entry}\" has a parent that is not a directory")]
    NotADirectory {
        /// The entry's path.
        entry: String,
    },
    /// A hard link names something outside the layer.
    #[error("layer entry \"{entry}\" is a hard link to \"{target}\", which is outside the layer")]
    LinkEscape {
        /// The entry's path.
        entry: String,
        /// The link's target.
        target: String,
    },
    /// A hard link names nothing, or a directory.
    #[error(
        "layer entry \"{entry}\" is a hard link to \"{target}\", which is not a file of this layer"
    )]
    LinkTarget {
        /// The entry's path.
        entry: String,
        /// The link's target.
        target: String,
    },
    /// A directory entry would land on a symlink.
    #[error(
        "layer entry \"{entry}\" is a directory over a symlink of the same name (it would change the symlink's target)"
    )]
    DirectoryOverSymlink {
        /// The entry's path.
        entry: String,
    },
    /// A whiteout names nothing, `.` or `..`.
    #[error("layer entry \"{entry}\" is a whiteout of \"{name}\", which is not a file name")]
    BadWhiteout {
        /// The entry's path.
        entry: String,
        /// What it would white out.
        name: String,
    },
    /// The layer expands beyond the cap.
    #[error(
        "layer expands beyond the limit of {limit} bytes (a decompression bomb, or a header declaring an absurd size)"
    )]
    TooBig {
        /// The cap.
        limit: u64,
    },
    /// The layer has too many entries.
    #[error("layer has more than {limit} entries")]
    TooManyEntries {
        /// The cap.
        limit: u64,
    },
    /// An entry type the extractor does not handle.
    #[error("layer entry \"{entry}\" has an unsupported type ({kind})")]
    Unsupported {
        /// The entry's path.
        entry: String,
        /// The tar type.
        kind: String,
    },
    /// A filesystem call failed.
    #[error("{what} \"{entry}\"")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The entry's path.
        entry: String,
        /// The cause.
        source: io::Error,
    },
}

/// Compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Recognises a stream by its first bytes (media types lie more often
    /// than magic numbers do).
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// Counts and hashes the uncompressed stream, and stops it at the cap.
struct Meter<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
    over: Arc<AtomicBool>,
}

impl<R: Read> Read for Meter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.limit {
            self.over.store(true, Ordering::Relaxed);
            return Err(io::Error::other("layer size limit reached"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks a (possibly compressed) layer stream into the empty directory
/// `root`. On error, `root` may hold part of the layer: the caller discards it.
pub fn unpack(
    reader: impl Read,
    root: &Path,
    limits: UnpackLimits,
) -> Result<UnpackReport, UnpackError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf().map_err(UnpackError::Read)?;
    let decompressed: Box<dyn Read> = match Compression::sniff(head) {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(UnpackError::Read)?)
        }
    };
    let over = Arc::new(AtomicBool::new(false));
    let meter = Meter {
        inner: decompressed,
        hasher: Sha256::new(),
        bytes: 0,
        limit: limits.max_bytes,
        over: over.clone(),
    };
    let too_big = |e: UnpackError| {
        if over.load(Ordering::Relaxed) {
            UnpackError::TooBig {
                limit: limits.max_bytes,
            }
        } else {
            e
        }
    };
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Io {
        what: "open unpack root",
        entry: root.display().to_string(),
        source: e.into(),
    })?;
    let mut archive = tar::Archive::new(meter);
    let mut ex = Extractor {
        root: root_fd,
        as_root: rustix::process::geteuid().is_root(),
        size: 0,
        skipped: Vec::new(),
        limits,
    };
    ex.run(&mut archive).map_err(too_big)?;
    let mut meter = archive.into_inner();
    // Hash what follows the end-of-archive blocks too: the diff ID covers
    // the whole stream.
    io::copy(&mut meter, &mut io::sink()).map_err(|e| too_big(UnpackError::Read(e)))?;
    Ok(UnpackReport {
        diff_id: Digest::from_hasher(meter.hasher),
        size: ex.size,
        skipped: ex.skipped,
    })
}

struct Extractor {
    root: OwnedFd,
    as_root: bool,
    size: u64,
    skipped: Vec<Skipped>,
    limits: UnpackLimits,
}

/// A checked entry path: its components, none empty, `.` or `..`.
struct CleanPath {
    display: String,
    parent: PathBuf,
    name: Vec<u8>,
}

fn clean(raw: &[u8]) -> Result<Option<CleanPath>, UnpackError> {
    let display = String::from_utf8_lossy(raw).into_owned();
    if raw.len() > MAX_PATH {
        return Err(UnpackError::NameTooLong {
            entry: display.chars().take(64).collect(),
            len: raw.len(),
        });
    }
    if raw.first() == Some(&b'/') {
        return Err(UnpackError::Absolute { entry: display });
    }
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(UnpackError::DotDot { entry: display }),
            c if c.len() > MAX_NAME => {
                return Err(UnpackError::NameTooLong {
                    entry: display.chars().take(64).collect(),
                    len: c.len(),
                });
            }
            c => comps.push(c),
        }
    }
    let Some(name) = comps.pop() else {
        return Ok(None);
    };
    let parent: PathBuf = comps.iter().map(|c| OsStr::from_bytes(c)).collect();
    Ok(Some(CleanPath {
        display,
        parent,
        name: name.to_vec(),
    }))
}

fn io_err<'a>(what: &'static str, entry: &'a str) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        what,
        entry: entry.to_string(),
        source: e.into(),
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

impl Extractor {
    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), UnpackError> {
        let mut count = 0u64;
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            count += 1;
            if count > self.limits.max_entries {
                return Err(UnpackError::TooManyEntries {
                    limit: self.limits.max_entries,
                });
            }
            let size = entry.size();
            if size > self.limits.max_bytes {
                return Err(UnpackError::TooBig {
                    limit: self.limits.max_bytes,
                });
            }
            let path_bytes = entry.path_bytes().into_owned();
            let Some(path) = clean(&path_bytes)? else {
                continue;
            };
            self.entry(&mut entry, &path)?;
        }
        Ok(())
    }

    /// Opens the parent directory of `path`, creating missing directories,
    /// never leaving the root.
    fn parent(&self, path: &CleanPath, create: bool) -> Result<OwnedFd, UnpackError> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let open = |p: &Path| {
            rustix::fs::openat2(
                &self.root,
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                },
                flags,
                Mode::empty(),
                RESOLVE,
            )
        };
        let classify = |e: Errno| match e {
            Errno::XDEV | Errno::LOOP => UnpackError::Escape {
                entry: path.display.clone(),
            },
            Errno::NOTDIR => UnpackError::NotADirectory {
                entry: path.display.clone(),
            },
            e => UnpackError::Io {
                what: "open parent directory of",
                entry: path.display.clone(),
                source: e.into(),
            },
        };
        match open(&path.parent) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => {}
            Err(e) => return Err(classify(e)),
        }
        let mut dir = open(Path::new("")).map_err(classify)?;
        let mut sofar = PathBuf::new();
        for comp in path.parent.components() {
            sofar.push(comp);
            match open(&sofar) {
                Ok(fd) => dir = fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, comp.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(io_err("create parent directory of", &path.display)(e));
                        }
                    }
                    dir = open(&sofar).map_err(classify)?;
                }
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(dir)
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &CleanPath,
    ) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        let name = OsStr::from_bytes(&path.name);
        let name_str = name.to_string_lossy();
        if name_str == OPAQUE {
            let dir = self.parent(path, true)?;
            let fd = rustix::fs::openat(
                &dir,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err("open opaque directory", &path.display))?;
            rustix::fs::fsetxattr(&fd, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(io_err("mark directory opaque", &path.display))?;
            return Ok(());
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(UnpackError::BadWhiteout {
                    entry: path.display.clone(),
                    name: hidden.to_string(),
                });
            }
            if hidden.starts_with(WHITEOUT_PREFIX) {
                // `.wh..wh.*` other than the opaque marker are aufs
                // bookkeeping (hard link directories); they mean nothing here.
                self.skip(path, "aufs metadata");
                return Ok(());
            }
            let dir = self.parent(path, true)?;
            remove_existing(&dir, OsStr::new(hidden), &path.display)?;
            rustix::fs::mknodat(&dir, hidden, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(io_err("create whiteout for", &path.display))?;
            return Ok(());
        }
        let header = entry.header();
        let mode = Mode::from_raw_mode(header.mode().map_err(UnpackError::Read)? & 0o7777);
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let xattrs = xattrs(entry)?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dir = self.parent(path, true)?;
                remove_existing(&dir, name, &path.display)?;
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err("create file", &path.display))?;
                let mut file = std::fs::File::from(fd);
                let n = io::copy(entry, &mut file).map_err(|e| match e.kind() {
                    io::ErrorKind::Other | io::ErrorKind::UnexpectedEof => UnpackError::Read(e),
                    _ => UnpackError::Io {
                        what: "write file",
                        entry: path.display.clone(),
                        source: e,
                    },
                })?;
                self.size += n;
                self.finish(file.as_fd(), &path.display, uid, gid, mode, &xattrs)?;
                rustix::fs::futimens(&file, &times(mtime))
                    .map_err(io_err("set times of", &path.display))?;
            }
            tar::EntryType::Directory => {
                let dir = self.parent(path, true)?;
                match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        return Err(UnpackError::DirectoryOverSymlink {
                            entry: path.display.clone(),
                        });
                    }
                    Ok(_) => {
                        remove_existing(&dir, name, &path.display)?;
                        mkdir(&dir, name, &path.display)?;
                    }
                    Err(Errno::NOENT) => mkdir(&dir, name, &path.display)?,
                    Err(e) => return Err(io_err("inspect", &path.display)(e)),
                }
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("open directory", &path.display))?;
                self.finish(fd.as_fd(), &path.display, uid, gid, mode, &xattrs)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::LinkTarget {
                        entry: path.display.clone(),
                        target: String::new(),
                    })?
                    .into_owned();
                let dir = self.parent(path, true)?;
                remove_existing(&dir, name, &path.display)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, name)
                    .map_err(io_err("create symlink", &path.display))?;
                if self.as_root {
                    rustix::fs::chownat(
                        &dir,
                        name,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(io_err("set owner of", &path.display))?;
                }
                rustix::fs::utimensat(&dir, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err("set times of", &path.display))?;
            }
            tar::EntryType::Link => {
                let raw = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                let target_display = String::from_utf8_lossy(&raw).into_owned();
                let link_escape = || UnpackError::LinkEscape {
                    entry: path.display.clone(),
                    target: target_display.clone(),
                };
                let target = match clean(&raw) {
                    Ok(Some(t)) => t,
                    Ok(None) | Err(UnpackError::DotDot { .. } | UnpackError::Absolute { .. }) => {
                        return Err(link_escape());
                    }
                    Err(e) => return Err(e),
                };
                let tdir = match self.parent(&target, false) {
                    Ok(d) => d,
                    Err(UnpackError::Escape { .. }) => return Err(link_escape()),
                    Err(_) => {
                        return Err(UnpackError::LinkTarget {
                            entry: path.display.clone(),
                            target: target_display,
                        });
                    }
                };
                let tname = OsStr::from_bytes(&target.name);
                match rustix::fs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {}
                    _ => {
                        return Err(UnpackError::LinkTarget {
                            entry: path.display.clone(),
                            target: target_display,
                        });
                    }
                }
                let dir = self.parent(path, true)?;
                remove_existing(&dir, name, &path.display)?;
                rustix::fs::linkat(&tdir, tname, &dir, name, AtFlags::empty())
                    .map_err(io_err("create hard link", &path.display))?;
            }
            tar::EntryType::Fifo => {
                let dir = self.parent(path, true)?;
                remove_existing(&dir, name, &path.display)?;
                rustix::fs::mknodat(&dir, name, FileType::Fifo, mode, 0)
                    .map_err(io_err("create fifo", &path.display))?;
                if self.as_root {
                    rustix::fs::chownat(
                        &dir,
                        name,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(io_err("set owner of", &path.display))?;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => self.skip(path, "device node"),
            tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(UnpackError::Unsupported {
                    entry: path.display.clone(),
                    kind: format!("{other:?}"),
                });
            }
        }
        Ok(())
    }

    /// Owner, then mode (chown clears set-id bits), then attributes.
    fn finish(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        entry: &str,
        uid: u32,
        gid: u32,
        mode: Mode,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), UnpackError> {
        if self.as_root {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(io_err("set owner of", entry))?;
        }
        rustix::fs::fchmod(fd, mode).map_err(io_err("set mode of", entry))?;
        for (k, v) in xattrs {
            match rustix::fs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty()) {
                Ok(()) | Err(Errno::NOTSUP | Errno::PERM) => {}
                Err(e) => return Err(io_err("set extended attribute of", entry)(e)),
            }
        }
        Ok(())
    }

    fn skip(&mut self, path: &CleanPath, reason: &'static str) {
        self.skipped.push(Skipped {
            path: path.display.clone(),
            reason,
        });
    }
}

/// The entry's extended attributes (PAX `SCHILY.xattr.*`), without
/// `trusted.overlay.*`, which only the extractor may set.
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>, UnpackError> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? {
        for ext in exts {
            let ext = ext.map_err(UnpackError::Read)?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.")
                && !name.starts_with("trusted.overlay.")
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn mkdir(dir: &OwnedFd, name: &OsStr, entry: &str) -> Result<(), UnpackError> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755))
        .map_err(io_err("create directory", entry))
}

/// Removes whatever is at `dir/name` (a directory recursively), never
/// following symlinks.
fn remove_existing(dir: &OwnedFd, name: &OsStr, entry: &str) -> Result<(), UnpackError> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => remove_dir_at(dir, name).map_err(io_err("remove directory", entry)),
        Err(e) => Err(io_err("remove", entry)(e)),
    }
}

fn remove_dir_at(dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in Dir::read_from(&fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push((n.to_vec(), e.file_type() == FileType::Directory));
        }
    }
    for (n, is_dir) in names {
        let n = OsStr::from_bytes(&n);
        if is_dir {
            remove_dir_at(&fd, n)?;
        } else {
            rustix::fs::unlinkat(&fd, n, AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }

    #[test]
    fn unpacks_files_and_whiteouts_in_overlay_form() {
        let data = layer(|b| {
            file(b, "etc/hostname", b"moor\n");
            file(b, "etc/.wh.passwd", b"");
            file(b, "var/.wh..wh..opq", b"");
        });
        let dir = tempfile::tempdir().unwrap();
        let report = unpack(&data[..], dir.path(), UnpackLimits::default()).unwrap();
        assert_eq!(report.diff_id, Digest::of(&data));
        assert_eq!(
            std::fs::read(dir.path().join("etc/hostname")).unwrap(),
            b"moor\n"
        );
        use std::os::unix::fs::FileTypeExt;
        let wh = std::fs::symlink_metadata(dir.path().join("etc/passwd")).unwrap();
        assert!(wh.file_type().is_char_device());
    }

    #[test]
    fn clean_rejects_dot_dot_and_absolute() {
        assert!(matches!(clean(b"a/../b"), Err(UnpackError::DotDot { .. })));
        assert!(matches!(
            clean(b"/etc/passwd"),
            Err(UnpackError::Absolute { .. })
        ));
        assert!(clean(b"./").unwrap().is_none());
        let p = clean(b"./a//b/c").unwrap().unwrap();
        assert_eq!(p.parent, Path::new("a/b"));
        assert_eq!(p.name, b"c");
    }
}
