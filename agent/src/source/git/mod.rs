//! The git source engine: fetches a branch, tag or commit of a remote
//! repository with libgit2 (https, http, git and file transports; ssh
//! through the system's OpenSSH client, see [`ssh`]),
//! verifies the head commit's signature when asked, and checks the tree out
//! into a directory the agent loads manifests from.
//!
//! Layout of a source's cache directory (owned here):
//!
//! ```text
//! repo.git/             bare repository; the remote is never written to its
//!                       config (the URL may carry credentials)
//!   refs/moor/target    the commit last fetched for the source
//! trees/<commit>-<n>/   checkouts: the one in force, and the last one refused
//! current -> trees/…    symbolic link to the checkout in force, swapped
//!                       atomically after a successful sync whose tree the
//!                       caller accepted (its manifests load)
//! .ssh-work-<pid>-<n>/  while an ssh fetch runs: ssh's files (see
//!                       [`ssh`]); removed when it ends, or by the next one
//! ```
//!
//! [`Synced::dir`] is `<cache>/current/<path>`: a path that stays the same
//! from one commit to the next (so bind sources next to the manifests keep
//! their paths and spec hashes), and that never shows a half-written tree.
//!
//! A commit whose tree the caller refuses (see [`GitSource::sync_checked`])
//! is checked out beside `current` and never swapped in: the state in force
//! keeps seeing its own files, bind sources included.
//!
//! Failures leave `current` as it was: a remote that is down, slow, refuses
//! the credentials or sends garbage, a ref that vanished, a commit that is
//! not signed by an allowed key, or (with verification) a head that is an
//! ancestor of the commit in force: an older signed commit replayed by
//! whoever sits on the path is a rollback, refused unless
//! [`GitConfig::allow_rollback`].
//!
//! The transports that authenticate nothing (`http://`, `git://`) need
//! signature verification or [`GitConfig::insecure`]. With verification,
//! fetches take the whole history, so that ancestry can be told.
//!
//! What is on disk is not trusted across restarts: the checkout a previous
//! run left in force is compared with its commit (and its signature
//! verified again) before it goes in force, and written anew when it
//! differs ([`GitSource::last_checkout`]). A damaged local clone (missing objects, a
//! garbage `HEAD`) is detected, thrown away and cloned again within the same
//! sync.

mod checkout;
mod known_hosts;
mod ssh;
mod tls;
mod url;
mod verify;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use git2::{
    AutotagOption, Cred, CredentialType, Direction, ErrorCode, FetchOptions, Oid, ProxyOptions,
    RemoteCallbacks, Repository,
};

use self::checkout::CheckoutError;
use self::known_hosts::HostKeyError;
use self::url::{RemoteUrl, Scheme};
use self::verify::Refusal;
pub use self::verify::VerifyConfig;

/// `url` as it may appear in messages and logs: a remote URL with every
/// credential replaced by `***` (see [`url::RemoteUrl`]); anything that is
/// not a URL with user information, as it is.
pub fn redact_url(url: &str) -> String {
    match url::RemoteUrl::parse(url) {
        Ok(u) => u.redacted,
        Err(_) if !url.contains('@') => url.to_string(),
        Err(_) => "(a URL that does not parse)".into(),
    }
}

/// Where a secret is read from, at each sync (so a rotated file applies at
/// the next one). Its value never appears in a message.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file holding the secret (a trailing newline is dropped).
    File(PathBuf),
    /// The name of an environment variable of the agent.
    Env(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::File(p) => write!(f, "Secret::File({})", p.display()),
            Secret::Env(n) => write!(f, "Secret::Env({n})"),
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::File(p) => write!(f, "file {}", p.display()),
            Secret::Env(n) => write!(f, "environment variable {n}"),
        }
    }
}

impl Secret {
    /// Reads the secret. The error names where it was looked for, never a
    /// value.
    pub fn read(&self) -> Result<String, String> {
        let value = match self {
            Secret::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read the secret in {self}: {e}"))?,
            Secret::Env(n) => std::env::var(n).map_err(|_| format!("{self} is not set"))?,
        };
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(format!("the secret in {self} is empty"));
        }
        Ok(value)
    }
}

/// Credentials for a remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitAuth {
    /// https: the user name sent with `password` (default: the URL's, else
    /// `x-access-token`, which GitHub expects with a token and GitLab, Gitea
    /// and Forgejo accept). ssh: the login (default: the URL's, else `git`).
    pub username: Option<String>,
    /// https: a password or an access token. Sent over plain http only to a
    /// loopback host.
    pub password: Option<Secret>,
    /// ssh: a private key file (OpenSSH or PEM format).
    pub ssh_key: Option<PathBuf>,
    /// ssh: the passphrase of `ssh_key`, if it has one.
    pub ssh_passphrase: Option<Secret>,
    /// ssh: the known_hosts file the server's host key must be listed in.
    /// Default: `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`. A host
    /// that is missing, or listed with another key, is refused.
    pub known_hosts: Option<PathBuf>,
}

/// One git source's settings.
#[derive(Debug, Clone)]
pub struct GitConfig {
    /// The remote, as written after `git+`: `https://…`, `http://…`,
    /// `ssh://…` (or `user@host:path`), `git://…`, `file:///…`.
    pub url: String,
    /// A branch, a tag, a full `refs/…` name, or a full commit id. None: the
    /// remote's default branch (its HEAD).
    pub reference: Option<String>,
    /// The sub-directory of the repository holding the manifests (relative,
    /// without `..`).
    pub path: Option<PathBuf>,
    /// Credentials.
    pub auth: GitAuth,
    /// Commit signature verification; None applies any commit.
    pub verify: Option<VerifyConfig>,
    /// The longest one sync may spend talking to the remote; a fetch still
    /// running then is aborted (the socket timeouts of
    /// [`set_network_timeouts`] bound each connect and read as well).
    pub timeout: Duration,
    /// A commit holding a file larger than this is refused, checked from
    /// the object's header before the file is inflated into memory.
    pub max_blob_size: u64,
    /// Accept `http://` and `git://`, which authenticate nothing, without
    /// signature verification.
    pub insecure: bool,
    /// With verification: apply a head that is an ancestor of the commit
    /// in force (refused otherwise, as a rollback).
    pub allow_rollback: bool,
}

/// The default [`GitConfig::max_blob_size`]: 100 MiB, the largest file
/// GitHub accepts. Configuration is not data; the agent inflates each file
/// into memory to write it.
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 100 << 20;

impl Default for GitConfig {
    fn default() -> Self {
        GitConfig {
            url: String::new(),
            reference: None,
            path: None,
            auth: GitAuth::default(),
            verify: None,
            timeout: Duration::from_secs(120),
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            insecure: false,
            allow_rollback: false,
        }
    }
}

/// What a successful sync checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The commit's full hex id.
    pub commit: String,
    /// The first line of its message.
    pub subject: String,
    /// `<cache>/current/<path>`: where the agent loads manifests from; for
    /// a commit the caller refused, its own checkout (`<cache>/trees/…`),
    /// whose errors the caller may report.
    pub dir: PathBuf,
    /// The caller refused this commit's tree: `current` did not move.
    pub refused: Option<String>,
    /// Who signed the commit (principals and key fingerprint), when the
    /// source verifies signatures.
    pub signer: Option<String>,
    /// Set when the local clone was found damaged and cloned again during
    /// this sync: why (worth a log line).
    pub recloned: Option<String>,
    /// Set when the checkout in force did not match its commit (found by
    /// [`GitSource::last_checkout`]) and was written anew: the first
    /// difference (worth a warning: someone wrote into it).
    pub repaired: Option<String>,
}

/// Why a sync failed. Every message names the source and its URL (with
/// credentials redacted) and says what failed; none holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The configuration cannot work (bad URL, path, missing key file…).
    #[error("git source {name}: {message}")]
    Config { name: String, message: String },
    /// The remote could not be reached, refused the credentials, timed out,
    /// or sent something that is not git.
    #[error("git source {name} ({url}): {message}")]
    Remote {
        name: String,
        url: String,
        message: String,
    },
    /// The ssh server's host key is not the one known_hosts lists for it.
    #[error("git source {name} ({url}): host key of {host} {problem}")]
    HostKey {
        name: String,
        url: String,
        host: String,
        problem: String,
    },
    /// The configured branch, tag or commit does not exist on the remote.
    #[error("git source {name} ({url}): {reference} not found on the remote{hint}")]
    RefNotFound {
        name: String,
        url: String,
        reference: String,
        hint: String,
    },
    /// Signature verification is on and the head commit is not signed.
    #[error(
        "git source {name} ({url}): commit {commit} is not signed; keeping the last verified revision"
    )]
    Unsigned {
        name: String,
        url: String,
        commit: String,
    },
    /// The head commit is signed by a key that is not allowed.
    #[error(
        "git source {name} ({url}): commit {commit} is signed by unknown key {key}; keeping the last verified revision"
    )]
    UnknownKey {
        name: String,
        url: String,
        commit: String,
        key: String,
    },
    /// With verification, the head is an ancestor of the commit in force.
    #[error(
        "git source {name} ({url}): commit {commit} is an ancestor of {in_force}, the commit in force: refusing to roll back (an older signed commit may be replayed by anyone on the path); keeping the last verified revision (allow_rollback = true allows it)"
    )]
    Rollback {
        name: String,
        url: String,
        commit: String,
        in_force: String,
    },
    /// The head commit's signature is malformed or does not match it.
    #[error(
        "git source {name} ({url}): the signature of commit {commit} does not verify: {reason}; keeping the last verified revision"
    )]
    BadSignature {
        name: String,
        url: String,
        commit: String,
        reason: String,
    },
    /// The commit's tree cannot be used: no such sub-directory, or an unsafe
    /// entry.
    #[error("git source {name} ({url}): commit {commit}: {message}")]
    Tree {
        name: String,
        url: String,
        commit: String,
        message: String,
    },
    /// The local cache could not be written or read.
    #[error("git source {name}: local cache {dir}: {message}")]
    Local {
        name: String,
        dir: PathBuf,
        message: String,
    },
}

impl GitError {
    /// True for a refused signature (unsigned, unknown key, bad signature)
    /// or a refused rollback.
    pub fn is_verification(&self) -> bool {
        matches!(
            self,
            GitError::Unsigned { .. }
                | GitError::UnknownKey { .. }
                | GitError::BadSignature { .. }
                | GitError::Rollback { .. }
        )
    }
}

/// The process's network timeouts: (connect, io); see
/// [`set_network_timeouts`].
static NETWORK_TIMEOUTS: OnceLock<(Duration, Duration)> = OnceLock::new();

/// The network timeouts in force: (connect, io), the defaults sources set
/// (10 s, 30 s) until [`set_network_timeouts`] has run.
fn network_timeouts() -> (Duration, Duration) {
    *NETWORK_TIMEOUTS
        .get()
        .unwrap_or(&(Duration::from_secs(10), Duration::from_secs(30)))
}

/// Sets the network timeouts for the whole process: `connect` for
/// establishing a connection, `io` for each read or write (libgit2's
/// sockets, its TLS stream for https, [`tls`], and ssh's connection and
/// pipes); and gives libgit2 that TLS stream. Only the first call has an
/// effect (sources call it with 10 s / 30 s when the agent did not); libgit2
/// keeps them in globals, so they are set once, before any fetch.
pub fn set_network_timeouts(connect: Duration, io: Duration) {
    NETWORK_TIMEOUTS.get_or_init(|| {
        let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: these store an int in libgit2's globals, read when a socket
        // is opened. The OnceLock runs this once, and sources call it from
        // `GitSource::open`, before their first fetch.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect));
            let _ = git2::opts::set_server_timeout_in_milliseconds(ms(io));
        }
        if let Err(e) = tls::register() {
            tracing::error!("git over https is unavailable: {e}");
        }
        (connect, io)
    });
}

/// One git source: its settings and its cache directory.
#[derive(Debug)]
pub struct GitSource {
    name: String,
    config: GitConfig,
    url: Result<RemoteUrl, String>,
    cache: PathBuf,
    /// The checkout this process put in force: (commit, its directory).
    current: Option<(Oid, PathBuf)>,
    /// The last commit the caller refused: (commit, its directory, why).
    refused: Option<(Oid, PathBuf, String)>,
    /// A head that was rolled back: while the remote stays on it, the
    /// checkout in force stays (see [`GitSource::hold`]).
    held: Option<Oid>,
}

/// Decides whether a checked-out tree (the directory manifests load from)
/// may go in force.
pub type Accept<'a> = &'a mut dyn FnMut(&Path) -> Result<(), String>;

/// What the remote's ref resolved to.
#[derive(Debug)]
enum Wanted {
    /// A ref on the remote, and what it pointed to when listed.
    Ref { name: String, oid: Oid },
    /// A pinned commit.
    Commit(Oid),
}

/// A failed attempt: either final, or a damaged clone worth re-cloning.
enum Failure {
    Final(GitError),
    Damaged(String),
}

impl From<GitError> for Failure {
    fn from(e: GitError) -> Self {
        Failure::Final(e)
    }
}

/// Values the libgit2 callbacks read and report through.
struct CallState {
    deadline: Instant,
    timed_out: Cell<bool>,
    credential_tries: Cell<u32>,
    username: Option<String>,
    password: Option<String>,
    passphrase: Option<String>,
    known_hosts: Vec<String>,
}

const TARGET_REF: &str = "refs/moor/target";

impl GitSource {
    /// A source named `name` (for messages) keeping its clone and checkouts
    /// under `cache_dir` (created when needed). Nothing is fetched yet, and
    /// a bad configuration is reported by the first [`sync`](Self::sync).
    pub fn open(name: &str, config: GitConfig, cache_dir: &Path) -> Self {
        set_network_timeouts(Duration::from_secs(10), Duration::from_secs(30));
        ssh::register();
        GitSource {
            name: name.to_string(),
            url: RemoteUrl::parse(&config.url),
            config,
            cache: cache_dir.to_path_buf(),
            current: None,
            refused: None,
            held: None,
        }
    }

    /// Keeps the checkout in force while the remote's head is `commit` (a
    /// revision rolled back): a sync then reports that head with the
    /// directory in force, and checks out only a head that moved on.
    /// `None`, or an id that is not one, holds nothing.
    pub fn hold(&mut self, commit: Option<&str>) {
        self.held = commit.and_then(|c| Oid::from_str(c).ok());
    }

    /// Puts `commit`'s tree back in force (a rollback to it): written anew
    /// from the local clone and swapped in as `current`, so that the files
    /// its manifests name (bind sources, env files) are its own again.
    /// Blocking.
    pub fn restore(&mut self, commit: &str) -> Result<(), String> {
        let oid = Oid::from_str(commit).map_err(|_| format!("{commit:?} is not a commit id"))?;
        if self.in_force() == Some(oid) && self.dir_for_current().is_dir() {
            return Ok(());
        }
        let url = self.url.clone()?;
        let repo = Repository::open_bare(self.repo_dir())
            .map_err(|e| format!("opening the local clone: {}", e.message()))?;
        let c = repo
            .find_commit(oid)
            .map_err(|e| format!("commit {oid} is not in the local clone: {}", e.message()))?;
        match self.check_out(&repo, &url, &c, &mut |_| Ok(())) {
            Ok(None) => Ok(()),
            Ok(Some((_, why))) => Err(why),
            Err(Failure::Final(e)) => Err(e.to_string()),
            Err(Failure::Damaged(why)) => Err(why),
        }
    }

    /// The directory of the tree in force (`current`, with the source's
    /// sub-path), as a rollback's load reads it.
    pub fn dir_in_force(&self) -> PathBuf {
        self.dir_for_current()
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL with credentials redacted.
    pub fn redacted_url(&self) -> String {
        match &self.url {
            Ok(u) => u.redacted.clone(),
            Err(_) => "(bad URL)".into(),
        }
    }

    /// The checkout a previous run left in force, if any: what the agent
    /// may load while the remote cannot be reached at start. It is not
    /// trusted from disk: the commit must be in the local clone (and, with
    /// verification, still verify against the keys configured now), and
    /// the files are compared with the commit's tree; a checkout that
    /// differs (a file edited, added, removed) is written anew from the
    /// clone and swapped in ([`Synced::repaired`] says what differed).
    /// None when there is none, or it cannot be checked.
    pub fn last_checkout(&mut self) -> Option<Synced> {
        let (oid, target) = self.in_force_link()?;
        let url = self.url.clone().ok()?;
        let repo = Repository::open_bare(self.repo_dir()).ok()?;
        let commit = repo.find_commit(oid).ok()?;
        let signer = match self.verify(&repo, &url, oid) {
            Ok(signer) => signer,
            Err(_) => return None,
        };
        let tree = commit.tree().ok()?;
        let dir = self.cache.join(&target);
        let repaired = match checkout::compare_tree(&repo, &tree, &dir) {
            Ok(()) => None,
            Err(checkout::Mismatch::Object) => return None,
            Err(checkout::Mismatch::Differs(why)) => {
                match self.check_out(&repo, &url, &commit, &mut |_| Ok(())) {
                    Ok(None) => Some(why),
                    _ => return None,
                }
            }
        };
        if repaired.is_none() {
            self.current = Some((oid, dir));
        }
        Some(Synced {
            commit: oid.to_string(),
            subject: summary(&commit),
            dir: self.dir_for_current(),
            refused: None,
            signer,
            recloned: None,
            repaired,
        })
    }

    /// The commit `current` names and its link target (`trees/<commit>-…`,
    /// as [`Self::check_out`] writes it; anything else is not trusted).
    fn in_force_link(&self) -> Option<(Oid, PathBuf)> {
        let target = std::fs::read_link(self.cache.join("current")).ok()?;
        let mut parts = target.components();
        let name = match (parts.next(), parts.next(), parts.next()) {
            (Some(Component::Normal(t)), Some(Component::Normal(n)), None) if t == "trees" => {
                n.to_str()?
            }
            _ => return None,
        };
        let oid = Oid::from_str(name.split('-').next()?).ok()?;
        Some((oid, target))
    }

    /// The commit in force: put there by this process, or found in `current`.
    fn in_force(&self) -> Option<Oid> {
        self.current
            .as_ref()
            .map(|(c, _)| *c)
            .or_else(|| self.in_force_link().map(|(c, _)| c))
    }

    /// Fetches, resolves the ref, verifies the head commit if configured,
    /// and checks its tree out, swapping `current` to it. Blocking. On any
    /// error the checkout in force stays as it was.
    #[cfg(test)]
    pub fn sync(&mut self) -> Result<Synced, GitError> {
        self.sync_checked(&mut |_| Ok(()))
    }

    /// [`GitSource::sync`], but a new commit's tree goes in force only when
    /// `accept` takes it (the agent: when its manifests load). A refused
    /// tree stays beside `current`, is reported in [`Synced::refused`], and
    /// is not checked out again while the remote stays on that commit.
    pub fn sync_checked(&mut self, accept: Accept<'_>) -> Result<Synced, GitError> {
        let url = self
            .url
            .clone()
            .map_err(|e| self.config_error(format!("bad URL: {e}")))?;
        self.check_config(&url)?;
        // The checkout may hold env files with secrets: the cache is private.
        std::fs::create_dir_all(&self.cache)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&self.cache, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| self.local_error(&self.cache, e))?;
        match self.attempt(&url, accept) {
            Ok(s) => Ok(s),
            Err(Failure::Final(e)) => Err(e),
            Err(Failure::Damaged(why)) => {
                let repo_dir = self.repo_dir();
                std::fs::remove_dir_all(&repo_dir).map_err(|e| self.local_error(&repo_dir, e))?;
                match self.attempt(&url, accept) {
                    Ok(mut s) => {
                        s.recloned = Some(why);
                        Ok(s)
                    }
                    Err(Failure::Final(e)) => Err(e),
                    Err(Failure::Damaged(again)) => Err(GitError::Remote {
                        name: self.name.clone(),
                        url: url.redacted.clone(),
                        message: format!(
                            "the fetched objects are unusable even in a fresh clone: {again}"
                        ),
                    }),
                }
            }
        }
    }

    fn repo_dir(&self) -> PathBuf {
        self.cache.join("repo.git")
    }

    fn dir_for_current(&self) -> PathBuf {
        self.with_path(self.cache.join("current"))
    }

    /// `tree` joined with the source's sub-path, if it has one.
    fn with_path(&self, mut tree: PathBuf) -> PathBuf {
        if let Some(p) = &self.config.path {
            tree.push(p);
        }
        tree
    }

    fn config_error(&self, message: String) -> GitError {
        GitError::Config {
            name: self.name.clone(),
            message,
        }
    }

    fn local_error(&self, dir: &Path, e: impl fmt::Display) -> GitError {
        GitError::Local {
            name: self.name.clone(),
            dir: dir.to_path_buf(),
            message: e.to_string(),
        }
    }

    fn check_config(&self, url: &RemoteUrl) -> Result<(), GitError> {
        if let Some(p) = &self.config.path
            && p.components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(self.config_error(format!(
                "path {} must be relative and without `..`",
                p.display()
            )));
        }
        if let Some(r) = &self.config.reference
            && !is_hex_id(r)
            && !git2::Reference::is_valid_name(&if r.starts_with("refs/") {
                r.clone()
            } else {
                format!("refs/heads/{r}")
            })
        {
            return Err(self.config_error(format!("`{r}` is not a valid ref")));
        }
        let auth = &self.config.auth;
        let web_creds = auth.password.is_some() || !url.secrets.is_empty();
        if url.scheme == Scheme::Http && web_creds && !url.is_loopback() {
            return Err(self.config_error(
                "refusing to send credentials over plain http to a host other than loopback: use https"
                    .into(),
            ));
        }
        if matches!(url.scheme, Scheme::Http | Scheme::Git)
            && self.config.verify.is_none()
            && !self.config.insecure
        {
            return Err(self.config_error(
                "http:// and git:// authenticate nothing, so anyone on the path could send any commit: verify commit signatures, use https or ssh, or allow it with insecure = true (--insecure)"
                    .into(),
            ));
        }
        if url.scheme == Scheme::Ssh && auth.ssh_key.is_none() {
            return Err(self.config_error("an ssh remote needs an ssh key file".into()));
        }
        if let Some(v) = &self.config.verify
            && v.allowed_signers.is_none()
            && v.openpgp_keys.is_empty()
        {
            return Err(self.config_error(
                "signature verification is on but lists no allowed_signers file nor OpenPGP keys"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Reads the secrets and known_hosts files for one sync.
    fn call_state(&self, url: &RemoteUrl) -> Result<CallState, GitError> {
        let auth = &self.config.auth;
        let read = |s: &Option<Secret>| -> Result<Option<String>, GitError> {
            s.as_ref()
                .map(|s| s.read().map_err(|e| self.config_error(e)))
                .transpose()
        };
        let mut known_hosts = Vec::new();
        if url.scheme == Scheme::Ssh {
            match &auth.known_hosts {
                Some(p) => known_hosts.push(std::fs::read_to_string(p).map_err(|e| {
                    self.config_error(format!("cannot read known_hosts {}: {e}", p.display()))
                })?),
                None => {
                    let home = std::env::var_os("HOME").map(PathBuf::from);
                    let defaults = home
                        .map(|h| h.join(".ssh/known_hosts"))
                        .into_iter()
                        .chain([PathBuf::from("/etc/ssh/ssh_known_hosts")]);
                    known_hosts.extend(defaults.filter_map(|p| std::fs::read_to_string(p).ok()));
                }
            }
            if let Some(k) = &auth.ssh_key
                && !k.is_file()
            {
                return Err(self.config_error(format!("ssh key {} not found", k.display())));
            }
        }
        Ok(CallState {
            deadline: Instant::now() + self.config.timeout,
            timed_out: Cell::new(false),
            credential_tries: Cell::new(0),
            username: auth.username.clone(),
            password: read(&auth.password)?,
            passphrase: read(&auth.ssh_passphrase)?,
            known_hosts,
        })
    }

    /// One try: open (or create) the clone, find what the ref points to,
    /// fetch it, verify, check out.
    fn attempt(&mut self, url: &RemoteUrl, accept: Accept<'_>) -> Result<Synced, Failure> {
        let state = self.call_state(url)?;
        let repo_dir = self.repo_dir();
        let repo = if repo_dir.exists() {
            let repo = Repository::open_bare(&repo_dir)
                .map_err(|e| Failure::Damaged(format!("cannot open the clone: {}", e.message())))?;
            health(&repo).map_err(Failure::Damaged)?;
            repo
        } else {
            Repository::init_bare(&repo_dir)
                .map_err(|e| self.local_error(&repo_dir, e.message()))?
        };

        let oid = self.fetch(&repo, url, &state)?;
        let commit = repo.find_commit(oid).map_err(|e| {
            Failure::Damaged(format!(
                "commit {oid} unreadable after fetch: {}",
                e.message()
            ))
        })?;
        let signer = self.verify(&repo, url, oid)?;
        self.refuse_rollback(&repo, url, oid)?;
        let subject = summary(&commit);
        if self.held.is_some_and(|h| h != oid) {
            // The remote moved on from the head rolled back.
            self.held = None;
        }
        if self.held == Some(oid) && self.dir_for_current().is_dir() {
            return Ok(Synced {
                commit: oid.to_string(),
                subject,
                dir: self.dir_for_current(),
                refused: None,
                signer,
                recloned: None,
                repaired: None,
            });
        }

        let unchanged = self
            .current
            .as_ref()
            .is_some_and(|(c, d)| *c == oid && d.is_dir());
        let refused_before = self
            .refused
            .as_ref()
            .filter(|(c, d, _)| *c == oid && d.is_dir())
            .map(|(_, d, why)| (d.clone(), why.clone()));
        let refused = match refused_before {
            _ if unchanged => None,
            Some(earlier) => Some(earlier),
            None => self.check_out(&repo, url, &commit, accept)?,
        };
        Ok(Synced {
            commit: oid.to_string(),
            subject,
            dir: match &refused {
                Some((d, _)) => self.with_path(d.clone()),
                None => self.dir_for_current(),
            },
            refused: refused.map(|(_, why)| why),
            signer,
            recloned: None,
            repaired: None,
        })
    }

    /// With verification (and a ref, not a pinned commit, to follow): a head
    /// that is an ancestor of the commit in force is refused, unless
    /// `allow_rollback`. A signature proves who wrote a commit, not that it
    /// is the newest: an older signed commit replayed by a man in the
    /// middle (or a force-push by a stolen account) would verify.
    fn refuse_rollback(&self, repo: &Repository, url: &RemoteUrl, oid: Oid) -> Result<(), Failure> {
        let pinned = self.config.reference.as_deref().is_some_and(is_hex_id);
        if self.config.verify.is_none() || self.config.allow_rollback || pinned {
            return Ok(());
        }
        let Some(in_force) = self.in_force().filter(|c| *c != oid) else {
            return Ok(());
        };
        if repo.graph_descendant_of(in_force, oid).unwrap_or(false) {
            return Err(Failure::Final(GitError::Rollback {
                name: self.name.clone(),
                url: url.redacted.clone(),
                commit: oid.to_string(),
                in_force: in_force.to_string(),
            }));
        }
        Ok(())
    }

    /// Makes the wanted commit present locally and `refs/moor/target` point
    /// to it; returns the commit id.
    fn fetch(&self, repo: &Repository, url: &RemoteUrl, state: &CallState) -> Result<Oid, Failure> {
        // With verification the whole history is fetched (and a shallow
        // clone deepened): a rollback is told by ancestry.
        let verified = self.config.verify.is_some();
        let shallow = url.scheme != Scheme::File && !verified;
        let deepen = verified && repo.is_shallow();
        let depth = if shallow {
            Some(1)
        } else if deepen {
            Some(i32::MAX)
        } else {
            None
        };
        // A pinned commit already here needs no remote at all.
        if let Some(r) = &self.config.reference
            && is_hex_id(r)
        {
            let oid = Oid::from_str(r).map_err(|e| self.config_error(e.message().to_string()))?;
            if repo.find_commit(oid).is_ok() {
                self.set_target(repo, oid)?;
                return Ok(oid);
            }
        }

        // ssh: the settings the transport reads, until the end of the fetch
        // (declared before the remotes, so dropped after them).
        let _ssh = match url.scheme {
            Scheme::Ssh => Some(self.ssh_session(url, state)?),
            _ => None,
        };
        let mut remote = repo
            .remote_anonymous(&self.config.url)
            .map_err(|e| self.remote_error(url, state, "bad remote", &e))?;
        let mut conn = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks(state)), Some(proxy()))
            .map_err(|e| self.remote_error(url, state, "cannot list the remote's refs", &e))?;
        let wanted = self.resolve(url, &conn)?;
        match wanted {
            Wanted::Ref { name, oid } => {
                if !deepen && let Some(commit) = peel_local(repo, oid) {
                    self.set_target(repo, commit)?;
                    return Ok(commit);
                }
                let refspec = format!("+{name}:{TARGET_REF}");
                let mut fo = self.fetch_options(state, depth);
                let fetched = conn
                    .remote()
                    .fetch(&[refspec.as_str()], Some(&mut fo), None);
                drop(conn);
                if let Err(e) = fetched {
                    health(repo).map_err(Failure::Damaged)?;
                    return Err(self.remote_error(url, state, "fetch failed", &e).into());
                }
                let target = repo
                    .find_reference(TARGET_REF)
                    .and_then(|r| r.peel_to_commit())
                    .map_err(|e| {
                        Failure::Damaged(format!("fetched {name} unreadable: {}", e.message()))
                    })?;
                Ok(target.id())
            }
            Wanted::Commit(oid) => {
                // Ask for the commit itself (servers that allow it), shallow;
                // else fetch every branch and tag, whole, and look for it.
                let by_id = format!("+{oid}:{TARGET_REF}");
                let mut fo = self.fetch_options(state, shallow.then_some(1));
                let direct = conn.remote().fetch(&[by_id.as_str()], Some(&mut fo), None);
                drop(conn);
                if direct.is_err() || repo.find_commit(oid).is_err() {
                    if state.timed_out.get() {
                        return Err(self
                            .remote_error(
                                url,
                                state,
                                "fetch failed",
                                &git2::Error::from_str("timed out"),
                            )
                            .into());
                    }
                    let mut remote = repo
                        .remote_anonymous(&self.config.url)
                        .map_err(|e| self.remote_error(url, state, "bad remote", &e))?;
                    let depth = (shallow && repo.is_shallow()).then_some(i32::MAX);
                    let mut fo = self.fetch_options(state, depth);
                    let specs = [
                        "+refs/heads/*:refs/moor/heads/*",
                        "+refs/tags/*:refs/moor/tags/*",
                    ];
                    if let Err(e) = remote.fetch(&specs, Some(&mut fo), None) {
                        health(repo).map_err(Failure::Damaged)?;
                        return Err(self.remote_error(url, state, "fetch failed", &e).into());
                    }
                    if repo.find_commit(oid).is_err() {
                        return Err(GitError::RefNotFound {
                            name: self.name.clone(),
                            url: url.redacted.clone(),
                            reference: format!("commit {oid}"),
                            hint: " (it is on no branch or tag)".into(),
                        }
                        .into());
                    }
                }
                self.set_target(repo, oid)?;
                Ok(oid)
            }
        }
    }

    /// Puts this fetch's ssh settings in force for the ssh transport.
    fn ssh_session(&self, url: &RemoteUrl, state: &CallState) -> Result<ssh::Session, GitError> {
        let auth = &self.config.auth;
        let key = auth
            .ssh_key
            .clone()
            .ok_or_else(|| self.config_error("an ssh remote needs an ssh key file".into()))?;
        let (connect_timeout, io_timeout) = network_timeouts();
        let mut known_hosts = String::new();
        for text in &state.known_hosts {
            known_hosts.push_str(text);
            if !known_hosts.ends_with('\n') {
                known_hosts.push('\n');
            }
        }
        let settings = ssh::Settings {
            url: self.config.url.clone(),
            user: state
                .username
                .clone()
                .or_else(|| url.user.clone())
                .unwrap_or_else(|| "git".into()),
            host: url.host.clone().unwrap_or_default(),
            port: url.port,
            path: url.path.clone(),
            key,
            passphrase: state.passphrase.clone(),
            known_hosts,
            connect_timeout,
            io_timeout,
            program: PathBuf::from("ssh"),
        };
        ssh::Session::start(settings, &self.cache).map_err(|e| match e {
            ssh::StartError::Config(e) => self.config_error(e),
            ssh::StartError::Local(e) => self.local_error(&self.cache, e),
        })
    }

    /// Finds the configured ref among the remote's.
    fn resolve(
        &self,
        url: &RemoteUrl,
        conn: &git2::RemoteConnection<'_, '_, '_>,
    ) -> Result<Wanted, Failure> {
        let heads = conn.list().map_err(|e| GitError::Remote {
            name: self.name.clone(),
            url: url.redacted.clone(),
            message: format!(
                "cannot list the remote's refs: {}",
                url.scrub(e.message(), &[])
            ),
        })?;
        let find = |n: &str| heads.iter().find(|h| h.name() == n).map(|h| h.oid());
        let not_found = |reference: String| {
            let branches: Vec<&str> = heads
                .iter()
                .filter_map(|h| h.name().strip_prefix("refs/heads/"))
                .take(8)
                .collect();
            let hint = if branches.is_empty() {
                " (it has no branches)".to_string()
            } else {
                format!(" (branches: {})", branches.join(", "))
            };
            Failure::Final(GitError::RefNotFound {
                name: self.name.clone(),
                url: url.redacted.clone(),
                reference,
                hint,
            })
        };
        match &self.config.reference {
            None => {
                let Some(oid) = find("HEAD") else {
                    return Err(not_found("HEAD (the default branch)".into()));
                };
                // Fetch the branch HEAD names where the remote says which.
                let name = heads
                    .iter()
                    .find(|h| h.name() == "HEAD")
                    .and_then(|h| h.symref_target().map(str::to_string))
                    .or_else(|| {
                        conn.default_branch()
                            .ok()
                            .and_then(|b| b.as_str().ok().map(str::to_string))
                    })
                    .filter(|n| find(n).is_some())
                    .unwrap_or_else(|| "HEAD".to_string());
                Ok(Wanted::Ref { name, oid })
            }
            Some(r) if is_hex_id(r) => Ok(Wanted::Commit(
                Oid::from_str(r).map_err(|e| self.config_error(e.message().to_string()))?,
            )),
            Some(r) => {
                let candidates = if r.starts_with("refs/") {
                    vec![r.clone()]
                } else {
                    vec![format!("refs/heads/{r}"), format!("refs/tags/{r}")]
                };
                candidates
                    .into_iter()
                    .find_map(|n| find(&n).map(|oid| Wanted::Ref { name: n, oid }))
                    .ok_or_else(|| not_found(format!("branch or tag `{r}`")))
            }
        }
    }

    fn set_target(&self, repo: &Repository, oid: Oid) -> Result<(), Failure> {
        repo.reference(TARGET_REF, oid, true, "moor: target")
            .map(|_| ())
            .map_err(|e| Failure::Damaged(format!("cannot update {TARGET_REF}: {}", e.message())))
    }

    fn callbacks<'a>(&'a self, state: &'a CallState) -> RemoteCallbacks<'a> {
        let mut cb = RemoteCallbacks::new();
        cb.credentials(move |_url, user_from_url, allowed| {
            if allowed.contains(CredentialType::USERNAME) {
                let user = state.username.as_deref().or(user_from_url).unwrap_or("git");
                return Cred::username(user);
            }
            let tries = state.credential_tries.get();
            state.credential_tries.set(tries + 1);
            if tries > 0 {
                return Err(git2::Error::from_str(
                    "the remote refused the configured credentials",
                ));
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
                && let Some(password) = &state.password
            {
                let user = state
                    .username
                    .as_deref()
                    .or(user_from_url)
                    .unwrap_or("x-access-token");
                return Cred::userpass_plaintext(user, password);
            }
            Err(git2::Error::from_str(
                "the remote asks for credentials, and none of the kind it accepts are configured",
            ))
        });
        cb.transfer_progress(move |_| {
            let ok = Instant::now() < state.deadline;
            if !ok {
                state.timed_out.set(true);
            }
            ok
        });
        cb.sideband_progress(move |_| {
            let ok = Instant::now() < state.deadline;
            if !ok {
                state.timed_out.set(true);
            }
            ok
        });
        cb
    }

    fn fetch_options<'a>(&'a self, state: &'a CallState, depth: Option<i32>) -> FetchOptions<'a> {
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(self.callbacks(state))
            .proxy_options(proxy())
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        if let Some(d) = depth {
            fo.depth(d);
        }
        fo
    }

    /// Turns a libgit2 error from talking to the remote into a message
    /// without secrets.
    fn remote_error(
        &self,
        url: &RemoteUrl,
        state: &CallState,
        stage: &str,
        e: &git2::Error,
    ) -> GitError {
        let said = match ssh::failure() {
            Some(ssh::Failure::HostKey(problem)) if url.scheme == Scheme::Ssh => Some(Err(problem)),
            Some(ssh::Failure::Said(lines)) => Some(Ok(lines)),
            _ => None,
        };
        if let Some(Err(problem)) = said {
            let host = known_hosts::host_name(url.host.as_deref().unwrap_or_default(), url.port);
            let problem = match problem {
                HostKeyError::Unknown => {
                    "is not in known_hosts (add it, e.g. with ssh-keyscan, after checking it)"
                }
                HostKeyError::Mismatch => {
                    "does not match the key known_hosts lists for it (the server changed keys, or a man in the middle)"
                }
                HostKeyError::Revoked => "is marked @revoked in known_hosts",
            };
            return GitError::HostKey {
                name: self.name.clone(),
                url: url.redacted.clone(),
                host,
                problem: problem.into(),
            };
        }
        let message = if state.timed_out.get() {
            format!(
                "{stage}: the fetch took longer than {}s and was aborted",
                self.config.timeout.as_secs()
            )
        } else {
            let secrets: Vec<&str> = [&state.password, &state.passphrase]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            let message = match said {
                Some(Ok(lines)) => format!("{}; ssh said: {lines}", e.message()),
                _ => e.message().to_string(),
            };
            format!("{stage}: {}", url.scrub(&message, &secrets))
        };
        GitError::Remote {
            name: self.name.clone(),
            url: url.redacted.clone(),
            message,
        }
    }

    /// Verifies the commit's signature when configured: Ok(signer).
    fn verify(
        &self,
        repo: &Repository,
        url: &RemoteUrl,
        oid: Oid,
    ) -> Result<Option<String>, Failure> {
        let Some(v) = &self.config.verify else {
            return Ok(None);
        };
        let commit = oid.to_string();
        let refused = |r: Refusal| -> Failure {
            let (name, url, commit) = (self.name.clone(), url.redacted.clone(), commit.clone());
            Failure::Final(match r {
                Refusal::Unsigned => GitError::Unsigned { name, url, commit },
                Refusal::UnknownKey(key) => GitError::UnknownKey {
                    name,
                    url,
                    commit,
                    key,
                },
                Refusal::Bad(reason) => GitError::BadSignature {
                    name,
                    url,
                    commit,
                    reason,
                },
            })
        };
        let (signature, signed) = match repo.extract_signature(&oid, None) {
            Ok(pair) => pair,
            Err(e) if e.code() == ErrorCode::NotFound => return Err(refused(Refusal::Unsigned)),
            Err(e) => {
                return Err(Failure::Damaged(format!(
                    "commit {oid} unreadable: {}",
                    e.message()
                )));
            }
        };
        let Ok(signature) = signature.as_str() else {
            return Err(refused(Refusal::Bad("the signature is not text".into())));
        };
        if signature
            .trim_start()
            .starts_with("-----BEGIN SSH SIGNATURE-----")
        {
            let Some(path) = &v.allowed_signers else {
                return Err(refused(Refusal::UnknownKey(
                    "(an SSH key; no allowed_signers file is configured)".into(),
                )));
            };
            let text = std::fs::read_to_string(path).map_err(|e| {
                self.config_error(format!(
                    "cannot read allowed_signers {}: {e}",
                    path.display()
                ))
            })?;
            let allowed = verify::parse_allowed_signers(&text).map_err(|e| {
                self.config_error(format!("allowed_signers {}: {e}", path.display()))
            })?;
            return verify::verify_ssh(&allowed, signature, &signed)
                .map(Some)
                .map_err(refused);
        }
        if signature
            .trim_start()
            .starts_with("-----BEGIN PGP SIGNATURE-----")
        {
            if v.openpgp_keys.is_empty() {
                return Err(refused(Refusal::UnknownKey(
                    "(an OpenPGP key; no OpenPGP keys are configured)".into(),
                )));
            }
            let mut keys = Vec::new();
            for path in &v.openpgp_keys {
                let bytes = std::fs::read(path).map_err(|e| {
                    self.config_error(format!("cannot read OpenPGP key {}: {e}", path.display()))
                })?;
                keys.extend(verify::parse_openpgp_keys(&bytes).map_err(|e| {
                    self.config_error(format!("OpenPGP key {}: {e}", path.display()))
                })?);
            }
            return verify::verify_openpgp(&keys, signature, &signed)
                .map(Some)
                .map_err(refused);
        }
        let kind = if signature.contains("BEGIN SIGNED MESSAGE") {
            "an X.509 signature, which is not supported"
        } else {
            "a signature of an unknown kind"
        };
        Err(refused(Refusal::Bad(kind.into())))
    }

    /// Writes the commit's tree to a new directory and, when `accept` takes
    /// it, swaps `current` to it; then removes every checkout but the one in
    /// force and this one. Returns the directory and the reason when
    /// `accept` refused it.
    fn check_out(
        &mut self,
        repo: &Repository,
        url: &RemoteUrl,
        commit: &git2::Commit<'_>,
        accept: Accept<'_>,
    ) -> Result<Option<(PathBuf, String)>, Failure> {
        let trees = self.cache.join("trees");
        std::fs::create_dir_all(&trees).map_err(|e| self.local_error(&trees, e))?;
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir_name = format!("{}-{stamp:x}", commit.id());
        let tmp = trees.join(format!(".tmp-{dir_name}"));
        let tree_error = |message: String| {
            Failure::Final(GitError::Tree {
                name: self.name.clone(),
                url: url.redacted.clone(),
                commit: commit.id().to_string(),
                message,
            })
        };
        let written = commit
            .tree()
            .map_err(CheckoutError::Object)
            .and_then(|tree| checkout::write_tree(repo, &tree, &tmp, self.config.max_blob_size));
        let result = written.map_err(|e| match e {
            CheckoutError::Object(e) => Failure::Damaged(format!(
                "the tree of {} is unreadable: {}",
                commit.id(),
                e.message()
            )),
            CheckoutError::Io(e) => Failure::Final(self.local_error(&tmp, e)),
            CheckoutError::Unsafe(m) => tree_error(m),
        });
        let result = result.and_then(|()| match &self.config.path {
            Some(p) if !checkout::is_plain_dir(&tmp, p) => Err(tree_error(format!(
                "path {} is not a directory in this commit",
                p.display()
            ))),
            _ => Ok(()),
        });
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let dir = trees.join(&dir_name);
        std::fs::rename(&tmp, &dir).map_err(|e| self.local_error(&dir, e))?;
        let refused = match accept(&self.with_path(dir.clone())) {
            Ok(()) => {
                let link = self.cache.join("current");
                checkout::swap_link(&link, &Path::new("trees").join(&dir_name))
                    .map_err(|e| self.local_error(&link, e))?;
                self.current = Some((commit.id(), dir.clone()));
                self.refused = None;
                None
            }
            Err(why) => {
                self.refused = Some((commit.id(), dir.clone(), why.clone()));
                Some((dir.clone(), why))
            }
        };
        // Keep the checkout in force (as `current` says, which survives
        // restarts) and this one.
        let in_force = std::fs::read_link(self.cache.join("current"))
            .ok()
            .map(|t| self.cache.join(t));
        if let Ok(entries) = std::fs::read_dir(&trees) {
            for entry in entries.flatten() {
                let p = entry.path();
                if p != dir && in_force.as_ref() != Some(&p) {
                    let _ = std::fs::remove_dir_all(p);
                }
            }
        }
        Ok(refused)
    }
}

/// Proxies as git would find them (git config, `https_proxy`…).
fn proxy() -> ProxyOptions<'static> {
    let mut p = ProxyOptions::new();
    p.auto();
    p
}

/// The first line of a commit's message.
fn summary(c: &git2::Commit<'_>) -> String {
    String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned()
}

/// A full commit id (SHA-1 or SHA-256).
fn is_hex_id(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `oid` (a commit or an annotated tag) peels to, when every
/// object of it is here.
fn peel_local(repo: &Repository, oid: Oid) -> Option<Oid> {
    let commit = repo.find_object(oid, None).ok()?.peel_to_commit().ok()?;
    tree_complete(repo, &commit.tree().ok()?).then_some(commit.id())
}

/// True when every object of `tree` is in the object database.
fn tree_complete(repo: &Repository, tree: &git2::Tree<'_>) -> bool {
    let Ok(odb) = repo.odb() else {
        return false;
    };
    let mut complete = true;
    let walked = tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
        if entry.kind() == Some(git2::ObjectType::Commit) || odb.exists(entry.id()) {
            git2::TreeWalkResult::Ok
        } else {
            complete = false;
            git2::TreeWalkResult::Abort
        }
    });
    walked.is_ok() && complete
}

/// Checks that the clone is usable: HEAD readable, and the last target's
/// commit and tree complete.
fn health(repo: &Repository) -> Result<(), String> {
    match repo.head() {
        Ok(_) => {}
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {}
        Err(e) => return Err(format!("HEAD is unreadable: {}", e.message())),
    }
    match repo.find_reference(TARGET_REF) {
        Ok(r) => {
            let commit = r
                .peel_to_commit()
                .map_err(|e| format!("{TARGET_REF} is unreadable: {}", e.message()))?;
            let tree = commit
                .tree()
                .map_err(|e| format!("the tree of {} is missing: {}", commit.id(), e.message()))?;
            if !tree_complete(repo, &tree) {
                return Err(format!("objects of commit {} are missing", commit.id()));
            }
            Ok(())
        }
        Err(e) if e.code() == ErrorCode::NotFound => Ok(()),
        Err(e) => Err(format!("{TARGET_REF} is unreadable: {}", e.message())),
    }
}
