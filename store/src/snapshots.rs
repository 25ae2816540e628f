//! Unpacked layers: `snapshots/<chain-id hex>/`, each holding one layer's
//! changes in overlayfs form (whiteouts as 0/0 character devices, opaque
//! directories marked with `trusted.overlay.opaque`), ready to be a
//! `lowerdir`. A snapshot is made in `snapshots/.tmp-*` and renamed into
//! place, so a name only ever holds a complete layer.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil::{create_private_dir_all, sync_dir, unique_suffix};

/// The snapshot directory.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
}

/// Errors of the snapshot directory.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}")]
pub struct SnapshotError {
    /// What was being done.
    pub what: &'static str,
    /// The directory.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

fn hex_of(chain_id: &str) -> &str {
    chain_id.strip_prefix("sha256:").unwrap_or(chain_id)
}

impl Snapshots {
    /// Opens (creating as needed) `snapshots/` under the state dir `root`.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        let dir = root.join("snapshots");
        create_private_dir_all(&dir).map_err(|source| SnapshotError {
            what: "create directory",
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// Where the snapshot of `chain_id` lives.
    pub fn path(&self, chain_id: &str) -> PathBuf {
        self.dir.join(hex_of(chain_id))
    }

    /// True when the snapshot's directory exists.
    pub fn exists(&self, chain_id: &str) -> bool {
        self.path(chain_id).is_dir()
    }

    /// A new, empty temporary directory to unpack into.
    pub fn temp_dir(&self) -> Result<PathBuf, SnapshotError> {
        let path = self.dir.join(format!(".tmp-{}", unique_suffix()));
        fs::create_dir(&path).map_err(|source| SnapshotError {
            what: "create temporary snapshot",
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Renames a finished temporary directory into place. When another
    /// writer got there first, keeps theirs and removes `temp`.
    pub fn commit(&self, temp: &Path, chain_id: &str) -> Result<PathBuf, SnapshotError> {
        let target = self.path(chain_id);
        match fs::rename(temp, &target) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(39 | 17)) && target.is_dir() => {
                // ENOTEMPTY / EEXIST: already unpacked by someone else.
                remove_tree(temp)?;
            }
            Err(source) => {
                return Err(SnapshotError {
                    what: "rename snapshot into place at",
                    path: target,
                    source,
                });
            }
        }
        sync_dir(&self.dir).map_err(|source| SnapshotError {
            what: "fsync directory",
            path: self.dir.clone(),
            source,
        })?;
        Ok(target)
    }

    /// Removes a snapshot: renamed aside first, so that a crash midway
    /// leaves a temporary directory rather than a half snapshot.
    pub fn remove(&self, chain_id: &str) -> Result<(), SnapshotError> {
        let path = self.path(chain_id);
        let trash = self.dir.join(format!(".tmp-rm-{}", unique_suffix()));
        match fs::rename(&path, &trash) {
            Ok(()) => remove_tree(&trash),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SnapshotError {
                what: "remove snapshot",
                path,
                source,
            }),
        }
    }

    /// Removes a temporary directory (public for unpackers that fail).
    pub fn discard(&self, temp: &Path) -> Result<(), SnapshotError> {
        remove_tree(temp)
    }

    /// Chain IDs (`sha256:<hex>`) of every snapshot directory.
    pub fn list(&self) -> Result<Vec<String>, SnapshotError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| SnapshotError {
            what: "list snapshots in",
            path: self.dir.clone(),
            source,
        })?;
        Ok(entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .map(|n| format!("sha256:{n}"))
            .collect())
    }

    /// Removes every temporary directory; call only under the exclusive lock.
    pub fn remove_temporaries(&self) -> Result<usize, SnapshotError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| SnapshotError {
            what: "list snapshots in",
            path: self.dir.clone(),
            source,
        })?;
        let mut n = 0;
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                remove_tree(&e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Removes a directory tree. Layers may hold directories without write or
/// search permission for their owner; as root that does not matter, and
/// otherwise permissions are widened before descending.
fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    widen(path);
    fs::remove_dir_all(path).map_err(|source| SnapshotError {
        what: "remove directory",
        path: path.to_path_buf(),
        source,
    })
}

fn widen(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::symlink_metadata(path)
        && meta.is_dir()
    {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.filter_map(|e| e.ok()) {
                widen(&e.path());
            }
        }
    }
}
