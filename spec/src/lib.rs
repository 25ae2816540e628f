//! moor's manifest model.
//!
//! Start at [`load`]: it reads TOML and YAML manifests from files and
//! directory trees, lowers both spellings into one position-keeping tree
//! ([`node`]), decodes and normalises it (`decode`), checks it across files
//! (`validate`) and returns a [`DesiredState`] whose resources carry canonical
//! [`SpecHash`]es — or every [`Diagnostic`] found, each as
//! `path:line:column: error: field: message`.
//!
//! For one host of a fleet, [`load_for`] keeps only what [`target`]s that
//! [`HostIdentity`] (by host name globs and labels) before the checks across
//! resources.
//!
//! What a source may ask of the host (absolute host paths, capabilities,
//! the host's network, no seccomp filter) is checked while decoding against
//! the operator's [`Policy`] when [`LoadOptions::policy`] has one; and a
//! container never writes its own desired state ([`writes`]).
//!
//! To load the same manifests again and again (an agent's sources do), a
//! [`Loader`] keeps what each file decoded and parses only what changed.
//!
//! This crate knows nothing of Linux: it describes what is wanted, never how.

pub mod bind;
pub mod compose;
mod decode;
pub mod diag;
pub mod envfile;
pub mod hash;
pub mod linux;
mod load;
mod loader;
pub mod model;
pub mod mounts;
mod names;
pub mod node;
mod par;
pub mod parse;
pub mod policy;
pub mod ports;
pub mod reference;
pub mod sops;
pub mod target;
pub mod tree;
pub mod units;
pub mod update;
mod validate;
pub mod words;
pub mod writes;

pub use decode::{MAX_NAME_LEN, check_name, did_you_mean};
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use hash::SpecHash;
pub use load::{
    DEFAULT_MAX_FILE_SIZE, LoadOptions, load, load_for, load_texts, load_texts_for, load_with,
};
pub use loader::{LoadStats, Loader};
pub use model::{
    BuildSpec, ContainerSpec, DependCondition, DesiredState, HealthTest, Healthcheck, ImageSpec,
    Kind, NetworkAttachment, NetworkMode, NetworkSpec, Origin, PullPolicy, Resource, Resources,
    RestartPolicy, Seccomp, SecretMount, SecretValue, UpdateOrder, VerifySpec, VolumeSpec,
};
pub use mounts::{Mount, MountSource};
pub use names::name_from;
pub use policy::{Policy, PolicyKeys};
pub use ports::{PortMapping, Protocol};
pub use reference::ImageRef;
pub use sops::AgeKeys;
pub use target::{HostGlob, HostIdentity, IdentityError, Target};
pub use writes::Writes;
