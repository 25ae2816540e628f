//! Sources: a directory tree read through fds.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

use super::{CopyError, MAX_DEPTH, Meta, Result, Sink, errno, io_err, plain, reopen, show};

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
    if let Some(fs) = kernel_fs(dir.as_fd()) {
        sink.skipped(&prefix, fs);
        return Ok(());
    }
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
        if let Some(fs) = kernel_fs(dir.as_fd()) {
            self.sink.skipped(&path, fs);
            return Ok(());
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

/// The kernel filesystem a directory is on, when it holds no data but the
/// kernel's state (`/proc`, `/sys`, cgroups…): a container's root holds
/// such mounts, and walking them would read the host's state (some reads
/// have effects: `/proc/kmsg` consumes the kernel's log). They are not
/// copied, as `docker cp` never sees them.
fn kernel_fs(dir: BorrowedFd<'_>) -> Option<&'static str> {
    let t = rustix::fs::fstatfs(dir).ok()?.f_type as i64;
    Some(match t {
        0x9fa0 => "a proc filesystem",
        0x6265_6572 => "a sysfs filesystem",
        0x0027_e0eb | 0x6367_7270 => "a cgroup filesystem",
        0x1cd1 => "a devpts filesystem",
        0x1980_0202 => "an mqueue filesystem",
        0x7363_6673 => "a securityfs filesystem",
        0x6462_6720 => "a debugfs filesystem",
        0x7472_6163 => "a tracefs filesystem",
        0xcafe_4a11 => "a bpf filesystem",
        0x6265_6570 => "a configfs filesystem",
        0x6573_5543 => "a fusectl filesystem",
        0x4249_4e4d => "a binfmt_misc filesystem",
        _ => return None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_filesystems_are_known() {
        let open = |p: &str| {
            rustix::fs::openat(CWD, p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
        };
        assert_eq!(kernel_fs(open("/proc").as_fd()), Some("a proc filesystem"));
        assert_eq!(kernel_fs(open("/sys").as_fd()), Some("a sysfs filesystem"));
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(kernel_fs(open(tmp.path().to_str().unwrap()).as_fd()), None);
    }
    use crate::container::tree::{DirSink, Owners, open_dir, os};
    use rustix::fs::CWD;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::path::Path;

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
}
