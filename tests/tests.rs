//! moor's integration and end-to-end tests: one test binary, one module per area.
//!
//! End-to-end tests drive the real `moor` binary. A missing prerequisite (a
//! Debian package, root) fails the test when `CI` is set; elsewhere the test
//! says loudly that it did not run.

mod agent;
mod build;
mod build_concurrent;
mod build_corpus;
mod build_manifests;
mod build_progress;
mod build_prune;
mod build_repro;
mod cli;
mod common;
mod compose;
mod containers;
mod convert;
mod crash;
mod dns;
mod fleet;
mod git_agent;
mod gitops;
mod harness;
mod hostile;
mod image;
mod image_tools;
mod layers;
mod loopback;
mod metrics;
mod network_modes;
mod networks;
mod noop;
mod oneshot;
mod policy;
mod prometheus;
mod real;
mod regression;
mod rollback;
mod secrets;
mod sops;
mod spec_props;
mod stack;
mod trust;
mod update_order;
mod validate;
