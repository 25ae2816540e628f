//! Sources of desired state. Each turns what it watches into
//! [`moor_reconcile::Trigger::Source`] messages for its project's controller,
//! and keeps a [`SourceStatus`] for `/status`, `moor status` and metrics.

pub mod dir;
pub mod git;
pub mod pins;
pub mod poll;
pub mod webhook;
pub mod written;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use moor_spec::DesiredState;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A revision for a desired state: sha256 over every resource's kind, name and
/// spec hash (which already covers env files and bind sources kept next to the
/// manifests), and what each image's build reads (its Dockerfile and context).
/// Equal states have equal revisions, whatever their spelling.
pub fn revision(state: &DesiredState) -> String {
    let mut h = Sha256::new();
    let mut feed = |kind: &str, name: &str, hash: &str| {
        for part in [kind, name, hash] {
            h.update(part.as_bytes());
            h.update([0]);
        }
    };
    for (n, r) in &state.images {
        feed("image", n, r.hash.as_str());
        // What a build reads from the source is no part of the spec (the
        // image, not its spec, changes): an edit there is a new revision
        // all the same, applied at once.
        if let Some(build) = &r.spec.build {
            let read = moor_runtime::build::inputs::source_digest(build)
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            feed("build", n, &read);
        }
    }
    for (n, r) in &state.networks {
        feed("network", n, r.hash.as_str());
    }
    for (n, r) in &state.volumes {
        feed("volume", n, r.hash.as_str());
    }
    for (n, r) in &state.containers {
        // Fields left out of the hash (replicas, restart…) still change the state.
        let extra = serde_json::to_string(&(
            r.spec.replicas,
            &r.spec.restart,
            &r.spec.healthcheck,
            &r.spec.depends_on,
            &r.spec.stop_signal,
            r.spec.stop_grace_period,
            r.spec.update_order,
        ))
        .expect("plain data serialises");
        feed("container", n, &format!("{}{extra}", r.hash));
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Loads a manifest directory into the desired state of this host: only
/// what targets it (manifests' `target`; untargeted resources apply everywhere).
///
/// Each directory's files are decoded once and kept ([`moor_spec::Loader`]):
/// a load after an edit parses only the files that changed (or whose env
/// files and bind sources did). The clones of a loader share what it kept;
/// a directory that is gone (a git source's old checkout) is forgotten at
/// the next load.
#[derive(Clone)]
pub struct Loader {
    /// Who this host is.
    pub host: moor_spec::HostIdentity,
    /// Limits (the size of a manifest file).
    pub options: moor_spec::LoadOptions,
    /// One cached loader per directory loaded.
    kept: Arc<Mutex<HashMap<PathBuf, Arc<Mutex<moor_spec::Loader>>>>>,
}

/// Tests load as a host named `localhost`; the agent always says who it is.
#[cfg(test)]
impl Default for Loader {
    fn default() -> Self {
        Self::new(
            moor_spec::HostIdentity::new("localhost"),
            moor_spec::LoadOptions::default(),
        )
    }
}

impl fmt::Debug for Loader {
    // Not what is kept: env files' values are in there.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("host", &self.host)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// A loader for `host`, with `options`, that has kept nothing yet.
    pub fn new(host: moor_spec::HostIdentity, options: moor_spec::LoadOptions) -> Self {
        Self {
            host,
            options,
            kept: Arc::default(),
        }
    }

    /// The same loader (sharing what it keeps), with `profiles` enabled
    /// too: a source's own Compose profiles.
    pub fn with_profiles(&self, profiles: &[String]) -> Self {
        let mut options = self.options.clone();
        options.profiles.extend(profiles.iter().cloned());
        Self {
            host: self.host.clone(),
            options,
            kept: self.kept.clone(),
        }
    }

    /// The desired state in `dir` for this host, or every diagnostic as text.
    /// `dir` is the source's tree: relative paths in the manifests must not
    /// leave it.
    pub fn load(&self, dir: &Path) -> Result<DesiredState, String> {
        let cached = {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            kept.retain(|d, _| d == dir || d.exists());
            kept.entry(dir.to_path_buf())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(moor_spec::Loader::new(self.options.clone())))
                })
                .clone()
        };
        // A load that panicked kept what it had before: still sound.
        let mut cached = cached.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.options() != &self.options {
            *cached = moor_spec::Loader::new(self.options.clone());
        }
        let result = cached.load(&[dir], Some(&self.host));
        let stats = cached.last_load();
        tracing::debug!(
            dir = %dir.display(),
            files = stats.files,
            reused = stats.reused,
            "manifests loaded"
        );
        if let Ok(state) = &result {
            for w in state.warnings.iter() {
                tracing::warn!(dir = %dir.display(), "{w}");
            }
        }
        result.map_err(|d| d.to_string())
    }

    /// What the last load of `dir` did, if it was loaded.
    #[cfg(test)]
    pub fn last_load(&self, dir: &Path) -> Option<moor_spec::LoadStats> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = kept.get(dir)?.clone();
        drop(kept);
        let stats = cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_load();
        Some(stats)
    }
}

/// What `/status` and `moor status` show about a source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// The source's name (its project).
    pub name: String,
    /// `directory` or `git`.
    pub kind: &'static str,
    /// The directory, or the URL without credentials.
    pub location: String,
    /// The git ref followed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The revision last fetched and loaded (a commit id, or a directory's content hash).
    pub revision: Option<String>,
    /// The commit's subject line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the source last synced successfully (Unix seconds).
    pub last_sync: Option<f64>,
    /// When a sync was last attempted (Unix seconds).
    pub last_attempt: Option<f64>,
    /// Why the last sync failed (fetch, verification or manifests), if it did.
    pub error: Option<String>,
    /// Failed syncs in a row.
    pub failures: u32,
    /// Whether `POST /hooks/git/<name>` is enabled.
    pub webhook: bool,
}

/// A source's status, shared between its task and the HTTP endpoint.
pub type SharedStatus = Arc<Mutex<SourceStatus>>;

impl SourceStatus {
    /// A source that has not synced yet: its name, kind (`directory` or
    /// `git`), location, git ref and whether its webhook is enabled.
    pub fn new(
        name: &str,
        kind: &'static str,
        location: String,
        reference: Option<String>,
        webhook: bool,
    ) -> Self {
        Self {
            name: name.to_string(),
            kind,
            location,
            reference,
            revision: None,
            subject: None,
            last_sync: None,
            last_attempt: None,
            error: None,
            failures: 0,
            webhook,
        }
    }

    /// Records a successful sync of `revision`.
    pub fn synced(&mut self, revision: &str, subject: Option<&str>) {
        let now = unix_now();
        self.revision = Some(revision.to_string());
        self.subject = subject.map(str::to_string);
        self.last_sync = Some(now);
        self.last_attempt = Some(now);
        self.error = None;
        self.failures = 0;
    }

    /// Records a failed sync; the last good revision stays.
    pub fn failed(&mut self, error: &str) {
        self.last_attempt = Some(unix_now());
        self.error = Some(error.to_string());
        self.failures = self.failures.saturating_add(1);
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write");
    }

    #[test]
    fn an_edit_reloads_only_the_file_that_changed() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        for i in 0..5 {
            write(
                dir,
                &format!("c{i}.toml"),
                &format!("[containers.c{i}]\nimage = \"busybox\"\n"),
            );
        }
        write(dir, "secret.env", "TOKEN=hunter2-s3cr3t\n");
        write(
            dir,
            "c0.toml",
            "[containers.c0]\nimage = \"busybox\"\nenv_file = \"secret.env\"\n",
        );
        let loader = Loader::default();
        let first = loader.load(dir).expect("valid");
        assert_eq!(loader.last_load(dir).map(|s| s.reused), Some(0));

        // The clones a source makes share what was kept.
        let clone = loader.clone();
        write(dir, "c3.toml", "[containers.c3]\nimage = \"alpine\"\n");
        let second = clone.load(dir).expect("valid");
        let stats = loader.last_load(dir).expect("loaded");
        assert_eq!((stats.files, stats.reused), (5, 4));
        assert_ne!(revision(&first), revision(&second));
        let fresh = moor_spec::load_for(&[dir], &loader.host).expect("valid");
        assert_eq!(second, fresh);

        // An edit to an env file reloads the manifest that reads it.
        write(dir, "secret.env", "TOKEN=other\n");
        let third = loader.load(dir).expect("valid");
        assert_eq!(loader.last_load(dir).map(|s| s.reused), Some(4));
        assert_eq!(third.containers["c0"].spec.env["TOKEN"], "other");

        // What is kept (env values among it) is never printed.
        let shown = format!("{loader:?}");
        assert!(
            !shown.contains("other") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }

    #[test]
    fn a_source_enables_its_own_compose_profiles() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        write(
            dir,
            "compose.yaml",
            "services:\n  app:\n    image: busybox\n  exporter:\n    image: busybox\n    profiles: [metrics]\n",
        );
        let loader = Loader::default();
        let names = |l: &Loader| -> Vec<String> {
            l.load(dir).expect("valid").containers.into_keys().collect()
        };
        assert_eq!(names(&loader), ["app"]);
        let with = loader.with_profiles(&["metrics".to_string()]);
        assert_eq!(names(&with), ["app", "exporter"]);
        assert_eq!(
            names(&loader),
            ["app"],
            "the loader it came from is unchanged"
        );
    }

    #[test]
    fn a_directory_that_is_gone_is_forgotten() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).expect("mkdir");
            write(d, "m.toml", "[containers.web]\nimage = \"busybox\"\n");
        }
        let loader = Loader::default();
        loader.load(&a).expect("valid");
        loader.load(&b).expect("valid");
        assert_eq!(loader.kept.lock().expect("kept").len(), 2);
        std::fs::remove_dir_all(&a).expect("rm");
        loader.load(&b).expect("valid");
        assert!(loader.last_load(&a).is_none(), "a is forgotten");
        assert_eq!(loader.last_load(&b).map(|s| s.reused), Some(1));
    }

    #[test]
    fn an_edit_to_a_build_context_is_a_new_revision() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("app")).expect("mkdir");
        write(dir, "app/Dockerfile", "FROM busybox\nCOPY . /app\n");
        write(dir, "app/main.py", "print(1)\n");
        write(dir, "app/.dockerignore", "*.log\n");
        write(
            dir,
            "stack.toml",
            "[images.app]\nref = \"localhost/app:1\"\nbuild = \"./app\"\n",
        );
        let loader = Loader::default();
        let first = revision(&loader.load(dir).expect("valid"));
        // A file the build leaves out: the same revision.
        write(dir, "app/debug.log", "noise\n");
        assert_eq!(revision(&loader.load(dir).expect("valid")), first);
        // A file it reads, or the Dockerfile: a new one.
        write(dir, "app/main.py", "print(2)\n");
        let second = revision(&loader.load(dir).expect("valid"));
        assert_ne!(second, first);
        write(dir, "app/Dockerfile", "FROM busybox\nCOPY . /srv\n");
        assert_ne!(revision(&loader.load(dir).expect("valid")), second);
    }
}
