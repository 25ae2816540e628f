//! Copies of bind sources that live next to the manifests, for a rollback
//! to put back the files a revision ran with (a directory source has no
//! history of its own; see the agent's snapshots).
//!
//! A source is opened as a mount opens it ([`super::binds::open_beneath`]:
//! beneath its tree, no `..` or link leading out), then copied through
//! directory fds into a directory of the caller's: links inside are copied
//! as links and never followed, device nodes, fifos and sockets are
//! skipped, and the copy stops at a byte and an entry limit.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Component, Path};

use super::binds::open_beneath;
use super::tree::{
    CopyError, DirSink, Meta, Owners, Sink, WalkOptions, open_dir, walk, walk_contents,
};

/// The most entries (files, directories, links) one snapshot copies.
pub const MAX_SNAPSHOT_ENTRIES: u64 = 10_000;

/// What a snapshot may still copy, shared by the sources of one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes of file content.
    pub bytes: u64,
    /// Entries.
    pub entries: u64,
}

impl Budget {
    /// `bytes` of content and [`MAX_SNAPSHOT_ENTRIES`] entries.
    pub fn new(bytes: u64) -> Self {
        Self {
            bytes,
            entries: MAX_SNAPSHOT_ENTRIES,
        }
    }
}

/// Copies the bind source `source` (absolute, beneath `tree`) to the same
/// path beneath `dest` (a directory of the caller's, which nothing else
/// writes to), taking what it copies from `budget`. Fails, naming the
/// source, when the source leads out of its tree, is missing, or does not
/// fit in the budget.
pub fn snapshot_bind(
    tree: &Path,
    source: &Path,
    dest: &Path,
    budget: &mut Budget,
) -> Result<(), String> {
    let shown = source.display();
    let fd = open_beneath(tree, source, "").map_err(|e| match e {
        super::ContainerError::BindEscapes { tree, .. } => format!(
            "bind source {shown} leads outside its tree {} (a `..` or a symbolic link)",
            tree.display()
        ),
        super::ContainerError::BindSourceMissing { .. } => {
            format!("bind source {shown} is missing")
        }
        e => e.to_string(),
    })?;
    let rel = source.strip_prefix(tree).map_err(|_| {
        format!(
            "bind source {shown} is not beneath its tree {}",
            tree.display()
        )
    })?;
    let mut parts: Vec<OsString> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_os_string()),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "bind source {shown} is not a plain path beneath its tree"
                ));
            }
        }
    }
    // The directories leading to it, in a directory that is the caller's
    // alone (made anew for each snapshot).
    if let Some((_, dirs)) = parts.split_last() {
        let mut at = dest.to_path_buf();
        for d in dirs {
            at.push(d);
            match std::fs::create_dir(&at) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("creating {}: {e}", at.display())),
            }
        }
    }
    let root = open_dir(dest).map_err(|e| format!("opening {}: {e}", dest.display()))?;
    let mut sink = Capped {
        inner: DirSink::new(root, Owners::Keep),
        budget,
        over: None,
    };
    let copied = if parts.is_empty() {
        walk_contents(&fd, Vec::new(), &mut sink, WalkOptions::default())
    } else {
        walk(&fd, parts, &mut sink, WalkOptions::default())
    };
    if let Some(over) = sink.over {
        return Err(format!("bind source {shown}: {over}"));
    }
    copied.map_err(|e| format!("copying bind source {shown}: {e}"))
}

/// A [`DirSink`] that stops at a budget.
struct Capped<'a> {
    inner: DirSink,
    budget: &'a mut Budget,
    /// Why the copy stopped, when the budget did it.
    over: Option<String>,
}

impl Capped<'_> {
    fn entry(&mut self, path: &[OsString]) -> Result<(), CopyError> {
        match self.budget.entries.checked_sub(1) {
            Some(left) => {
                self.budget.entries = left;
                Ok(())
            }
            None => Err(self.stop(
                path,
                format!("more than {MAX_SNAPSHOT_ENTRIES} entries to copy"),
            )),
        }
    }

    fn stop(&mut self, path: &[OsString], why: String) -> CopyError {
        self.over = Some(why.clone());
        CopyError::Unsafe {
            path: super::tree::show(path),
            reason: why,
        }
    }
}

/// Counts what is read through it.
struct Counting<'r> {
    inner: &'r mut dyn Read,
    read: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl Sink for Capped<'_> {
    fn dir(&mut self, path: &[OsString], meta: &Meta) -> Result<(), CopyError> {
        self.entry(path)?;
        self.inner.dir(path, meta)
    }

    fn dir_done(&mut self, path: &[OsString], meta: &Meta) -> Result<(), CopyError> {
        self.inner.dir_done(path, meta)
    }

    fn file(
        &mut self,
        path: &[OsString],
        meta: &Meta,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), CopyError> {
        self.entry(path)?;
        let limit = self.budget.bytes;
        let too_big =
            |limit: u64| format!("larger than the snapshot limit of {} bytes left", limit);
        if size > limit {
            return Err(self.stop(path, too_big(limit)));
        }
        // The file may grow while it is read: never more than the budget.
        let mut limited = content.take(limit + 1);
        let mut counting = Counting {
            inner: &mut limited,
            read: 0,
        };
        self.inner.file(path, meta, size, &mut counting)?;
        if counting.read > limit {
            return Err(self.stop(path, too_big(limit)));
        }
        self.budget.bytes = limit - counting.read;
        Ok(())
    }

    fn symlink(
        &mut self,
        path: &[OsString],
        target: &std::ffi::OsStr,
        meta: &Meta,
    ) -> Result<(), CopyError> {
        self.entry(path)?;
        self.inner.symlink(path, target, meta)
    }

    fn hardlink(&mut self, path: &[OsString], target: &[OsString]) -> Result<(), CopyError> {
        self.entry(path)?;
        self.inner.hardlink(path, target)
    }

    fn skipped(&mut self, path: &[OsString], what: &'static str) {
        self.inner.skipped(path, what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let tree = t.path().join("tree");
        let dest = t.path().join("snap");
        fs::create_dir_all(tree.join("conf/sub")).expect("mkdir");
        fs::create_dir(&dest).expect("mkdir");
        (t, tree, dest)
    }

    #[test]
    fn a_file_and_a_directory_are_copied_to_the_same_place() {
        let (_t, tree, dest) = setup();
        fs::write(tree.join("index.html"), "old").expect("write");
        fs::write(tree.join("conf/sub/a.conf"), "a").expect("write");
        symlink("sub/a.conf", tree.join("conf/link")).expect("symlink");
        let mut b = Budget::new(1 << 20);
        snapshot_bind(&tree, &tree.join("index.html"), &dest, &mut b).expect("file");
        snapshot_bind(&tree, &tree.join("conf"), &dest, &mut b).expect("dir");
        assert_eq!(
            fs::read_to_string(dest.join("index.html")).expect("read"),
            "old"
        );
        assert_eq!(
            fs::read_to_string(dest.join("conf/sub/a.conf")).expect("read"),
            "a"
        );
        // A link inside is copied as a link.
        assert_eq!(
            fs::read_link(dest.join("conf/link")).expect("link"),
            Path::new("sub/a.conf")
        );
        assert_eq!(b.bytes, (1 << 20) - 4);
        // The copy is what the loader digested.
        for p in ["index.html", "conf"] {
            assert_eq!(
                moor_spec::bind::content_digest(&dest.join(p)),
                moor_spec::bind::content_digest(&tree.join(p)),
                "{p}"
            );
        }
    }

    #[test]
    fn links_that_lead_out_of_the_tree_copy_nothing_from_outside() {
        let (t, tree, dest) = setup();
        let secret = t.path().join("secret");
        fs::write(&secret, "host secret").expect("write");
        fs::create_dir(t.path().join("outside")).expect("mkdir");
        fs::write(t.path().join("outside/key"), "host key").expect("write");
        // The source itself a link out: absolute, and by `..`.
        symlink(&secret, tree.join("abs")).expect("symlink");
        symlink("../secret", tree.join("rel")).expect("symlink");
        symlink("../../../outside", tree.join("conf/sub/dir")).expect("symlink");
        let mut b = Budget::new(1 << 20);
        for (name, src) in [
            ("abs", tree.join("abs")),
            ("rel", tree.join("rel")),
            ("dir", tree.join("conf/sub/dir/key")),
            ("dotdot", tree.join("../secret")),
        ] {
            let e = snapshot_bind(&tree, &src, &dest, &mut b).expect_err(name);
            assert!(
                e.contains("outside its tree") || e.contains("not beneath its tree"),
                "{name}: {e}"
            );
        }
        // A link inside a copied directory stays a link, never followed.
        snapshot_bind(&tree, &tree.join("conf"), &dest, &mut b).expect("dir");
        assert_eq!(
            fs::read_link(dest.join("conf/sub/dir")).expect("link"),
            Path::new("../../../outside")
        );
        let mut found = Vec::new();
        let mut stack = vec![dest.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("read_dir") {
                let e = e.expect("entry");
                let ft = e.file_type().expect("type");
                if ft.is_dir() {
                    stack.push(e.path());
                } else if ft.is_file() {
                    found.push(fs::read_to_string(e.path()).expect("read"));
                }
            }
        }
        assert!(
            !found.iter().any(|c| c.contains("host")),
            "copied from outside: {found:?}"
        );
    }

    #[test]
    fn the_budget_stops_the_copy() {
        let (_t, tree, dest) = setup();
        fs::write(tree.join("big"), vec![b'x'; 4096]).expect("write");
        let mut b = Budget::new(4095);
        let e = snapshot_bind(&tree, &tree.join("big"), &dest, &mut b).expect_err("too big");
        assert!(e.contains("snapshot limit"), "{e}");
        for i in 0..20 {
            fs::write(tree.join(format!("conf/sub/f{i}")), "").expect("write");
        }
        let mut b = Budget {
            bytes: 1 << 20,
            entries: 5,
        };
        let e = snapshot_bind(&tree, &tree.join("conf"), &dest, &mut b).expect_err("too many");
        assert!(e.contains("entries"), "{e}");
    }

    #[test]
    fn a_missing_source_says_so() {
        let (_t, tree, dest) = setup();
        let e = snapshot_bind(&tree, &tree.join("nope"), &dest, &mut Budget::new(10))
            .expect_err("missing");
        assert!(e.contains("missing"), "{e}");
    }
}
