//! `moor inspect NAME`: one container in detail, as JSON.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::InspectArgs;

/// Prints the container's record, observed state and paths.
pub fn run(state_dir: &Path, args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let engine = super::common::engine(state_dir)?;
    // The instance's current container (see moor_runtime::host::instances).
    let name = moor_runtime::host::instances::resolve(&engine, &args.name)?;
    let info = engine.inspect(&name)?;
    let paths = engine.paths(&name);
    let mut value = super::ps::summary(state_dir, &info);
    value["spec"] = serde_json::to_value(&info.record.spec)?;
    value["status"] = serde_json::to_value(&info.status)?;
    value["shim"] = serde_json::to_value(info.shim)?;
    value["lowers"] = serde_json::to_value(&info.record.lowers)?;
    value["executor"] = info.record.executor.name().into();
    value["cgroup"] = info.record.cgroup_path().into();
    value["bundle"] = paths.dir.to_string_lossy().into_owned().into();
    value["log_path"] = paths.log().to_string_lossy().into_owned().into();
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}
