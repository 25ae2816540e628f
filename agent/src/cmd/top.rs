//! `moor top NAME`: the processes of a running container, with their PIDs
//! on the host and in the container.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::TopArgs;

/// Lists the container's processes.
pub fn run(state_dir: &Path, args: &TopArgs) -> anyhow::Result<ExitCode> {
    let engine = super::common::engine(state_dir)?;
    // The instance's current container (see moor_runtime::host::instances).
    let id = moor_runtime::host::instances::resolve(&engine, &args.name)?;
    let procs = engine.top(&id)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&procs)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>8} {:>8} {:>8}  {:<10} {:>9} {:>9}  COMMAND",
        "PID", "CPID", "PPID", "USER", "TIME", "RSS"
    );
    for p in &procs {
        let secs = p.cpu_seconds as u64;
        println!(
            "{:>8} {:>8} {:>8}  {:<10} {:>9} {:>9}  {}",
            p.pid,
            p.container_pid.map_or("-".into(), |c| c.to_string()),
            p.ppid,
            p.user.clone().unwrap_or_else(|| p.uid.to_string()),
            format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
            super::stats::binary(p.rss_bytes),
            p.command
        );
    }
    Ok(ExitCode::SUCCESS)
}
