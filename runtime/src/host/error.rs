//! The host's errors: [`HostError`] when it cannot be opened, and the kinds
//! of [`RuntimeError`] its operations fail with, each holding the engine's
//! error.

use std::path::PathBuf;

use moor_reconcile::{BoxError, RuntimeError};

/// Opening the host failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Another moor process holds the state dir.
    #[error(
        "another moor process is changing {dir} (lock {lock} is held); stop it or use another --state-dir"
    )]
    Locked {
        /// The state dir.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The configuration (from the environment) cannot be used.
    #[error("{message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A part of the engine could not be opened.
    #[error("opening {what} in {dir}: {message}")]
    Open {
        /// Which part.
        what: &'static str,
        /// The state dir.
        dir: PathBuf,
        /// Why.
        message: String,
    },
}

/// An error and what the host was doing when it happened, shown as
/// `doing: error`. Its sources are the error's own, so that a chain of
/// causes never repeats the error.
#[derive(Debug)]
pub struct ErrorContext<E> {
    /// What was being done (`pulling example.org/app:1`).
    pub doing: String,
    /// The error.
    pub error: E,
}

impl<E> ErrorContext<E> {
    pub(super) fn new(doing: impl Into<String>) -> impl FnOnce(E) -> Self {
        let doing = doing.into();
        move |error| Self { doing, error }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for ErrorContext<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.doing, self.error)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ErrorContext<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// An image operation failed.
pub(super) fn image(e: impl Into<BoxError>) -> RuntimeError {
    RuntimeError::Image(e.into())
}

/// A container operation failed.
pub(super) fn build(e: impl Into<BoxError>) -> RuntimeError {
    RuntimeError::Build(e.into())
}

pub(super) fn container(e: impl Into<BoxError>) -> RuntimeError {
    RuntimeError::Container(e.into())
}

/// A network operation failed.
pub(super) fn network(e: impl Into<BoxError>) -> RuntimeError {
    RuntimeError::Network(e.into())
}

/// A volume operation failed.
pub(super) fn volume(e: impl Into<BoxError>) -> RuntimeError {
    RuntimeError::Volume(e.into())
}

/// The host's own records or workers failed.
pub(super) fn host(e: impl Into<BoxError>) -> RuntimeError {
    RuntimeError::Host(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_said_once_and_the_causes_follow() {
        #[derive(Debug, thiserror::Error)]
        #[error("fetch manifest")]
        struct Pull {
            source: std::io::Error,
        }
        let e = image(ErrorContext::new("pulling example.org/app:1")(Pull {
            source: std::io::Error::other("connection refused"),
        }));
        assert_eq!(e.to_string(), "pulling example.org/app:1: fetch manifest");
        let chain: Vec<String> =
            std::iter::successors(Some(&e as &dyn std::error::Error), |c| c.source())
                .map(ToString::to_string)
                .collect();
        assert_eq!(
            chain,
            [
                "pulling example.org/app:1: fetch manifest",
                "connection refused"
            ]
        );
        let RuntimeError::Image(inner) = &e else {
            panic!("not an image error: {e:?}");
        };
        assert!(inner.downcast_ref::<ErrorContext<Pull>>().is_some());
    }
}
