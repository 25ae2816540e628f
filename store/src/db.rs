//! The metadata database: images, their references (tags and digests),
//! layer snapshot records, and who holds each snapshot.
//!
//! SQLite (bundled, so every host runs the same version) in WAL mode rather
//! than `redb` or `sled`: `redb` takes an exclusive file lock, so `moor
//! images` could not read while the agent has the database open, while
//! SQLite's WAL lets any number of processes read during a write. Each change
//! is one transaction with `synchronous = FULL`, so a crash at any instruction
//! leaves the last committed state, and concurrent writers wait on
//! `busy_timeout` instead of failing.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Errors of the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database file could not be created.
    #[error("create database {path}")]
    Create {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("metadata database {path}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
}

/// An image: a manifest, its config and its layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRecord {
    /// The manifest's digest, the image's identity.
    pub digest: String,
    /// The manifest's media type.
    pub media_type: String,
    /// The config blob's digest.
    pub config: String,
    /// The digest of the index the manifest was chosen from, if any.
    pub index: Option<String>,
    /// The platform, `os/architecture[/variant]`.
    pub platform: String,
    /// Bytes of manifest, config and (compressed) layers.
    pub size: u64,
    /// When it was stored, seconds since the epoch.
    pub created: i64,
    /// Layers, base first.
    pub layers: Vec<LayerRecord>,
    /// References that name it (`registry/repo:tag`, `registry/repo@digest`).
    pub refs: Vec<String>,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerRecord {
    /// The (compressed) blob's digest.
    pub blob: String,
    /// The blob's media type.
    pub media_type: String,
    /// The blob's size.
    pub size: u64,
    /// The digest of the uncompressed tar.
    pub diff_id: String,
    /// The chain ID of the image's layers up to and including this one: the
    /// key of its snapshot.
    pub chain_id: String,
}

/// An unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRecord {
    /// The chain ID, its key.
    pub chain_id: String,
    /// The chain ID of the layer below, if any.
    pub parent: Option<String>,
    /// The digest of the uncompressed layer tar.
    pub diff_id: String,
    /// Bytes of file content unpacked.
    pub size: u64,
}

/// The metadata database.
#[derive(Debug)]
pub struct Db {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// This connection wrote the schema.
    created: bool,
}

/// How long a closing writer waits for readers to let it empty the log.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(500);

impl Drop for Db {
    /// A connection that wrote copies the log into the database and empties
    /// it as it closes. Otherwise the next command to open the database,
    /// finding no other connection, rebuilds the log's index by reading
    /// and checksumming every page of the log — up to the 1,000 pages
    /// (4 MB) at which SQLite copies it on its own — before its first
    /// read: a no-op `moor apply` took 7.1 ms of CPU instead of 5.8 with a
    /// 4 MB log here. The copy is the writer's to pay, once; readers close
    /// as before. Readers that hold the log longer than [`CHECKPOINT_WAIT`]
    /// leave it for later.
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        if conn.total_changes() == 0 && !self.created {
            return;
        }
        let _ = conn.busy_timeout(CHECKPOINT_WAIT);
        // Failing (busy, say) only leaves the log to the next writer.
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
}

/// The schema's version, kept in the database's `user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    digest     TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    config     TEXT NOT NULL,
    idx        TEXT,
    platform   TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS image_layers (
    image      TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    blob       TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL,
    diff_id    TEXT NOT NULL,
    chain_id   TEXT NOT NULL,
    PRIMARY KEY (image, position)
);
CREATE TABLE IF NOT EXISTS image_refs (
    name  TEXT PRIMARY KEY,
    image TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS snapshots (
    chain_id TEXT PRIMARY KEY,
    parent   TEXT,
    diff_id  TEXT NOT NULL,
    size     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_holders (
    chain_id TEXT NOT NULL,
    holder   TEXT NOT NULL,
    PRIMARY KEY (chain_id, holder)
);
";

/// Keeps the write-ahead log and its index (`moor.db-wal`, `moor.db-shm`)
/// when the last connection closes (checkpointed: the log is reused from
/// its start by the next write) instead of deleting them:
/// every `moor` command opens the database, and creating and deleting two
/// files each time is most of what a command that changes nothing writes.
fn keep_wal(conn: &Connection) {
    let mut on: std::os::raw::c_int = 1;
    // SAFETY: the handle is the open connection's own; the file control
    // reads one int through the pointer, valid for the call.
    // Failing is only a cost (the files are made again by the next
    // command), so the result is not checked.
    let _ = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&raw mut on).cast(),
        )
    };
}

impl Db {
    /// Opens (creating mode 0600 as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| DbError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        let err = |source| DbError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        keep_wal(&conn);
        // A connection that closes does not copy the log into the database
        // and sync it: most commands only read. One that wrote does, in
        // `Drop for Db`.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        let created = version < SCHEMA_VERSION;
        if created {
            // Written once: a command that only reads writes nothing.
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(err)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            created,
        })
    }

    fn err(&self, source: rusqlite::Error) -> DbError {
        DbError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|e| self.err(e))
    }

    /// Records an image (replacing any record of the same digest), makes it
    /// a holder of its layers' snapshots, and points `refs` at it.
    pub fn put_image(&self, image: &ImageRecord, refs: &[String]) -> Result<(), DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO images (digest, media_type, config, idx, platform, size, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(digest) DO UPDATE SET idx = COALESCE(excluded.idx, idx)",
                params![
                    image.digest,
                    image.media_type,
                    image.config,
                    image.index,
                    image.platform,
                    image.size as i64,
                    image.created
                ],
            )?;
            tx.execute("DELETE FROM image_layers WHERE image = ?1", [&image.digest])?;
            for (i, l) in image.layers.iter().enumerate() {
                tx.execute(
                    "INSERT INTO image_layers VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        image.digest,
                        i as i64,
                        l.blob,
                        l.media_type,
                        l.size as i64,
                        l.diff_id,
                        l.chain_id
                    ],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO snapshot_holders VALUES (?1, ?2)",
                    params![l.chain_id, format!("image:{}", image.digest)],
                )?;
            }
            for r in refs {
                tx.execute(
                    "INSERT INTO image_refs VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET image = excluded.image",
                    params![r, image.digest],
                )?;
            }
            tx.commit()
        })
    }

    /// The image a reference or an image digest names.
    pub fn resolve(&self, name: &str) -> Result<Option<ImageRecord>, DbError> {
        self.image_by(
            "SELECT image FROM image_refs WHERE name = ?1
             UNION ALL SELECT digest FROM images WHERE digest = ?1 LIMIT 1",
            name,
        )
    }

    /// The newest image chosen from the index with digest `index`.
    pub fn image_from_index(&self, index: &str) -> Result<Option<ImageRecord>, DbError> {
        self.image_by(
            "SELECT digest FROM images WHERE idx = ?1 ORDER BY created DESC, digest LIMIT 1",
            index,
        )
    }

    /// The image whose digest `query` (one parameter, `key`) selects.
    fn image_by(&self, query: &str, key: &str) -> Result<Option<ImageRecord>, DbError> {
        let digest: Option<String> =
            self.with(|c| c.query_row(query, [key], |r| r.get(0)).optional())?;
        match digest {
            Some(d) => self.image(&d),
            None => Ok(None),
        }
    }

    /// The manifest digests that begin `sha256:` and then `hex`, at most
    /// `limit` of them, newest first.
    pub fn digests_with_prefix(&self, hex: &str, limit: usize) -> Result<Vec<String>, DbError> {
        self.with(|c| {
            // `substr` rather than `LIKE`, which ignores case.
            let mut st = c.prepare(
                "SELECT digest FROM images WHERE substr(digest, 1, ?2) = ?1
                 ORDER BY created DESC, digest LIMIT ?3",
            )?;
            let prefix = format!("sha256:{hex}");
            st.query_map(params![prefix, prefix.len() as i64, limit as i64], |r| {
                r.get(0)
            })?
            .collect()
        })
    }

    /// The image with manifest digest `digest`.
    pub fn image(&self, digest: &str) -> Result<Option<ImageRecord>, DbError> {
        self.with(|c| {
            let Some(mut image) = c
                .query_row(
                    "SELECT digest, media_type, config, idx, platform, size, created
                     FROM images WHERE digest = ?1",
                    [digest],
                    |r| {
                        Ok(ImageRecord {
                            digest: r.get(0)?,
                            media_type: r.get(1)?,
                            config: r.get(2)?,
                            index: r.get(3)?,
                            platform: r.get(4)?,
                            size: r.get::<_, i64>(5)? as u64,
                            created: r.get(6)?,
                            layers: Vec::new(),
                            refs: Vec::new(),
                        })
                    },
                )
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = c.prepare(
                "SELECT blob, media_type, size, diff_id, chain_id FROM image_layers
                 WHERE image = ?1 ORDER BY position",
            )?;
            image.layers = st
                .query_map([digest], |r| {
                    Ok(LayerRecord {
                        blob: r.get(0)?,
                        media_type: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                        diff_id: r.get(3)?,
                        chain_id: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut st = c.prepare("SELECT name FROM image_refs WHERE image = ?1 ORDER BY name")?;
            image.refs = st
                .query_map([digest], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(image))
        })
    }

    /// Every image, newest first.
    pub fn images(&self) -> Result<Vec<ImageRecord>, DbError> {
        let digests: Vec<String> = self.with(|c| {
            let mut st = c.prepare("SELECT digest FROM images ORDER BY created DESC, digest")?;
            st.query_map([], |r| r.get(0))?.collect()
        })?;
        let mut out = Vec::new();
        for d in digests {
            if let Some(i) = self.image(&d)? {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Points reference `name` at the image `digest` (moving it from any
    /// image it named before); false when no image has that digest.
    pub fn put_ref(&self, name: &str, digest: &str) -> Result<bool, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let exists: Option<String> = tx
                .query_row(
                    "SELECT digest FROM images WHERE digest = ?1",
                    [digest],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO image_refs VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET image = excluded.image",
                params![name, digest],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Removes a reference; returns the image it named.
    pub fn remove_ref(&self, name: &str) -> Result<Option<String>, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let image: Option<String> = tx
                .query_row(
                    "SELECT image FROM image_refs WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute("DELETE FROM image_refs WHERE name = ?1", [name])?;
            tx.commit()?;
            Ok(image)
        })
    }

    /// Removes an image record, its references and its holds on snapshots.
    pub fn remove_image(&self, digest: &str) -> Result<bool, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM snapshot_holders WHERE holder = ?1",
                [format!("image:{digest}")],
            )?;
            tx.execute("DELETE FROM image_refs WHERE image = ?1", [digest])?;
            tx.execute("DELETE FROM image_layers WHERE image = ?1", [digest])?;
            let n = tx.execute("DELETE FROM images WHERE digest = ?1", [digest])?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    /// Images that no reference names.
    pub fn unreferenced_images(&self) -> Result<Vec<String>, DbError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT digest FROM images WHERE digest NOT IN (SELECT image FROM image_refs)",
            )?;
            st.query_map([], |r| r.get(0))?.collect()
        })
    }

    /// Every blob an image refers to: manifests, configs, indexes, layers.
    pub fn referenced_blobs(&self) -> Result<HashSet<crate::Digest>, DbError> {
        let all: Vec<String> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT digest FROM images UNION SELECT config FROM images
                 UNION SELECT idx FROM images WHERE idx IS NOT NULL
                 UNION SELECT blob FROM image_layers",
            )?;
            st.query_map([], |r| r.get(0))?.collect()
        })?;
        Ok(all.into_iter().filter_map(|d| d.parse().ok()).collect())
    }

    /// The record of an unpacked layer.
    pub fn snapshot(&self, chain_id: &str) -> Result<Option<SnapshotRecord>, DbError> {
        self.with(|c| {
            c.query_row(
                "SELECT chain_id, parent, diff_id, size FROM snapshots WHERE chain_id = ?1",
                [chain_id],
                |r| {
                    Ok(SnapshotRecord {
                        chain_id: r.get(0)?,
                        parent: r.get(1)?,
                        diff_id: r.get(2)?,
                        size: r.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .optional()
        })
    }

    /// Records an unpacked layer (after its directory is in place).
    pub fn put_snapshot(&self, s: &SnapshotRecord) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?1, ?2, ?3, ?4)",
                params![s.chain_id, s.parent, s.diff_id, s.size as i64],
            )
            .map(drop)
        })
    }

    /// Every recorded snapshot's chain ID.
    pub fn snapshot_ids(&self) -> Result<HashSet<String>, DbError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT chain_id FROM snapshots")?;
            st.query_map([], |r| r.get(0))?.collect()
        })
    }

    /// Adds a holder (`image:<digest>`, `container:<id>`) to a snapshot.
    pub fn hold_snapshot(&self, chain_id: &str, holder: &str) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO snapshot_holders VALUES (?1, ?2)",
                params![chain_id, holder],
            )
            .map(drop)
        })
    }

    /// Drops every hold of `holder`.
    pub fn release_holder(&self, holder: &str) -> Result<(), DbError> {
        self.with(|c| {
            c.execute("DELETE FROM snapshot_holders WHERE holder = ?1", [holder])
                .map(drop)
        })
    }

    /// How many holders a snapshot has: its reference count.
    pub fn snapshot_refcount(&self, chain_id: &str) -> Result<u64, DbError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM snapshot_holders WHERE chain_id = ?1",
                [chain_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    /// Snapshots nobody holds.
    pub fn unreferenced_snapshots(&self) -> Result<Vec<String>, DbError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT chain_id FROM snapshots
                 WHERE chain_id NOT IN (SELECT chain_id FROM snapshot_holders)",
            )?;
            st.query_map([], |r| r.get(0))?.collect()
        })
    }

    /// Deletes a snapshot record.
    pub fn delete_snapshot(&self, chain_id: &str) -> Result<(), DbError> {
        self.with(|c| {
            c.execute("DELETE FROM snapshots WHERE chain_id = ?1", [chain_id])
                .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(digest: &str, chains: &[&str]) -> ImageRecord {
        ImageRecord {
            digest: digest.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            config: format!("{digest}-config"),
            index: None,
            platform: "linux/amd64".into(),
            size: 10,
            created: 1,
            layers: chains
                .iter()
                .map(|c| LayerRecord {
                    blob: format!("{c}-blob"),
                    media_type: "tar".into(),
                    size: 1,
                    diff_id: (*c).into(),
                    chain_id: (*c).into(),
                })
                .collect(),
            refs: Vec::new(),
        }
    }

    #[test]
    fn a_writer_empties_the_log_as_it_closes_and_a_reader_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let log = || std::fs::metadata(dir.path().join("db-wal")).map_or(0, |m| m.len());
        let writer = Db::open(&path).unwrap();
        writer.put_image(&image("x", &["a"]), &[]).unwrap();
        assert!(log() > 0, "the write is in the log");
        let reader = Db::open(&path).unwrap();
        assert_eq!(reader.images().unwrap().len(), 1);
        drop(reader);
        assert!(log() > 0, "a reader leaves the log as it is");
        drop(writer);
        assert_eq!(log(), 0, "the writer emptied it");
        // What was written is in the database itself.
        let reader = Db::open(&path).unwrap();
        assert_eq!(reader.images().unwrap().len(), 1);
        drop(reader);
        assert_eq!(log(), 0);
    }

    #[test]
    fn refcounts_follow_images() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        for c in ["base", "a", "b"] {
            db.put_snapshot(&SnapshotRecord {
                chain_id: c.into(),
                parent: None,
                diff_id: c.into(),
                size: 0,
            })
            .unwrap();
        }
        db.put_image(&image("one", &["base", "a"]), &["r/one:1".into()])
            .unwrap();
        db.put_image(&image("two", &["base", "b"]), &["r/two:1".into()])
            .unwrap();
        assert_eq!(db.snapshot_refcount("base").unwrap(), 2);
        assert_eq!(
            db.resolve("r/one:1").unwrap().unwrap().refs,
            vec!["r/one:1".to_string()]
        );
        assert_eq!(db.resolve("one").unwrap().unwrap().layers.len(), 2);
        assert!(db.unreferenced_snapshots().unwrap().is_empty());
        assert_eq!(db.remove_ref("r/one:1").unwrap().as_deref(), Some("one"));
        assert_eq!(db.unreferenced_images().unwrap(), vec!["one".to_string()]);
        db.remove_image("one").unwrap();
        assert_eq!(db.snapshot_refcount("base").unwrap(), 1);
        assert_eq!(db.unreferenced_snapshots().unwrap(), vec!["a".to_string()]);
    }

    #[test]
    fn images_are_found_by_their_index_and_by_a_prefix_of_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let put = |digest: &str, index: Option<&str>, created: i64| {
            let mut i = image(digest, &[]);
            i.index = index.map(String::from);
            i.created = created;
            db.put_image(&i, &[]).unwrap();
        };
        put("sha256:abc123aa", Some("sha256:1dx"), 1);
        put("sha256:abc123bb", Some("sha256:1dx"), 2);
        put("sha256:fed456", None, 3);
        // Two images chosen from one index: the newer.
        let from = db.image_from_index("sha256:1dx").unwrap().unwrap();
        assert_eq!(from.digest, "sha256:abc123bb");
        assert!(db.image_from_index("sha256:none").unwrap().is_none());
        assert_eq!(
            db.digests_with_prefix("abc123", 5).unwrap(),
            ["sha256:abc123bb", "sha256:abc123aa"]
        );
        assert_eq!(db.digests_with_prefix("abc123", 1).unwrap().len(), 1);
        assert_eq!(
            db.digests_with_prefix("fed4", 2).unwrap(),
            ["sha256:fed456"]
        );
        // Case counts, as in the digests themselves.
        assert!(db.digests_with_prefix("FED4", 2).unwrap().is_empty());
        assert!(db.digests_with_prefix("abd", 2).unwrap().is_empty());
    }

    #[test]
    fn a_command_that_only_reads_creates_and_deletes_no_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = Db::open(&path).unwrap();
        db.put_image(&image("one", &[]), &["r/one:1".into()])
            .unwrap();
        drop(db);
        // The log and its index outlive the connection, and the schema is
        // recorded as written.
        let inode = |suffix: &str| {
            std::fs::metadata(dir.path().join(format!("db{suffix}")))
                .unwrap_or_else(|e| panic!("db{suffix}: {e}"))
                .ino()
        };
        let before = (inode(""), inode("-wal"), inode("-shm"));
        let db = Db::open(&path).unwrap();
        assert_eq!(db.resolve("r/one:1").unwrap().unwrap().digest, "one");
        let version: i64 = db
            .with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(db);
        assert_eq!((inode(""), inode("-wal"), inode("-shm")), before);
    }

    #[test]
    fn a_reader_closing_copies_nothing_into_the_database_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = Db::open(&path).unwrap();
        writer
            .put_image(&image("one", &[]), &["r/one:1".into()])
            .unwrap();
        let file = || {
            let m = std::fs::metadata(&path).unwrap();
            (m.len(), m.mtime(), m.mtime_nsec())
        };
        let before = file();
        let reader = Db::open(&path).unwrap();
        assert_eq!(reader.resolve("r/one:1").unwrap().unwrap().digest, "one");
        drop(reader);
        assert_eq!(file(), before, "a reader's close checkpointed the log");
        drop(writer);
        assert_ne!(file(), before, "the writer's close copied the log");
    }

    #[test]
    fn a_database_written_before_the_schema_version_opens() {
        // Made as moor made it before user_version was set: the tables,
        // version 0. Opening it sets the version and keeps the rows.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO images VALUES ('x', 'm', '{}', NULL, 'linux/amd64', 1, 1)",
                [],
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let version: i64 = db
            .with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(db.unreferenced_images().unwrap(), vec!["x".to_string()]);
    }

    #[test]
    fn a_second_connection_reads_while_the_first_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = Db::open(&path).unwrap();
        first
            .put_image(&image("one", &[]), &["r/one:1".into()])
            .unwrap();
        let second = Db::open(&path).unwrap();
        assert_eq!(second.images().unwrap().len(), 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
