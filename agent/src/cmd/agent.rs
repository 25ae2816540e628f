//! `moor agent`: the command line and the configuration file made into
//! one `AgentConfig`, then the daemon (`crate::daemon`) runs it.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::AgentArgs;
use crate::config::{self, AuthSection, Overrides, SourceSection, VerifySection};

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(state_dir: &Path, args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let config = config::resolve(overrides(args)?)?;
    crate::daemon::run(state_dir, config)
}

/// What the command line says, for `config::resolve` to merge over the file.
fn overrides(args: &AgentArgs) -> anyhow::Result<Overrides> {
    if args.source.is_none() && args.host.policy.is_some() {
        anyhow::bail!(
            "--policy is the policy of --source; give the configuration file's sources a [source.policy]"
        );
    }
    let source = args.source.as_ref().map(|url| SourceSection {
        name: args.project.clone(),
        url: url.clone(),
        reference: args.reference.clone(),
        path: args.path.clone(),
        interval: args.interval.clone(),
        debounce: args.debounce.clone(),
        allow_empty: args.allow_empty,
        webhook_secret_file: args.webhook_secret_file.clone(),
        profiles: Vec::new(),
        env_files: Vec::new(),
        drift: args.drift.clone(),
        mode: args.mode.clone(),
        auth: AuthSection {
            token_file: args.token_file.clone(),
            username: args.username.clone(),
            password_file: args.password_file.clone(),
            ssh_key_file: args.ssh_key.clone(),
            known_hosts: args.known_hosts.clone(),
            ..AuthSection::default()
        },
        verify: VerifySection {
            allowed_signers: args.verify_allowed_signers.clone(),
            pgp_keys: args.verify_pgp_key.clone(),
        },
        insecure: args.insecure,
        allow_rollback: args.allow_rollback,
        policy: None,
        policy_file: args.host.policy.clone(),
    });
    Ok(Overrides {
        config: args.config.clone(),
        source,
        metrics_addr: args.metrics_addr,
        webhook_addr: args.webhook_addr,
        status_token_file: args.status_token_file.clone(),
        registry_auth: args.registry_auth.clone(),
        resync: args.resync,
        max_manifest_size: args.host.max_manifest_size,
        host_name: args.host.host_name.clone(),
        host_labels: args.host.host_labels.clone(),
        profiles: args.host.profiles.clone(),
        env_files: args.host.env_files()?,
    })
}
