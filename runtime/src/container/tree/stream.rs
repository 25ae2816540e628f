//! Tar streams: a source ([`read_tar`]) and a sink ([`TarSink`]).

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::{CopyError, MAX_DEPTH, Meta, Result, Sink, io_err, show};

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
    use crate::container::tree::{DirSink, Owners, WalkOptions, open_dir, os, walk};
    use rustix::fs::{CWD, Mode, OFlags};
    use std::os::unix::fs::symlink;
    use std::path::Path;

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
        type Entries<'a> = Vec<(&'a str, tar::EntryType, &'a str)>;
        let cases: &[(&str, Entries<'_>)] = &[
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
    fn tar_round_trip() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/f"), "content").unwrap();
        symlink("/", src.path().join("d/root")).unwrap();
        let top = rustix::fs::openat(
            CWD,
            src.path().join("d"),
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
    }
}
