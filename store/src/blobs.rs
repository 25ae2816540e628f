//! The content-addressed blob store: `blobs/sha256/<hex>`.
//!
//! A blob becomes visible only whole and verified: bytes go to an ingest file
//! under `ingest/`, which [`Ingest::commit`] checks against the expected
//! digest and the declared size, fsyncs, and renames into place. A crash
//! leaves at most a stale ingest file, which garbage collection removes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::fsutil::{create_private_dir_all, sync_dir, unique_suffix};

/// The blob store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    ingest: PathBuf,
}

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A filesystem operation failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// More bytes arrived than the descriptor declared.
    #[error("blob {expected} is longer than its declared size of {declared} bytes")]
    TooLong {
        /// The digest it should have had.
        expected: String,
        /// The declared size.
        declared: u64,
    },
    /// Fewer bytes arrived than the descriptor declared.
    #[error("blob {expected} is {got} bytes, shorter than its declared size of {declared} bytes")]
    TooShort {
        /// The digest it should have had.
        expected: String,
        /// The bytes received.
        got: u64,
        /// The declared size.
        declared: u64,
    },
    /// The content hashes differently from the digest it was fetched by.
    #[error("blob content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest it should have had.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
}

impl BlobStore {
    /// Opens (creating as needed) the blob store under the state dir `root`.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        let dir = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        for d in [&dir, &ingest] {
            create_private_dir_all(d).map_err(|source| BlobError::Io {
                what: "create directory",
                path: d.clone(),
                source,
            })?;
        }
        Ok(Self { dir, ingest })
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// True when the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The size of a present blob.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Opens a present blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, BlobError> {
        let path = self.path(digest);
        File::open(&path).map_err(|source| BlobError::Io {
            what: "open blob",
            path,
            source,
        })
    }

    /// Reads a whole (small) blob: manifests, configs.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        fs::read(&path).map_err(|source| BlobError::Io {
            what: "read blob",
            path,
            source,
        })
    }

    /// Starts writing a blob. `expected` and `size`, when given, are checked
    /// as bytes arrive (size) and at commit (both).
    pub fn ingest(
        &self,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Ingest, BlobError> {
        let name = match expected {
            Some(d) => format!("{}.{}", d.hex(), unique_suffix()),
            None => format!("new.{}", unique_suffix()),
        };
        let path = self.ingest.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| BlobError::Io {
                what: "create ingest file",
                path: path.clone(),
                source,
            })?;
        Ok(Ingest {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            written: 0,
            expected: expected.cloned(),
            size,
            store: self.clone(),
        })
    }

    /// Writes `data` as a blob and returns its digest; checks it against
    /// `expected` when given.
    pub fn put(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest, BlobError> {
        let mut ingest = self.ingest(expected, Some(data.len() as u64))?;
        ingest.write_chunk(data)?;
        ingest.commit()
    }

    /// Copies `reader` into a blob, checking digest and size when given.
    pub fn put_reader(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Digest, BlobError> {
        let mut ingest = self.ingest(expected, size)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|source| BlobError::Io {
                what: "read blob source for",
                path: ingest.path.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            ingest.write_chunk(&buf[..n])?;
        }
        ingest.commit()
    }

    /// Every blob present.
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| BlobError::Io {
            what: "list blobs in",
            path: self.dir.clone(),
            source,
        })?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                format!("sha256:{}", e.file_name().to_string_lossy())
                    .parse()
                    .ok()
            })
            .collect())
    }

    /// Removes a blob; returns the bytes freed.
    pub fn remove(&self, digest: &Digest) -> Result<u64, BlobError> {
        let path = self.path(digest);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(BlobError::Io {
                what: "remove blob",
                path,
                source,
            }),
        }
    }

    /// Removes every ingest file; call only under the exclusive lock.
    pub fn remove_ingests(&self) -> Result<usize, BlobError> {
        let entries = fs::read_dir(&self.ingest).map_err(|source| BlobError::Io {
            what: "list ingest files in",
            path: self.ingest.clone(),
            source,
        })?;
        let mut n = 0;
        for e in entries.filter_map(|e| e.ok()) {
            if fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A blob being written. Dropped without [`Ingest::commit`], its file is
/// removed.
#[derive(Debug)]
pub struct Ingest {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    written: u64,
    expected: Option<Digest>,
    size: Option<u64>,
    store: BlobStore,
}

impl Ingest {
    fn expected_name(&self) -> String {
        self.expected
            .as_ref()
            .map_or_else(|| "(new)".into(), |d| d.to_string())
    }

    /// Appends bytes; fails as soon as they exceed the declared size.
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<(), BlobError> {
        if let Some(declared) = self.size
            && self.written + data.len() as u64 > declared
        {
            return Err(BlobError::TooLong {
                expected: self.expected_name(),
                declared,
            });
        }
        let file = self
            .file
            .as_mut()
            .expect("ingest file is open until commit");
        file.write_all(data).map_err(|source| BlobError::Io {
            what: "write ingest file",
            path: self.path.clone(),
            source,
        })?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies size and digest, makes the file durable and renames it into
    /// place. Returns the digest.
    pub fn commit(mut self) -> Result<Digest, BlobError> {
        if let Some(declared) = self.size
            && self.written != declared
        {
            return Err(BlobError::TooShort {
                expected: self.expected_name(),
                got: self.written,
                declared,
            });
        }
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if let Some(expected) = &self.expected
            && *expected != actual
        {
            return Err(BlobError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        let file = self.file.take().expect("ingest file is open until commit");
        let target = self.store.path(&actual);
        // Content-addressed: a blob already in place (put there by a rename
        // after its own sync, so whole) is this one. Writing it again would
        // cost two syncs for nothing (a cached rebuild writes its config and
        // manifest again).
        if fs::symlink_metadata(&target).is_ok_and(|m| m.is_file() && m.len() == self.written) {
            drop(file);
            let _ = fs::remove_file(&self.path);
            return Ok(actual);
        }
        file.sync_all().map_err(|source| BlobError::Io {
            what: "fsync ingest file",
            path: self.path.clone(),
            source,
        })?;
        drop(file);
        fs::rename(&self.path, &target).map_err(|source| BlobError::Io {
            what: "rename ingest file to",
            path: target.clone(),
            source,
        })?;
        sync_dir(&self.store.dir).map_err(|source| BlobError::Io {
            what: "fsync directory",
            path: self.store.dir.clone(),
            source,
        })?;
        Ok(actual)
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn put_verifies_and_is_idempotent() {
        let (_dir, s) = store();
        let d = Digest::of(b"hello");
        assert_eq!(s.put(b"hello", Some(&d)).unwrap(), d);
        assert_eq!(s.put(b"hello", Some(&d)).unwrap(), d);
        assert_eq!(s.read(&d).unwrap(), b"hello");
        assert_eq!(s.list().unwrap(), vec![d]);
    }

    /// A blob already in place is not written again (its inode stays,
    /// and no ingest file is left); one whose file is not whole (another
    /// size) is replaced.
    #[test]
    fn a_blob_in_place_is_kept_and_a_damaged_one_replaced() {
        use std::os::unix::fs::MetadataExt;
        let (dir, s) = store();
        let d = s.put(b"hello", None).unwrap();
        let inode = fs::metadata(s.path(&d)).unwrap().ino();
        assert_eq!(s.put(b"hello", Some(&d)).unwrap(), d);
        assert_eq!(fs::metadata(s.path(&d)).unwrap().ino(), inode);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        fs::write(s.path(&d), b"hel").unwrap();
        assert_eq!(s.put(b"hello", Some(&d)).unwrap(), d);
        assert_eq!(s.read(&d).unwrap(), b"hello");
    }

    #[test]
    fn rejects_mismatch_longer_and_shorter() {
        let (_dir, s) = store();
        let d = Digest::of(b"hello");
        let e = s.put(b"jello", Some(&d)).unwrap_err();
        assert!(matches!(e, BlobError::DigestMismatch { .. }), "{e}");
        let mut i = s.ingest(Some(&d), Some(3)).unwrap();
        let e = i.write_chunk(b"hello").unwrap_err();
        assert!(
            e.to_string().contains("longer than its declared size of 3"),
            "{e}"
        );
        drop(i);
        let mut i = s.ingest(Some(&d), Some(9)).unwrap();
        i.write_chunk(b"hello").unwrap();
        let e = i.commit().unwrap_err();
        assert!(e.to_string().contains("shorter"), "{e}");
        assert!(s.list().unwrap().is_empty());
        assert_eq!(
            s.remove_ingests().unwrap(),
            0,
            "failed ingests clean up after themselves"
        );
    }
}
