//! Images: pull from registries, import archives, unpack layers into
//! snapshots (docs/ARCHITECTURE.md).
//!
//! Start at [`Images`] (the store), then [`pull()`](pull::pull) and
//! [`import()`](import::import). Both report progress as [`events::Event`]s.

pub mod auth;
pub mod change;
pub mod events;
pub mod import;
pub mod oci;
pub mod pull;
pub mod push;
pub mod remote;
pub mod save;
mod store;
pub mod unpack;
pub mod verify;

pub use auth::Credentials;
pub use events::Event;
pub use store::{HistoryRow, Images, Removed, history_rows};

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] moor_store::StoreError),
    /// A blob could not be stored or read.
    #[error(transparent)]
    Blob(#[from] moor_store::BlobError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] moor_store::DbError),
    /// A snapshot could not be made or removed.
    #[error(transparent)]
    Snapshot(#[from] moor_store::SnapshotError),
    /// Garbage collection failed.
    #[error(transparent)]
    Gc(#[from] moor_store::GcError),
    /// The lock could not be taken.
    #[error(transparent)]
    Lock(#[from] moor_store::LockError),
    /// A digest is malformed.
    #[error(transparent)]
    Digest(#[from] moor_store::DigestError),
    /// A layer could not be unpacked.
    #[error("unpack layer {layer}")]
    Unpack {
        /// The layer blob.
        layer: String,
        /// Why.
        source: unpack::UnpackError,
    },
    /// A layer's content does not match its diff ID in the config.
    #[error("layer {layer} unpacks to {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        layer: String,
        /// The config's diff ID.
        expected: String,
        /// What it hashed to.
        actual: String,
    },
    /// A manifest, index or config is malformed or unsupported.
    #[error("{0}")]
    Invalid(String),
    /// No image has that name.
    #[error("no image named \"{0}\"")]
    NotFound(String),
    /// A `--change` of an import is not a valid instruction.
    #[error(transparent)]
    Change(#[from] change::ChangeError),
}
