//! Progress and results of pulls and imports, as plain data for the CLI's
//! progress lines, the reconciler and metrics.

use std::time::Duration;

/// Something that happened during a pull or import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The reference resolved to a manifest.
    Resolved {
        /// The reference.
        reference: String,
        /// The manifest's digest.
        digest: String,
    },
    /// A layer started downloading.
    LayerStarted {
        /// The blob.
        digest: String,
        /// Its declared size.
        size: u64,
    },
    /// Bytes of a layer arrived (sent at most every few hundred KiB).
    LayerProgress {
        /// The blob.
        digest: String,
        /// Bytes so far.
        bytes: u64,
        /// Its declared size.
        size: u64,
    },
    /// A layer is stored and unpacked.
    LayerDone {
        /// The blob.
        digest: String,
        /// Bytes downloaded (0 when it was already present).
        bytes: u64,
        /// True when nothing had to be downloaded.
        cached: bool,
        /// Time taken.
        duration: Duration,
    },
    /// A signature check required by a verification rule was made.
    Verified {
        /// The reference.
        reference: String,
        /// The digest it resolved to and that was verified, on success.
        digest: Option<String>,
        /// `ok` (the key that signed it) or why not.
        result: Result<String, String>,
    },
    /// The pull or import finished.
    Finished {
        /// The reference.
        reference: String,
        /// The image's manifest digest, on success.
        digest: Option<String>,
        /// Bytes downloaded in all.
        bytes: u64,
        /// Time taken.
        duration: Duration,
        /// `ok` or the error.
        result: Result<(), String>,
    },
}

/// Receives events; called from several threads.
pub trait Observer: Sync {
    /// One event.
    fn event(&self, event: Event);
}

/// An observer shared by every pull of a host (the agent's metrics).
#[derive(Clone)]
pub struct SharedObserver(pub std::sync::Arc<dyn Observer + Send>);

impl std::fmt::Debug for SharedObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedObserver")
    }
}

impl<F: Fn(Event) + Sync> Observer for F {
    fn event(&self, event: Event) {
        self(event)
    }
}
