//! [`BuildError`], and [`Progress`], where a build's output goes.

use std::path::{Path, PathBuf};

use moor_build::context::ContextError;
use moor_build::dockerfile::DockerfileError;
use moor_build::ignore::IgnoreError;
use moor_build::plan::PlanError;

use crate::container::ContainerError;
use crate::image::ImageError;
use crate::image::pull::PullError;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file of the build could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// `.dockerignore` does not parse.
    #[error(".dockerignore: {0}")]
    Ignore(#[from] IgnoreError),
    /// The context cannot be read.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The plan cannot be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A base image could not be pulled.
    #[error(transparent)]
    Pull(#[from] PullError),
    /// A `RUN` container could not be made or run.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// A `RUN` exited with a non-zero code.
    #[error("the command '{command}' returned a non-zero code: {code}")]
    RunFailed {
        /// The process, joined.
        command: String,
        /// Its exit code.
        code: i32,
    },
    /// Something the build cannot do.
    #[error("{0}")]
    Invalid(String),
}

impl BuildError {
    pub(super) fn io<'a>(
        what: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
        move |source| BuildError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// Where build progress goes, line by line (`-q` drops it).
pub trait Progress {
    /// One line of output.
    fn line(&self, line: &str);
}

impl<F: Fn(&str)> Progress for F {
    fn line(&self, line: &str) {
        self(line)
    }
}
