//! moor's embedded state, under one state directory (docs/ARCHITECTURE.md).
//!
//! Start at [`Store`]: it opens the three parts together.
//!
//! - [`BlobStore`]: content-addressed blobs (`blobs/sha256/<hex>`), written
//!   through an [`Ingest`] file that is checked against the expected digest
//!   and declared size before an atomic rename.
//! - [`Db`]: the metadata database (images, references, layer snapshot
//!   records and who holds them).
//! - [`Snapshots`]: unpacked layers keyed by chain ID, made in a temporary
//!   directory and renamed into place.
//!
//! Everything is created mode 0700 (directories) or 0600 (files): state is
//! not world-readable (§7).

mod blobs;
mod db;
mod digest;
mod fsutil;
mod lock;
mod snapshots;

pub use blobs::{BlobError, BlobStore, Ingest};
pub use db::{Db, DbError, ImageRecord, LayerRecord, SnapshotRecord};
pub use digest::{Digest, DigestError, sha256_hex};
pub use lock::{GcLock, LockError};
pub use snapshots::{SnapshotError, Snapshots};

use std::path::{Path, PathBuf};

/// The state directory opened as a whole.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Content-addressed blobs.
    pub blobs: BlobStore,
    /// The metadata database.
    pub db: Db,
    /// Unpacked layer snapshots.
    pub snapshots: Snapshots,
}

/// Errors opening the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("create state directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The blob store could not be opened.
    #[error(transparent)]
    Blobs(#[from] BlobError),
    /// The database could not be opened.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The snapshot directory could not be opened.
    #[error(transparent)]
    Snapshots(#[from] SnapshotError),
}

impl Store {
    /// Opens (creating as needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fsutil::create_private_dir_all(root).map_err(|source| StoreError::CreateDir {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(Self {
            root: root.to_path_buf(),
            blobs: BlobStore::open(root)?,
            db: Db::open(&root.join("moor.db"))?,
            snapshots: Snapshots::open(root)?,
        })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the garbage-collection lock shared: held by anything that adds
    /// blobs or snapshots before it records them, so that a concurrent
    /// collection cannot take them away in between.
    pub fn lock_shared(&self) -> Result<GcLock, LockError> {
        GcLock::shared(&self.root.join("gc.lock"))
    }

    /// Takes the garbage-collection lock exclusively (for [`Store::gc`]).
    pub fn lock_exclusive(&self) -> Result<GcLock, LockError> {
        GcLock::exclusive(&self.root.join("gc.lock"))
    }

    /// Removes every blob and snapshot that nothing references, and stale
    /// ingest files and temporary snapshot directories left by a crash.
    /// Takes the exclusive lock itself.
    pub fn gc(&self) -> Result<GcReport, GcError> {
        let lock = self.lock_exclusive()?;
        self.gc_held(&lock)
    }

    /// [`Store::gc`] under an exclusive lock the caller holds (from
    /// [`Store::lock_exclusive`]): for one that removes records first
    /// (an image prune), so that no writer holding the lock shared (a
    /// pull, a tag) runs between its removals and the collection.
    pub fn gc_held(&self, lock: &GcLock) -> Result<GcReport, GcError> {
        self.gc_held_keeping(lock, &std::collections::HashSet::new())
    }

    /// [`Store::gc_held`], keeping as well the blobs in `kept` (the build
    /// cache's layers, read by the caller under the same lock, so that
    /// they cannot change before the collection).
    pub fn gc_held_keeping(
        &self,
        lock: &GcLock,
        kept: &std::collections::HashSet<Digest>,
    ) -> Result<GcReport, GcError> {
        if !lock.is_exclusive() {
            return Err(GcError::NotExclusive);
        }
        let mut report = GcReport::default();
        // Snapshots first: their records go before their directories, so a
        // crash in between leaves an unrecorded directory, which the next
        // collection removes.
        for chain in self.db.unreferenced_snapshots()? {
            self.db.delete_snapshot(&chain)?;
            self.snapshots.remove(&chain)?;
            report.snapshots += 1;
        }
        let recorded = self.db.snapshot_ids()?;
        for chain in self.snapshots.list()? {
            if !recorded.contains(&chain) {
                self.snapshots.remove(&chain)?;
                report.snapshots += 1;
            }
        }
        report.temporaries += self.snapshots.remove_temporaries()?;
        let referenced = self.db.referenced_blobs()?;
        for digest in self.blobs.list()? {
            if !referenced.contains(&digest) && !kept.contains(&digest) {
                report.bytes += self.blobs.remove(&digest)?;
                report.blobs += 1;
            }
        }
        report.temporaries += self.blobs.remove_ingests()?;
        Ok(report)
    }
}

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes of blobs removed.
    pub bytes: u64,
    /// Snapshots removed.
    pub snapshots: usize,
    /// Stale ingest files and temporary directories removed.
    pub temporaries: usize,
}

/// Errors of a garbage collection.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A blob could not be removed.
    #[error(transparent)]
    Blobs(#[from] BlobError),
    /// A snapshot could not be removed.
    #[error(transparent)]
    Snapshots(#[from] SnapshotError),
    /// [`Store::gc_held`] was given a shared lock.
    #[error("garbage collection needs the store's lock held exclusively")]
    NotExclusive,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_removes_what_nothing_references_and_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kept = store.blobs.put(b"manifest", None).unwrap();
        let config = store.blobs.put(b"config", None).unwrap();
        let layer = store.blobs.put(b"layer", None).unwrap();
        let orphan = store.blobs.put(b"orphan", None).unwrap();
        let chain = format!("sha256:{}", "c".repeat(64));
        let temp = store.snapshots.temp_dir().unwrap();
        store.snapshots.commit(&temp, &chain).unwrap();
        store
            .db
            .put_snapshot(&SnapshotRecord {
                chain_id: chain.clone(),
                parent: None,
                diff_id: chain.clone(),
                size: 0,
            })
            .unwrap();
        let image = ImageRecord {
            digest: kept.to_string(),
            media_type: "m".into(),
            config: config.to_string(),
            index: None,
            platform: "linux/amd64".into(),
            size: 1,
            created: 0,
            layers: vec![LayerRecord {
                blob: layer.to_string(),
                media_type: "l".into(),
                size: 5,
                diff_id: chain.clone(),
                chain_id: chain.clone(),
            }],
            refs: vec![],
        };
        store.db.put_image(&image, &["r/x:1".into()]).unwrap();
        // A crash left an ingest file, a temporary snapshot and an
        // unrecorded snapshot directory.
        std::mem::forget(store.blobs.ingest(None, None).unwrap());
        store.snapshots.temp_dir().unwrap();
        let unrecorded = format!("sha256:{}", "d".repeat(64));
        let t = store.snapshots.temp_dir().unwrap();
        store.snapshots.commit(&t, &unrecorded).unwrap();

        let report = store.gc().unwrap();
        assert_eq!(
            (report.blobs, report.snapshots, report.temporaries),
            (1, 1, 2)
        );
        assert!(!store.blobs.contains(&orphan));
        assert!(store.blobs.contains(&layer) && store.snapshots.exists(&chain));

        store.db.remove_image(&kept.to_string()).unwrap();
        let report = store.gc().unwrap();
        assert_eq!((report.blobs, report.snapshots), (3, 1));
        assert!(store.blobs.list().unwrap().is_empty());
        assert!(store.snapshots.list().unwrap().is_empty());
    }

    #[test]
    fn gc_keeping_spares_the_blobs_it_is_told_to() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cached = store.blobs.put(b"a cached layer", None).unwrap();
        let orphan = store.blobs.put(b"an orphan", None).unwrap();
        let lock = store.lock_exclusive().unwrap();
        let report = store
            .gc_held_keeping(&lock, &std::iter::once(cached.clone()).collect())
            .unwrap();
        drop(lock);
        assert_eq!(report.blobs, 1);
        assert!(store.blobs.contains(&cached));
        assert!(!store.blobs.contains(&orphan));
        store.gc().unwrap();
        assert!(!store.blobs.contains(&cached));
    }
}
