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

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// It ran.
    Done,
    /// Its result came from the cache.
    Cached,
    /// It failed, for this reason.
    Failed(String),
}

/// Where a build's progress goes, step by step. Steps are numbered from 1
/// in the build (a stage's `FROM` is a step); with independent stages
/// built at once, the events of several steps interleave. The provided
/// methods write BuildKit's plain format through [`Progress::line`]:
/// `#N [stage k/n] INSTRUCTION`, `#N OUTPUT`, `#N DONE 0.4s`, `#N CACHED`,
/// `#N ERROR: …`.
pub trait Progress: Sync {
    /// One line of output outside the steps (a warning), or of the plain
    /// format.
    fn line(&self, line: &str);

    /// Step `id`, `title` (`[stage k/n] INSTRUCTION`), starts.
    fn start(&self, id: usize, title: &str) {
        self.line(&format!("#{id} {title}"));
    }

    /// A line the step printed.
    fn output(&self, id: usize, line: &str) {
        self.line(&format!("#{id} {line}"));
    }

    /// The step ended, `elapsed` after it started.
    fn end(&self, id: usize, end: &StepEnd, elapsed: std::time::Duration) {
        match end {
            StepEnd::Done => self.line(&format!("#{id} DONE {:.1}s", elapsed.as_secs_f64())),
            StepEnd::Cached => self.line(&format!("#{id} CACHED")),
            StepEnd::Failed(why) => self.line(&format!("#{id} ERROR: {why}")),
        }
    }
}

impl<F: Fn(&str) + Sync> Progress for F {
    fn line(&self, line: &str) {
        self(line)
    }
}
