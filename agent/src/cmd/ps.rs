//! `moor ps`: containers and their true state.

use std::path::Path;
use std::process::ExitCode;

use std::sync::OnceLock;

use moor_runtime::container::cgroups::Hierarchies;
use moor_runtime::container::logs::rfc3339;
use moor_runtime::container::paths::ContainerPaths;
use moor_runtime::container::{ContainerInfo, Status};
use serde_json::{Value, json};

use crate::cli::PsArgs;

/// Lists containers.
pub fn run(state_dir: &Path, args: &PsArgs) -> anyhow::Result<ExitCode> {
    let engine = super::common::engine(state_dir)?;
    let containers: Vec<ContainerInfo> = engine
        .list()?
        .into_iter()
        .filter(|c| args.all || c.status.is_active())
        .collect();
    if args.json {
        let rows: Vec<Value> = containers.iter().map(|c| summary(state_dir, c)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<40} {:<8} {:>6} {:>8}  {:<10} STATUS",
        "NAME", "IMAGE", "STATE", "EXIT", "PID", "HEALTH"
    );
    for c in &containers {
        let s = summary(state_dir, c);
        let show = |v: &Value| match v {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let mut status = describe(&c.status);
        if s["paused"] == true {
            status.push_str(" (paused)");
        }
        if s["stopped_by_user"] == true {
            status.push_str(", by moor stop");
        }
        println!(
            "{:<20} {:<40} {:<8} {:>6} {:>8}  {:<10} {}",
            c.record.instance(),
            c.record.spec.image.to_string(),
            show(&s["state"]),
            show(&s["exit_code"]),
            show(&s["pid"]),
            show(&s["health"]),
            status,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The fields `ps --json` prints for one container. `name` is its instance
/// name (`web`), `host_id` its own (`web`, or `web--1a2b3c4d` after a
/// start-first update: two rows share a name while one runs). Health comes
/// from the file the agent's health checker keeps under `<state>/health`.
/// `state` is `paused` for a running container whose cgroup is frozen
/// (`moor pause`); `stopped_by_user` says it was stopped with `moor stop`,
/// which the agent respects.
pub fn summary(state_dir: &Path, c: &ContainerInfo) -> Value {
    static HIERARCHIES: OnceLock<Hierarchies> = OnceLock::new();
    let paused = matches!(c.status, Status::Running { .. })
        && HIERARCHIES
            .get_or_init(Hierarchies::detect)
            .frozen(&c.record.cgroup_path());
    let stopped_by_user = !c.status.is_active()
        && ContainerPaths::new(state_dir, &c.record.name)
            .manual_stop()
            .exists();
    let time = |ms: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    let (pid, started, finished, exit_code, oom, reason) = match &c.status {
        Status::Created => (None, None, None, None, false, None),
        Status::Running { pid, started_ms } => {
            (Some(*pid), Some(*started_ms), None, None, false, None)
        }
        Status::Exited(e) => (
            None,
            e.started_ms,
            Some(e.finished_ms),
            Some(e.exit_code),
            e.oom_killed,
            e.reason.clone(),
        ),
        Status::Lost { pid, started_ms } => (
            *pid,
            Some(*started_ms),
            None,
            None,
            false,
            Some("supervisor lost".into()),
        ),
    };
    json!({
        "name": c.record.instance(),
        "host_id": c.record.name,
        "id": c.record.id,
        "image": c.record.spec.image.to_string(),
        "state": if paused { "paused" } else { c.status.name() },
        "paused": paused,
        "stopped_by_user": stopped_by_user,
        "exit_code": exit_code,
        "oom_killed": oom,
        "reason": reason,
        "pid": pid,
        "created": time(c.record.created_ms),
        "started": started.map(time),
        "finished": finished.map(time),
        "health": match &c.status {
            Status::Running { .. } => moor_runtime::host::read_health(&state_dir.join("health"), &c.record.name)
                .map_or(Value::Null, Value::String),
            _ => Value::Null,
        },
    })
}

fn describe(status: &Status) -> String {
    let ago = |ms: u64| {
        let secs = moor_runtime::container::state::now_ms().saturating_sub(ms) / 1000;
        match secs {
            0..=59 => format!("{secs} s"),
            60..=3599 => format!("{} min", secs / 60),
            _ => format!("{} h", secs / 3600),
        }
    };
    match status {
        Status::Created => "created".into(),
        Status::Running { started_ms, .. } => format!("up {}", ago(*started_ms)),
        Status::Exited(e) => {
            let oom = if e.oom_killed { ", out of memory" } else { "" };
            format!("exited ({}{oom}) {} ago", e.exit_code, ago(e.finished_ms))
        }
        Status::Lost { .. } => "supervisor lost: stop or remove it".into(),
    }
}
