//! Layer tars: written entry by entry ([`LayerTar`]) for `COPY`/`ADD`, or
//! from a `RUN` container's overlay upper directory ([`from_upper`]), whose
//! overlay whiteouts (0/0 character devices) become `.wh.NAME` entries and
//! whose opaque directories (`trusted.overlay.opaque=y`) get a
//! `.wh..wh..opq` entry, as the OCI image spec writes them.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// `mtime` clamped to `epoch` (`SOURCE_DATE_EPOCH`): never newer.
pub fn clamp(mtime: u64, epoch: Option<u64>) -> u64 {
    epoch.map_or(mtime, |e| mtime.min(e))
}

/// Metadata of one entry.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
}

impl Meta {
    /// Of a file on disk.
    pub fn of(m: &fs::Metadata) -> Self {
        Self {
            mode: m.mode() & 0o7777,
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
            mtime: m.mtime().max(0) as u64,
        }
    }
}

/// A layer tar being written.
pub struct LayerTar<W: Write> {
    tar: tar::Builder<W>,
    /// `SOURCE_DATE_EPOCH`: no entry is newer.
    clamp: Option<u64>,
}

impl<W: Write> std::fmt::Debug for LayerTar<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerTar")
    }
}

impl<W: Write> LayerTar<W> {
    /// A layer written to `out`.
    pub fn new(out: W) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        Self { tar, clamp: None }
    }

    /// Every entry's modification time clamped to `epoch` (as BuildKit
    /// does with `SOURCE_DATE_EPOCH`): an older time is kept, a newer one
    /// becomes `epoch`. `None` keeps every time.
    pub fn clamped(mut self, epoch: Option<u64>) -> Self {
        self.clamp = epoch;
        self
    }

    /// `mtime`, clamped.
    pub fn mtime(&self, mtime: u64) -> u64 {
        clamp(mtime, self.clamp)
    }

    /// A header of the host-independent fields only: a GNU header has no
    /// atime or ctime unless set, no user or group names, and ours sets
    /// neither (owners are the numeric IDs written).
    fn header(&self, kind: tar::EntryType, meta: Meta, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(self.mtime(meta.mtime));
        h.set_size(size);
        h
    }

    fn xattrs(&mut self, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let mut data = Vec::new();
        for (k, v) in xattrs {
            let mut record = format!(" SCHILY.xattr.{k}=").into_bytes();
            record.extend_from_slice(v);
            record.push(b'\n');
            // The length counts itself.
            let mut len = record.len();
            loop {
                let total = len.to_string().len() + record.len();
                if total == len {
                    break;
                }
                len = total;
            }
            data.extend_from_slice(len.to_string().as_bytes());
            data.extend_from_slice(&record);
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("././@PaxHeader")?;
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.tar.append(&h, data.as_slice())
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, meta: Meta) -> io::Result<()> {
        let mut h = self.header(tar::EntryType::Directory, meta, 0);
        self.tar
            .append_data(&mut h, format!("{path}/"), io::empty())
    }

    /// A regular file with `size` bytes read from `data`.
    pub fn file(
        &mut self,
        path: &str,
        meta: Meta,
        size: u64,
        data: impl Read,
        xattrs: &[(String, Vec<u8>)],
    ) -> io::Result<()> {
        self.xattrs(xattrs)?;
        let mut h = self.header(tar::EntryType::Regular, meta, size);
        self.tar.append_data(&mut h, path, data)
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, meta: Meta, target: &Path) -> io::Result<()> {
        let mut h = self.header(tar::EntryType::Symlink, meta, 0);
        self.tar.append_link(&mut h, path, target)
    }

    /// A hard link to `target` (a path in the layer).
    pub fn hardlink(&mut self, path: &str, meta: Meta, target: &str) -> io::Result<()> {
        let mut h = self.header(tar::EntryType::Link, meta, 0);
        self.tar.append_link(&mut h, path, target)
    }

    /// A whiteout: `path` is deleted (mode `0600`, as Docker writes one;
    /// an opaque marker takes its directory's permissions).
    pub fn whiteout(&mut self, path: &str, mode: u32) -> io::Result<()> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        let meta = Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut h = self.header(tar::EntryType::Regular, meta, 0);
        self.tar
            .append_data(&mut h, format!("{dir}.wh.{name}"), io::empty())
    }

    /// A special file (FIFO, device).
    pub fn special(&mut self, path: &str, meta: Meta, m: &fs::Metadata) -> io::Result<()> {
        let ft = m.file_type();
        let kind = if ft.is_fifo() {
            tar::EntryType::Fifo
        } else if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else {
            // Sockets have no place in a layer.
            return Ok(());
        };
        let mut h = self.header(kind, meta, 0);
        let rdev = m.rdev();
        h.set_device_major(libc::major(rdev))?;
        h.set_device_minor(libc::minor(rdev))?;
        self.tar.append_data(&mut h, path, io::empty())
    }

    /// Ends the archive and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.tar.into_inner()
    }
}

/// The extended attributes of `path` worth keeping in a layer (file
/// capabilities), read without following a symlink.
fn kept_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in ["security.capability"] {
        if let Ok(v) = xattr_get(path, name) {
            out.push((name.to_owned(), v));
        }
    }
    out
}

fn xattr_get(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buf).map_err(io::Error::from)?;
    buf.truncate(n);
    Ok(buf)
}

/// Whether an upper directory's `path` is opaque (it replaced the lower
/// directory rather than merging with it).
pub(crate) fn is_opaque(path: &Path) -> bool {
    xattr_get(path, "trusted.overlay.opaque").is_ok_and(|v| v == b"y")
}

/// Writes the layer of an overlay upper directory. `skip(path)` leaves an
/// entry out (and, for a directory, what is under it): the stubs the
/// runtime created for its mounts.
pub fn from_upper<W: Write>(
    upper: &Path,
    out: &mut LayerTar<W>,
    skip: &dyn Fn(&str, &fs::Metadata) -> bool,
) -> io::Result<()> {
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    walk(upper, "", out, skip, &mut links)
}

fn walk<W: Write>(
    dir: &Path,
    rel: &str,
    out: &mut LayerTar<W>,
    skip: &dyn Fn(&str, &fs::Metadata) -> bool,
    links: &mut HashMap<(u64, u64), String>,
) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            return Err(io::Error::other(format!(
                "file name {name:?} under {rel:?} is not UTF-8"
            )));
        };
        let path = dir.join(&name);
        let rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let m = fs::symlink_metadata(&path)?;
        if skip(&rel, &m) {
            continue;
        }
        let meta = Meta::of(&m);
        let ft = m.file_type();
        if ft.is_char_device() && m.rdev() == 0 {
            out.whiteout(&rel, 0o600)?;
        } else if ft.is_dir() {
            out.dir(&rel, meta)?;
            if is_opaque(&path) {
                out.whiteout(&format!("{rel}/.wh..opq"), meta.mode & 0o777)?;
            }
            walk(&path, &rel, out, skip, links)?;
        } else if ft.is_symlink() {
            out.symlink(&rel, meta, &fs::read_link(&path)?)?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    out.hardlink(&rel, meta, first)?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), rel.clone());
            }
            let f = File::open(&path)?;
            out.file(&rel, meta, m.len(), f.take(m.len()), &kept_xattrs(&path))?;
        } else {
            out.special(&rel, meta, &m)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_and_opaque_directories_become_wh_entries() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        fs::create_dir(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/new"), b"x").unwrap();
        fs::hard_link(upper.join("etc/new"), upper.join("etc/twin")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        fs::create_dir(upper.join("var")).unwrap();
        let opaque = rustix::fs::setxattr(
            upper.join("var"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        let mut tar = LayerTar::new(Vec::new());
        from_upper(upper, &mut tar, &|_, _| false).unwrap();
        let bytes = tar.finish().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                format!(
                    "{:?} {}",
                    e.header().entry_type(),
                    e.path().unwrap().display()
                )
            })
            .collect();
        let mut expected = vec![
            "Directory etc/",
            "Regular etc/.wh.gone",
            "Regular etc/new",
            "Link etc/twin",
            "Directory var/",
        ];
        if opaque {
            expected.push("Regular var/.wh..wh..opq");
        }
        assert_eq!(names, expected);
    }

    fn set_times(path: &Path, secs: u64) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        File::open(path)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }

    fn mtimes(bytes: &[u8]) -> Vec<(String, u64)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (e.path().unwrap().display().to_string(), h.mtime().unwrap())
            })
            .collect()
    }

    #[test]
    fn clamping_keeps_older_times_and_caps_newer_ones() {
        assert_eq!(clamp(5, None), 5);
        assert_eq!(clamp(5, Some(10)), 5);
        assert_eq!(clamp(50, Some(10)), 10);
        assert_eq!(clamp(u64::MAX, Some(0)), 0);

        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        fs::create_dir(upper.join("d")).unwrap();
        fs::write(upper.join("d/old"), b"old").unwrap();
        fs::write(upper.join("d/new"), b"new").unwrap();
        std::os::unix::fs::symlink("old", upper.join("d/link")).unwrap();
        set_times(&upper.join("d/old"), 1_000);
        set_times(&upper.join("d/new"), 2_000_000_000);
        set_times(&upper.join("d"), 2_000_000_000);
        let write = |epoch| {
            let mut tar = LayerTar::new(Vec::new()).clamped(epoch);
            from_upper(upper, &mut tar, &|_, _| false).unwrap();
            tar.finish().unwrap()
        };
        let link_time = fs::symlink_metadata(upper.join("d/link")).unwrap().mtime() as u64;
        assert_eq!(
            mtimes(&write(None)),
            [
                ("d/".to_string(), 2_000_000_000),
                ("d/link".into(), link_time),
                ("d/new".into(), 2_000_000_000),
                ("d/old".into(), 1_000),
            ]
        );
        assert_eq!(
            mtimes(&write(Some(1_500))),
            [
                ("d/".to_string(), 1_500),
                ("d/link".into(), 1_500),
                ("d/new".into(), 1_500),
                ("d/old".into(), 1_000),
            ]
        );
    }

    /// Two trees that differ only in what a host leaves behind (times newer
    /// than the epoch, access times, the order files were made in) give
    /// byte-identical layers.
    #[test]
    fn clamped_layers_of_equal_trees_are_identical() {
        let make = |order: &[&str], time: u64| {
            let dir = tempfile::tempdir().unwrap();
            for name in order {
                fs::write(dir.path().join(name), name.as_bytes()).unwrap();
                fs::set_permissions(
                    dir.path().join(name),
                    std::os::unix::fs::PermissionsExt::from_mode(0o644),
                )
                .unwrap();
                set_times(&dir.path().join(name), time);
            }
            dir
        };
        let a = make(&["b", "a", "c"], 1_900_000_000);
        let b = make(&["c", "b", "a"], 1_950_000_000);
        let layer = |dir: &Path| {
            let mut tar = LayerTar::new(Vec::new()).clamped(Some(0));
            from_upper(dir, &mut tar, &|_, _| false).unwrap();
            tar.finish().unwrap()
        };
        let (la, lb) = (layer(a.path()), layer(b.path()));
        assert!(la == lb, "the layers differ");
        let names: Vec<String> = mtimes(&la).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // Unclamped, the times tell them apart.
        let mut plain = LayerTar::new(Vec::new());
        from_upper(a.path(), &mut plain, &|_, _| false).unwrap();
        assert!(plain.finish().unwrap() != la);
    }
}
