//! `moor logs NAME`: a container's output, stdout lines on stdout and
//! stderr lines on stderr (or everything as stored with `--timestamps`).
//! `--since`/`--until` keep the lines written in a time window, `--tail`
//! the last N of those, as in Docker.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use moor_runtime::container::logs::{
    Follower, LogLine, Stream, TimeFilter, parse_time_arg, read_upto,
};

use crate::cli::LogsArgs;

/// Prints the logs; with `--follow`, keeps printing until the container
/// stops (or `--until` has passed).
pub fn run(state_dir: &Path, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let filter = time_filter(args, SystemTime::now())?;
    let engine = super::common::engine(state_dir)?;
    // The instance's current container (see moor_runtime::host::instances).
    let name = moor_runtime::host::instances::resolve(&engine, &args.name)?;
    engine.inspect(&name)?;
    let paths = engine.paths(&name);
    let mut follower = Follower::at_end(&paths.log());
    let mut lines = read_upto(&paths.log(), &paths.log_rotated(), follower.offset())?;
    lines.retain(|l| filter.keeps(l));
    if let Some(n) = args.tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    print(&lines, args.timestamps)?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let active = engine
            .inspect(&name)
            .map(|i| i.status.is_active())
            .unwrap_or(false);
        let over = filter.until.is_some_and(|u| SystemTime::now() > u);
        let mut new = follower.poll()?;
        new.retain(|l| filter.keeps(l));
        print(&new, args.timestamps)?;
        if !active || over {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The window of `--since` and `--until`, relative durations counted back
/// from `now`.
fn time_filter(args: &LogsArgs, now: SystemTime) -> anyhow::Result<TimeFilter> {
    let parse = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| parse_time_arg(s, now).map_err(|e| anyhow!("{flag}: {e}")))
            .transpose()
    };
    let filter = TimeFilter {
        since: parse("--since", &args.since)?,
        until: parse("--until", &args.until)?,
    };
    if let (Some(s), Some(u)) = (filter.since, filter.until)
        && u < s
    {
        return Err(anyhow!(
            "--until ({}) is before --since ({})",
            args.until.as_deref().unwrap_or_default(),
            args.since.as_deref().unwrap_or_default()
        ));
    }
    Ok(filter)
}

fn print(lines: &[LogLine], timestamps: bool) -> std::io::Result<()> {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for l in lines {
        let end = if l.full { "\n" } else { "" };
        if timestamps {
            writeln!(out, "{} {} {}", l.timestamp, l.stream.as_str(), l.text)?;
        } else if l.stream == Stream::Stderr {
            write!(err, "{}{end}", l.text)?;
        } else {
            write!(out, "{}{end}", l.text)?;
        }
    }
    out.flush()?;
    err.flush()
}
