//! What decoding a manifest reads from outside the manifest itself: the
//! links a relative path goes through, env files, bind sources (whether they
//! exist, and a digest of their content) and the current directory.
//!
//! Every such read goes through a method here, which records what it read
//! and what it found ([`Read`]). A decoded file kept by [`crate::Loader`]
//! is reused only when every read finds the same again: a file's resources
//! depend on its own text and on these, and on nothing else (its path and
//! its tree are the cache's key).

use std::path::{Path, PathBuf};

use super::Decoder;
use crate::policy::Policy;
use crate::tree::Tree;

/// One read outside the manifest file, and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    /// [`Decoder::in_tree`] of a path written in the manifest: the lexical
    /// and the real path, or why the path leads outside.
    InTree {
        relative: PathBuf,
        found: Result<(PathBuf, PathBuf), String>,
    },
    /// An env file's variables (at its real path, looked for at
    /// `looked_for`, written `shown`), or why it cannot be read.
    EnvFile {
        real: PathBuf,
        looked_for: PathBuf,
        shown: String,
        /// The file's text (decrypted again on every decode: the keys are
        /// the loader's, the same for every load).
        found: Result<String, String>,
    },
    /// Whether nothing exists at a path (links not followed).
    Missing { path: PathBuf, found: bool },
    /// What is at a path (links followed).
    FileKind { path: PathBuf, found: FileKind },
    /// [`crate::bind::content_digest`] of a bind source.
    Digest {
        path: PathBuf,
        found: Result<String, String>,
    },
    /// The text of a file another reads (a Compose file's `extends`
    /// file), or why it cannot be read.
    Text {
        path: PathBuf,
        found: Result<String, String>,
    },
    /// [`std::path::absolute`] of a path (it depends on the current
    /// directory, for a relative one).
    Absolute { path: PathBuf, found: PathBuf },
    /// [`crate::writes::real`] of an absolute bind source.
    Real { path: PathBuf, found: PathBuf },
    /// The policy's [`crate::Policy::allows_host_path`] of an absolute
    /// path (it follows the links under the allowed directory).
    HostPath {
        what: &'static str,
        path: PathBuf,
        found: Result<(), String>,
    },
}

fn in_tree(dir: &Path, tree: &Tree, relative: &Path) -> Result<(PathBuf, PathBuf), String> {
    let lexical = crate::bind::resolve(dir, relative);
    if relative.is_absolute() {
        return Ok((lexical.clone(), lexical));
    }
    let real = tree.resolve(&lexical).map_err(|e| e.to_string())?;
    Ok((lexical, real))
}

fn missing(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// What a path names, its links followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// Nothing (or nothing that can be looked at).
    Missing,
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// Something else.
    Other,
}

fn file_kind(path: &Path) -> FileKind {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => FileKind::Dir,
        Ok(m) if m.is_file() => FileKind::File,
        Ok(_) => FileKind::Other,
        Err(_) => FileKind::Missing,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The text of a file read beside a manifest, at most a manifest's default size.
fn text(path: &Path) -> Result<String, String> {
    crate::load::read_capped(path, crate::load::DEFAULT_MAX_FILE_SIZE)
}

impl Read {
    /// Whether reading again, for a manifest in `dir` of `tree`, finds the same.
    fn holds(&self, dir: &Path, tree: &Tree, policy: Option<&Policy>) -> bool {
        match self {
            Read::InTree { relative, found } => in_tree(dir, tree, relative) == *found,
            Read::EnvFile {
                real,
                looked_for,
                shown,
                found,
            } => crate::envfile::read(real, looked_for, shown) == *found,
            Read::Missing { path, found } => missing(path) == *found,
            Read::FileKind { path, found } => file_kind(path) == *found,
            Read::Digest { path, found } => crate::bind::content_digest(path) == *found,
            Read::Absolute { path, found } => absolute(path) == *found,
            Read::Real { path, found } => crate::writes::real(path) == *found,
            Read::HostPath { what, path, found } => {
                policy.map(|p| p.allows_host_path(what, path)) == Some(found.clone())
            }
            Read::Text { path, found } => text(path) == *found,
        }
    }
}

/// Whether every read of `reads` still finds the same, for a manifest
/// decoded under `policy`.
pub(crate) fn still_holds(
    reads: &[Read],
    dir: &Path,
    tree: &Tree,
    policy: Option<&Policy>,
) -> bool {
    reads.iter().all(|r| r.holds(dir, tree, policy))
}

impl Decoder<'_> {
    /// A relative path of this manifest (bind source, `env_file`): the
    /// path as written, resolved against the manifest's directory
    /// (lexically), and the real path it names, its links followed inside
    /// the source's tree. An absolute path is taken as it is.
    pub(crate) fn in_tree(&mut self, relative: &Path) -> Result<(PathBuf, PathBuf), String> {
        let found = in_tree(self.dir, self.tree, relative);
        self.reads.push(Read::InTree {
            relative: relative.to_path_buf(),
            found: found.clone(),
        });
        found
    }

    /// The variables of the env file at `real`, written `shown` in the
    /// manifest and looked for at `looked_for`.
    pub(crate) fn env_file(
        &mut self,
        real: PathBuf,
        looked_for: PathBuf,
        shown: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let found = crate::envfile::read(&real, &looked_for, shown);
        let vars = found
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|text| crate::envfile::vars(text, shown, self.age));
        self.reads.push(Read::EnvFile {
            real,
            looked_for,
            shown: shown.to_string(),
            found,
        });
        vars
    }

    /// Whether nothing exists at `path` (links not followed).
    pub(crate) fn missing(&mut self, path: &Path) -> bool {
        let found = missing(path);
        self.reads.push(Read::Missing {
            path: path.to_path_buf(),
            found,
        });
        found
    }

    /// What is at `path` (links followed).
    pub(crate) fn file_kind(&mut self, path: &Path) -> FileKind {
        let found = file_kind(path);
        self.reads.push(Read::FileKind {
            path: path.to_path_buf(),
            found,
        });
        found
    }

    /// The content digest of the bind source at `path`.
    pub(crate) fn digest(&mut self, path: &Path) -> Result<String, String> {
        let found = crate::bind::content_digest(path);
        self.reads.push(Read::Digest {
            path: path.to_path_buf(),
            found: found.clone(),
        });
        found
    }

    /// The text of the file at `path` (another file a manifest reads).
    pub(crate) fn text_file(&mut self, path: &Path) -> Result<String, String> {
        let found = text(path);
        self.reads.push(Read::Text {
            path: path.to_path_buf(),
            found: found.clone(),
        });
        found
    }

    /// `path` made absolute (against the current directory).
    pub(crate) fn absolute(&mut self, path: PathBuf) -> PathBuf {
        let found = absolute(&path);
        self.reads.push(Read::Absolute {
            path,
            found: found.clone(),
        });
        found
    }

    /// The real path an absolute bind source leads to (as far as it exists).
    pub(crate) fn real(&mut self, path: &Path) -> PathBuf {
        let found = crate::writes::real(path);
        self.reads.push(Read::Real {
            path: path.to_path_buf(),
            found: found.clone(),
        });
        found
    }

    /// Whether `policy` allows the absolute host path `path` (`what`: `bind
    /// source`, `env_file`).
    pub(crate) fn host_path(
        &mut self,
        policy: &Policy,
        what: &'static str,
        path: &Path,
    ) -> Result<(), String> {
        let found = policy.allows_host_path(what, path);
        self.reads.push(Read::HostPath {
            what,
            path: path.to_path_buf(),
            found: found.clone(),
        });
        found
    }
}
