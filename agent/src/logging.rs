//! Diagnostics on stderr through `tracing`: text for people, JSON lines for
//! log collectors (`--log-format json`). `MOOR_LOG` takes a filter in
//! `tracing-subscriber`'s `EnvFilter` syntax (`debug`, `moor_reconcile=debug`).
//!
//! The agent logs at `info` by default: a line per new desired state, per
//! action and per failure, each inside a `reconcile` span (project, revision,
//! pass) and an `action` span (kind, name, verb). One-shot commands log at
//! `warn`, since they print what they did on stdout themselves.
//!
//! Secrets never reach a log: git URLs are logged with their credentials
//! removed, webhook secrets and tokens are read from files and never
//! formatted, and request bodies are not logged.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, with the span fields.
    Json,
}

/// Installs the global subscriber. `default_level` applies when `MOOR_LOG` is unset.
pub fn init(format: LogFormat, default_level: &str) {
    // youki's crates log through `tracing` too; their warnings (controllers
    // this host lacks) are noise and their errors repeat ours. `MOOR_LOG`
    // can turn them back on.
    let filter = EnvFilter::try_from_env("MOOR_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("{default_level},libcontainer=off,libcgroups=off"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(true)
            .try_init(),
    };
}
