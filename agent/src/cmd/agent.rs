//! `moor agent`: the command line and the configuration file made into
//! one `AgentConfig`, then the daemon (`crate::daemon`) runs it.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::AgentArgs;
use crate::config::{
    self, AuthSection, DecryptionSection, Overrides, SourceSection, VerifySection,
};

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
    if args.source.is_none() && args.host.age_key_file.is_some() {
        anyhow::bail!(
            "--age-key-file (MOOR_AGE_KEY_FILE) is the key of --source; give the configuration file's sources a [source.decryption] age_key_file"
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
        rollback: args.rollback.clone(),
        deploy_timeout: args.deploy_timeout.clone(),
        min_ready: args.min_ready.clone(),
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
        decryption: DecryptionSection {
            age_key_file: args.host.age_key_file.clone(),
        },
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn agent_args(args: &[&str]) -> AgentArgs {
        let cli = Cli::try_parse_from(["moor", "agent"].iter().chain(args)).expect("valid");
        let Command::Agent(a) = cli.command else {
            panic!("not agent")
        };
        a
    }

    #[test]
    fn the_age_key_file_decrypts_the_command_lines_source() {
        let o =
            overrides(&agent_args(&["--source", "/srv/m", "--age-key-file", "/k"])).expect("valid");
        let source = o.source.expect("a source");
        assert_eq!(source.decryption.age_key_file, Some("/k".into()));
        // Without --source it would decrypt nothing: said, not ignored.
        let e = overrides(&agent_args(&["--age-key-file", "/k"]))
            .expect_err("no source")
            .to_string();
        assert!(e.contains("[source.decryption]"), "{e}");
    }
}
