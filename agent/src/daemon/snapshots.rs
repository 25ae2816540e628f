//! A directory source's files of each healthy revision, kept for a
//! rollback to it: a git source rolls back to a commit's tree, but a
//! directory has no history of its own, and its files are edited in place
//! (so they are copied, never hard-linked).
//!
//! ```text
//! <state>/snapshots/<source>/<revision>/<tree>/<path in the tree>
//! ```
//!
//! `<revision>` is the directory revision without `sha256:`, `<tree>` the
//! index of the source's tree (one per source in practice). A snapshot is
//! copied into `.new-<revision>`, checked against the content digests the
//! manifests were loaded with, and renamed into place; one that does not
//! fit in [`SNAPSHOT_LIMIT`] is not kept, and a rollback to its revision
//! puts back the manifests only (and says so).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use moor_reconcile::Snapshots;
use moor_reconcile::rollout::SnapshotSource;
use moor_runtime::container::snapshot::{Budget, snapshot_bind};

/// The most file content one revision's snapshot holds.
pub const SNAPSHOT_LIMIT: u64 = 64 << 20;

/// The snapshots of one directory source.
#[derive(Debug)]
pub struct DirSnapshots {
    root: PathBuf,
    limit: u64,
}

impl DirSnapshots {
    /// `source`'s snapshots, under `state_dir`.
    pub fn new(state_dir: &Path, source: &str) -> Self {
        Self {
            root: state_dir.join("snapshots").join(source),
            limit: SNAPSHOT_LIMIT,
        }
    }

    #[cfg(test)]
    fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }
}

/// The directory name of `revision`: its hexadecimal digits (a directory
/// revision is `sha256:<hex>`), and `-img-<hex>` for the image updates in
/// force (`+img:<hex>`); None for anything else.
fn dir_name(revision: &str) -> Option<String> {
    let r = revision.strip_prefix("sha256:").unwrap_or(revision);
    let (base, images) = match r.split_once(moor_reconcile::IMAGES_MARK) {
        Some((base, images)) => (base, Some(images)),
        None => (r, None),
    };
    let plain =
        |p: &str| !p.is_empty() && p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric());
    if !plain(base) || images.is_some_and(|i| !plain(i)) {
        return None;
    }
    Some(match images {
        Some(i) => format!("{base}-img-{i}"),
        None => base.to_string(),
    })
}

fn mkdir(path: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))
}

fn remove(path: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}

impl DirSnapshots {
    fn copy(
        &self,
        into: &Path,
        sources: &BTreeSet<SnapshotSource>,
    ) -> Result<BTreeMap<PathBuf, usize>, String> {
        let trees: BTreeSet<&PathBuf> = sources.iter().map(|s| &s.tree).collect();
        let index: BTreeMap<PathBuf, usize> = trees
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        for i in index.values() {
            mkdir(&into.join(i.to_string()))?;
        }
        let mut budget = Budget::new(self.limit);
        for s in sources {
            let dest = into.join(index[&s.tree].to_string());
            snapshot_bind(&s.tree, &s.source, &dest, &mut budget).map_err(|e| {
                if e.contains("snapshot limit") {
                    format!(
                        "{e}: the files of a revision are kept up to {} MiB",
                        self.limit >> 20
                    )
                } else {
                    e
                }
            })?;
            // What was copied is what the revision was loaded with: a file
            // edited since belongs to a later revision.
            if let Some(want) = &s.digest {
                let rel = s.source.strip_prefix(&s.tree).unwrap_or(Path::new(""));
                let got = moor_spec::bind::content_digest(&dest.join(rel))?;
                if got != *want {
                    return Err(format!(
                        "bind source {} changed since the revision was loaded",
                        s.source.display()
                    ));
                }
            }
        }
        Ok(index)
    }
}

impl Snapshots for DirSnapshots {
    fn take(
        &self,
        revision: &str,
        sources: &BTreeSet<SnapshotSource>,
    ) -> Result<BTreeMap<PathBuf, PathBuf>, String> {
        let name = dir_name(revision)
            .ok_or_else(|| format!("revision {revision:?} cannot name a snapshot"))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|e| format!("creating {}: {e}", self.root.display()))?;
        let new = self.root.join(format!(".new-{name}"));
        remove(&new)?;
        mkdir(&new)?;
        let index = match self.copy(&new, sources) {
            Ok(index) => index,
            Err(e) => {
                let _ = remove(&new);
                return Err(e);
            }
        };
        let done = self.root.join(&name);
        remove(&done)?;
        std::fs::rename(&new, &done).map_err(|e| {
            let _ = remove(&new);
            format!("renaming {} into place: {e}", new.display())
        })?;
        tracing::debug!(revision, snapshot = %done.display(), "the revision's files are kept for a rollback");
        Ok(index
            .into_iter()
            .map(|(tree, i)| (tree, done.join(i.to_string())))
            .collect())
    }

    fn keep(&self, keep: &[&str]) {
        let keep: BTreeSet<String> = keep.iter().filter_map(|r| dir_name(r)).collect();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_str().is_some_and(|n| keep.contains(n)) {
                continue;
            }
            if let Err(e) = remove(&e.path()) {
                tracing::warn!("a snapshot no longer needed could not be removed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn source(tree: &Path, rel: &str) -> SnapshotSource {
        let source = tree.join(rel);
        SnapshotSource {
            digest: moor_spec::bind::content_digest(&source).ok(),
            tree: tree.to_path_buf(),
            source,
        }
    }

    fn rev(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn a_snapshot_holds_the_files_as_they_were_and_only_the_newest_stay() {
        let t = tempfile::tempdir().expect("tempdir");
        let tree = t.path().join("src");
        fs::create_dir_all(tree.join("site")).expect("mkdir");
        fs::write(tree.join("site/index.html"), "old").expect("write");
        let snaps = DirSnapshots::new(&t.path().join("state"), "demo");
        let sources = BTreeSet::from([source(&tree, "site")]);
        let trees = snaps.take(&rev('a'), &sources).expect("taken");
        let root = &trees[&tree];
        assert_eq!(
            *root,
            t.path()
                .join("state/snapshots/demo")
                .join("a".repeat(64))
                .join("0")
        );
        fs::write(tree.join("site/index.html"), "new").expect("edit in place");
        assert_eq!(
            fs::read_to_string(root.join("site/index.html")).expect("read"),
            "old"
        );
        // Taken again (the same revision healthy again): replaced whole.
        let sources_b = BTreeSet::from([source(&tree, "site")]);
        // An image update's revision has its own.
        let with_images = format!("{}+img:0123abcd", rev('a'));
        let trees = snaps.take(&with_images, &sources_b).expect("taken");
        assert!(trees[&tree].ends_with(format!("{}-img-0123abcd/0", "a".repeat(64))));
        snaps.take(&rev('b'), &sources_b).expect("taken");
        snaps.take(&rev('a'), &sources_b).expect("taken again");
        snaps.keep(&[&rev('b')]);
        let left: Vec<String> = fs::read_dir(t.path().join("state/snapshots/demo"))
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["b".repeat(64)]);
    }

    #[test]
    fn a_file_edited_since_the_revision_loaded_is_no_snapshot_of_it() {
        let t = tempfile::tempdir().expect("tempdir");
        let tree = t.path().join("src");
        fs::create_dir_all(&tree).expect("mkdir");
        fs::write(tree.join("app.conf"), "v1").expect("write");
        let s = source(&tree, "app.conf");
        fs::write(tree.join("app.conf"), "v2").expect("edit");
        let snaps = DirSnapshots::new(&t.path().join("state"), "demo");
        let e = snaps
            .take(&rev('a'), &BTreeSet::from([s]))
            .expect_err("changed");
        assert!(e.contains("changed since the revision was loaded"), "{e}");
        // Nothing half-copied stays behind.
        let left = fs::read_dir(t.path().join("state/snapshots/demo"))
            .expect("read")
            .count();
        assert_eq!(left, 0);
    }

    #[test]
    fn hostile_sources_and_revisions_copy_nothing() {
        let t = tempfile::tempdir().expect("tempdir");
        let tree = t.path().join("src");
        fs::create_dir_all(&tree).expect("mkdir");
        fs::write(t.path().join("shadow"), "root:secret").expect("write");
        fs::write(tree.join("big"), vec![b'x'; 2 << 20]).expect("write");
        let state = t.path().join("state");
        let snaps = DirSnapshots::new(&state, "demo").with_limit(1 << 20);
        // A link out of the tree, swapped in after the manifests loaded.
        fs::write(tree.join("conf"), "ok").expect("write");
        let conf = source(&tree, "conf");
        fs::remove_file(tree.join("conf")).expect("rm");
        symlink(t.path().join("shadow"), tree.join("conf")).expect("symlink");
        let e = snaps
            .take(&rev('a'), &BTreeSet::from([conf]))
            .expect_err("escape");
        assert!(e.contains("outside its tree"), "{e}");
        // Over the size limit.
        let e = snaps
            .take(&rev('a'), &BTreeSet::from([source(&tree, "big")]))
            .expect_err("too big");
        assert!(e.contains("kept up to 1 MiB"), "{e}");
        // A revision that would name a path.
        for bad in [
            "../../etc",
            "sha256:../x",
            "",
            "a/b",
            ".new-x",
            "abc+img:../x",
            "abc+img:",
            "+img:abc",
        ] {
            let e = snaps
                .take(bad, &BTreeSet::from([source(&tree, "big")]))
                .expect_err(bad);
            assert!(e.contains("cannot name a snapshot"), "{bad}: {e}");
        }
        let mut copied = Vec::new();
        let mut stack = vec![state.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().expect("type").is_dir() {
                    stack.push(e.path());
                } else {
                    copied.push(e.path());
                }
            }
        }
        assert!(copied.is_empty(), "{copied:?}");
    }
}
