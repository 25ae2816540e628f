//! `moor validate PATH...`

use std::collections::BTreeSet;
use std::process::ExitCode;

use moor_spec::{DesiredState, Diagnostics};
use serde_json::json;

use crate::cli::ValidateArgs;

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let host = args.host.identity()?;
    let options = super::project::load_options(&args.host)?;
    let result = moor_spec::load_with(&args.paths, Some(&host), &options);
    if args.json {
        let out = match &result {
            Ok(state) => json!({
                "valid": true,
                "host": host,
                "files": files(state),
                "resources": counts(state),
                "diagnostics": state.warnings,
            }),
            Err(diags) => json!({ "valid": false, "diagnostics": diags }),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match &result {
            Ok(state) => {
                // Warnings (Compose keys moor ignores) do not make it invalid.
                eprint!("{}", state.warnings);
                println!("valid: {}", summary(state));
            }
            Err(diags) => report(diags),
        }
    }
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report(diags: &Diagnostics) {
    eprint!("{diags}");
    let n = diags.len();
    eprintln!("{n} error{}", if n == 1 { "" } else { "s" });
}

fn files(state: &DesiredState) -> usize {
    let mut files = BTreeSet::new();
    files.extend(state.images.values().map(|r| &r.origin.file));
    files.extend(state.networks.values().map(|r| &r.origin.file));
    files.extend(state.volumes.values().map(|r| &r.origin.file));
    files.extend(state.containers.values().map(|r| &r.origin.file));
    files.len()
}

fn counts(state: &DesiredState) -> serde_json::Value {
    state
        .counts()
        .iter()
        .map(|(kind, n)| (kind.table().to_string(), json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn summary(state: &DesiredState) -> String {
    let parts: Vec<String> = state
        .counts()
        .iter()
        .map(|(kind, n)| format!("{n} {}{}", kind, if *n == 1 { "" } else { "s" }))
        .collect();
    let f = files(state);
    format!(
        "{} in {f} file{}",
        parts.join(", "),
        if f == 1 { "" } else { "s" }
    )
}
