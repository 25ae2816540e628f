//! `moor stop`, `start`, `restart`, `pause` and `unpause`: a person's
//! commands on containers, beside a running agent (they do not take the
//! state-dir lock; see `moor_runtime::host::SharedHost`). A container
//! stopped with `moor stop` stays stopped — the agent does not restart it,
//! whatever its restart policy — until `moor start`, `moor restart`, or a
//! change of its spec replaces it. A paused container is left alone by the
//! agent too.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use moor_runtime::host::{HostConfig, SharedHost, instances};

/// What to do to each container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Stop,
    Start,
    Restart,
    Pause,
    Unpause,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Stop => "stop",
            Verb::Start => "start",
            Verb::Restart => "restart",
            Verb::Pause => "pause",
            Verb::Unpause => "unpause",
        }
    }
}

/// Runs `verb` on each container in turn, printing each name done (as
/// Docker does); exit 1 when any failed.
pub fn run(
    state_dir: &Path,
    verb: Verb,
    names: &[String],
    timeout: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let grace = match timeout {
        Some(t) if !t.is_finite() || t < 0.0 => {
            anyhow::bail!("--timeout must be a number of seconds, not {t}")
        }
        t => t.map(Duration::from_secs_f64),
    };
    let host = SharedHost::open(HostConfig::new(state_dir))?;
    let mut failures = 0;
    for name in names {
        let result = (|| -> anyhow::Result<()> {
            // The instance's current container (see moor_runtime::host::instances).
            let id = instances::resolve(host.engine(), name)?;
            match verb {
                Verb::Stop => host.stop(&id, grace).map(drop)?,
                Verb::Start => host.start(&id).map(drop)?,
                Verb::Restart => host.restart(&id, grace)?,
                Verb::Pause => host.pause(&id)?,
                Verb::Unpause => host.unpause(&id)?,
            }
            Ok(())
        })();
        match result {
            Ok(()) => println!("{name}"),
            Err(e) => {
                failures += 1;
                eprintln!("error: {} {name}: {e:#}", verb.as_str());
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
