//! Errors of the container engine.

use std::path::PathBuf;

/// Why a container operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A file or directory of the engine could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// With which path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A state file held something that is not what moor writes.
    #[error("corrupt state file {}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// No container has this name.
    #[error("no container named \"{0}\"")]
    NotFound(String),
    /// A container with this name exists already.
    #[error("a container named \"{0}\" exists already")]
    Exists(String),
    /// The container is running and the operation needs it stopped.
    #[error("container \"{0}\" is running")]
    Running(String),
    /// The container is not running and the operation needs it running.
    #[error("container \"{0}\" is not running")]
    NotRunning(String),
    /// Neither the spec nor the image says what to run.
    #[error(
        "container \"{0}\" has no command: the image has no entrypoint or cmd and the spec gives none"
    )]
    NoCommand(String),
    /// A bind mount's host path does not exist.
    #[error("bind mount source {} does not exist (mounted at {target})", source_path.display())]
    BindSourceMissing {
        /// The missing host path.
        source_path: PathBuf,
        /// Where it was to be mounted.
        target: String,
    },
    /// A bind source that lives next to the manifests no longer resolves
    /// beneath its tree: a `..` or a link leading out was put in its path
    /// after the manifests were loaded.
    #[error(
        "bind source {} leads outside its tree {} (mounted at {target}): a `..` or a symbolic link in its path points out; refused",
        source_path.display(),
        tree.display()
    )]
    BindEscapes {
        /// The source as the spec names it.
        source_path: PathBuf,
        /// The root of the tree it must stay beneath.
        tree: PathBuf,
        /// Where it was to be mounted.
        target: String,
    },
    /// A `user` that the image's /etc/passwd or /etc/group does not know.
    #[error("cannot resolve user \"{user}\": {reason}")]
    User {
        /// The user as written.
        user: String,
        /// Why it failed.
        reason: String,
    },
    /// The spec asks for something the engine cannot express.
    #[error("invalid container spec: {0}")]
    Invalid(String),
    /// Building the OCI runtime spec failed.
    #[error("cannot build the OCI runtime spec")]
    Oci(#[from] oci_spec::OciSpecError),
    /// A system call failed.
    #[error("{action}")]
    Sys {
        /// What was being done.
        action: String,
        /// The errno.
        source: nix::Error,
    },
    /// The shim could not start the container.
    #[error("cannot start container \"{name}\": {message}")]
    Start {
        /// The container.
        name: String,
        /// What the shim or the OCI runtime reported.
        message: String,
    },
    /// What had to be done between creating the container and starting
    /// its process failed; the container was removed unstarted.
    #[error("preparing container \"{name}\" for its start: {message}")]
    Prepare {
        /// The container.
        name: String,
        /// What failed.
        message: String,
    },
    /// The container did not stop in time, even after SIGKILL.
    #[error("container \"{0}\" did not stop after SIGKILL")]
    StopTimeout(String),
    /// Copying a file tree failed.
    #[error(transparent)]
    Copy(#[from] super::tree::CopyError),
    /// The container is paused and the operation needs it running.
    #[error("container \"{0}\" is paused; unpause it first")]
    Paused(String),
    /// Unpausing a container that is not paused.
    #[error("container \"{0}\" is not paused")]
    NotPaused(String),
    /// The cgroup freezer failed.
    #[error("cannot {action} container \"{name}\": {message}")]
    Freeze {
        /// `pause` or `unpause`.
        action: &'static str,
        /// The container.
        name: String,
        /// What the kernel's freezer said.
        message: String,
    },
    /// An external OCI runtime could not be run.
    #[error("cannot run {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ContainerError {
    /// An [`ContainerError::Io`] error.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ContainerError::Io {
            action,
            path,
            source,
        }
    }

    /// A [`ContainerError::Sys`] error.
    pub(crate) fn sys(action: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let action = action.into();
        move |source| ContainerError::Sys { action, source }
    }
}

/// The result type of this module.
pub type Result<T, E = ContainerError> = std::result::Result<T, E>;
