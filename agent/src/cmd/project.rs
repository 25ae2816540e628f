//! What `plan`, `apply` and `down` share: the project's name and its
//! desired state for this host.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use moor_spec::DesiredState;

use crate::cli::{HostArgs, ProjectArgs};

/// The project name: given, or the directory's base name made into a valid
/// name (`moor_spec::name_from`, as the agent names a source).
pub fn project_name(args: &ProjectArgs) -> anyhow::Result<String> {
    if let Some(p) = &args.project {
        moor_spec::check_name(p).map_err(|e| anyhow::anyhow!("--project: {e}"))?;
        return Ok(p.clone());
    }
    let first = args
        .paths
        .first()
        .context("give a manifest directory or --project")?;
    let dir = if first.is_dir() {
        first.clone()
    } else {
        first.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let base = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("default");
    let name = moor_spec::name_from(base);
    if name.is_empty() {
        bail!(
            "cannot make a project name from {}; pass --project",
            dir.display()
        );
    }
    Ok(name)
}

/// Loads what targets this host from the manifests, printing diagnostics on failure.
pub fn load(paths: &[PathBuf], args: &HostArgs) -> anyhow::Result<DesiredState> {
    if paths.is_empty() {
        bail!("give a manifest directory");
    }
    let host = args.identity()?;
    let state =
        moor_spec::load_with(paths, Some(&host), &args.load_options()).map_err(|diags| {
            eprint!("{diags}");
            anyhow::anyhow!(
                "{} error(s) in the manifests; nothing was changed",
                diags.len()
            )
        })?;
    // Warnings (Compose keys moor ignores) are shown, and the state applied.
    eprint!("{}", state.warnings);
    Ok(state)
}
