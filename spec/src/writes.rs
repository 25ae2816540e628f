//! A container must not write its own desired state.
//!
//! A read-write bind mount lets a container write into a host directory.
//! When that directory is part of a manifest tree, what the container
//! writes there (`x.toml` declaring a privileged container) would be read
//! as manifests at the next load. [`Writes`] says what a load does about it:
//!
//! - [`Writes::Refuse`] (git sources): a read-write bind into the tree, or
//!   over it, is an error at the field. A checkout is replaced on every
//!   revision anyway; data belongs in a named volume.
//! - [`Writes::Skip`] (directory sources, `moor apply DIR`): the files under
//!   a read-write bind of the same load are not read as manifests, and
//!   neither is anything under [`crate::LoadOptions::skip`] (the agent
//!   passes every directory it has seen mounted read-write, so what a
//!   container wrote stays unread after the container is gone). A bind
//!   that covers the very manifest declaring it is an error: the container
//!   could rewrite its own declaration.
//!
//! Either way the content of a read-write bind is not part of its
//! container's spec hash (see `bind`): it is the container's own data, and
//! hashing it would replace the container whenever it writes. A read-only
//! bind of a directory that a read-write bind overlaps is hashed by path
//! alone for the same reason.
//!
//! Files are placed by their directory's real path and their own name (a
//! link a container wrote is placed where the link is), so a link into or
//! out of a written directory cannot hide a file from the check.

use std::path::{Path, PathBuf};

use crate::decode::{ContainerDraft, Drafts};
use crate::mounts::MountSource;

/// What a read-write bind into the source's tree makes of the files under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Writes {
    /// Skip them (directory sources).
    #[default]
    Skip,
    /// Refuse the bind (git sources).
    Refuse,
}

/// A bind mount of a decoded container, where it really leads.
#[derive(Debug, Clone)]
pub(crate) struct BindSeen {
    /// Its index in the container's `mounts`.
    pub(crate) mount: usize,
    /// The real path the mount shows (links followed).
    pub(crate) real: PathBuf,
    /// Mounted read-only.
    pub(crate) read_only: bool,
}

/// Where a file's entry really is: its directory's real path and its own
/// name (not followed).
pub fn location(file: &Path) -> PathBuf {
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| crate::tree::normalize(&absolute)),
        _ => absolute,
    }
}

/// The real path a host path leads to (as far as it exists).
pub(crate) fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| crate::tree::normalize(path))
}

/// True when one path is the other or under it.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Checks a read-write bind of `real` (written as `shown`) declared in the
/// manifest at `file` of the tree whose real root is `tree_root`.
pub(crate) fn check_writable(
    writes: Writes,
    shown: &Path,
    real: &Path,
    file: &Path,
    tree_root: Option<&Path>,
) -> Result<(), String> {
    let shown = shown.display();
    match writes {
        Writes::Refuse => match tree_root {
            Some(root) if overlaps(real, root) => Err(format!(
                "a read-write bind of \"{shown}\" into the source's tree is refused: a git source's checkout is replaced on every revision, and a container must not write its own desired state (mount it read-only with :ro, or use a named volume)"
            )),
            _ => Ok(()),
        },
        Writes::Skip if location(file).starts_with(real) => Err(format!(
            "a read-write bind of \"{shown}\" covers this manifest: the container could rewrite its own desired state (mount it read-only with :ro, bind a sub-directory without manifests, or use a named volume)"
        )),
        Writes::Skip => Ok(()),
    }
}

/// True when `file` lies under one of `dirs` (real paths), placed as
/// [`location`] places it: its directory's real path and its own name.
pub fn is_under(file: &Path, dirs: &[PathBuf]) -> bool {
    !dirs.is_empty() && {
        let at = location(file);
        dirs.iter().any(|d| at.starts_with(d))
    }
}

/// The real paths of every read-write bind the containers of `files` declare.
pub(crate) fn rw_binds<'a>(files: impl Iterator<Item = &'a Drafts>) -> Vec<PathBuf> {
    files
        .flat_map(|f| f.containers.iter())
        .flat_map(|c| c.binds.iter())
        .filter(|b| !b.read_only)
        .map(|b| b.real.clone())
        .collect()
}

/// `drafts` with the read-only binds that one of `written` (read-write
/// binds) overlaps hashed by path alone, when there are any: what another
/// container writes there must not replace the reader.
pub(crate) fn unhash_overlapped(drafts: &Drafts, written: &[PathBuf]) -> Option<Drafts> {
    let overlapped = |c: &ContainerDraft| {
        c.binds
            .iter()
            .filter(|b| b.read_only && written.iter().any(|w| overlaps(w, &b.real)))
            .map(|b| b.mount)
            .collect::<Vec<_>>()
    };
    if drafts.containers.iter().all(|c| overlapped(c).is_empty()) {
        return None;
    }
    let mut out = drafts.clone();
    for c in &mut out.containers {
        let mounts = overlapped(c);
        if mounts.is_empty() {
            continue;
        }
        for m in mounts {
            if let Some(m) = std::sync::Arc::make_mut(&mut c.d.spec).mounts.get_mut(m)
                && let MountSource::Bind { content_digest, .. } = &mut m.source
            {
                *content_digest = None;
            }
        }
        c.d.hash = Some(crate::hash::container_unsorted(&c.d.spec));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoadOptions;

    fn write(root: &Path, name: &str, text: &str) {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const APP: &str =
        "[containers.app]\nimage = \"busybox\"\nmounts = [\"./data:/data\", \"./conf:/conf:ro\"]\n";
    const EVIL: &str = "[containers.evil]\nimage = \"busybox\"\ncap_add = [\"ALL\"]\nnetwork_mode = \"host\"\nmounts = [\"/:/host\", \"..:/up\"]\n";

    fn load(root: &Path, options: &LoadOptions) -> Result<crate::DesiredState, String> {
        crate::load_with(&[root], None, options).map_err(|d| d.to_string())
    }

    #[test]
    fn what_a_container_writes_into_its_bind_is_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        write(&root, "app.toml", APP);
        write(&root, "conf/a.conf", "x");
        write(&root, "data/.keep", "");
        let options = LoadOptions::default();
        let before = load(&root, &options).unwrap();
        // The container writes a manifest (and a broken one) into its bind.
        write(&root, "data/x.toml", EVIL);
        write(&root, "data/sub/broken.yaml", "containers: [");
        let after = load(&root, &options).unwrap();
        assert_eq!(after, before);
        // Even through a link the tree holds into the written directory.
        std::os::unix::fs::symlink("data/sub", root.join("more")).unwrap();
        write(&root, "data/sub/y.toml", EVIL);
        assert_eq!(load(&root, &options).unwrap(), before);

        // What the agent remembers is not even read.
        let skip = LoadOptions {
            skip: vec![std::fs::canonicalize(root.join("data")).unwrap()],
            ..LoadOptions::default()
        };
        write(&root, "app.toml", "[containers.app]\nimage = \"busybox\"\n");
        let gone = load(&root, &skip).unwrap();
        assert_eq!(gone.containers.len(), 1, "{gone:?}");
        assert!(load(&root, &options).is_err(), "read without it");
    }

    #[test]
    fn a_bind_over_its_own_manifest_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        write(
            &root,
            "app.toml",
            "[containers.app]\nimage = \"busybox\"\nmounts = [\".:/site\"]\n",
        );
        let e = load(&root, &LoadOptions::default()).unwrap_err();
        assert!(
            e.contains("app.toml:3:11: error: containers.app.mounts[0]: a read-write bind of \".\" covers this manifest"),
            "{e}"
        );
        // Read-only is fine.
        write(
            &root,
            "app.toml",
            "[containers.app]\nimage = \"busybox\"\nmounts = [\".:/site:ro\"]\n",
        );
        load(&root, &LoadOptions::default()).unwrap();
    }

    #[test]
    fn a_git_source_refuses_read_write_binds_into_its_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("checkout");
        write(&root, "app.toml", APP);
        write(&root, "conf/a.conf", "x");
        write(&root, "data/.keep", "");
        let git = LoadOptions {
            writes: Writes::Refuse,
            ..LoadOptions::default()
        };
        let e = load(&root, &git).unwrap_err();
        assert!(
            e.contains("containers.app.mounts[0]: a read-write bind of \"./data\" into the source's tree is refused"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "the read-only bind is fine: {e}");
        // An absolute bind over the tree too.
        write(
            &root,
            "app.toml",
            &format!(
                "[containers.app]\nimage = \"busybox\"\nmounts = [\"{}:/up\"]\n",
                tmp.path().display()
            ),
        );
        let e = load(&root, &git).unwrap_err();
        assert!(e.contains("into the source's tree is refused"), "{e}");
    }

    #[test]
    fn read_write_content_is_not_hashed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        write(
            &root,
            "app.toml",
            "[containers.app]\nimage = \"busybox\"\nmounts = [\"./data:/data\"]\n\
             [containers.reader]\nimage = \"busybox\"\nmounts = [\"./data:/data:ro\", \"./conf:/conf:ro\"]\n",
        );
        write(&root, "data/state", "1");
        write(&root, "conf/c", "1");
        let options = LoadOptions::default();
        let one = load(&root, &options).unwrap();
        write(&root, "data/state", "2");
        let two = load(&root, &options).unwrap();
        assert_eq!(one.containers["app"].hash, two.containers["app"].hash);
        assert_eq!(one.containers["reader"].hash, two.containers["reader"].hash);
        // A read-only bind elsewhere still redeploys on a change.
        write(&root, "conf/c", "2");
        let three = load(&root, &options).unwrap();
        assert_ne!(
            two.containers["reader"].hash,
            three.containers["reader"].hash
        );
    }
}
