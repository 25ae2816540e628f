//! Containers: OCI runtime bundles over overlayfs, the per-container shim,
//! logs, exec, limits and volumes (docs/ARCHITECTURE.md).
//!
//! Start at [`Engine`]: one `impl Engine` block per verb ([`create`],
//! [`start`], [`stop`], [`remove`], [`exec`], [`list`](observe), `pause`,
//! [`top`], `cp`). A container lives in its own directory under
//! `<state>/containers/NAME` ([`paths::ContainerPaths`]): the record
//! written at creation (`container.json`), the bundle (`config.json`,
//! `rootfs/`), the overlay's upper and work dirs, the log files, the files
//! the shim writes ([`state`]) and what people and the reconciler record
//! about it (`marks`). File trees are copied (`cp`, filling [`volumes`])
//! through directory fds by `tree`. Everything a new `moor` process needs
//! to find a running container and report its true state is on disk;
//! nothing lives only in a process's memory.
//!
//! The container itself is created by the shim ([`shim`]), a small binary
//! of its own (`moor-shim`, installed beside `moor`): single-threaded, its
//! own session, a child subreaper, holding the container's stdio and
//! recording its exit.

mod binds;
pub(crate) mod bundle;
pub mod cgroups;
mod cp;
mod create;
mod engine;
mod error;
mod exec;
mod executor;
pub mod labels;
pub mod logs;
mod marks;
mod observe;
pub mod paths;
mod pause;
mod remove;
mod rootfs;
mod runc;
mod seccomp;
pub(crate) mod secrets;
pub mod shim;
pub mod snapshot;
mod start;
pub mod state;
mod stop;
pub mod top;
mod tree;
mod tty;
mod users;
pub mod volumes;

pub use cp::{CopyIn, CopyOptions, CopyOut};
pub use engine::{Engine, EngineConfig, SHIM_ENV, SHIM_EXE};
pub use error::ContainerError;
pub use exec::{ExecOptions, merge_env};
pub use executor::Executor;
pub use marks::ManualStop;
pub use observe::{ContainerInfo, Status};
pub use state::{ContainerRecord, ExitRecord, ExitWatch, ShimState};
pub use tree::CopyError;
