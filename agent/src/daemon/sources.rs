//! The task behind each source: a directory watched, or a git repository
//! polled (and woken by its webhook), each feeding its project's controller
//! and keeping the source's status.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use moor_metrics::Metrics;
use moor_reconcile::{LoadRevision, Restore, Trigger, source_revision};
use tokio::sync::{Notify, mpsc};

use crate::config::{SourceConfig, SourceKind};
use crate::source::git::{GitAuth, GitConfig, GitSource, Secret, VerifyConfig};
use crate::source::poll::{Fetched, Sinks};
use crate::source::written::Written;
use crate::source::{self, Loader, SharedStatus, SourceStatus};
use moor_spec::Writes;

/// A source's status before its first sync.
pub fn initial_status(source: &SourceConfig) -> SourceStatus {
    let reference = match &source.kind {
        SourceKind::Git { reference, .. } => reference.clone(),
        SourceKind::Dir { .. } => None,
    };
    SourceStatus::new(
        &source.name,
        source.kind.word(),
        source.kind.location(),
        reference,
        source.webhook_secret_file.is_some(),
    )
}

/// What a source's task reports to and is woken by.
#[derive(Debug)]
pub struct Links {
    /// The source's status.
    pub status: SharedStatus,
    /// Wakes a polled source at once (its webhook, `moor reconcile --fetch`).
    pub wake: Arc<Notify>,
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
    /// The source's controller.
    pub controller: mpsc::Sender<Trigger>,
}

/// What a git source gives its controller for rollbacks.
pub struct Rollbacks {
    /// Puts a commit's tree back in force.
    pub restore: Restore,
    /// Loads a commit applied before this start (`moor rollback --to`).
    pub load: LoadRevision,
}

/// Starts the task that feeds `source`'s controller. `held` is a revision
/// rolled back before this start: a git source keeps the checkout in force
/// while its remote stays on it. Returns the task, and for a git source
/// what puts a commit's tree back in force for a rollback and loads it.
pub fn start_source(
    source: &SourceConfig,
    state_dir: &Path,
    loader: &Loader,
    links: Links,
    held: Option<String>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, Option<Rollbacks>)> {
    let Links {
        status,
        wake,
        metrics,
        controller,
    } = links;
    let (status, wake, metrics) = (&status, &wake, &metrics);
    // The source's own policy, profiles and env files; a git checkout is never
    // written by a container, a directory's written parts are skipped.
    let mut loader = loader.with_profiles(&source.profiles);
    if let Some(files) = &source.env_files {
        loader.options.env_files = Some(files.clone());
    }
    loader.options.policy = source.policy.clone();
    loader.options.age = source.age.clone();
    loader.options.writes = match &source.kind {
        SourceKind::Git { .. } => Writes::Refuse,
        SourceKind::Dir { .. } => Writes::Skip,
    };
    let loader = &loader;
    match &source.kind {
        SourceKind::Dir { path, debounce } => {
            let (tx, mut rx) = mpsc::channel::<Trigger>(8);
            let (name, status, metrics) = (source.name.clone(), status.clone(), metrics.clone());
            let watcher = tokio::spawn(source::dir::watch(
                path.clone(),
                *debounce,
                loader.clone(),
                Written::open(state_dir, &source.name),
                tx,
            ));
            Ok((
                tokio::spawn(async move {
                    while let Some(t) = rx.recv().await {
                        if let Trigger::Source { revision, result } = &t {
                            metrics.source_sync(
                                &name,
                                revision.as_deref(),
                                result.is_ok(),
                                source::unix_now(),
                            );
                            let mut st = status.lock().expect("status poisoned");
                            match (revision, result) {
                                (Some(rev), Ok(_)) => {
                                    tracing::info!(source = %name, revision = %rev, "directory loaded");
                                    st.synced(rev, None);
                                }
                                (_, Err(e)) => st.failed(e),
                                (None, Ok(_)) => {}
                            }
                        }
                        if controller.send(t).await.is_err() {
                            break;
                        }
                    }
                    watcher.abort();
                }),
                None,
            ))
        }
        SourceKind::Git {
            url,
            reference,
            path,
            interval,
            auth,
            verify,
            insecure,
            allow_rollback,
        } => {
            let secret = |file: &Option<PathBuf>, env: &Option<String>| {
                file.clone()
                    .map(Secret::File)
                    .or_else(|| env.clone().map(Secret::Env))
            };
            let git = GitConfig {
                url: url.clone(),
                reference: reference.clone(),
                path: path.clone(),
                auth: GitAuth {
                    username: auth.username.clone(),
                    password: secret(&auth.token_file, &auth.token_env)
                        .or_else(|| secret(&auth.password_file, &auth.password_env)),
                    ssh_key: auth.ssh_key_file.clone(),
                    ssh_passphrase: auth.ssh_passphrase_file.clone().map(Secret::File),
                    known_hosts: auth.known_hosts.clone(),
                },
                verify: verify.enabled().then(|| VerifyConfig {
                    allowed_signers: verify.allowed_signers.clone(),
                    openpgp_keys: verify.pgp_keys.clone(),
                }),
                insecure: *insecure,
                allow_rollback: *allow_rollback,
                ..GitConfig::default()
            };
            let cache = state_dir.join("sources").join(&source.name);
            let mut repo = GitSource::open(&source.name, git, &cache);
            repo.hold(held.as_deref().map(source_revision));
            // What a previous run checked out goes in force at once, so a
            // restart while the remote is down keeps the host as it was —
            // once compared with its commit (and written anew if it
            // differs), never trusted from disk.
            let initial = tokio::task::block_in_place(|| repo.last_checkout()).map(|s| {
                if let Some(why) = &s.repaired {
                    tracing::warn!(
                        source = %repo.name(),
                        commit = %s.commit,
                        "the checkout in force did not match its commit and was written anew: {why}"
                    );
                }
                Fetched {
                    revision: s.commit,
                    subject: s.subject,
                    dir: s.dir,
                }
            });
            // A commit goes in force (`current`) only when its manifests
            // load: after a bad commit, the state in force keeps seeing its
            // own files (bind sources next to the manifests included).
            let checker = loader.clone();
            let repo = Arc::new(std::sync::Mutex::new(repo));
            let restore = {
                let repo = repo.clone();
                Restore(Arc::new(move |from: &str, to: &str| {
                    // The commits: an image update's revision is its commit's.
                    let (from, to) = (source_revision(from), source_revision(to));
                    if from == to {
                        // An image update rolled back: the same tree.
                        return Ok(());
                    }
                    let mut repo = repo
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    repo.hold(Some(from));
                    repo.restore(to)
                }))
            };
            let load = {
                let (repo, loader) = (repo.clone(), loader.clone());
                LoadRevision(Arc::new(move |from: &str, to: &str| {
                    let (from, to) = (source_revision(from), source_revision(to));
                    let mut repo = repo
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    repo.restore(to)?;
                    let loaded = loader.load(&repo.dir_in_force());
                    if loaded.is_err() {
                        // The tree of the revision in force goes back.
                        if let Err(e) = repo.restore(from) {
                            tracing::error!(source = %repo.name(), commit = %from, "the tree in force could not be put back: {e}");
                        }
                    }
                    loaded
                }))
            };
            let fetch = move || {
                let mut accept = |dir: &Path| checker.load(dir).map(drop);
                let mut repo = repo
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let s = repo.sync_checked(&mut accept).map_err(|e| {
                    if e.is_verification() {
                        tracing::error!(source = %repo.name(), "commit refused: {e}");
                    }
                    e.to_string()
                })?;
                if let Some(why) = &s.recloned {
                    tracing::warn!(
                        source = %repo.name(),
                        url = %repo.redacted_url(),
                        "the local clone was damaged and was cloned again: {why}"
                    );
                }
                Ok(Fetched {
                    revision: s.commit,
                    subject: s.subject,
                    dir: s.dir,
                })
            };
            Ok((
                tokio::spawn(source::poll::run(
                    source.name.clone(),
                    initial,
                    fetch,
                    *interval,
                    wake.clone(),
                    loader.clone(),
                    Sinks {
                        status: status.clone(),
                        metrics: metrics.clone(),
                        triggers: controller,
                    },
                )),
                Some(Rollbacks { restore, load }),
            ))
        }
    }
}
