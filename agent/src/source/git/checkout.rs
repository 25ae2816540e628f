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

/// Writes `tree` into `dir`, which must not exist yet.
pub(crate) fn write_tree(
    repo: &Repository,
    tree: &Tree<'_>,
    dir: &Path,
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
                write_tree(repo, &sub, &path)?;
            }
            Some(ObjectType::Blob) => {
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
