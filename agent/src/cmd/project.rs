//! What `plan`, `apply` and `down` share: the project's name and its
//! desired state for this host.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use moor_spec::DesiredState;

use crate::cli::{HostArgs, ProjectArgs};
use crate::source::written::Written;

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

/// Which key secrets are hashed with.
#[derive(Debug, Clone, Copy)]
pub enum HostKey<'a> {
    /// None (conversions, which show no hashes).
    None,
    /// The key of the host with this state dir, never made (a plan changes
    /// nothing: without a key, one that is kept nowhere).
    Read(&'a Path),
    /// The key of the host with this state dir, made when missing.
    Make(&'a Path),
}

/// How the arguments ask manifests to be loaded: the size limit, and the
/// policy file (`--policy`) read.
pub fn load_options(args: &HostArgs) -> anyhow::Result<moor_spec::LoadOptions> {
    let mut options = args.load_options();
    if let Some(file) = &args.policy {
        options.policy = Some(crate::config::read_policy(file)?);
    }
    Ok(options)
}

/// Loads what targets this host from the manifests, printing diagnostics
/// on failure. What the project's containers were seen writing
/// (`written`) is not read. With the host's state dir, secrets are hashed
/// with its key (plan and apply must agree with the agent).
pub fn load(
    paths: &[PathBuf],
    args: &HostArgs,
    written: &Written,
    key: HostKey<'_>,
) -> anyhow::Result<DesiredState> {
    if paths.is_empty() {
        bail!("give a manifest directory");
    }
    let host = args.identity()?;
    let mut options = load_options(args)?;
    options.skip = written.dirs().to_vec();
    match key {
        HostKey::None => {}
        HostKey::Read(dir) => {
            options.secret_key = match crate::secret_key::load(dir)? {
                Some(k) => k,
                None => crate::secret_key::ephemeral()?,
            }
        }
        HostKey::Make(dir) => options.secret_key = crate::secret_key::load_or_create(dir)?,
    }
    let state = moor_spec::load_with(paths, Some(&host), &options).map_err(|diags| {
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
