//! `moor build`

use std::path::PathBuf;

use clap::{Args, ValueEnum};

// Arguments of `moor build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context: a directory.
    pub context: PathBuf,
    /// A reference to name the image by (repeatable).
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    /// The Dockerfile [default: CONTEXT/Dockerfile].
    #[arg(short = 'f', long = "file", value_name = "DOCKERFILE")]
    pub file: Option<PathBuf>,
    /// A build argument, `KEY=VALUE` (`KEY` alone takes it from the
    /// environment); repeatable.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// The stage to build [default: the last].
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Run every step; use no cached result.
    #[arg(long)]
    pub no_cache: bool,
    /// The network of RUN steps.
    #[arg(long, value_enum, default_value = "none")]
    pub network: BuildNetwork,
    /// A reproducible build: every time in the image is `SOURCE_DATE_EPOCH`
    /// (`0` when unset) or older; the same context gives the same image ID
    /// on any host. `SOURCE_DATE_EPOCH` set alone does the same.
    #[arg(long)]
    pub reproducible: bool,
    /// How to show the steps (on stderr): `tty` redraws each step with its
    /// time and the last lines of its output, `plain` prints a line per
    /// event (`#N …`), `quiet` nothing; `auto` is `tty` when stderr is a
    /// terminal, else `plain`.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: BuildProgress,
    /// Print only the image ID (`--progress quiet`).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--progress` of `moor build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildProgress {
    /// `tty` on a terminal, else `plain`.
    Auto,
    /// A line per event.
    Plain,
    /// Redrawn in place.
    Tty,
    /// Nothing.
    Quiet,
}

/// `--network` of `moor build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildNetwork {
    /// Only a loopback interface.
    None,
    /// The host's network.
    Host,
}

// Arguments of `moor builder`.
#[derive(Debug, Args)]
pub struct BuilderArgs {
    #[command(subcommand)]
    pub command: BuilderCommand,
}

// `moor builder` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BuilderCommand {
    /// Remove build cache entries and the layers only they hold (never a
    /// layer an image or a container uses), as `docker builder prune`.
    Prune(BuilderPruneArgs),
}

// Arguments of `moor builder prune`.
#[derive(Debug, Args)]
pub struct BuilderPruneArgs {
    /// Every entry, not only those no image contains.
    #[arg(short, long)]
    pub all: bool,
    /// Keep the most recently used entries up to this many bytes of layers
    /// that only the cache holds (bytes, or with k/m/g).
    #[arg(long, value_name = "SIZE", value_parser = moor_spec::units::parse_size)]
    pub keep_storage: Option<u64>,
    /// `until=DURATION`: only entries unused for at least DURATION (`24h`,
    /// `90m`).
    #[arg(long, value_name = "until=DURATION", value_parser = parse_until)]
    pub filter: Vec<std::time::Duration>,
}

/// `until=DURATION` of `--filter`, the only filter there is.
fn parse_until(s: &str) -> Result<std::time::Duration, String> {
    match s.split_once('=') {
        Some(("until", d)) => moor_spec::units::parse_duration(d),
        Some((k, _)) => Err(format!(
            "unknown filter {k:?}: the filter is until=DURATION"
        )),
        None => Err(format!("{s:?}: the filter is until=DURATION")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_the_only_filter() {
        assert_eq!(
            parse_until("until=24h"),
            Ok(std::time::Duration::from_secs(24 * 3600))
        );
        for bad in ["until", "label=x", "until=soon", "UNTIL=1h", "=1h"] {
            assert!(parse_until(bad).is_err(), "{bad}");
        }
    }
}
