//! moor's engine on the live host: images (pull, import, unpack into
//! snapshots) and containers. It decides only *how*, never *whether*.
//!
//! Start at [`host::Host`], the reconciler's [`moor_reconcile::Runtime`]: it
//! composes the engines below it — [`container`] (bundles, shims, logs,
//! exec), [`net`] (bridges, addresses, DNS, ports) and [`image`] (the
//! store, pulls, imports) — which know nothing of it nor of each other.
//! Modules that only this crate uses are private.

// A public type in a private module would be reachable but unnameable.
#![warn(unnameable_types)]

pub mod build;
pub mod container;
pub mod host;
pub mod image;
pub mod net;
