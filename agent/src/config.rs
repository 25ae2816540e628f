//! The agent's configuration: `/etc/moor/agent.toml` (or `--config FILE`)
//! merged with the command line.
//!
//! ```toml
//! metrics_addr = "127.0.0.1:9464"
//! resync = "30s"
//! max_manifest_size = "4m"    # larger manifest files are refused
//! webhook_addr = "0.0.0.0:9465"   # the git webhooks here, not on metrics_addr
//! status_token_file = "/etc/moor/status.token"   # /status asks for this bearer token
//! registry_auth = "/etc/moor/auth.json"   # registry credentials (Docker's config.json format)
//! build_cache_max_age = "168h"  # build cache entries unused this long are dropped ("off": never)
//!
//! [host]                      # who this agent is, for manifests' `target`
//! name = "edge-1"             # default: the machine's host name
//! labels = { role = "db" }
//!
//! [[source]]                  # several allowed; each is its own project
//! name = "fleet"              # the project (default: the repository's or directory's name)
//! url = "git+https://git.example.com/ops/fleet.git"   # or a directory path
//! ref = "main"                # branch, tag or commit (default: the remote's HEAD)
//! path = "hosts"              # sub-directory holding the manifests
//! interval = "1m"             # poll interval
//! profiles = ["metrics"]      # Compose profiles enabled (besides --profile)
//! drift = "correct"           # or "report": out-of-band changes are reported, left so
//! mode = "apply"              # or "plan": never change the host, show the plan
//! rollback = "auto"           # or "off": a failed revision stays in force
//! deploy_timeout = "3m"       # a revision's changed containers must be ready by then
//! min_ready = "10s"           # how long one without a health check must run
//! webhook_secret_file = "/etc/moor/webhook-secret"
//! # insecure = true         # git+http:// or git+git:// without signature verification
//! # allow_rollback = true   # with verification: a head older than the commit in force
//! [source.auth]
//! token_file = "/etc/moor/git-token"
//! [source.verify]
//! allowed_signers = "/etc/moor/allowed_signers"
//! [source.decryption]         # SOPS-encrypted manifests, env files, secret files
//! age_key_file = "/etc/moor/age.key"
//! [source.policy]             # what its manifests may ask of the host
//! host_paths = ["/srv/app-data"]   # absolute bind sources and env files under these
//! capabilities = ["NET_ADMIN"]     # cap_add beyond Docker's default set
//! host_network = false             # network_mode = "host"
//! unconfined = false               # seccomp = "unconfined"
//!
//! [[notify]]                  # several allowed
//! kind = "webhook"            # or slack, discord, ntfy
//! url_file = "/etc/moor/notify.url"
//! events = ["failed", "recovered"]
//! secret_file = "/etc/moor/notify.key"   # X-Moor-Signature-256 (webhook)
//!
//! [[verify]]                  # images that must carry a cosign signature
//! match = "registry.example.com/team/*"
//! key = "/etc/moor/cosign.pub"          # ECDSA P-256 public key (PEM)
//! ```
//!
//! A git source is restricted by default: without `[source.policy]`, its
//! manifests may ask for none of those. A directory source keeps every
//! permission unless it has a policy (see `moor_spec::policy`).
//!
//! Secrets are always read from files (or named environment variables), never
//! written in this file, so it can be world-readable and kept in git itself.
//!
//! Values go through the same rules as the command line's (`moor_spec`):
//! durations, sizes, names made from a directory's or repository's name,
//! and who this host is (`HostIdentity::resolve`: the `[host]` name or
//! this machine's, never a made-up default).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use moor_spec::HostIdentity;
use serde::Deserialize;

use crate::source::git::redact_url;

/// The default configuration file; read when it exists.
pub const DEFAULT_CONFIG: &str = "/etc/moor/agent.toml";

/// `build_cache_max_age` when the file does not say: a week.
pub const DEFAULT_BUILD_CACHE_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    metrics_addr: Option<SocketAddr>,
    webhook_addr: Option<SocketAddr>,
    status_token_file: Option<PathBuf>,
    registry_auth: Option<PathBuf>,
    resync: Option<String>,
    build_cache_max_age: Option<String>,
    max_manifest_size: Option<Size>,
    #[serde(default)]
    host: HostSection,
    #[serde(default, rename = "source")]
    sources: Vec<SourceSection>,
    #[serde(default, rename = "notify")]
    notify: Vec<NotifySection>,
    #[serde(default, rename = "verify")]
    verify: Vec<ImageVerifySection>,
}

/// One `[[verify]]` table: images that must be signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageVerifySection {
    #[serde(rename = "match")]
    pattern: String,
    key: PathBuf,
}

/// One `[[notify]]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifySection {
    kind: String,
    url_file: PathBuf,
    events: Option<Vec<String>>,
    #[serde(default)]
    sources: Vec<String>,
    secret_file: Option<PathBuf>,
    repeat_interval: Option<String>,
}

/// Where a notification goes and how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    /// JSON, optionally signed (`X-Moor-Signature-256`).
    Webhook,
    /// A Slack incoming webhook (`{"text": …}`).
    Slack,
    /// A Discord webhook (`{"content": …}`).
    Discord,
    /// An ntfy topic URL (plain text, a `Title` header).
    Ntfy,
}

/// The events notifications are sent for.
pub const NOTIFY_EVENTS: &[&str] = &[
    "applied",
    "failed",
    "recovered",
    "rolled_back",
    "crash_looping",
    "drift_corrected",
    "update_available",
];

/// One `[[notify]]` target, resolved.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// How the message is written.
    pub kind: NotifyKind,
    /// The file holding the URL (a secret: read at each send, never logged).
    pub url_file: PathBuf,
    /// The events sent (of [`NOTIFY_EVENTS`]).
    pub events: Vec<String>,
    /// The sources whose events are sent; empty for all.
    pub sources: Vec<String>,
    /// The HMAC key's file (webhook only).
    pub secret_file: Option<PathBuf>,
    /// A failure repeating is sent again, as a summary, at most this often.
    pub repeat_interval: Duration,
}

/// A size: bytes, or a string with a unit (`"8m"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self) -> anyhow::Result<u64> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => moor_spec::units::parse_size(s).map_err(anyhow::Error::msg),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSection {
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// One `[[source]]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// The project its resources belong to.
    pub name: Option<String>,
    /// A directory, or `git+https://…`, `git+ssh://…`, `git+file://…`, `git+git://…`.
    pub url: String,
    /// Branch, tag or commit.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// Sub-directory of the repository holding the manifests.
    pub path: Option<PathBuf>,
    /// Poll interval (git).
    pub interval: Option<String>,
    /// Quiet time after a change before a directory is reloaded.
    pub debounce: Option<String>,
    /// Let the source's emptiness remove everything the project owns.
    #[serde(default)]
    pub allow_empty: bool,
    /// Secret for `POST /hooks/git/<name>` (GitHub, Gitea/Forgejo, GitLab).
    pub webhook_secret_file: Option<PathBuf>,
    /// Compose profiles enabled for this source's Compose files (besides
    /// `--profile`).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Env files this source's Compose files are interpolated with, in
    /// place of the `.env` beside them (and of `--env-file`): relative to
    /// the Compose file, inside the source; or absolute, the operator's.
    #[serde(default)]
    pub env_files: Vec<PathBuf>,
    /// `correct` (default): put drift right; `report`: only report it.
    pub drift: Option<String>,
    /// `apply` (default), or `plan`: never change the host, show the plan.
    pub mode: Option<String>,
    /// `auto` (default): roll a failed revision back to the last healthy
    /// one; `off`: leave it in force and report it.
    pub rollback: Option<String>,
    /// How long a revision's changed containers have to become ready (3m).
    pub deploy_timeout: Option<String>,
    /// How long a container without a health check must run to be ready (10s).
    pub min_ready: Option<String>,
    /// Credentials.
    #[serde(default)]
    pub auth: AuthSection,
    /// Commit signature verification.
    #[serde(default)]
    pub verify: VerifySection,
    /// git+http:// or git+git:// without signature verification.
    #[serde(default)]
    pub insecure: bool,
    /// With verification: apply a head that is an ancestor of the commit in force.
    #[serde(default)]
    pub allow_rollback: bool,
    /// What the source's manifests may ask of the host.
    pub policy: Option<moor_spec::PolicyKeys>,
    /// The same from a file (`--policy FILE`), read when the source is resolved.
    #[serde(skip)]
    pub policy_file: Option<PathBuf>,
    /// How its SOPS-encrypted files are decrypted.
    #[serde(default)]
    pub decryption: DecryptionSection,
}

/// `[source.decryption]`: the keys SOPS-encrypted files are decrypted with.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptionSection {
    /// An age key file (`age-keygen` writes one): its identities decrypt
    /// SOPS files encrypted for their public keys.
    pub age_key_file: Option<PathBuf>,
}

/// Credentials for a git remote, each from a file or an environment variable.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// https: a token (sent as the password, as GitHub, Gitea and GitLab accept).
    pub token_file: Option<PathBuf>,
    /// https: the environment variable holding the token.
    pub token_env: Option<String>,
    /// https: the user name (default `git` with a token).
    pub username: Option<String>,
    /// https: the password.
    pub password_file: Option<PathBuf>,
    /// https: the environment variable holding the password.
    pub password_env: Option<String>,
    /// ssh: the private key.
    pub ssh_key_file: Option<PathBuf>,
    /// ssh: the key's passphrase.
    pub ssh_passphrase_file: Option<PathBuf>,
    /// ssh: the known host keys (host keys are checked, never trusted blindly).
    pub known_hosts: Option<PathBuf>,
}

/// Which commit signatures are accepted.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySection {
    /// An SSH `allowed_signers` file.
    pub allowed_signers: Option<PathBuf>,
    /// OpenPGP public keys (armored).
    #[serde(default)]
    pub pgp_keys: Vec<PathBuf>,
}

impl VerifySection {
    /// True when any key is configured: only signed commits apply.
    pub fn enabled(&self) -> bool {
        self.allowed_signers.is_some() || !self.pgp_keys.is_empty()
    }
}

/// The agent's resolved configuration.
#[derive(Debug)]
pub struct AgentConfig {
    /// Where the HTTP endpoint listens.
    pub metrics_addr: SocketAddr,
    /// Where the git webhooks are served instead, if apart.
    pub webhook_addr: Option<SocketAddr>,
    /// The bearer token `/status` asks for, if any.
    pub status_token_file: Option<PathBuf>,
    /// Registry credentials (Docker's `config.json` `auths` format); None:
    /// /etc/moor/auth.json when it exists.
    pub registry_auth: Option<PathBuf>,
    /// Time between full reconciles.
    pub resync: Duration,
    /// Build cache entries unused this long are dropped (with the layers
    /// only they held); `None`: never.
    pub build_cache_max_age: Option<Duration>,
    /// How manifests are loaded (the largest manifest file).
    pub load: moor_spec::LoadOptions,
    /// Who this host is, for manifests' `target`: its name and labels.
    pub host: HostIdentity,
    /// The sources, with unique names.
    pub sources: Vec<SourceConfig>,
    /// Where notifications go.
    pub notify: Vec<NotifyConfig>,
    /// Images that must be signed, and by which keys (read at start).
    pub verify: Vec<moor_runtime::image::verify::Rule>,
}

/// One source, resolved.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Its name, which is also its project.
    pub name: String,
    /// What it reads.
    pub kind: SourceKind,
    /// Whether an empty desired state may prune everything.
    pub allow_empty: bool,
    /// The webhook secret's file, if the webhook is enabled.
    pub webhook_secret_file: Option<PathBuf>,
    /// What its manifests may ask of the host; None: anything (a directory
    /// source without a policy). A git source always has one.
    pub policy: Option<moor_spec::Policy>,
    /// Compose profiles enabled for this source (besides `--profile`).
    pub profiles: Vec<String>,
    /// Env files for this source's Compose files (`None`: the agent's
    /// `--env-file`, or else each Compose file's `.env`).
    pub env_files: Option<Vec<PathBuf>>,
    /// Correct drift, or only report it.
    pub drift: moor_reconcile::DriftMode,
    /// Apply, or only plan.
    pub mode: moor_reconcile::SourceMode,
    /// Roll a failed revision back (`rollback = "auto"`).
    pub rollback: bool,
    /// When a revision has failed.
    pub limits: moor_reconcile::rollout::Limits,
    /// The age identities its SOPS-encrypted files are decrypted with.
    pub age: Option<moor_spec::AgeKeys>,
}

/// Directory or git.
#[allow(clippy::large_enum_variant)] // a handful, made once
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// A directory watched with filesystem notifications.
    Dir {
        /// The directory.
        path: PathBuf,
        /// Quiet time before a reload.
        debounce: Duration,
    },
    /// A git repository polled (and woken by its webhook).
    Git {
        /// The URL without `git+`.
        url: String,
        /// Branch, tag or commit.
        reference: Option<String>,
        /// Sub-directory.
        path: Option<PathBuf>,
        /// Poll interval.
        interval: Duration,
        /// Credentials.
        auth: AuthSection,
        /// Signature verification.
        verify: VerifySection,
        /// Plain http or git:// without signature verification is allowed.
        insecure: bool,
        /// A head older than the commit in force may apply.
        allow_rollback: bool,
    },
}

impl SourceKind {
    /// `directory` or `git`.
    pub fn word(&self) -> &'static str {
        match self {
            SourceKind::Dir { .. } => "directory",
            SourceKind::Git { .. } => "git",
        }
    }

    /// What to show for it: the directory, or the URL without credentials.
    pub fn location(&self) -> String {
        match self {
            SourceKind::Dir { path, .. } => path.display().to_string(),
            SourceKind::Git { url, .. } => redact_url(url),
        }
    }
}

/// What the command line adds to (or instead of) the file.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--config`, when given.
    pub config: Option<PathBuf>,
    /// `--source` and its companions, as a source table.
    pub source: Option<SourceSection>,
    /// `--metrics-addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// `--webhook-addr`.
    pub webhook_addr: Option<SocketAddr>,
    /// `--status-token-file`.
    pub status_token_file: Option<PathBuf>,
    /// `--registry-auth`.
    pub registry_auth: Option<PathBuf>,
    /// `--resync`.
    pub resync: Option<Duration>,
    /// `--max-manifest-size`.
    pub max_manifest_size: Option<u64>,
    /// `--host-name`.
    pub host_name: Option<String>,
    /// `--host-label`, each as given (a key given twice is an error).
    pub host_labels: Vec<(String, String)>,
    /// `--profile`: the Compose profiles enabled.
    pub profiles: Vec<String>,
    /// `--env-file`, made absolute.
    pub env_files: Option<Vec<PathBuf>>,
}

/// Reads the file (the given one, which must exist, or the default one if it
/// exists) and merges the command line over it.
pub fn resolve(o: Overrides) -> anyhow::Result<AgentConfig> {
    let (file, file_path) = match &o.config {
        Some(path) => (read(path)?, Some(path.clone())),
        None if Path::new(DEFAULT_CONFIG).exists() => (
            read(Path::new(DEFAULT_CONFIG))?,
            Some(PathBuf::from(DEFAULT_CONFIG)),
        ),
        None => (FileConfig::default(), None),
    };
    let resync = match (o.resync, &file.resync) {
        (Some(d), _) => d,
        (None, Some(s)) => parse_duration(s).context("resync")?,
        (None, None) => Duration::from_secs(30),
    };
    let build_cache_max_age = match file.build_cache_max_age.as_deref() {
        None => Some(DEFAULT_BUILD_CACHE_MAX_AGE),
        Some("off") => None,
        Some(s) => {
            let d = parse_duration(s).context("build_cache_max_age")?;
            if d.is_zero() {
                anyhow::bail!("build_cache_max_age = \"{s}\": more than 0, or \"off\"");
            }
            Some(d)
        }
    };
    let mut load = moor_spec::LoadOptions::default();
    match (o.max_manifest_size, &file.max_manifest_size) {
        (Some(n), _) => load.max_file_size = n,
        (None, Some(s)) => load.max_file_size = s.bytes().context("max_manifest_size")?,
        (None, None) => {}
    }
    // Compose files are interpolated with the agent's own environment.
    load.env = std::env::vars().collect();
    load.profiles = o.profiles.iter().cloned().collect();
    load.env_files = o.env_files.clone();
    // The command line's labels over the file's.
    let mut host_labels = file.host.labels;
    host_labels.extend(moor_spec::target::label_map(o.host_labels)?);
    let host = HostIdentity::resolve(
        o.host_name.as_deref().or(file.host.name.as_deref()),
        host_labels,
    )
    .context("this host ([host] in the configuration, --host-name, --host-label)")?;

    let mut sections = file.sources;
    sections.extend(o.source);
    if sections.is_empty() {
        bail!(
            "no source: give --source DIR or --source git+URL, or [[source]] tables in {}",
            file_path.map_or_else(|| DEFAULT_CONFIG.into(), |p| p.display().to_string())
        );
    }
    let mut sources: Vec<SourceConfig> = Vec::new();
    for s in sections {
        let source = source(s)?;
        if let Some(other) = sources.iter().find(|o| o.name == source.name) {
            bail!(
                "two sources are named {:?} ({} and {}); give each its own `name`",
                source.name,
                other.kind.location(),
                source.kind.location()
            );
        }
        sources.push(source);
    }
    let metrics_addr = o
        .metrics_addr
        .or(file.metrics_addr)
        .unwrap_or_else(|| moor_metrics::DEFAULT_ADDR.parse().expect("valid default"));
    let webhook_addr = o.webhook_addr.or(file.webhook_addr);
    if webhook_addr == Some(metrics_addr) {
        bail!(
            "webhook_addr and metrics_addr are both {metrics_addr}: give the webhooks another address, or leave webhook_addr out"
        );
    }
    let mut notify = Vec::new();
    for (i, n) in file.notify.iter().enumerate() {
        notify.push(notify_target(i + 1, n, &sources)?);
    }
    let verify = verify_rules(&file.verify)?;
    Ok(AgentConfig {
        verify,
        notify,
        metrics_addr,
        webhook_addr,
        status_token_file: o.status_token_file.or(file.status_token_file),
        registry_auth: o.registry_auth.or(file.registry_auth),
        resync,
        build_cache_max_age,
        load,
        host,
        sources,
    })
}

fn notify_target(
    i: usize,
    n: &NotifySection,
    sources: &[SourceConfig],
) -> anyhow::Result<NotifyConfig> {
    let what = || format!("[[notify]] #{i}");
    let kind = match n.kind.as_str() {
        "webhook" => NotifyKind::Webhook,
        "slack" => NotifyKind::Slack,
        "discord" => NotifyKind::Discord,
        "ntfy" => NotifyKind::Ntfy,
        other => bail!(
            "{}: kind = {other:?}: expected \"webhook\", \"slack\", \"discord\" or \"ntfy\"",
            what()
        ),
    };
    if n.secret_file.is_some() && kind != NotifyKind::Webhook {
        bail!("{}: secret_file signs kind = \"webhook\" only", what());
    }
    let events = match &n.events {
        None => NOTIFY_EVENTS.iter().map(|e| e.to_string()).collect(),
        Some(list) => {
            for e in list {
                if !NOTIFY_EVENTS.contains(&e.as_str()) {
                    bail!(
                        "{}: event {e:?} is not one of {}",
                        what(),
                        NOTIFY_EVENTS.join(", ")
                    );
                }
            }
            list.clone()
        }
    };
    for name in &n.sources {
        if !sources.iter().any(|s| &s.name == name) {
            bail!("{}: no source is named {name:?}", what());
        }
    }
    let repeat_interval = match &n.repeat_interval {
        Some(d) => parse_duration(d).with_context(|| format!("{}: repeat_interval", what()))?,
        None => Duration::from_secs(3600),
    };
    Ok(NotifyConfig {
        kind,
        url_file: n.url_file.clone(),
        events,
        sources: n.sources.clone(),
        secret_file: n.secret_file.clone(),
        repeat_interval,
    })
}

fn read(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the agent configuration {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // toml's message carries the line, column and the offending field.
        anyhow::anyhow!("{}: {e}", path.display())
    })
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    moor_spec::units::parse_duration(s).map_err(|e| anyhow::anyhow!("{s:?}: {e}"))
}

fn source(s: SourceSection) -> anyhow::Result<SourceConfig> {
    let what = || format!("source {}", redact_url(&s.url));
    let kind = if let Some(url) = s.url.strip_prefix("git+") {
        let scheme_ok = ["https://", "http://", "ssh://", "file://", "git://"]
            .iter()
            .any(|p| url.starts_with(p));
        if !scheme_ok {
            bail!(
                "{}: a git URL is git+https://, git+ssh://, git+file:// or git+git://",
                what()
            );
        }
        if let Some(p) = &s.path
            && (p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir)))
        {
            bail!(
                "{}: path {} must be relative and stay inside the repository",
                what(),
                p.display()
            );
        }
        let plaintext = ["http://", "git://"].iter().any(|p| url.starts_with(p));
        if plaintext && !s.verify.enabled() && !s.insecure {
            bail!(
                "{}: git+http:// and git+git:// are not authenticated: anyone on the path could send any commit. \
                 Verify commit signatures ([source.verify], --verify-allowed-signers), use https or ssh, \
                 or accept the risk with insecure = true (--insecure)",
                what()
            );
        }
        if s.allow_rollback && !s.verify.enabled() {
            bail!(
                "{}: allow_rollback is for sources that verify commit signatures (without, any head applies)",
                what()
            );
        }
        SourceKind::Git {
            url: url.to_string(),
            reference: s.reference.clone(),
            path: s.path.clone(),
            interval: match &s.interval {
                Some(i) => parse_duration(i).with_context(|| format!("{}: interval", what()))?,
                None => Duration::from_secs(60),
            },
            auth: s.auth.clone(),
            verify: s.verify.clone(),
            insecure: s.insecure,
            allow_rollback: s.allow_rollback,
        }
    } else {
        if s.reference.is_some()
            || s.verify.enabled()
            || s.interval.is_some()
            || s.insecure
            || s.allow_rollback
        {
            bail!(
                "{}: ref, interval, verify, insecure and allow_rollback are for git sources (git+https://…)",
                what()
            );
        }
        let dir = PathBuf::from(s.url.strip_prefix("file://").unwrap_or(&s.url));
        let dir = match &s.path {
            Some(p) => dir.join(p),
            None => dir,
        };
        if !dir.is_dir() {
            bail!("{}: {} is not a directory", what(), dir.display());
        }
        SourceKind::Dir {
            path: dir,
            debounce: match &s.debounce {
                Some(d) => parse_duration(d).with_context(|| format!("{}: debounce", what()))?,
                None => Duration::from_millis(50),
            },
        }
    };
    let name = match &s.name {
        Some(n) => n.clone(),
        None => default_name(&kind),
    };
    moor_spec::check_name(&name)
        .map_err(|e| anyhow::anyhow!("{}: name {name:?}: {e}; give the source a `name`", what()))?;
    let drift = match s.drift.as_deref() {
        None | Some("correct") => moor_reconcile::DriftMode::Correct,
        Some("report") => moor_reconcile::DriftMode::Report,
        Some(other) => bail!(
            "{}: drift = {other:?}: expected \"correct\" or \"report\"",
            what()
        ),
    };
    let mode = match s.mode.as_deref() {
        None | Some("apply") => moor_reconcile::SourceMode::Apply,
        Some("plan") => moor_reconcile::SourceMode::Plan,
        Some(other) => bail!(
            "{}: mode = {other:?}: expected \"apply\" or \"plan\"",
            what()
        ),
    };
    let rollback = match s.rollback.as_deref() {
        None | Some("auto") => true,
        Some("off") => false,
        Some(other) => bail!(
            "{}: rollback = {other:?}: expected \"auto\" or \"off\"",
            what()
        ),
    };
    let mut limits = moor_reconcile::rollout::Limits::default();
    if let Some(d) = &s.deploy_timeout {
        limits.deploy_timeout =
            parse_duration(d).with_context(|| format!("{}: deploy_timeout", what()))?;
        if limits.deploy_timeout < Duration::from_secs(1) {
            bail!("{}: deploy_timeout = {d:?}: at least 1s", what());
        }
    }
    if let Some(d) = &s.min_ready {
        limits.min_ready = parse_duration(d).with_context(|| format!("{}: min_ready", what()))?;
    }
    if limits.min_ready >= limits.deploy_timeout {
        bail!(
            "{}: min_ready ({}) must be shorter than deploy_timeout ({}): no revision could become ready",
            what(),
            moor_reconcile::rollout::human(limits.min_ready),
            moor_reconcile::rollout::human(limits.deploy_timeout)
        );
    }
    let policy = match (&s.policy, &s.policy_file) {
        (Some(_), Some(_)) => bail!("{}: a [source.policy] and --policy both", what()),
        (Some(keys), None) => Some(
            moor_spec::Policy::new(keys.clone(), "[source.policy]")
                .map_err(|e| anyhow::anyhow!("{}: [source.policy] {e}", what()))?,
        ),
        (None, Some(file)) => Some(read_policy(file)?),
        // A git source is input from whoever can push: restricted until
        // the operator allows more.
        (None, None) => matches!(kind, SourceKind::Git { .. })
            .then(|| moor_spec::Policy::restricted("[source.policy]")),
    };
    let age = match &s.decryption.age_key_file {
        Some(file) => Some(
            read_age_keys(file)
                .with_context(|| format!("{}: [source.decryption] age_key_file", what()))?,
        ),
        None => None,
    };
    Ok(SourceConfig {
        age,
        name,
        kind,
        allow_empty: s.allow_empty,
        webhook_secret_file: s.webhook_secret_file,
        policy,
        profiles: s.profiles,
        env_files: (!s.env_files.is_empty()).then_some(s.env_files),
        drift,
        mode,
        rollback,
        limits,
    })
}

/// The `[[verify]]` rules of the agent's configuration, their keys read.
fn verify_rules(
    sections: &[ImageVerifySection],
) -> anyhow::Result<Vec<moor_runtime::image::verify::Rule>> {
    let mut verify = Vec::new();
    for (i, v) in sections.iter().enumerate() {
        let what = format!("[[verify]] #{}", i + 1);
        let pattern = v.pattern.trim().to_string();
        if pattern.is_empty() || pattern.contains(char::is_whitespace) {
            bail!(
                "{what}: match = \"{}\" is not a registry/repository pattern",
                v.pattern
            );
        }
        let key = moor_runtime::image::verify::Key::read(&v.key)
            .with_context(|| format!("{what} (match = \"{pattern}\")"))?;
        verify.push(moor_runtime::image::verify::Rule {
            pattern,
            keys: vec![key],
        });
    }
    Ok(verify)
}

/// The `[[verify]]` rules of the file at `path` (`moor apply
/// --verify-config`): the agent's configuration, whose other keys are not
/// looked at here, or a file of `[[verify]]` tables alone. A file with
/// none is an error: a rule misspelt would otherwise check nothing.
pub fn read_verify_rules(path: &Path) -> anyhow::Result<Vec<moor_runtime::image::verify::Rule>> {
    #[derive(Deserialize)]
    struct VerifyOnly {
        #[serde(default, rename = "verify")]
        verify: Vec<ImageVerifySection>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let file: VerifyOnly =
        toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    if file.verify.is_empty() {
        bail!("{}: no [[verify]] tables", path.display());
    }
    verify_rules(&file.verify).with_context(|| path.display().to_string())
}

/// Reads a policy file (`--policy FILE`): the keys of `[source.policy]`
/// at its top level.
pub fn read_policy(path: &Path) -> anyhow::Result<moor_spec::Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the policy {}", path.display()))?;
    let keys: moor_spec::PolicyKeys =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    moor_spec::Policy::new(keys, format!("the policy file {}", path.display()))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Reads an age key file (`age_key_file`, `--age-key-file`): its
/// identities, for SOPS-encrypted files. An error never quotes the file.
pub fn read_age_keys(path: &Path) -> anyhow::Result<moor_spec::AgeKeys> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the age key file {}", path.display()))?;
    moor_spec::AgeKeys::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A directory's base name, or a repository's name (`ops/fleet.git` → `fleet`).
fn default_name(kind: &SourceKind) -> String {
    let base = match kind {
        SourceKind::Dir { path, .. } => std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default(),
        SourceKind::Git { url, .. } => url
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or_default()
            .trim_end_matches(".git")
            .to_string(),
    };
    moor_spec::name_from(&base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("https://deploy:s3cret@git.example/x.git"),
            "https://***:***@git.example/x.git"
        );
        assert_eq!(
            redact_url("https://ghp_token@git.example/x.git"),
            "https://***@git.example/x.git"
        );
        assert_eq!(
            redact_url("ssh://git@git.example/x.git"),
            "ssh://git@git.example/x.git"
        );
        assert_eq!(
            redact_url("https://git.example/a@b"),
            "https://git.example/a@b"
        );
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("agent.toml");
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn reads_sources_and_host() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let manifests = tmp.path().join("site");
        std::fs::create_dir(&manifests).expect("mkdir");
        let path = write(
            tmp.path(),
            &format!(
                r#"
resync = "10s"
max_manifest_size = "8m"
webhook_addr = "0.0.0.0:9465"
status_token_file = "/etc/moor/status.token"
registry_auth = "/etc/moor/registries.json"
[host]
name = "edge-7"
labels = {{ role = "db" }}

[[source]]
url = "git+https://git.example/ops/fleet.git"
ref = "main"
path = "hosts"
interval = "15s"
[source.verify]
allowed_signers = "/etc/moor/allowed_signers"

[[source]]
url = "{}"
profiles = ["metrics"]
env_files = ["prod.env", "/etc/moor/app.env"]
"#,
                manifests.display()
            ),
        );
        let c = resolve(Overrides {
            config: Some(path),
            host_labels: [("zone".to_string(), "a".to_string())].into(),
            ..Overrides::default()
        })
        .expect("valid");
        assert_eq!(c.resync, Duration::from_secs(10));
        assert_eq!(c.load.max_file_size, 8 << 20);
        assert!(c.sources[0].profiles.is_empty());
        assert_eq!(c.sources[1].profiles, ["metrics"]);
        assert_eq!(c.sources[0].env_files, None, "each Compose file's .env");
        assert_eq!(
            c.sources[1].env_files,
            Some(vec![
                PathBuf::from("prod.env"),
                PathBuf::from("/etc/moor/app.env")
            ])
        );
        assert_eq!(c.load.env_files, None);
        assert_eq!(c.webhook_addr, Some("0.0.0.0:9465".parse().unwrap()));
        assert_eq!(
            c.status_token_file.as_deref(),
            Some(Path::new("/etc/moor/status.token"))
        );
        assert_eq!(
            c.registry_auth.as_deref(),
            Some(Path::new("/etc/moor/registries.json"))
        );
        assert_eq!(c.host.name, "edge-7");
        assert_eq!(c.host.labels.len(), 2);
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources[0].name, "fleet");
        match &c.sources[0].kind {
            SourceKind::Git {
                interval, verify, ..
            } => {
                assert_eq!(*interval, Duration::from_secs(15));
                assert!(verify.enabled());
            }
            other => panic!("not git: {other:?}"),
        }
        assert_eq!(c.sources[1].name, "site");
    }

    #[test]
    fn the_build_cache_max_age_is_a_week_a_duration_or_off() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let site = tmp.path().join("site");
        std::fs::create_dir(&site).expect("mkdir");
        let with = |line: &str| {
            let path = write(
                tmp.path(),
                &format!("{line}\n[[source]]\nurl = \"{}\"\n", site.display()),
            );
            resolve(Overrides {
                config: Some(path),
                ..Overrides::default()
            })
        };
        let c = with("").expect("valid");
        assert_eq!(c.build_cache_max_age, Some(DEFAULT_BUILD_CACHE_MAX_AGE));
        let c = with("build_cache_max_age = \"36h\"").expect("valid");
        assert_eq!(c.build_cache_max_age, Some(Duration::from_secs(36 * 3600)));
        let c = with("build_cache_max_age = \"off\"").expect("valid");
        assert_eq!(c.build_cache_max_age, None);
        for bad in ["0s", "soon", "-1h"] {
            let e = with(&format!("build_cache_max_age = \"{bad}\""))
                .expect_err(bad)
                .to_string();
            assert!(e.contains("build_cache_max_age"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_host_follows_the_command_lines_rules() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = format!("[[source]]\nurl = \"{}\"\n", tmp.path().display());
        let with = |text: &str, labels: &[(&str, &str)]| {
            resolve(Overrides {
                config: Some(write(tmp.path(), &format!("{text}\n{source}"))),
                host_labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Overrides::default()
            })
        };
        for (text, says) in [
            (
                "[host]\nname = \"edge-*\"",
                "host name \"edge-*\" contains '*'",
            ),
            ("[host]\nname = \"\"", "must not be empty"),
            (
                "[host]\nlabels = { \"role:db\" = \"x\" }",
                "label key \"role:db\"",
            ),
        ] {
            let e = format!("{:#}", with(text, &[]).expect_err(text));
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = with("", &[("role", "db"), ("role", "web")]).expect_err("a key twice");
        assert!(
            format!("{e:#}").contains("--host-label role is given twice"),
            "{e:#}"
        );

        // The command line's labels over the file's.
        let c = with(
            "[host]\nname = \"edge-1\"\nlabels = { role = \"web\", zone = \"b\" }",
            &[("role", "db")],
        )
        .expect("valid");
        assert_eq!(
            c.host,
            HostIdentity::new("edge-1")
                .with_label("role", "db")
                .with_label("zone", "b")
        );
        // No name anywhere: this machine's, as `moor apply` takes it.
        let c = with("", &[]).expect("valid");
        assert_eq!(
            c.host,
            HostIdentity::from_hostname().expect("this machine's name")
        );
    }

    #[test]
    fn bad_files_say_where() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = write(
            tmp.path(),
            "[[source]]\nurl = \"git+https://x/y.git\"\nintervall = \"1s\"\n",
        );
        let e = resolve(Overrides {
            config: Some(path),
            ..Overrides::default()
        })
        .expect_err("unknown field");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("agent.toml") && msg.contains("line 3"),
            "{msg}"
        );
        assert!(msg.contains("intervall"), "{msg}");

        let path = write(
            tmp.path(),
            "[[source]]\nurl = \"git+https://x/y.git\"\n[[source]]\nurl = \"git+ssh://git@z/y.git\"\n",
        );
        let e = resolve(Overrides {
            config: Some(path),
            ..Overrides::default()
        })
        .expect_err("duplicate names");
        assert!(format!("{e:#}").contains("two sources are named \"y\""));

        let path = write(
            tmp.path(),
            "[[source]]\nurl = \"git+https://x/y.git\"\npath = \"../etc\"\n",
        );
        assert!(
            resolve(Overrides {
                config: Some(path),
                ..Overrides::default()
            })
            .is_err()
        );
        assert!(resolve(Overrides::default()).is_err() || Path::new(DEFAULT_CONFIG).exists());
    }

    #[test]
    fn drift_and_mode_are_per_source_and_checked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let with = |extra: &str| {
            let text = format!("[[source]]\nurl = \"{}\"\n{extra}\n", tmp.path().display());
            resolve(Overrides {
                config: Some(write(tmp.path(), &text)),
                ..Overrides::default()
            })
        };
        let c = with("").expect("defaults");
        assert_eq!(c.sources[0].drift, moor_reconcile::DriftMode::Correct);
        assert_eq!(c.sources[0].mode, moor_reconcile::SourceMode::Apply);
        let c = with("drift = \"report\"\nmode = \"plan\"").expect("valid");
        assert_eq!(c.sources[0].drift, moor_reconcile::DriftMode::Report);
        assert_eq!(c.sources[0].mode, moor_reconcile::SourceMode::Plan);
        for (extra, says) in [
            (
                "drift = \"ignore\"",
                "drift = \"ignore\": expected \"correct\" or \"report\"",
            ),
            (
                "mode = \"dry\"",
                "mode = \"dry\": expected \"apply\" or \"plan\"",
            ),
        ] {
            let e = format!("{:#}", with(extra).expect_err(extra));
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn rollback_settings_are_per_source_and_checked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let with = |extra: &str| {
            let text = format!("[[source]]\nurl = \"{}\"\n{extra}\n", tmp.path().display());
            resolve(Overrides {
                config: Some(write(tmp.path(), &text)),
                ..Overrides::default()
            })
        };
        let c = with("").expect("defaults");
        assert!(c.sources[0].rollback);
        assert_eq!(c.sources[0].limits.deploy_timeout, Duration::from_secs(180));
        assert_eq!(c.sources[0].limits.min_ready, Duration::from_secs(10));
        let c =
            with("rollback = \"off\"\ndeploy_timeout = \"5s\"\nmin_ready = \"1s\"").expect("valid");
        assert!(!c.sources[0].rollback);
        assert_eq!(c.sources[0].limits.deploy_timeout, Duration::from_secs(5));
        assert_eq!(c.sources[0].limits.min_ready, Duration::from_secs(1));
        for (extra, says) in [
            (
                "rollback = \"yes\"",
                "rollback = \"yes\": expected \"auto\" or \"off\"",
            ),
            ("rollback = 1", "invalid type"),
            ("deploy_timeout = \"soon\"", "deploy_timeout"),
            ("deploy_timeout = \"0s\"", "at least 1s"),
            (
                "deploy_timeout = \"5s\"\nmin_ready = \"10s\"",
                "min_ready (10s) must be shorter than deploy_timeout (5s)",
            ),
            (
                "deploy_timeout = \"99999999999999999999h\"",
                "deploy_timeout",
            ),
        ] {
            let e = format!("{:#}", with(extra).expect_err(extra));
            assert!(e.contains(says), "{extra}: {e}");
        }
    }

    #[test]
    fn verify_rules_read_their_keys_at_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let key = tmp.path().join("cosign.pub");
        let with = |extra: &str| {
            let text = format!(
                "[[source]]\nname = \"site\"\nurl = \"{}\"\n{extra}\n",
                tmp.path().display()
            );
            resolve(Overrides {
                config: Some(write(tmp.path(), &text)),
                ..Overrides::default()
            })
        };
        let rule = format!(
            "[[verify]]\nmatch = \"r.example/team/*\"\nkey = \"{}\"",
            key.display()
        );
        // A missing key file, and one that is not a P-256 public key, stop
        // the agent from starting, naming the rule.
        let e = format!("{:#}", with(&rule).expect_err("no key file"));
        assert!(
            e.contains("[[verify]] #1") && e.contains("cosign.pub"),
            "{e}"
        );
        std::fs::write(
            &key,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let e = format!("{:#}", with(&rule).expect_err("not a key"));
        assert!(e.contains("not an ECDSA P-256 public key"), "{e}");
        // A real one (the public half of a fixed test key).
        std::fs::write(
            &key,
            "-----BEGIN PUBLIC KEY-----\n\
             MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEaxfR8uEsQkf4vOblY6RA8ncDfYEt\n\
             6zOg9KE5RdiYwpZP40Li/hp/m47n60p8D54WK84zV2sxXs7LtkBoN79R9Q==\n\
             -----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let c = with(&rule).expect("valid");
        assert_eq!(c.verify.len(), 1);
        assert_eq!(c.verify[0].pattern, "r.example/team/*");
        let e = format!(
            "{:#}",
            with("[[verify]]\nmatch = \"a b\"\nkey = \"/k\"").expect_err("bad")
        );
        assert!(e.contains("not a registry/repository pattern"), "{e}");
        let e = format!(
            "{:#}",
            with("[[verify]]\nmatch = \"a\"\nkeys = \"/k\"").expect_err("bad")
        );
        assert!(e.contains("keys"), "{e}");
    }

    #[test]
    fn notify_targets_are_checked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let with = |extra: &str| {
            let text = format!(
                "[[source]]\nname = \"site\"\nurl = \"{}\"\n[[notify]]\nurl_file = \"/etc/moor/u\"\n{extra}\n",
                tmp.path().display()
            );
            resolve(Overrides {
                config: Some(write(tmp.path(), &text)),
                ..Overrides::default()
            })
        };
        let c = with("kind = \"ntfy\"").expect("valid");
        assert_eq!(c.notify[0].kind, NotifyKind::Ntfy);
        assert_eq!(c.notify[0].events, NOTIFY_EVENTS);
        assert_eq!(c.notify[0].repeat_interval, Duration::from_secs(3600));
        let c = with("kind = \"webhook\"\nsecret_file = \"/k\"\nsources = [\"site\"]\nrepeat_interval = \"10m\"")
            .expect("valid");
        assert_eq!(c.notify[0].repeat_interval, Duration::from_secs(600));
        for (extra, says) in [
            ("kind = \"email\"", "kind = \"email\""),
            (
                "kind = \"slack\"\nsecret_file = \"/k\"",
                "secret_file signs kind = \"webhook\" only",
            ),
            (
                "kind = \"slack\"\nevents = [\"exploded\"]",
                "event \"exploded\" is not one of",
            ),
            (
                "kind = \"slack\"\nsources = [\"nope\"]",
                "no source is named \"nope\"",
            ),
            (
                "kind = \"slack\"\nurl = \"https://hooks.example\"",
                "unknown field",
            ),
        ] {
            let e = format!("{:#}", with(extra).expect_err(extra));
            assert!(e.contains(says), "{extra}: {e}");
        }
    }

    #[test]
    fn sources_read_their_age_key_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().display().to_string();
        let key = tmp.path().join("age.key");
        let identity = "AGE-SECRET-KEY-1G0Q5K9TV4REQ3ZSQRMTMG8NSWQGYT0T7TZ33RAZEE0GZYVZN0APSU24RK7";
        std::fs::write(&key, format!("# test key\n{identity}\n")).expect("write");
        let with = |text: &str| {
            resolve(Overrides {
                config: Some(write(tmp.path(), text)),
                ..Overrides::default()
            })
            .map_err(|e| format!("{e:#}"))
        };
        let c = with(&format!(
            "[[source]]\nurl = \"{dir}\"\n[source.decryption]\nage_key_file = \"{}\"\n",
            key.display()
        ))
        .expect("resolves");
        assert_eq!(c.sources[0].age.as_ref().map(|k| k.len()), Some(1));
        let c = with(&format!("[[source]]\nurl = \"{dir}\"\n")).expect("resolves");
        assert!(c.sources[0].age.is_none());
        // A missing file, a file that is not a key (never quoted), an unknown key.
        let e = with(&format!(
            "[[source]]\nurl = \"{dir}\"\n[source.decryption]\nage_key_file = \"{dir}/nope\"\n"
        ))
        .expect_err("missing");
        assert!(e.contains("age_key_file") && e.contains("nope"), "{e}");
        let bad = tmp.path().join("bad.key");
        std::fs::write(&bad, "hunter2-not-a-key\n").expect("write");
        let e = with(&format!(
            "[[source]]\nurl = \"{dir}\"\n[source.decryption]\nage_key_file = \"{}\"\n",
            bad.display()
        ))
        .expect_err("not a key");
        assert!(e.contains("bad.key") && !e.contains("hunter2"), "{e}");
        let e = with(&format!(
            "[[source]]\nurl = \"{dir}\"\n[source.decryption]\nage_keyfile = \"x\"\n"
        ))
        .expect_err("unknown key");
        assert!(e.contains("age_keyfile"), "{e}");
    }

    #[test]
    fn policies_and_transports() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().display().to_string();
        let with = |text: &str| {
            resolve(Overrides {
                config: Some(write(tmp.path(), text)),
                ..Overrides::default()
            })
            .map_err(|e| format!("{e:#}"))
        };
        // A git source is restricted unless it says otherwise; a directory
        // is not, unless it has a policy.
        let c = with(&format!(
            "[[source]]\nurl = \"git+https://x/y.git\"\n[[source]]\nurl = \"{dir}\"\n\
             [[source]]\nname = \"strict\"\nurl = \"{dir}\"\n[source.policy]\ncapabilities = [\"net_admin\"]\n"
        ))
        .expect("valid");
        let restricted = moor_spec::Policy::restricted("[source.policy]");
        assert_eq!(c.sources[0].policy.as_ref(), Some(&restricted));
        assert_eq!(c.sources[1].policy, None);
        let strict = c.sources[2].policy.as_ref().expect("a policy");
        assert_eq!(strict.allows_capability("CAP_NET_ADMIN"), Ok(()));
        assert!(strict.allows_capability("CAP_SYS_ADMIN").is_err());

        let e = with(
            "[[source]]\nurl = \"git+https://x/y.git\"\n[source.policy]\nhost_path = [\"/srv\"]\n",
        )
        .expect_err("a typo");
        assert!(e.contains("line 4") && e.contains("host_path"), "{e}");
        let e = with(
            "[[source]]\nurl = \"git+https://x/y.git\"\n[source.policy]\nhost_paths = [\"srv\"]\n",
        )
        .expect_err("relative");
        assert!(
            e.contains("host_paths[0]: \"srv\" must be an absolute path"),
            "{e}"
        );

        // Plain transports: verification or insecure.
        for url in ["git+git://h/r.git", "git+http://h/r.git"] {
            let e = with(&format!("[[source]]\nurl = \"{url}\"\n")).expect_err(url);
            assert!(e.contains("insecure = true (--insecure)"), "{e}");
            with(&format!("[[source]]\nurl = \"{url}\"\ninsecure = true\n")).expect(url);
            with(&format!(
                "[[source]]\nurl = \"{url}\"\n[source.verify]\nallowed_signers = \"/etc/moor/s\"\n"
            ))
            .expect(url);
        }
        let e = with("[[source]]\nurl = \"git+https://h/r.git\"\nallow_rollback = true\n")
            .expect_err("rollback without verification");
        assert!(
            e.contains("allow_rollback is for sources that verify"),
            "{e}"
        );
        let e = with(&format!("[[source]]\nurl = \"{dir}\"\ninsecure = true\n"))
            .expect_err("insecure directory");
        assert!(e.contains("are for git sources"), "{e}");

        // --policy FILE, for --source.
        let file = tmp.path().join("policy.toml");
        std::fs::write(&file, "host_network = true\n").expect("write");
        let c = resolve(Overrides {
            source: Some(SourceSection {
                url: "git+https://x/y.git".into(),
                policy_file: Some(file.clone()),
                ..SourceSection::default()
            }),
            ..Overrides::default()
        })
        .expect("valid");
        let p = c
            .sources
            .last()
            .and_then(|s| s.policy.as_ref())
            .expect("policy");
        assert_eq!(p.allows_network_mode(&moor_spec::NetworkMode::Host), Ok(()));
        assert!(p.place().contains("policy.toml"), "{}", p.place());
        std::fs::write(&file, "unconfined = \"yes\"\n").expect("write");
        let e = format!("{:#}", read_policy(&file).expect_err("a string"));
        assert!(e.contains("policy.toml") && e.contains("unconfined"), "{e}");
    }
}
