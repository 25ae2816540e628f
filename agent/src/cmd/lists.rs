//! `moor networks` and `moor volumes`: what the engine has, read-only (safe
//! while an agent runs).

use std::path::Path;
use std::process::ExitCode;

use moor_runtime::container::volumes;
use moor_runtime::host::owners::Owners;
use moor_runtime::net::{NetConfig, Networks};
use serde_json::json;

use crate::cli::ListArgs;

fn net_config(state_dir: &Path) -> NetConfig {
    moor_runtime::host::HostConfig::new(state_dir).net
}

pub fn networks(state_dir: &Path, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let nets = Networks::open(NetConfig {
        resolver: None,
        ..net_config(state_dir)
    })?;
    let owners = Owners::load(state_dir)?;
    let list = nets.list()?;
    if args.json {
        let rows: Vec<_> = list
            .iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "project": owners.networks.get(&n.name).map(|o| &o.project),
                    "bridge": n.bridge,
                    "subnet": n.subnet.to_string(),
                    "gateway": n.gateway.to_string(),
                    "internal": n.internal,
                    "containers": n.containers,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<16} {:<18} {:<15} {:<12} CONTAINERS",
        "NAME", "BRIDGE", "SUBNET", "GATEWAY", "PROJECT"
    );
    for n in &list {
        let project = owners
            .networks
            .get(&n.name)
            .map_or("-", |o| o.project.as_str());
        println!(
            "{:<20} {:<16} {:<18} {:<15} {:<12} {}",
            n.name,
            n.bridge,
            n.subnet.to_string(),
            n.gateway.to_string(),
            project,
            n.containers.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn volumes(state_dir: &Path, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let owners = Owners::load(state_dir)?;
    let names = volumes::list(state_dir)?;
    let rows: Vec<_> = names
        .iter()
        .map(|name| {
            let owner = owners.volumes.get(name);
            json!({
                "name": name,
                "project": owner.map(|o| &o.project),
                "prune": owner.is_some_and(|o| o.prune),
                "path": volumes::data_dir(state_dir, name),
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<12} {:<6} PATH", "NAME", "PROJECT", "PRUNE");
    for r in &rows {
        println!(
            "{:<24} {:<12} {:<6} {}",
            r["name"].as_str().unwrap_or_default(),
            r["project"].as_str().unwrap_or("-"),
            r["prune"],
            r["path"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
