//! `COPY`, `ADD` and `WORKDIR`: layers written directly.
//!
//! Sources are read through directory fds, never by following a path:
//! context files with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (a
//! symlink in the context is copied as a symlink, never followed out of
//! it), `--from` trees with `RESOLVE_IN_ROOT` (a symlink resolves inside
//! the stage, as it would in a container of it). A context file must still
//! have the content the plan hashed: a file changed during the build fails
//! it rather than poison the cache. The destination is resolved in the
//! image's layers (symlinked directories followed as Docker does, inside
//! the image), and its existing parents are written with their metadata so
//! that the new layer does not change them.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use moor_build::context::{Context, EntryKind};
use moor_build::resolve::{CopyOp, CopySource};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use sha2::{Digest as _, Sha256};

use super::error::BuildError;
use super::layer::{LayerTar, Meta};
use crate::image::unpack::Compression;

/// What one `COPY`/`ADD` reads and where.
pub struct CopyInput<'a> {
    pub op: &'a CopyOp,
    pub context_dir: &'a Path,
    pub context: &'a Context,
    /// The `--from` stage's or image's layers, bottom first.
    pub from: Option<&'a [PathBuf]>,
    /// The layers copied onto, bottom first.
    pub lowers: &'a [PathBuf],
    /// Where the layer tar (and a `--from` mount) is made.
    pub scratch: &'a Path,
    /// `SOURCE_DATE_EPOCH`: the layer's times are clamped to it.
    pub epoch: Option<u64>,
}

/// A name for a scratch file or directory no other step of this process
/// (stages build concurrently) or of another build uses.
fn scratch_name(prefix: &str, ext: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{}{ext}",
        std::process::id(),
        crate::container::state::now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn invalid(at: &str, msg: impl std::fmt::Display) -> BuildError {
    BuildError::Invalid(format!("{at}: {msg}"))
}

fn io_err(at: &str, what: &str) -> impl Fn(std::io::Error) -> BuildError {
    let at = format!("{at}: {what}");
    move |e| BuildError::Invalid(format!("{at}: {e}"))
}

// --- the layers copied onto -------------------------------------------

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 4];
    rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut buf).is_ok_and(|n| &buf[..n] == b"y")
}

/// The entry at `rel` (no leading `/`, no symlinks in its parents) in the
/// merged view of `lowers`: its metadata and the file holding it.
fn lookup(lowers: &[PathBuf], rel: &str) -> Option<(fs::Metadata, PathBuf)> {
    if rel.is_empty() {
        let top = lowers.last()?;
        return fs::symlink_metadata(top).ok().map(|m| (m, top.clone()));
    }
    let comps: Vec<&str> = rel.split('/').collect();
    for layer in lowers.iter().rev() {
        let mut p = layer.clone();
        let mut hidden_below = false;
        for (i, c) in comps.iter().enumerate() {
            p.push(c);
            let Ok(m) = fs::symlink_metadata(&p) else {
                break;
            };
            if is_whiteout(&m) {
                return None;
            }
            if i + 1 == comps.len() {
                return Some((m, p));
            }
            if !m.is_dir() {
                return None;
            }
            if is_opaque(&p) {
                hidden_below = true;
            }
        }
        if hidden_below {
            return None;
        }
    }
    None
}

/// `path` (absolute, in the image) with every symlink in its existing part
/// resolved inside the image; returned without a leading `/`.
pub(super) fn resolve(lowers: &[PathBuf], path: &str) -> Result<String, BuildError> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
        .rev()
        .collect();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        done.push(c);
        let rel = done.join("/");
        let Some((m, host)) = lookup(lowers, &rel) else {
            continue;
        };
        if !m.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > 40 {
            return Err(BuildError::Invalid(format!(
                "too many symlinks resolving {path} in the image"
            )));
        }
        let target = fs::read_link(&host).map_err(BuildError::io("read symlink", &host))?;
        done.pop();
        let t = target.as_os_str().as_bytes();
        if t.starts_with(b"/") {
            done.clear();
        }
        let t = String::from_utf8_lossy(t).into_owned();
        todo.extend(
            t.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(str::to_owned)
                .rev(),
        );
    }
    Ok(done.join("/"))
}

/// Writes `rel`'s missing or existing parents (not `rel` itself): existing
/// ones with their metadata, missing ones `0755` and owned by `owner` (the
/// `--chown` owner, as Docker's classic builder creates them), else root.
fn parents<W: Write>(
    tar: &mut LayerTar<W>,
    lowers: &[PathBuf],
    rel: &str,
    owner: Option<(u64, u64)>,
) -> Result<(), BuildError> {
    let comps: Vec<&str> = rel.split('/').collect();
    for i in 1..comps.len() {
        let p = comps[..i].join("/");
        let meta = match lookup(lowers, &p) {
            Some((m, _)) if m.is_dir() => Meta::of(&m),
            Some(_) => {
                return Err(BuildError::Invalid(format!(
                    "/{p} is not a directory in the image"
                )));
            }
            None => {
                let (uid, gid) = owner.unwrap_or((0, 0));
                Meta {
                    mode: 0o755,
                    uid,
                    gid,
                    mtime: 0,
                }
            }
        };
        tar.dir(&p, meta).map_err(io_err(&p, "write"))?;
    }
    Ok(())
}

fn read_in_layers(lowers: &[PathBuf], path: &str) -> Option<String> {
    let rel = resolve(lowers, path).ok()?;
    let (m, host) = lookup(lowers, &rel)?;
    if !m.is_file() {
        return None;
    }
    let mut s = String::new();
    File::open(host)
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

fn id_of(lowers: &[PathBuf], file: &str, name: &str) -> Option<(u64, Option<u64>)> {
    let text = read_in_layers(lowers, file)?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| {
            (
                f[2].parse().ok().unwrap_or(u64::MAX),
                f.get(3).and_then(|g| g.parse().ok()),
            )
        })
    })
}

/// `--chown=USER[:GROUP]`, names looked up in the image's `/etc/passwd`
/// and `/etc/group`.
fn owner(lowers: &[PathBuf], chown: &str, at: &str) -> Result<(u64, u64), BuildError> {
    let (user, group) = match chown.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (chown, None),
    };
    let (uid, primary) = match user.parse::<u64>() {
        Ok(n) => (n, None),
        Err(_) => match id_of(lowers, "/etc/passwd", user) {
            Some((uid, gid)) if uid != u64::MAX => (uid, gid),
            _ => return Err(invalid(at, format!("unable to find user {user}"))),
        },
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => match id_of(lowers, "/etc/group", g) {
                Some((gid, _)) if gid != u64::MAX => gid,
                _ => return Err(invalid(at, format!("unable to find group {g}"))),
            },
        },
    };
    Ok((uid, gid))
}

// --- the sources ------------------------------------------------------

/// A source tree read through a directory fd.
struct Tree {
    root: OwnedFd,
    resolve: ResolveFlags,
}

impl Tree {
    fn open(&self, rel: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        rustix::fs::openat2(
            &self.root,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            self.resolve | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(std::io::Error::from)
    }

    fn lstat(&self, rel: &str) -> std::io::Result<fs::Metadata> {
        let fd = self.open(rel, OFlags::PATH | OFlags::NOFOLLOW)?;
        // `fstat` of an O_PATH fd, through std.
        File::from(fd).metadata()
    }

    fn readlink(&self, rel: &str) -> std::io::Result<PathBuf> {
        let fd = self.open(rel, OFlags::PATH | OFlags::NOFOLLOW)?;
        let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
        Ok(PathBuf::from(OsString::from(std::ffi::OsStr::from_bytes(
            target.as_bytes(),
        ))))
    }

    fn file(&self, rel: &str) -> std::io::Result<File> {
        let f = File::from(self.open(rel, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK)?);
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("no longer a regular file"));
        }
        Ok(f)
    }

    fn children(&self, rel: &str) -> std::io::Result<Vec<String>> {
        let fd = self.open(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)?;
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(fd.as_fd())? {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push(
                String::from_utf8(name.to_vec())
                    .map_err(|_| std::io::Error::other("file name is not UTF-8"))?,
            );
        }
        out.sort();
        Ok(out)
    }
}

fn open_root(dir: &Path) -> Result<OwnedFd, BuildError> {
    rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| BuildError::io("open", dir)(e.into()))
}

/// A read-only merged view of a `--from` stage's layers, unmounted on drop.
struct FromView {
    dir: PathBuf,
    mounted: bool,
    _empty: Option<tempfile_dir::Dir>,
}

mod tempfile_dir {
    use std::path::{Path, PathBuf};

    /// A directory removed on drop.
    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new(parent: &Path, name: &str) -> std::io::Result<Self> {
            let p = parent.join(name);
            std::fs::create_dir_all(&p)?;
            Ok(Self(p))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
}

impl FromView {
    fn new(lowers: &[PathBuf], scratch: &Path) -> Result<Self, BuildError> {
        let name = scratch_name("from", "");
        match lowers {
            [] => {
                let d = tempfile_dir::Dir::new(scratch, &name)
                    .map_err(BuildError::io("create directory", scratch))?;
                Ok(Self {
                    dir: d.0.clone(),
                    mounted: false,
                    _empty: Some(d),
                })
            }
            [one] => Ok(Self {
                dir: one.clone(),
                mounted: false,
                _empty: None,
            }),
            many => {
                let d = tempfile_dir::Dir::new(scratch, &name)
                    .map_err(BuildError::io("create directory", scratch))?;
                let lowerdir: Vec<String> =
                    many.iter().rev().map(|p| p.display().to_string()).collect();
                let data = format!("lowerdir={}", lowerdir.join(":"));
                nix::mount::mount(
                    Some("overlay"),
                    &d.0,
                    Some("overlay"),
                    nix::mount::MsFlags::MS_RDONLY,
                    Some(data.as_str()),
                )
                .map_err(|e| BuildError::io("mount the --from layers on", &d.0)(e.into()))?;
                Ok(Self {
                    dir: d.0.clone(),
                    mounted: true,
                    _empty: Some(d),
                })
            }
        }
    }
}

impl Drop for FromView {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Reads `r` into the tar and checks it hashes to `expect`.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

struct Writer<'a, W: Write> {
    tar: LayerTar<W>,
    owner: Option<(u64, u64)>,
    /// Files copied from the build context: owned by root unless
    /// `--chown` says otherwise, as Docker writes them (the owner of a
    /// checkout is the host's, not the image's).
    root_owned: bool,
    chmod: Option<u32>,
    at: &'a str,
    /// Where an xz archive is decoded before it is read.
    scratch: &'a Path,
}

impl<W: Write> Writer<'_, W> {
    fn meta(&self, m: &fs::Metadata, symlink: bool) -> Meta {
        let mut meta = Meta::of(m);
        if let Some((u, g)) = self.owner {
            meta.uid = u;
            meta.gid = g;
        } else if self.root_owned {
            meta.uid = 0;
            meta.gid = 0;
        }
        if let Some(c) = self.chmod
            && !symlink
        {
            meta.mode = c;
        }
        meta
    }

    /// Copies `rel` of `tree` (and what is under it) to `dest`.
    fn tree(
        &mut self,
        tree: &Tree,
        rel: &str,
        dest: &str,
        context: Option<&Context>,
    ) -> Result<(), BuildError> {
        let m = tree
            .lstat(rel)
            .map_err(io_err(self.at, &format!("read {rel}")))?;
        let ft = m.file_type();
        if ft.is_dir() {
            self.tar
                .dir(dest, self.meta(&m, false))
                .map_err(io_err(self.at, "write"))?;
            let children: Vec<String> = match context {
                // Only what .dockerignore keeps.
                Some(ctx) => {
                    let under = if rel.is_empty() {
                        String::new()
                    } else {
                        format!("{rel}/")
                    };
                    ctx.entries()
                        .filter_map(|(p, _)| p.strip_prefix(&under))
                        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                        .map(str::to_owned)
                        .collect()
                }
                None => tree
                    .children(rel)
                    .map_err(io_err(self.at, &format!("read {rel}")))?,
            };
            for c in children {
                let child = if rel.is_empty() {
                    c.clone()
                } else {
                    format!("{rel}/{c}")
                };
                let child_dest = if dest.is_empty() {
                    c.clone()
                } else {
                    format!("{dest}/{c}")
                };
                self.tree(tree, &child, &child_dest, context)?;
            }
        } else if ft.is_symlink() {
            let target = tree
                .readlink(rel)
                .map_err(io_err(self.at, &format!("read {rel}")))?;
            self.tar
                .symlink(dest, self.meta(&m, true), &target)
                .map_err(io_err(self.at, "write"))?;
        } else if ft.is_file() {
            let f = tree
                .file(rel)
                .map_err(io_err(self.at, &format!("read {rel}")))?;
            let m = f.metadata().map_err(io_err(self.at, "stat"))?;
            let mut reader = Hashing {
                inner: BufReader::new(f).take(m.len()),
                hasher: Sha256::new(),
            };
            self.tar
                .file(dest, self.meta(&m, false), m.len(), &mut reader, &[])
                .map_err(io_err(self.at, "write"))?;
            if let Some(ctx) = context {
                let actual = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
                let expected = match ctx.get(rel).map(|e| &e.kind) {
                    Some(EntryKind::File { digest, .. }) => Some(digest.as_str()),
                    _ => None,
                };
                if expected != Some(actual.as_str()) {
                    return Err(invalid(
                        self.at,
                        format!("{rel} changed in the build context during the build"),
                    ));
                }
            }
        }
        // Sockets, FIFOs and devices are not copied.
        Ok(())
    }

    /// Extracts the tar archive `f` (plain, gzip or zstd) under `dest`.
    fn extract(&mut self, f: File, dest: &str) -> Result<(), BuildError> {
        let reader = archive_reader(f, self.scratch).map_err(io_err(self.at, "read"))?;
        let mut archive = tar::Archive::new(reader);
        let join = |p: &str| -> Result<String, BuildError> {
            let mut parts = Vec::new();
            for c in p.split('/') {
                match c {
                    "" | "." => {}
                    ".." => {
                        return Err(invalid(
                            self.at,
                            format!("archive entry {p} climbs out of it"),
                        ));
                    }
                    c => parts.push(c),
                }
            }
            let rel = parts.join("/");
            Ok(match (dest.is_empty(), rel.is_empty()) {
                (_, true) => dest.to_owned(),
                (true, false) => rel,
                (false, false) => format!("{dest}/{rel}"),
            })
        };
        for entry in archive.entries().map_err(io_err(self.at, "read archive"))? {
            let mut e = entry.map_err(io_err(self.at, "read archive"))?;
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let target = join(&path)?;
            let h = e.header().clone();
            // The archive's own root (`./`) is the destination, made
            // before as Docker makes it: its metadata is not the archive's.
            if target == dest && h.entry_type() == tar::EntryType::Directory {
                continue;
            }
            let mut meta = Meta {
                mode: h.mode().unwrap_or(0o644) & 0o7777,
                uid: h.uid().unwrap_or(0),
                gid: h.gid().unwrap_or(0),
                mtime: h.mtime().unwrap_or(0),
            };
            if let Some((u, g)) = self.owner {
                meta.uid = u;
                meta.gid = g;
            }
            let w = io_err(self.at, "write");
            match h.entry_type() {
                tar::EntryType::Directory => self.tar.dir(&target, meta).map_err(w)?,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = e.size();
                    self.tar.file(&target, meta, size, &mut e, &[]).map_err(w)?
                }
                tar::EntryType::Symlink => {
                    let link = e
                        .link_name()
                        .map_err(io_err(self.at, "read archive"))?
                        .unwrap_or_default()
                        .into_owned();
                    self.tar.symlink(&target, meta, &link).map_err(w)?
                }
                tar::EntryType::Link => {
                    let link = e
                        .link_name()
                        .map_err(io_err(self.at, "read archive"))?
                        .unwrap_or_default();
                    let link = join(&link.to_string_lossy())?;
                    self.tar.hardlink(&target, meta, &link).map_err(w)?
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The compressions of an archive `ADD` unpacks: Docker's (identity,
/// gzip, bzip2, xz) and zstd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveKind {
    Layer(Compression),
    Bzip2,
    Xz,
}

impl ArchiveKind {
    fn sniff(head: &[u8]) -> Self {
        if head.starts_with(b"BZh") {
            Self::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else {
            Self::Layer(Compression::sniff(head))
        }
    }
}

/// Keeps the first `cap` bytes written, then refuses more (to stop a
/// decoder that only writes).
struct Head<'a> {
    buf: &'a mut Vec<u8>,
    cap: usize,
}

impl Write for Head<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.cap - self.buf.len();
        if room == 0 {
            return Err(std::io::Error::other("enough"));
        }
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The archive in `f`, decompressed. lzma-rs's xz decoder writes rather
/// than reads: an xz archive is decoded to an unlinked file in `scratch`.
fn archive_reader(f: File, scratch: &Path) -> std::io::Result<Box<dyn Read>> {
    let mut r = BufReader::new(f);
    let head = std::io::BufRead::fill_buf(&mut r)?;
    Ok(match ArchiveKind::sniff(head) {
        ArchiveKind::Layer(Compression::None) => Box::new(r),
        ArchiveKind::Layer(Compression::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        ArchiveKind::Layer(Compression::Zstd) => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
        }
        ArchiveKind::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        ArchiveKind::Xz => {
            let path = scratch.join(format!(
                "xz-{}-{}.tar",
                std::process::id(),
                crate::container::state::now_ms()
            ));
            let mut out = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            let _ = fs::remove_file(&path);
            lzma_rs::xz_decompress(&mut r, &mut BufWriter::new(&mut out))
                .map_err(|e| std::io::Error::other(format!("xz: {e}")))?;
            std::io::Seek::rewind(&mut out)?;
            Box::new(BufReader::new(out))
        }
    })
}

fn is_tar(f: &mut File) -> bool {
    let mut r = BufReader::new(&mut *f);
    let Ok(head) = std::io::BufRead::fill_buf(&mut r) else {
        return false;
    };
    let mut block = Vec::with_capacity(512);
    let ok = match ArchiveKind::sniff(head) {
        ArchiveKind::Layer(Compression::None) => r.take(512).read_to_end(&mut block).is_ok(),
        ArchiveKind::Layer(Compression::Gzip) => flate2::bufread::MultiGzDecoder::new(r)
            .take(512)
            .read_to_end(&mut block)
            .is_ok(),
        ArchiveKind::Layer(Compression::Zstd) => zstd::stream::read::Decoder::with_buffer(r)
            .map(|d| d.take(512).read_to_end(&mut block).is_ok())
            .unwrap_or(false),
        ArchiveKind::Bzip2 => bzip2::bufread::MultiBzDecoder::new(r)
            .take(512)
            .read_to_end(&mut block)
            .is_ok(),
        ArchiveKind::Xz => {
            // Stopped by `Head` once it has the first block.
            let _ = lzma_rs::xz_decompress(
                &mut r,
                &mut Head {
                    buf: &mut block,
                    cap: 512,
                },
            );
            true
        }
    };
    let _ = std::io::Seek::rewind(f);
    ok && block.len() == 512 && &block[257..262] == b"ustar"
}

/// One path component: what a heredoc's delimiter must be to name a file
/// in a directory (`<<../../etc/x` must not climb out of it).
fn is_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// The paths of `tree` (a `--from` stage or image) that `pattern`
/// matches, component by component (`*` never crosses `/`), sorted; `..`
/// stops at the root. Intermediate symlinks are not followed.
fn from_glob(tree: &Tree, pattern: &str) -> Vec<String> {
    let mut comps: Vec<&str> = Vec::new();
    for c in pattern.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    let mut current = vec![String::new()];
    for c in comps {
        let mut next = Vec::new();
        for dir in &current {
            let join = |name: &str| {
                if dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{dir}/{name}")
                }
            };
            if moor_build::context::has_wildcards(c) {
                let listed = tree.children(if dir.is_empty() { "." } else { dir });
                for name in listed.into_iter().flatten() {
                    if moor_build::context::glob_match(c, &name) {
                        next.push(join(&name));
                    }
                }
            } else {
                let path = join(c);
                if tree.lstat(&path).is_ok() {
                    next.push(path);
                }
            }
        }
        current = next;
    }
    current.retain(|p| !p.is_empty());
    current.sort();
    current
}

fn wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn base_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// Writes the layer of one `COPY`/`ADD`; returns the tar's path.
pub fn copy(input: CopyInput<'_>, at: &str) -> Result<PathBuf, BuildError> {
    let op = input.op;
    let owner = match &op.chown {
        Some(c) => Some(owner(input.lowers, c, at)?),
        None => None,
    };
    // The tree read from, and the selected roots in it.
    let view;
    let (tree, roots, context): (Tree, Vec<String>, Option<&Context>) = match input.from {
        None => {
            let tree = Tree {
                root: open_root(input.context_dir)?,
                resolve: ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            };
            let mut roots = Vec::new();
            for s in &op.sources {
                match s {
                    CopySource::Path(p) => roots.extend(input.context.select(p)?),
                    CopySource::Url(u) => {
                        return Err(invalid(
                            at,
                            format!("ADD of a URL ({u}) is not supported yet"),
                        ));
                    }
                    CopySource::Inline { .. } => {}
                }
            }
            (tree, roots, Some(input.context))
        }
        Some(from) => {
            view = FromView::new(from, input.scratch)?;
            let tree = Tree {
                root: open_root(&view.dir)?,
                resolve: ResolveFlags::IN_ROOT,
            };
            let mut roots = Vec::new();
            for s in &op.sources {
                match s {
                    CopySource::Path(p) if wildcard(p) => {
                        let found = from_glob(&tree, p);
                        if found.is_empty() {
                            return Err(invalid(
                                at,
                                format!(
                                    "{p}: no source files were specified (nothing matches in the --from source)"
                                ),
                            ));
                        }
                        roots.extend(found);
                    }
                    CopySource::Path(p) => {
                        let rel = p.trim_start_matches('/').trim_end_matches('/');
                        // Resolved inside the stage, as in a container of it.
                        let fd = tree
                            .open(if rel.is_empty() { "." } else { rel }, OFlags::PATH)
                            .map_err(|_| {
                                invalid(at, format!("{p}: not found in the --from source"))
                            })?;
                        let real = fs::read_link(format!("/proc/self/fd/{}", {
                            use std::os::fd::AsRawFd;
                            fd.as_raw_fd()
                        }))
                        .map_err(io_err(at, "resolve"))?;
                        let inside = real
                            .strip_prefix(&view.dir)
                            .map_err(|_| invalid(at, format!("{p}: resolves outside the stage")))?;
                        roots.push(inside.to_string_lossy().into_owned());
                    }
                    _ => return Err(invalid(at, "COPY --from takes paths only")),
                }
            }
            (tree, roots, None)
        }
    };
    let inline: Vec<(&String, &String)> = op
        .sources
        .iter()
        .filter_map(|s| match s {
            CopySource::Inline { name, content } => Some((name, content)),
            _ => None,
        })
        .collect();

    let dest = resolve(input.lowers, &op.dest)?;
    let dest_exists_dir = lookup(input.lowers, &dest).is_some_and(|(m, _)| m.is_dir());
    let many = roots.len() + inline.len() > 1
        || op
            .sources
            .iter()
            .any(|s| matches!(s, CopySource::Path(p) if wildcard(p)));
    let into_dir = op.dest.ends_with('/') || many || dest_exists_dir;

    let tar_path = input.scratch.join(scratch_name("copy", ".tar"));
    let file = File::create(&tar_path).map_err(BuildError::io("create", &tar_path))?;
    let mut w = Writer {
        tar: LayerTar::new(BufWriter::new(file)).clamped(input.epoch),
        owner,
        root_owned: input.from.is_none(),
        chmod: op.chmod,
        at,
        scratch: input.scratch,
    };
    let result = (|| -> Result<(), BuildError> {
        if !dest.is_empty() {
            parents(&mut w.tar, input.lowers, &dest, w.owner)?;
            // A directory that gets new entries is in the layer, as it
            // was (Docker's layer is the container's upper directory, where
            // overlayfs copied it up).
            if let Some((m, _)) = lookup(input.lowers, &dest).filter(|(m, _)| m.is_dir()) {
                w.tar
                    .dir(&dest, Meta::of(&m))
                    .map_err(io_err(at, "write"))?;
            }
        }
        let dir_meta = |w: &Writer<'_, _>| {
            let (uid, gid) = w.owner.unwrap_or((0, 0));
            Meta {
                mode: w.chmod.unwrap_or(0o755),
                uid,
                gid,
                mtime: 0,
            }
        };
        // The destination directory, once: made by the first source that
        // needs it (a directory source gives it its own metadata).
        let mut dest_dir = dest_exists_dir || dest.is_empty();
        let join = |name: &str| {
            if dest.is_empty() {
                name.to_owned()
            } else {
                format!("{dest}/{name}")
            }
        };
        for root in &roots {
            let m = tree
                .lstat(root)
                .map_err(io_err(at, &format!("read {root}")))?;
            if m.is_dir() {
                // A directory's content goes into the destination, not the
                // directory itself: a new destination is made as for a
                // file (`0755`, the --chown owner), as in Docker ("the
                // directory itself isn't copied, only its contents").
                if !dest_dir {
                    let meta = dir_meta(&w);
                    w.tar.dir(&dest, meta).map_err(io_err(at, "write"))?;
                    dest_dir = true;
                }
                w.tree_children_into(&tree, root, &dest, context)?;
                continue;
            }
            let is_archive = op.add && m.is_file() && {
                let mut f = tree
                    .file(root)
                    .map_err(io_err(at, &format!("read {root}")))?;
                is_tar(&mut f)
            };
            if (into_dir || is_archive) && !dest_dir {
                let meta = dir_meta(&w);
                w.tar.dir(&dest, meta).map_err(io_err(at, "write"))?;
                dest_dir = true;
            }
            if is_archive {
                let f = tree
                    .file(root)
                    .map_err(io_err(at, &format!("read {root}")))?;
                w.extract(f, &dest)?;
                continue;
            }
            let target = if into_dir {
                join(base_name(root))
            } else {
                dest.clone()
            };
            w.tree(&tree, root, &target, context)?;
        }
        for (name, content) in &inline {
            // Into a directory, a heredoc is a file named after its
            // delimiter (`COPY <<a.txt <<b.txt /dir/`), as in Docker.
            if into_dir && !dest_dir {
                let meta = dir_meta(&w);
                w.tar.dir(&dest, meta).map_err(io_err(at, "write"))?;
                dest_dir = true;
            }
            if into_dir && !is_file_name(name) {
                return Err(invalid(
                    at,
                    format!(
                        "heredoc {name:?} is not a file name for the directory {}",
                        op.dest
                    ),
                ));
            }
            let target = if into_dir { join(name) } else { dest.clone() };
            if target.is_empty() {
                return Err(invalid(at, "a heredoc needs a destination file name"));
            }
            let (uid, gid) = w.owner.unwrap_or((0, 0));
            let meta = Meta {
                mode: w.chmod.unwrap_or(0o644),
                uid,
                gid,
                mtime: 0,
            };
            w.tar
                .file(&target, meta, content.len() as u64, content.as_bytes(), &[])
                .map_err(io_err(at, "write"))?;
        }
        let mut out = w.tar.finish().map_err(io_err(at, "write"))?;
        out.flush().map_err(io_err(at, "write"))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tar_path);
        return Err(e);
    }
    Ok(tar_path)
}

impl<W: Write> Writer<'_, W> {
    /// The content of directory `rel` into the existing directory `dest`
    /// (whose own metadata stays the image's).
    fn tree_children_into(
        &mut self,
        tree: &Tree,
        rel: &str,
        dest: &str,
        context: Option<&Context>,
    ) -> Result<(), BuildError> {
        let children: Vec<String> = match context {
            Some(ctx) => {
                let under = if rel.is_empty() {
                    String::new()
                } else {
                    format!("{rel}/")
                };
                ctx.entries()
                    .filter_map(|(p, _)| p.strip_prefix(&under))
                    .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                    .map(str::to_owned)
                    .collect()
            }
            None => tree
                .children(rel)
                .map_err(io_err(self.at, &format!("read {rel}")))?,
        };
        for c in children {
            let child = if rel.is_empty() {
                c.clone()
            } else {
                format!("{rel}/{c}")
            };
            let child_dest = if dest.is_empty() {
                c.clone()
            } else {
                format!("{dest}/{c}")
            };
            self.tree(tree, &child, &child_dest, context)?;
        }
        Ok(())
    }
}

/// `WORKDIR`: a layer with the directory when the image lacks it.
pub fn workdir(
    lowers: &[PathBuf],
    dir: &str,
    scratch: &Path,
    epoch: Option<u64>,
) -> Result<Option<PathBuf>, BuildError> {
    let rel = resolve(lowers, dir)?;
    if rel.is_empty() || lookup(lowers, &rel).is_some() {
        return Ok(None);
    }
    let tar_path = scratch.join(scratch_name("workdir", ".tar"));
    let write = || -> Result<(), BuildError> {
        let file = File::create(&tar_path).map_err(BuildError::io("create", &tar_path))?;
        let mut tar = LayerTar::new(BufWriter::new(file)).clamped(epoch);
        parents(&mut tar, lowers, &rel, None)?;
        let meta = Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        tar.dir(&rel, meta).map_err(io_err(dir, "write"))?;
        tar.finish()
            .and_then(|mut w| w.flush())
            .map_err(io_err(dir, "write"))
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tar_path);
        return Err(e);
    }
    Ok(Some(tar_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_follow_whiteouts_opaque_dirs_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir_all(a.join("usr/bin")).unwrap();
        fs::write(a.join("usr/bin/sh"), b"").unwrap();
        std::os::unix::fs::symlink("usr/bin", a.join("bin")).unwrap();
        fs::create_dir_all(a.join("gone")).unwrap();
        fs::create_dir_all(&b).unwrap();
        nix::sys::stat::mknod(
            &b.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let lowers = vec![a, b];
        assert_eq!(resolve(&lowers, "/bin/sh").unwrap(), "usr/bin/sh");
        assert_eq!(resolve(&lowers, "/../bin/../etc").unwrap(), "usr/etc");
        assert!(lookup(&lowers, "usr/bin/sh").is_some());
        assert!(lookup(&lowers, "gone").is_none());
        assert!(lookup(&lowers, "nothing").is_none());
    }
}
