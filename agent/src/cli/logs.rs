//! `moor logs NAME`

use clap::Args;

// `moor logs`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The container.
    pub name: String,
    /// Keep printing new lines until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Print only the last N lines (of those `--since`/`--until` keep).
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<usize>,
    /// Only lines written at or after TIME: an RFC 3339 timestamp
    /// (2026-11-23T10:00:00Z), a Unix timestamp (1700000000.5) or a
    /// duration ago (45s, 10m, 1h30m).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only lines written at or before TIME (same forms as `--since`); with
    /// `--follow`, stop following once TIME has passed.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Print each line as stored: timestamp, stream, text (all on stdout).
    #[arg(short, long)]
    pub timestamps: bool,
}
