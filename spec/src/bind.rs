//! Bind mounts whose source lives next to the manifests.
//!
//! A relative source (`./conf/nginx.conf`) is resolved against the manifest
//! file's directory, and the content of a read-only one is hashed into the
//! container's spec hash: editing a config file in git redeploys exactly the
//! containers that read it. (A read-write one is the container's own data:
//! hashing it would replace the container whenever it writes.)

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bind sources larger than this (in total) are refused: they are data, not
/// configuration, and belong in a volume or an absolute host path.
pub const MAX_CONTENT_BYTES: u64 = 256 << 20;
const MAX_ENTRIES: usize = 10_000;

/// Joins `relative` onto `dir` and removes `.` and `..` lexically (see
/// [`crate::tree::normalize`]).
pub fn resolve(dir: &Path, relative: &Path) -> PathBuf {
    crate::tree::normalize(&dir.join(relative))
}

/// sha256 over a file's content, or over a directory tree's names, kinds,
/// modes and contents (sorted; links inside by their target, not followed,
/// as a bind mount shows them). `path` itself should be resolved already
/// (see [`crate::tree::Tree::resolve`]): a link there is hashed as a link.
pub fn content_digest(path: &Path) -> Result<String, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| {
        format!(
            "bind source \"{}\" cannot be read: {}",
            path.display(),
            crate::diag::io_reason(&e)
        )
    })?;
    let mut hasher = Sha256::new();
    let mut budget = Budget {
        bytes: MAX_CONTENT_BYTES,
        entries: MAX_ENTRIES,
    };
    if meta.is_dir() {
        hash_dir(path, Path::new(""), &mut hasher, &mut budget)?;
    } else {
        hash_entry(path, Path::new(""), &meta, &mut hasher, &mut budget)?;
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

struct Budget {
    bytes: u64,
    entries: usize,
}

fn hash_dir(root: &Path, rel: &Path, h: &mut Sha256, budget: &mut Budget) -> Result<(), String> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .and_then(|it| {
            it.map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| {
            format!(
                "bind source \"{}\" cannot be read: {}",
                dir.display(),
                crate::diag::io_reason(&e)
            )
        })?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(|e| {
            format!(
                "cannot read \"{}\": {}",
                path.display(),
                crate::diag::io_reason(&e)
            )
        })?;
        hash_entry(&path, &rel, &meta, h, budget)?;
        if meta.is_dir() {
            hash_dir(root, &rel, h, budget)?;
        }
    }
    Ok(())
}

fn hash_entry(
    path: &Path,
    rel: &Path,
    meta: &fs::Metadata,
    h: &mut Sha256,
    budget: &mut Budget,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    budget.entries = budget.entries.checked_sub(1).ok_or_else(|| {
        format!(
            "bind source holds more than {MAX_ENTRIES} entries; use an absolute host path for data"
        )
    })?;
    let name = rel.as_os_str().as_encoded_bytes();
    h.update((name.len() as u64).to_le_bytes());
    h.update(name);
    h.update(meta.permissions().mode().to_le_bytes());
    let ft = meta.file_type();
    if ft.is_file() {
        budget.bytes = budget.bytes.checked_sub(meta.len()).ok_or_else(|| {
            format!(
                "bind source is larger than {} MiB; use an absolute host path for data",
                MAX_CONTENT_BYTES >> 20
            )
        })?;
        h.update(b"f");
        h.update(meta.len().to_le_bytes());
        let cannot = |e: std::io::Error| {
            format!(
                "cannot read \"{}\": {}",
                path.display(),
                crate::diag::io_reason(&e)
            )
        };
        // Opened without following a link and without waiting, and read
        // no further than the size looked at: a file swapped for a FIFO
        // or a link, or one that keeps growing, cannot hold the load.
        let f = crate::load::open_nonblocking_nofollow(path).map_err(cannot)?;
        let opened = f.metadata().map_err(cannot)?;
        {
            use std::os::unix::fs::MetadataExt;
            if !opened.is_file() || opened.ino() != meta.ino() || opened.dev() != meta.dev() {
                return Err(format!(
                    "cannot read \"{}\": it changed while it was read",
                    path.display()
                ));
            }
        }
        let mut f = f.take(meta.len());
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(|e| {
                format!(
                    "cannot read \"{}\": {}",
                    path.display(),
                    crate::diag::io_reason(&e)
                )
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(|e| {
            format!(
                "cannot read \"{}\": {}",
                path.display(),
                crate::diag::io_reason(&e)
            )
        })?;
        h.update(b"l");
        h.update(target.as_os_str().as_encoded_bytes());
    } else if ft.is_dir() {
        h.update(b"d");
    } else {
        h.update(b"o");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_lexically() {
        assert_eq!(
            resolve(Path::new("/repo/app"), Path::new("./conf/x")),
            PathBuf::from("/repo/app/conf/x")
        );
        assert_eq!(
            resolve(Path::new("/repo/app"), Path::new("../common/y")),
            PathBuf::from("/repo/common/y")
        );
        assert_eq!(
            resolve(Path::new("../m/app"), Path::new("../../conf")),
            PathBuf::from("../conf"),
            "a leading `..` of a relative directory is kept"
        );
    }

    #[test]
    fn digest_follows_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.conf");
        fs::write(&file, "one").unwrap();
        let d1 = content_digest(&file).unwrap();
        let tree1 = content_digest(dir.path()).unwrap();
        fs::write(&file, "two").unwrap();
        assert_ne!(content_digest(&file).unwrap(), d1);
        assert_ne!(content_digest(dir.path()).unwrap(), tree1);
        fs::write(&file, "one").unwrap();
        assert_eq!(content_digest(&file).unwrap(), d1);
        assert!(content_digest(&dir.path().join("missing")).is_err());
    }
}
