//! `moor agent`: its sources (one on the command line, more in the
//! configuration file) and how it serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::HostArgs;

// `moor agent`
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// What to watch: a manifest directory, or a git repository
    /// (`git+https://…`, `git+ssh://…`, `git+file://…`, `git+git://…`).
    /// More sources go in the configuration file.
    #[arg(long, value_name = "DIR|git+URL")]
    pub source: Option<String>,
    /// The project the source's resources belong to (default: the directory's
    /// or the repository's name).
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// Git: the branch, tag or commit to follow (default: the remote's HEAD).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Git: the sub-directory holding the manifests.
    #[arg(long, value_name = "SUBDIR")]
    pub path: Option<PathBuf>,
    /// Git: the poll interval.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Git: enable `POST /hooks/git/<project>` with the secret in this file.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Git over https: a file holding the access token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Git over https: the user name.
    #[arg(long)]
    pub username: Option<String>,
    /// Git over https: a file holding the password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Git over ssh: the private key.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// Git over ssh: the known host keys (required; host keys are checked).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Git: apply only commits signed by a key in this SSH `allowed_signers` file.
    #[arg(long, value_name = "FILE")]
    pub verify_allowed_signers: Option<PathBuf>,
    /// Git: apply only commits signed by this OpenPGP public key (repeatable).
    #[arg(long, value_name = "FILE")]
    pub verify_pgp_key: Vec<PathBuf>,
    /// Git: allow git+http:// or git+git:// without signature verification
    /// (anyone on the network path could send any commit).
    #[arg(long)]
    pub insecure: bool,
    /// Git, with signature verification: apply a head that is an ancestor
    /// of the commit in force (refused by default as a rollback).
    #[arg(long)]
    pub allow_rollback: bool,
    /// The configuration file (default: /etc/moor/agent.toml, when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to serve /metrics, /healthz, /readyz, /status and the webhooks
    /// [default: 127.0.0.1:9464].
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the git webhooks on this address instead, and not on --metrics-addr.
    #[arg(long, value_name = "ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// Answer /status only with `Authorization: Bearer <this file's content>`.
    #[arg(long, value_name = "FILE")]
    pub status_token_file: Option<PathBuf>,
    /// Registry credentials, in the `auths` format of Docker's config.json
    /// [default: /etc/moor/auth.json, when it exists].
    #[arg(long, value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,
    /// Time between full reconciles when nothing triggers one [default: 30s].
    #[arg(long, value_parser = moor_spec::units::parse_duration)]
    pub resync: Option<Duration>,
    /// Directory: quiet time after a file change before it is reloaded.
    #[arg(long, value_name = "DURATION")]
    pub debounce: Option<String>,
    /// Let a source with no resources remove everything the project owns.
    #[arg(long)]
    pub allow_empty: bool,
    /// What to do with drift on the host: `correct` it, or only `report` it.
    #[arg(long, value_name = "correct|report")]
    pub drift: Option<String>,
    /// `apply`, or `plan`: never change the host, show the pending plan in /status.
    #[arg(long, value_name = "apply|plan")]
    pub mode: Option<String>,
    /// A revision that fails (see --deploy-timeout): `auto` rolls it back
    /// to the last healthy one, `off` leaves it in force [default: auto].
    #[arg(long, value_name = "auto|off")]
    pub rollback: Option<String>,
    /// How long a revision's changed containers have to become ready
    /// [default: 3m].
    #[arg(long, value_name = "DURATION")]
    pub deploy_timeout: Option<String>,
    /// How long a container without a health check must run to be ready
    /// [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub min_ready: Option<String>,
    // This host's name and labels for manifests' `target` (over the
    // configuration file's `[host]`), the size limit of a manifest file,
    // and --source's policy.
    #[command(flatten)]
    pub host: HostArgs,
}
