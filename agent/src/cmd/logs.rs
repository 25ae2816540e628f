//! `moor logs NAME`: a container's output, stdout lines on stdout and
//! stderr lines on stderr (or everything as stored with `--timestamps`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use moor_runtime::container::logs::{Follower, LogLine, Stream, read_upto};

use crate::cli::LogsArgs;

/// Prints the logs; with `--follow`, keeps printing until the container stops.
pub fn run(state_dir: &Path, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let engine = super::dev::engine(state_dir)?;
    // The instance's current container (see moor_runtime::host::instances).
    let name = moor_runtime::host::instances::resolve(&engine, &args.name)?;
    engine.inspect(&name)?;
    let paths = engine.paths(&name);
    let mut follower = Follower::at_end(&paths.log());
    let mut lines = read_upto(&paths.log(), &paths.log_rotated(), follower.offset())?;
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
        print(&follower.poll()?, args.timestamps)?;
        if !active {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
