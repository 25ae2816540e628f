//! moor's observability: the Prometheus metrics ([`Metrics`], which is also
//! the reconciler's [`moor_reconcile::Recorder`]) and the agent's HTTP
//! endpoint ([`server`]). Every metric is documented in README.md.

mod collectors;
pub mod server;

pub use collectors::{ContainerUsage, Metrics};
pub use server::{DEFAULT_ADDR, Limits, StatusSource, router, serve};

#[cfg(test)]
mod tests;
