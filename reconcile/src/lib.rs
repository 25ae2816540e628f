//! moor's reconciler.
//!
//! Start at [`diff()`]: it compares a [`moor_spec::DesiredState`] with an
//! [`Observed`] host and returns a [`Plan`] — pure data, each [`Action`] with
//! its [`Reason`]. [`apply()`] carries a plan out through the [`Runtime`] trait, the
//! only way this crate reaches the host, in dependency order and concurrently.
//! [`converge()`] repeats observe, diff and apply until the host has
//! [`settled`] (what `moor apply` waits for); [`Controller`] does it forever,
//! on every trigger. Unit tests run them against [`fake::FakeRuntime`]; the
//! real engine is tested end to end.

mod apply;
mod backoff;
mod controller;
mod converge;
mod diff;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod gate;
mod observed;
mod plan;
mod reason;
pub mod rollout;
mod runtime;

pub use apply::{ApplyOptions, Outcome, apply};
pub use backoff::{BACKOFF_BASE, BACKOFF_MAX, Backoff};
pub use controller::{
    Condition, ConditionStatus, Controller, ControllerOptions, IMAGES_MARK, KEPT_GOOD,
    LoadRevision, NoRecorder, PassView, Recorder, Restore, RollbackReply, Snapshots, Status,
    Trigger, refused_after_restart, short, source_revision,
};
pub use converge::{ConvergeError, ConvergeOptions, Convergence, InstancePhase, converge, settled};
pub use diff::{
    DiffError, DiffOptions, RESTART_BACKOFF_BASE, RESTART_BACKOFF_MAX, RESTART_BACKOFF_RESET,
    changed_fields, diff, instance_name, restart_delay,
};
pub use gate::{DriftMode, Gated, SourceMode, gate, is_drift};
pub use observed::{
    BuildInputs, ContainerState, Health, Hold, Observed, ObservedContainer, ObservedImage,
    ObservedNetwork, ObservedVolume,
};
pub use plan::{Action, Blocked, Plan, Verb};
pub use reason::{JobState, Reason, StopFirstCause};
pub use runtime::{BoxError, Instance, Runtime, RuntimeError, observe};

#[cfg(test)]
mod build_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod controller_tests;

#[cfg(test)]
mod update_order_tests;

#[cfg(test)]
mod job_tests;

#[cfg(test)]
mod rollback_tests;
