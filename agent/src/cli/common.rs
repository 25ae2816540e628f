//! Argument groups several verbs share: which project from where
//! ([`ProjectArgs`]), and which host of a fleet to act as ([`HostArgs`]).
//! Every value is parsed and checked by `moor_spec`, the same rules the
//! agent's configuration file goes through.

use std::path::PathBuf;

// Which project, from where.
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    /// The manifest directory (or files).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The project the resources belong to (default: the directory's name).
    #[arg(long, short = 'p')]
    pub project: Option<String>,
}

// How manifests are loaded: which host of a fleet to act as (manifests may
// `target` hosts by name and labels, and only what targets this host is
// validated, planned, applied or run by the agent), and the size limit of
// a manifest file.
#[derive(Debug, clap::Args, Default)]
pub struct HostArgs {
    /// Refuse manifest files larger than this (bytes, or with k/m/g) [default: 4m].
    #[arg(long, value_name = "SIZE", value_parser = moor_spec::units::parse_size)]
    pub max_manifest_size: Option<u64>,
    /// Act as the host with this name (default: this machine's host name).
    #[arg(long, value_name = "NAME", value_parser = moor_spec::target::parse_host_name)]
    pub host_name: Option<String>,
    /// Give the host a label, for `target = { labels = ... }` (repeatable).
    #[arg(long = "host-label", value_name = "KEY=VALUE", value_parser = moor_spec::target::parse_label)]
    pub host_labels: Vec<(String, String)>,
    /// Load under this policy: a TOML file with the keys of an agent source's
    /// `[source.policy]` (host_paths, capabilities, host_network,
    /// unconfined); what it does not allow is an error. Default: no policy
    /// for a directory; a git source (agent) is restricted.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Decrypt SOPS-encrypted files (manifests, env files, secret files)
    /// with the age identities of this key file (as `age-keygen` writes it).
    #[arg(long, value_name = "FILE", env = "MOOR_AGE_KEY_FILE")]
    pub age_key_file: Option<PathBuf>,
    /// Enable a Compose profile: its services run (repeatable; also `COMPOSE_PROFILES`).
    #[arg(long = "profile", value_name = "NAME")]
    pub profiles: Vec<String>,
    /// Interpolate Compose files with this env file instead of the `.env`
    /// beside them (repeatable: later files win; moor's environment wins
    /// over all). Relative to the current directory.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
}

impl HostArgs {
    /// The load options these arguments ask for, but the policy (a file
    /// the handler reads).
    pub fn load_options(&self) -> anyhow::Result<moor_spec::LoadOptions> {
        let mut o = moor_spec::LoadOptions::default();
        if let Some(max) = self.max_manifest_size {
            o.max_file_size = max;
        }
        // Compose files are interpolated with moor's own environment.
        o.env = std::env::vars().collect();
        o.profiles = self.profiles.iter().cloned().collect();
        o.env_files = self.env_files()?;
        Ok(o)
    }

    /// `--env-file`s, made absolute against the current directory (as
    /// `docker compose --env-file` reads them); `None` when there are none.
    pub fn env_files(&self) -> anyhow::Result<Option<Vec<PathBuf>>> {
        if self.env_files.is_empty() {
            return Ok(None);
        }
        let files = self
            .env_files
            .iter()
            .map(|f| {
                std::path::absolute(f)
                    .map_err(|e| anyhow::anyhow!("--env-file {}: {e}", f.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(files))
    }

    /// The identity to load manifests for (see `moor_spec::HostIdentity::resolve`).
    pub fn identity(&self) -> anyhow::Result<moor_spec::HostIdentity> {
        let labels = moor_spec::target::label_map(self.host_labels.iter().cloned())?;
        Ok(moor_spec::HostIdentity::resolve(
            self.host_name.as_deref(),
            labels,
        )?)
    }
}
