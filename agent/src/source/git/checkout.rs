//! Writing a commit's tree to a fresh directory, comparing a directory
//! with a tree, and swapping the `current` link to it atomically.
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

/// Why a directory is not what a tree holds.
#[derive(Debug)]
pub(crate) enum Mismatch {
    /// An object could not be read: the local clone is damaged.
    Object,
    /// The first difference found, as a message (no file content).
    Differs(String),
}

/// Compares `dir` with `tree`, as [`write_tree`] writes it: the same
/// names, no more and no fewer; directories as directories (never links);
/// files with the blob's content (by its git hash) and the mode written
/// (0644 or 0755); links with the blob as their target; a submodule as an
/// empty directory.
pub(crate) fn compare_tree(repo: &Repository, tree: &Tree<'_>, dir: &Path) -> Result<(), Mismatch> {
    compare_in(repo, tree, dir, Path::new("."))
}

fn compare_in(repo: &Repository, tree: &Tree<'_>, dir: &Path, rel: &Path) -> Result<(), Mismatch> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let differs = |what: String| Err(Mismatch::Differs(what));
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return differs(format!("{} is no longer a directory", rel.display())),
        Err(e) => return differs(format!("{} cannot be read: {e}", rel.display())),
    }
    let mut on_disk = std::collections::BTreeSet::new();
    let entries = fs::read_dir(dir)
        .map_err(|e| Mismatch::Differs(format!("{} cannot be read: {e}", rel.display())))?;
    for e in entries {
        let e =
            e.map_err(|e| Mismatch::Differs(format!("{} cannot be read: {e}", rel.display())))?;
        on_disk.insert(e.file_name());
    }
    for entry in tree.iter() {
        let name = std::ffi::OsStr::from_bytes(entry.name_bytes()).to_os_string();
        let (path, shown) = (dir.join(&name), rel.join(&name));
        if !on_disk.remove(&name) {
            return differs(format!("{} is missing", shown.display()));
        }
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| Mismatch::Differs(format!("{} cannot be read: {e}", shown.display())))?;
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                let sub = repo.find_tree(entry.id()).map_err(|_| Mismatch::Object)?;
                compare_in(repo, &sub, &path, &shown)?;
            }
            (Some(ObjectType::Blob), 0o120000) => {
                let blob = repo.find_blob(entry.id()).map_err(|_| Mismatch::Object)?;
                let same = meta.file_type().is_symlink()
                    && fs::read_link(&path)
                        .is_ok_and(|t| t.as_os_str().as_bytes() == blob.content());
                if !same {
                    return differs(format!("the link {} was changed", shown.display()));
                }
            }
            (Some(ObjectType::Blob), mode) => {
                let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                if !meta.file_type().is_file() {
                    return differs(format!("{} is no longer a file", shown.display()));
                }
                if meta.permissions().mode() & 0o7777 != perm {
                    return differs(format!("the mode of {} was changed", shown.display()));
                }
                let hash = git2::Oid::hash_file(ObjectType::Blob, &path).map_err(|e| {
                    Mismatch::Differs(format!(
                        "{} cannot be read: {}",
                        shown.display(),
                        e.message()
                    ))
                })?;
                if hash != entry.id() {
                    return differs(format!("{} was changed", shown.display()));
                }
            }
            (Some(ObjectType::Commit), _) => {
                let empty =
                    meta.is_dir() && fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
                if !empty {
                    return differs(format!("{} was changed", shown.display()));
                }
            }
            _ => return differs(format!("{} is of an unknown kind", shown.display())),
        }
    }
    match on_disk.into_iter().next() {
        Some(extra) => differs(format!(
            "{} is not in the commit",
            rel.join(extra).display()
        )),
        None => Ok(()),
    }
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
        let sound = repo.find_tree(sound).unwrap();
        compare_tree(&repo, &sound, &dir).expect("as written");
        // Each kind of tampering is told, and says where.
        type Tamper<'a> = (&'a str, &'a dyn Fn(&Path));
        let tamper: [Tamper; 6] = [
            ("./sub/file was changed", &|d| {
                fs::write(d.join("sub/file"), "p0wned").unwrap()
            }),
            ("./x.toml is not in the commit", &|d| {
                fs::write(d.join("x.toml"), "").unwrap()
            }),
            ("./sub/file is missing", &|d| {
                fs::remove_file(d.join("sub/file")).unwrap()
            }),
            ("the link ./this was changed", &|d| {
                fs::remove_file(d.join("this")).unwrap();
                symlink("/etc", d.join("this")).unwrap();
            }),
            ("the mode of ./run.sh was changed", &|d| {
                fs::set_permissions(d.join("run.sh"), fs::Permissions::from_mode(0o4755)).unwrap()
            }),
            ("./sub is no longer a directory", &|d| {
                fs::rename(d.join("sub"), d.join("moved")).unwrap();
                symlink("moved", d.join("sub")).unwrap();
            }),
        ];
        for (i, (says, tamper)) in tamper.iter().enumerate() {
            let copy = tmp.path().join(format!("copy-{i}"));
            write_tree(&repo, &sound, &copy, 1 << 20).unwrap();
            tamper(&copy);
            match compare_tree(&repo, &sound, &copy) {
                Err(Mismatch::Differs(why)) => assert!(why.starts_with(says), "{says}: {why}"),
                other => panic!("{says}: {other:?}"),
            }
        }
        assert!(!is_plain_dir(&dir, Path::new("this")));
        assert!(!is_plain_dir(&dir, Path::new("../sound")));
    }
}
