//! The garbage-collection lock: an advisory `flock` on `gc.lock`, shared by
//! writers, exclusive for collection. Released when the guard drops (or the
//! process dies, so a crash never leaves it held).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// A held lock.
#[derive(Debug)]
pub struct GcLock {
    _file: File,
    exclusive: bool,
}

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("lock {path}")]
pub struct LockError {
    /// The lock file.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

impl GcLock {
    /// Waits for and takes the lock shared.
    pub fn shared(path: &Path) -> Result<Self, LockError> {
        Self::take(path, FlockOperation::LockShared)
    }

    /// Waits for and takes the lock exclusively.
    pub fn exclusive(path: &Path) -> Result<Self, LockError> {
        Self::take(path, FlockOperation::LockExclusive)
    }

    fn take(path: &Path, op: FlockOperation) -> Result<Self, LockError> {
        let err = |source| LockError {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        flock(&file, op).map_err(|e| err(e.into()))?;
        Ok(Self {
            _file: file,
            exclusive: op == FlockOperation::LockExclusive,
        })
    }

    /// Whether this guard holds the lock exclusively.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}
