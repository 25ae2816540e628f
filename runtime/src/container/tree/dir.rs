//! The directory sink: writes a copy under a directory fd.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};

use super::{CopyError, Meta, Result, Sink, errno, io_err, plain, show};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::tree::{open_dir, os};
    use std::os::unix::fs::symlink;

    #[test]
    fn never_writes_through_a_planted_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let dst = base.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        symlink(outside.path(), dst.join("evil")).unwrap();
        let mut sink = DirSink::new(open_dir(&dst).unwrap(), Owners::Keep);
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
        assert!(dst.join("evil").is_file());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // A dir over a file replaces it; a file over a dir is a conflict.
        sink.dir(&os(&["evil"]), &meta).unwrap();
        assert!(dst.join("evil").is_dir());
        let err = sink
            .file(&os(&["evil"]), &meta, 0, &mut io::empty())
            .unwrap_err();
        assert!(matches!(err, CopyError::Conflict { .. }), "{err}");
        // Names are plain.
        for bad in [&["..", "x"][..], &["a/b"], &["."]] {
            assert!(sink.file(&os(bad), &meta, 0, &mut io::empty()).is_err());
        }
        assert_eq!(
            std::fs::read_dir(base.path()).unwrap().count(),
            1,
            "only dst"
        );
    }
}
