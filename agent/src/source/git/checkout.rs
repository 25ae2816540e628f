//! Writing a commit's tree to a fresh directory, and swapping the `current`
//! link to it atomically.
//!
//! The tree is written by walking the objects ourselves, not through an
//! index: every directory is created new (`mkdir` fails on anything already
//! there, a symbolic link included) and every file with `O_EXCL`, so a crafted
//! tree (an entry named `..` or holding a `/`, two entries of one name, a
//! symbolic link followed by a directory of the same name) can never write
//! outside the checkout.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Component, Path};

use git2::{ObjectType, Repository, Tree};

/// Why a checkout failed.
#[derive(Debug)]
pub(crate) enum CheckoutError {
    /// An object could not be read: the local clone is damaged.
    Object(git2::Error),
    /// Writing the files failed.
    Io(std::io::Error),
    /// The tree holds a name that is not a plain file name.
    Unsafe(String),
}

impl From<std::io::Error> for CheckoutError {
    fn from(e: std::io::Error) -> Self {
        CheckoutError::Io(e)
    }
}

/// Writes `tree` into `dir`, which must not exist yet. A file larger than
/// `max_blob` bytes is refused from its object header, before it is
/// inflated (a few kilobytes of a packed blob can inflate to gigabytes).
pub(crate) fn write_tree(
    repo: &Repository,
    tree: &Tree<'_>,
    dir: &Path,
    max_blob: u64,
) -> Result<(), CheckoutError> {
    let odb = repo.odb().map_err(CheckoutError::Object)?;
    write_tree_in(repo, &odb, tree, dir, Path::new(""), max_blob)
}

fn write_tree_in(
    repo: &Repository,
    odb: &git2::Odb<'_>,
    tree: &Tree<'_>,
    dir: &Path,
    rel: &Path,
    max_blob: u64,
) -> Result<(), CheckoutError> {
    fs::create_dir(dir)?;
    for entry in tree.iter() {
        let name = entry
            .name()
            .map_err(|_| CheckoutError::Unsafe("a tree entry's name is not UTF-8".into()))?;
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(CheckoutError::Unsafe(format!(
                "the tree holds an entry named {name:?}"
            )));
        }
        let path = dir.join(name);
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let sub = repo.find_tree(entry.id()).map_err(CheckoutError::Object)?;
                write_tree_in(repo, odb, &sub, &path, &rel.join(name), max_blob)?;
            }
            Some(ObjectType::Blob) => {
                let (size, _) = odb.read_header(entry.id()).map_err(CheckoutError::Object)?;
                if size as u64 > max_blob {
                    return Err(CheckoutError::Unsafe(format!(
                        "the file {:?} is {size} bytes, larger than the {} limit for a file of a source; it was not read",
                        rel.join(name),
                        moor_spec::units::format_size(max_blob)
                    )));
                }
                let blob = repo.find_blob(entry.id()).map_err(CheckoutError::Object)?;
                match entry.filemode() {
                    0o120000 => {
                        let target = std::str::from_utf8(blob.content()).map_err(|_| {
                            CheckoutError::Unsafe(format!(
                                "the symbolic link {name:?} has a target that is not UTF-8"
                            ))
                        })?;
                        symlink(target, &path)?;
                    }
                    mode => {
                        let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                        let mut f = fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(perm)
                            .open(&path)?;
                        f.write_all(blob.content())?;
                    }
                }
            }
            // A submodule: an empty directory, as git leaves it.
            Some(ObjectType::Commit) => fs::create_dir(&path)?,
            _ => {
                return Err(CheckoutError::Unsafe(format!(
                    "the tree entry {name:?} is of an unknown kind"
                )));
            }
        }
    }
    Ok(())
}

/// True when `sub` (relative, checked) names a real directory inside `root`,
/// reached without following any symbolic link.
pub(crate) fn is_plain_dir(root: &Path, sub: &Path) -> bool {
    let mut at = root.to_path_buf();
    for c in sub.components() {
        match c {
            Component::Normal(n) => at.push(n),
            Component::CurDir => continue,
            _ => return false,
        }
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// Points the symbolic link `link` at `target` atomically (a new link renamed
/// over the old one).
pub(crate) fn swap_link(link: &Path, target: &Path) -> std::io::Result<()> {
    let tmp = link.with_extension("new");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    symlink(target, &tmp)?;
    fs::rename(&tmp, link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::Oid;

    /// Writes a raw tree object (entries as git stores them, unchecked).
    fn raw_tree(repo: &Repository, entries: &[(&str, &str, Oid)]) -> Oid {
        let mut bytes = Vec::new();
        for (mode, name, id) in entries {
            bytes.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            bytes.extend_from_slice(id.as_bytes());
        }
        repo.odb().unwrap().write(ObjectType::Tree, &bytes).unwrap()
    }

    #[test]
    fn crafted_trees_cannot_write_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path().join("r.git")).unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let blob = repo.blob(b"pwned").unwrap();
        let link = repo.blob(outside.to_str().unwrap().as_bytes()).unwrap();
        let inner = raw_tree(&repo, &[("100644", "file", blob)]);
        let cases = [
            ("dot-dot", vec![("100644", "..", blob)]),
            ("slash", vec![("100644", "a/b", blob)]),
            // A link to a directory outside, then a directory of the same name.
            (
                "link then dir",
                vec![("120000", "x", link), ("40000", "x", inner)],
            ),
            (
                "two files",
                vec![("100644", "x", blob), ("100644", "x", blob)],
            ),
        ];
        for (what, entries) in cases {
            let tree = repo.find_tree(raw_tree(&repo, &entries)).unwrap();
            let dir = tmp.path().join(format!("co-{}", what.replace(' ', "-")));
            let r = write_tree(&repo, &tree, &dir, 1 << 20);
            assert!(r.is_err(), "{what}: accepted");
            assert_eq!(
                fs::read_dir(&outside).unwrap().count(),
                0,
                "{what}: wrote outside"
            );
        }

        // A sound tree: files, an executable, a link, a sub-directory.
        let exe = repo.blob(b"#!/bin/sh\n").unwrap();
        let rel = repo.blob(b"file").unwrap();
        let sound = raw_tree(
            &repo,
            &[
                ("100755", "run.sh", exe),
                ("40000", "sub", inner),
                ("120000", "this", rel),
            ],
        );
        let dir = tmp.path().join("sound");
        write_tree(&repo, &repo.find_tree(sound).unwrap(), &dir, 1 << 20).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(fs::read_to_string(dir.join("sub/file")).unwrap(), "pwned");
        assert_eq!(fs::read_link(dir.join("this")).unwrap(), Path::new("file"));
        assert!(is_plain_dir(&dir, Path::new("sub")));
        assert!(!is_plain_dir(&dir, Path::new("this")));
        assert!(!is_plain_dir(&dir, Path::new("../sound")));
    }
}
