//! Loading manifests from files and directory trees.
//!
//! Each path given is a tree (a directory, or a file's directory): the walk
//! follows symbolic links only while they stay inside it, and relative paths
//! in the manifests (bind sources, `env_file`) must resolve inside it too
//! (see [`crate::tree`]). Files larger than [`LoadOptions::max_file_size`]
//! are refused before they are read.

use std::collections::HashSet;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics};
use crate::loader::Loader;
use crate::model::DesiredState;
use crate::node::Pos;
use crate::parse::Format;
use crate::target::HostIdentity;
use crate::tree::Tree;

/// The default [`LoadOptions::max_file_size`]: 4 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 4 << 20;

/// How manifests are loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Manifest files larger than this (in bytes) are refused with a
    /// diagnostic, unread.
    pub max_file_size: u64,
    /// What the manifests may ask of the host (see [`crate::policy`]);
    /// `None`: anything.
    pub policy: Option<crate::Policy>,
    /// What a read-write bind into the source's tree does (see [`crate::writes`]).
    pub writes: crate::Writes,
    /// Directories (real paths) whose files are never read: where
    /// containers were seen writing.
    pub skip: Vec<PathBuf>,
    /// The environment Compose files are interpolated with (`${VAR}`); it
    /// wins over a `.env` file beside the Compose file. Empty by default:
    /// the agent passes its own.
    pub env: std::collections::BTreeMap<String, String>,
    /// The Compose profiles enabled: a service with `profiles` runs only
    /// when one of them is here (or in `COMPOSE_PROFILES`).
    pub profiles: std::collections::BTreeSet<String>,
    /// The env files Compose files are interpolated with, in place of the
    /// `.env` beside each (`--env-file`, a source's `env_files`), later
    /// ones over earlier ones, all under [`LoadOptions::env`]. A relative
    /// path is the Compose file's directory's, inside the source's tree; an
    /// absolute one, the operator's, is read as it is. `None`: `.env`.
    pub env_files: Option<Vec<PathBuf>>,
    /// The host's key for secrets' digests in spec hashes (the agent keeps
    /// it in `<state>/secret.key`). Empty by default: a secret's digest
    /// is then a constant that says nothing of its value (and a rotation
    /// does not change the hash), fine for checking or converting a manifest.
    pub secret_key: Vec<u8>,
    /// The age identities SOPS-encrypted manifests, env files and secret
    /// files are decrypted with (see [`crate::sops`]); `None`: such a file
    /// is an error.
    pub age: Option<crate::AgeKeys>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            policy: None,
            writes: crate::Writes::default(),
            skip: Vec::new(),
            env: Default::default(),
            profiles: Default::default(),
            env_files: None,
            secret_key: Vec::new(),
            age: None,
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    // The environment's values may be secrets: only its names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("max_file_size", &self.max_file_size)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("profiles", &self.profiles)
            .field("age", &self.age)
            .field("env_files", &self.env_files)
            .finish()
    }
}

/// One manifest: its path, its text and the tree it belongs to.
pub(crate) struct Source {
    pub(crate) file: PathBuf,
    pub(crate) text: String,
    pub(crate) tree: Tree,
}

/// Loads, normalises and validates every manifest under `paths` (files, or
/// directories searched recursively; dot-files and dot-directories skipped;
/// files read in sorted path order). Returns the desired state, or every
/// diagnostic found.
///
/// Every resource is kept whatever its `target` (each carries it in
/// [`Resource::target`](crate::Resource::target)); [`load_for`] keeps only
/// what one host should run.
pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<DesiredState, Diagnostics> {
    load_with(paths, None, &LoadOptions::default())
}

/// Like [`load`], for one host of a fleet: returns only the resources that
/// target `host` (see [`crate::target`]).
///
/// Every file is still parsed and decoded, so a mistake in a resource meant
/// for another host is still an error here. What targets other hosts is left
/// out *before* the checks across resources, so:
///
/// - names need only be unique among one host's resources: two files may
///   declare `containers.web` for disjoint sets of hosts (a host both target
///   gets the usual duplicate error);
/// - a reference from a resource of this host (a container's `networks`,
///   volume `mounts`, `image` naming an `[images]` entry, `depends_on`,
///   `network_mode = "container:…"`) to a resource that targets only other
///   hosts is an error at the reference: "network \"db\" does not target
///   this host (it is declared at FILE:LINE:COL for labels = { role = \"db\" })";
/// - ports and subnets conflict only among one host's resources.
pub fn load_for<P: AsRef<Path>>(
    paths: &[P],
    host: &HostIdentity,
) -> Result<DesiredState, Diagnostics> {
    load_with(paths, Some(host), &LoadOptions::default())
}

/// [`load`] (all hosts) or [`load_for`] (one host), with `options`.
///
/// Each call parses every file again; a [`Loader`] keeps what it decoded
/// and parses only what changed.
pub fn load_with<P: AsRef<Path>>(
    paths: &[P],
    host: Option<&HostIdentity>,
    options: &LoadOptions,
) -> Result<DesiredState, Diagnostics> {
    Loader::new(options.clone()).load(paths, host)
}

/// The manifest files under `paths` (sorted, each once) with their trees,
/// and what could not be walked; nothing under `skip` (real paths) is read.
pub(crate) fn walk<P: AsRef<Path>>(
    paths: &[P],
    skip: &[PathBuf],
) -> (Vec<(PathBuf, Tree)>, Diagnostics) {
    let mut walk = Walk {
        skip: skip.to_vec(),
        ..Walk::default()
    };
    for p in paths {
        walk.explicit(p.as_ref());
    }
    let Walk {
        mut files, diags, ..
    } = walk;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.dedup_by(|a, b| a.0 == b.0);
    (files, diags)
}

/// A file's text, refused unread when it is larger than `max` bytes.
pub(crate) fn read_capped(file: &Path, max: u64) -> Result<String, String> {
    read_capped_with_meta(file, max).map(|(text, _)| text)
}

/// [`read_capped`], with what the open file's `fstat` said before reading.
pub(crate) fn read_capped_with_meta(
    file: &Path,
    max: u64,
) -> Result<(String, std::fs::Metadata), String> {
    let cannot = |e: std::io::Error| format!("cannot read file: {}", crate::diag::io_reason(&e));
    let f = open_nonblocking(file).map_err(cannot)?;
    let meta = f.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > max {
        return Err(too_large(meta.len(), max));
    }
    // The file may grow between the check and the read: read no more than allowed.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64, max));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| "cannot read file: stream did not contain valid UTF-8".to_string())?;
    Ok((text, meta))
}

/// Opens `file` for reading without waiting: a FIFO (a named pipe a
/// directory source may hold) with no writer would block `open` until one
/// came, and a terminal would become the reader's controlling one. Callers
/// refuse anything but a regular file from the open file's `fstat`, on
/// which `O_NONBLOCK` changes nothing.
pub(crate) fn open_nonblocking(file: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(file)
}

/// [`open_nonblocking`], refusing a link at `file` itself.
pub(crate) fn open_nonblocking_nofollow(file: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            (nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_NOCTTY
                | nix::fcntl::OFlag::O_NOFOLLOW)
                .bits(),
        )
        .open(file)
}

pub(crate) fn too_large(size: u64, max: u64) -> String {
    format!(
        "the file is larger than the {} limit for a manifest ({size} bytes); \
         nothing in it was read (raise the limit with --max-manifest-size or max_manifest_size)",
        crate::units::format_size(max)
    )
}

/// Loads manifests from text already in memory: `(path, text)` pairs. The
/// path's extension picks the format and its directory anchors relative paths
/// (which must stay inside that directory).
pub fn load_texts(sources: &[(PathBuf, String)]) -> Result<DesiredState, Diagnostics> {
    load_texts_with(sources, None)
}

/// [`load_texts`] for one host, as [`load_for`] is [`load`] for one host.
pub fn load_texts_for(
    sources: &[(PathBuf, String)],
    host: &HostIdentity,
) -> Result<DesiredState, Diagnostics> {
    load_texts_with(sources, Some(host))
}

fn load_texts_with(
    sources: &[(PathBuf, String)],
    host: Option<&HostIdentity>,
) -> Result<DesiredState, Diagnostics> {
    let sources: Vec<Source> = sources
        .iter()
        .map(|(file, text)| Source {
            file: file.clone(),
            text: text.clone(),
            tree: Tree::new(file.parent().unwrap_or(Path::new(""))),
        })
        .collect();
    crate::loader::load_sources(&sources, &LoadOptions::default(), host)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n != "." && n != "..")
}

/// The manifest files found under the paths given, each with its tree.
#[derive(Default)]
struct Walk {
    files: Vec<(PathBuf, Tree)>,
    diags: Diagnostics,
    /// Directories already walked, by device and inode: a symlink loop (or
    /// a directory given twice) is read once.
    seen_dirs: HashSet<(u64, u64)>,
    /// Directories not walked (see [`LoadOptions::skip`]).
    skip: Vec<PathBuf>,
}

impl Walk {
    /// A path given by the operator: trusted as it is (it may be a link);
    /// a directory is a tree, a file belongs to its directory's.
    fn explicit(&mut self, path: &Path) {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                let message = format!("cannot read: {}", crate::diag::io_reason(&e));
                self.diags
                    .push(Diagnostic::error(path, Pos::new(1, 1), "", message));
                return;
            }
        };
        if meta.is_dir() {
            let tree = Tree::new(path);
            self.dir(path, &meta, &tree);
        } else {
            let tree = Tree::new(path.parent().unwrap_or(Path::new("")));
            self.files.push((path.to_path_buf(), tree));
        }
    }

    fn dir(&mut self, path: &Path, meta: &std::fs::Metadata, tree: &Tree) {
        if !self.seen_dirs.insert((meta.dev(), meta.ino())) {
            return;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(it) => it,
            Err(e) => {
                let message = format!("cannot read directory: {}", crate::diag::io_reason(&e));
                self.diags
                    .push(Diagnostic::error(path, Pos::new(1, 1), "", message));
                return;
            }
        };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            if !is_hidden(&child) && !crate::writes::is_under(&child, &self.skip) {
                self.child(&child, tree);
            }
        }
    }

    /// An entry of a walked directory: followed only inside the tree.
    fn child(&mut self, child: &Path, tree: &Tree) {
        let is_manifest = Format::from_path(child).is_some();
        let Ok(own) = std::fs::symlink_metadata(child) else {
            return;
        };
        let meta = if own.file_type().is_symlink() {
            let target = match tree.resolve(child) {
                Ok(real) => real,
                Err(escape) => {
                    // Reported when it would have been walked: a manifest's
                    // name, or a link to a directory.
                    if is_manifest || std::fs::metadata(child).is_ok_and(|m| m.is_dir()) {
                        let message = format!("not followed: {escape}");
                        self.diags
                            .push(Diagnostic::error(child, Pos::new(1, 1), "", message));
                    }
                    return;
                }
            };
            match std::fs::metadata(&target) {
                Ok(m) => m,
                // A dangling link inside the tree: reading it says so.
                Err(_) if is_manifest => {
                    self.files.push((child.to_path_buf(), tree.clone()));
                    return;
                }
                Err(_) => return,
            }
        } else {
            own
        };
        if meta.is_dir() {
            self.dir(child, &meta, tree);
        } else if is_manifest {
            self.files.push((child.to_path_buf(), tree.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_side_by_side_report_what_they_report_alone() {
        // The same mistakes among a few containers (the checks run on one
        // thread) and among hundreds (on two, which hand the containers'
        // order over): the same diagnostics, in the same order.
        let load = |filler: usize| {
            let mut text = String::from(
                "[containers.a]\nimage = \"busybox\"\ndepends_on = [\"b\"]\nports = [\"80:80\"]\nnetworks = [\"nope\"]\n\
                 [containers.b]\nimage = \"busybox\"\ndepends_on = { a = \"healthy\" }\nports = [\"80:80\"]\n",
            );
            for i in 0..filler {
                text += &format!("[containers.c{i:03}]\nimage = \"busybox\"\n");
            }
            let other = "[containers.a]\nimage = \"alpine\"\n".to_string();
            load_texts(&[
                (PathBuf::from("one.toml"), text),
                (PathBuf::from("two.toml"), other),
            ])
            .unwrap_err()
            .to_string()
        };
        let alone = load(2);
        let side_by_side = load(2 * crate::validate::SIDE_BY_SIDE);
        for expected in [
            "container \"a\" is defined twice",
            "dependency cycle: a -> b -> a",
            "is already published by container \"a\"",
            "network \"nope\"",
            "waits for \"a\" to be healthy, but \"a\" has no healthcheck",
        ] {
            assert!(alone.contains(expected), "{expected}: {alone}");
        }
        assert_eq!(side_by_side, alone);
    }

    #[test]
    fn ports_and_mounts_are_put_in_order_and_reported_where_written() {
        // The spec is sorted when it is decoded; a repeated port is still
        // reported at the entry written second, and each bind keeps its
        // content digest.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/a"), "a").unwrap();
        let file = dir.path().join("a.toml");
        let write = |ports: &str| {
            let text = format!(
                "[containers.a]\nimage = \"busybox\"\nports = [{ports}]\n\
                 mounts = [\"tmpfs:/z\", \"./conf:/conf:ro\", \"v:/m\"]\n\
                 [volumes.v]\n"
            );
            std::fs::write(&file, text).unwrap();
        };
        write("\"9000:81\", \"9000:80\"");
        let e = load(&[dir.path()]).unwrap_err().to_string();
        assert!(
            e.contains("a.toml:3:21: error: containers.a.ports[1]: host port 0.0.0.0:9000/tcp is already published by another entry of this container"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        write("\"9001:81\", \"127.0.0.1:9002:80\", \"9000:80\"");
        let state = load(&[dir.path()]).unwrap_or_else(|d| panic!("{d}"));
        let spec = &state.containers["a"].spec;
        assert!(
            spec.ports.is_sorted() && spec.mounts.is_sorted(),
            "{spec:?}"
        );
        let targets: Vec<&str> = spec.mounts.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/conf", "/m", "/z"]);
        assert!(matches!(
            &spec.mounts[0].source,
            crate::mounts::MountSource::Bind {
                content_digest: Some(_),
                ..
            }
        ));
        assert_eq!(
            state.containers["a"].hash,
            crate::hash::container(spec),
            "the hash is the sorted spec's"
        );
    }

    #[test]
    fn a_symlink_loop_is_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "containers:\n  a:\n    image: busybox\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("self")).unwrap();
        let state = load(&[dir.path()]).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(state.containers.len(), 1);
        let twice = load(&[dir.path(), &dir.path().join("self")]).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(twice.containers.len(), 1);
    }

    /// A FIFO with no writer blocks whoever opens it. One in a source's
    /// tree — as an env file, a secret's file, a file in a bound
    /// directory, or named like a manifest — must make a diagnostic (or be
    /// skipped), not hold the load (and the agent) forever.
    #[test]
    fn fifos_in_the_tree_never_hold_a_load() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("conf")).unwrap();
        std::fs::write(root.join("conf/site.conf"), "ok").unwrap();
        let mkfifo = |at: &str| {
            nix::unistd::mkfifo(
                &root.join(at),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap()
        };
        for fifo in ["app.env", "password", "conf/pipe"] {
            mkfifo(fifo);
        }
        let write = |body: &str| std::fs::write(root.join("app.toml"), body).unwrap();
        let load_within = |what: &str| {
            let (tx, rx) = std::sync::mpsc::channel();
            let dir = root.clone();
            std::thread::spawn(move || {
                let _ = tx.send(load(&[&dir]).map(|_| ()).map_err(|d| d.to_string()));
            });
            rx.recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{what}: the load waited on a FIFO"))
        };

        write("[containers.app]\nimage = \"busybox\"\nenv_file = \"app.env\"\n");
        let err = load_within("env_file").expect_err("a FIFO env file");
        assert!(
            err.contains("env_file") && err.contains("not a regular file"),
            "{err}"
        );

        write(
            "[secrets.password]\nfile = \"./password\"\n\n\
             [containers.app]\nimage = \"busybox\"\nsecrets = [\"password\"]\n",
        );
        let err = load_within("secret").expect_err("a FIFO secret");
        assert!(err.contains("secrets.password"), "{err}");

        write("[containers.app]\nimage = \"busybox\"\nmounts = [\"./conf:/etc/site:ro\"]\n");
        // A FIFO inside a bound directory is hashed by its kind and mode,
        // never opened.
        load_within("bind").unwrap_or_else(|e| panic!("{e}"));

        mkfifo("trap.toml");
        let err = load_within("manifest").expect_err("a FIFO manifest");
        assert!(
            err.contains("trap.toml") && err.contains("not a regular file"),
            "{err}"
        );
    }

    fn bind_digest(state: &DesiredState, target: &str) -> String {
        let m = state.containers["app"]
            .spec
            .mounts
            .iter()
            .find(|m| m.target == target)
            .expect("mount");
        match &m.source {
            crate::MountSource::Bind { content_digest, .. } => {
                content_digest.clone().expect("a digest")
            }
            other => panic!("not a bind: {other:?}"),
        }
    }

    #[test]
    fn links_inside_the_tree_are_followed_and_hashed_as_the_mount_shows_them() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        let app = root.join("app");
        std::fs::create_dir_all(root.join("common/v1")).unwrap();
        std::fs::create_dir_all(root.join("common/v2")).unwrap();
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(root.join("common/v1/site.conf"), "one").unwrap();
        std::fs::write(root.join("common/v2/site.conf"), "two").unwrap();
        std::fs::write(root.join("common/common.env"), "A=1\n").unwrap();
        // A directory link, a file link through `..` and an env file link,
        // all inside the tree.
        symlink("../common/v1", app.join("conf")).unwrap();
        symlink("../common/v1/site.conf", app.join("site.conf")).unwrap();
        symlink("../common/common.env", app.join("app.env")).unwrap();
        std::fs::write(
            app.join("app.toml"),
            "[containers.app]\nimage = \"busybox\"\nenv_file = \"app.env\"\n\
             mounts = [\"./conf:/etc/site:ro\", \"./site.conf:/etc/site.conf:ro\"]\n",
        )
        .unwrap();
        let load_root = || load(&[&root]).unwrap_or_else(|d| panic!("{d}"));
        let first = load_root();
        assert_eq!(first.containers["app"].spec.env["A"], "1");
        let (dir1, file1) = (
            bind_digest(&first, "/etc/site"),
            bind_digest(&first, "/etc/site.conf"),
        );

        // The content behind a link is what is hashed: editing it redeploys.
        std::fs::write(root.join("common/v1/site.conf"), "one, edited").unwrap();
        let edited = load_root();
        assert_ne!(bind_digest(&edited, "/etc/site"), dir1);
        assert_ne!(bind_digest(&edited, "/etc/site.conf"), file1);
        // And so is a link pointed elsewhere.
        std::fs::remove_file(app.join("conf")).unwrap();
        symlink("../common/v2", app.join("conf")).unwrap();
        let moved = load_root();
        assert_ne!(
            bind_digest(&moved, "/etc/site"),
            bind_digest(&edited, "/etc/site")
        );
        // The spec keeps the path as written (stable when a checkout moves).
        let m = &moved.containers["app"].spec.mounts;
        assert!(m.iter().any(|m| matches!(&m.source,
            crate::MountSource::Bind { source, .. } if source.ends_with("app/conf"))));
        // Loaded from `app` alone, `../common` is outside its tree.
        let err = load(&[&app]).unwrap_err().to_string();
        assert!(
            err.contains("which leads outside the source's tree"),
            "{err}"
        );
    }

    /// A relative bind records the root of its tree (absolute, also for a
    /// tree given as a relative path), beneath which the runtime opens it;
    /// the hash leaves the root out, so that where a tree starts redeploys
    /// nothing and hashes from before the field stay the same.
    #[test]
    fn relative_binds_record_their_tree_which_the_hash_leaves_out() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        std::fs::create_dir_all(root.join("app/conf")).unwrap();
        std::fs::write(
            root.join("app/app.toml"),
            "[containers.app]\nimage = \"busybox\"\n\
             mounts = [\"./conf:/etc/site\", \"/srv/data:/data\"]\n",
        )
        .unwrap();
        let state = load(&[&root]).unwrap_or_else(|d| panic!("{d}"));
        let spec = &state.containers["app"].spec;
        let tree_of = |target: &str| match &spec
            .mounts
            .iter()
            .find(|m| m.target == target)
            .unwrap()
            .source
        {
            crate::MountSource::Bind { source, tree, .. } => (source.clone(), tree.clone()),
            other => panic!("not a bind: {other:?}"),
        };
        assert_eq!(
            tree_of("/etc/site"),
            (root.join("app/conf"), Some(root.clone()))
        );
        assert_eq!(tree_of("/data"), (PathBuf::from("/srv/data"), None));
        let hash = crate::hash::container(spec);
        let mut without = (**spec).clone();
        for m in &mut without.mounts {
            if let crate::MountSource::Bind { tree, .. } = &mut m.source {
                *tree = None;
            }
        }
        assert_eq!(crate::hash::container(&without), hash);
        // A tree named by a relative path is recorded absolute.
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff(&root, &cwd);
        let state = load(&[&relative]).unwrap_or_else(|d| panic!("{d}"));
        let mounts = &state.containers["app"].spec.mounts;
        match &mounts
            .iter()
            .find(|m| m.target == "/etc/site")
            .unwrap()
            .source
        {
            crate::MountSource::Bind {
                source,
                tree: Some(tree),
                ..
            } => {
                assert!(tree.is_absolute(), "{}", tree.display());
                assert_eq!(source.strip_prefix(tree).unwrap(), Path::new("app/conf"));
                assert_eq!(
                    std::fs::canonicalize(tree).unwrap(),
                    std::fs::canonicalize(&root).unwrap()
                );
            }
            other => panic!("not a relative bind: {other:?}"),
        }
    }

    /// `path` relative to `base` (both absolute), through `..` as needed.
    fn pathdiff(path: &Path, base: &Path) -> PathBuf {
        let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
        let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let mut out = PathBuf::new();
        for _ in common..b.len() {
            out.push("..");
        }
        out.extend(&p[common..]);
        out
    }

    #[test]
    fn an_empty_name_is_quoted_in_the_field_path() {
        let err = load_texts(&[(
            PathBuf::from("x.yaml"),
            "containers:\n  \"\":\n    image: a\n".into(),
        )])
        .unwrap_err();
        let first = err.iter().next().unwrap();
        assert_eq!(first.field, "containers.\"\"");
    }
}

#[cfg(test)]
mod fleet_tests {
    use super::*;
    use crate::target::HostIdentity;

    const FLEET_TOML: &str = r#"
[target]
hosts = ["edge-*"]

[networks.front]

[containers.proxy]
image = "nginx:1.27"
networks = ["front"]

[containers.gpu]
image = "cuda:12"
target = { labels = { gpu = "yes" } }
"#;

    const SHARED_TOML: &str = r#"
[containers.node-exporter]
image = "prom/node-exporter:v1.8.2"
network_mode = "host"

[containers.pg]
image = "postgres:16"
target = { hosts = ["db-?", "core-1"], labels = { role = "db" } }
"#;

    const FLEET_YAML: &str = r#"
containers:
  proxy:
    image: nginx:1.27
    networks: [front]
  gpu:
    image: cuda:12
    target: {labels: {gpu: "yes"}}
networks:
  front: {}
target:
  hosts: [edge-*]
"#;

    fn texts(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect()
    }

    fn names(state: &DesiredState) -> Vec<String> {
        let mut out: Vec<String> = state.networks.keys().map(|n| format!("net:{n}")).collect();
        out.extend(state.containers.keys().cloned());
        out
    }

    fn for_host(files: &[(&str, &str)], host: &HostIdentity) -> DesiredState {
        load_texts_for(&texts(files), host).unwrap_or_else(|d| panic!("{host}:\n{d}"))
    }

    fn errors(files: &[(&str, &str)], host: &HostIdentity) -> Vec<String> {
        match load_texts_for(&texts(files), host) {
            Ok(s) => panic!("should be invalid for {host}, loaded {:?}", names(&s)),
            Err(d) => d.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn each_host_gets_what_targets_it_and_untargeted_resources() {
        let files = [
            ("/m/edge.toml", FLEET_TOML),
            ("/m/shared.toml", SHARED_TOML),
        ];
        let edge = HostIdentity::new("edge-1");
        assert_eq!(
            names(&for_host(&files, &edge)),
            ["net:front", "node-exporter", "proxy"]
        );
        // The resource's own target replaces the file's: the gpu container
        // goes to any host labelled gpu=yes, edge or not.
        let edge_gpu = HostIdentity::new("edge-2").with_label("gpu", "yes");
        assert_eq!(
            names(&for_host(&files, &edge_gpu)),
            ["net:front", "gpu", "node-exporter", "proxy"]
        );
        let core_gpu = HostIdentity::new("core-9").with_label("gpu", "yes");
        assert_eq!(
            names(&for_host(&files, &core_gpu)),
            ["gpu", "node-exporter"]
        );
        // hosts and labels together: both must hold.
        let db = HostIdentity::new("db-1").with_label("role", "db");
        assert_eq!(names(&for_host(&files, &db)), ["node-exporter", "pg"]);
        let db_unlabelled = HostIdentity::new("db-1");
        assert_eq!(names(&for_host(&files, &db_unlabelled)), ["node-exporter"]);
        let db_long = HostIdentity::new("db-12").with_label("role", "db");
        assert_eq!(names(&for_host(&files, &db_long)), ["node-exporter"]);

        // Without a host, everything, each resource carrying its effective target.
        let all = load_texts(&texts(&files)).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            names(&all),
            ["net:front", "gpu", "node-exporter", "pg", "proxy"]
        );
        let t = |name: &str| all.containers[name].target.as_ref().map(|t| t.to_string());
        assert_eq!(t("proxy").as_deref(), Some(r#"hosts = ["edge-*"]"#));
        assert_eq!(t("gpu").as_deref(), Some(r#"labels = { gpu = "yes" }"#));
        assert_eq!(t("node-exporter"), None);
        assert_eq!(
            t("pg").as_deref(),
            Some(r#"hosts = ["db-?", "core-1"], labels = { role = "db" }"#)
        );
        assert_eq!(
            all.networks["front"].target.as_ref().map(|t| t.to_string()),
            Some(r#"hosts = ["edge-*"]"#.to_string())
        );
    }

    #[test]
    fn yaml_targets_mean_what_toml_targets_mean() {
        let toml = load_texts(&texts(&[("/m/edge.toml", FLEET_TOML)])).unwrap();
        // In YAML the document's target is written last: it still covers
        // every resource of the document.
        let yaml = load_texts(&texts(&[("/m/edge.yaml", FLEET_YAML)])).unwrap();
        for (name, c) in &toml.containers {
            assert_eq!(yaml.containers[name].target, c.target, "{name}");
            assert_eq!(yaml.containers[name].hash, c.hash, "{name}");
        }
        assert_eq!(yaml.networks["front"].target, toml.networks["front"].target);
    }

    #[test]
    fn each_yaml_document_has_its_own_target() {
        let yaml = "target: {hosts: [a]}\ncontainers:\n  one: {image: busybox}\n---\ncontainers:\n  two: {image: busybox}\n---\ntarget: {hosts: [b]}\ncontainers:\n  three: {image: busybox}\n";
        let files = [("/m/docs.yaml", yaml)];
        assert_eq!(
            names(&for_host(&files, &HostIdentity::new("a"))),
            ["one", "two"]
        );
        assert_eq!(
            names(&for_host(&files, &HostIdentity::new("b"))),
            ["three", "two"]
        );
    }

    #[test]
    fn the_target_is_not_part_of_the_hash() {
        let plain = "[containers.web]\nimage = \"nginx\"\n";
        let targeted = "[containers.web]\nimage = \"nginx\"\ntarget = { hosts = [\"edge-*\"] }\n";
        let moved = "[target]\nlabels = { role = \"web\" }\n[containers.web]\nimage = \"nginx\"\n";
        let hash = |t: &str| {
            load_texts(&texts(&[("/m/a.toml", t)])).unwrap().containers["web"]
                .hash
                .clone()
        };
        assert_eq!(hash(plain), hash(targeted));
        assert_eq!(hash(plain), hash(moved));
        let net = |t: &str| {
            load_texts(&texts(&[("/m/a.toml", t)])).unwrap().networks["n"]
                .hash
                .clone()
        };
        assert_eq!(
            net("[networks.n]\n"),
            net("[networks.n]\ntarget = { hosts = [\"x\"] }\n")
        );
    }

    #[test]
    fn one_name_may_be_declared_for_disjoint_hosts() {
        let a = "[containers.web]\nimage = \"nginx:1\"\ntarget = { hosts = [\"eu-*\"] }\n";
        let b = "[containers.web]\nimage = \"nginx:2\"\ntarget = { hosts = [\"us-*\"] }\n";
        let files = [("/m/a.toml", a), ("/m/b.toml", b)];
        let eu = for_host(&files, &HostIdentity::new("eu-1"));
        assert_eq!(eu.containers["web"].spec.image.tag.as_deref(), Some("1"));
        let us = for_host(&files, &HostIdentity::new("us-1"));
        assert_eq!(us.containers["web"].spec.image.tag.as_deref(), Some("2"));
        assert!(for_host(&files, &HostIdentity::new("ap-1")).is_empty());
        // A host both declarations target has a duplicate, like everywhere.
        let c = "[containers.web]\nimage = \"nginx:3\"\ntarget = { hosts = [\"*-1\"] }\n";
        let files = [("/m/a.toml", a), ("/m/c.toml", c)];
        assert_eq!(
            errors(&files, &HostIdentity::new("eu-1")),
            [
                r#"/m/c.toml:1:13: error: containers.web: container "web" is defined twice: here and at /m/a.toml:1:13"#
            ]
        );
        // Without a host, everything counts.
        assert!(load_texts(&texts(&files)).is_err());
    }

    #[test]
    fn a_reference_to_a_resource_for_other_hosts_says_so_where_it_is_made() {
        let db = r#"[target]
labels = { role = "db" }

[images.pg]
ref = "postgres:16"

[networks.back]

[volumes.data]

[containers.db]
image = "pg"
networks = ["back"]
mounts = ["data:/var/lib/postgresql/data"]
"#;
        let app = r#"containers:
  app:
    image: pg
    networks: [back]
    mounts: ["data:/data"]
    depends_on: [db]
  sidecar:
    image: busybox
    network_mode: container:db
"#;
        let files = [("/m/db.toml", db), ("/m/app.yaml", app)];
        let web = HostIdentity::new("web-1");
        let elsewhere = |kind: &str, name: &str, at: &str| {
            format!(
                "{kind} \"{name}\" does not target this host (it is declared at /m/db.toml:{at} for labels = {{ role = \"db\" }})"
            )
        };
        assert_eq!(
            errors(&files, &web),
            [
                format!(
                    "/m/app.yaml:3:12: error: containers.app.image: {}",
                    elsewhere("image", "pg", "4:9")
                ),
                format!(
                    "/m/app.yaml:4:16: error: containers.app.networks[0]: {}",
                    elsewhere("network", "back", "7:11")
                ),
                format!(
                    "/m/app.yaml:5:14: error: containers.app.mounts[0]: {}",
                    elsewhere("volume", "data", "9:10")
                ),
                format!(
                    "/m/app.yaml:6:18: error: containers.app.depends_on[0]: {}",
                    elsewhere("container", "db", "11:13")
                ),
                format!(
                    "/m/app.yaml:9:19: error: containers.sidecar.network_mode: {}",
                    elsewhere("container", "db", "11:13")
                ),
            ]
        );
        // The db host has everything it references; so does a load of all.
        let db_host = HostIdentity::new("db-1").with_label("role", "db");
        assert_eq!(
            names(&for_host(&files, &db_host)),
            ["net:back", "app", "db", "sidecar"]
        );
        assert!(load_texts(&texts(&files)).is_ok());
    }

    #[test]
    fn mistakes_in_resources_for_other_hosts_are_still_reported() {
        let t = "[containers.web]\nimage = \"nginx\"\nports = [\"99999:80\"]\ntarget = { hosts = [\"elsewhere\"] }\n";
        let errs = errors(&[("/m/a.toml", t)], &HostIdentity::new("here"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("/m/a.toml:3:10: error: containers.web.ports[0]: "),
            "{errs:?}"
        );
    }

    #[test]
    fn bad_targets_are_reported_at_their_place() {
        let t = r#"[target]
host = ["edge-*"]

[containers.a]
image = "busybox"
target = { hosts = ["", "web[0-9"] }

[containers.b]
image = "busybox"
target = { labels = { "role db" = "x", zone = 1 } }

[containers.c]
image = "busybox"
target = {}

[containers.d]
image = "busybox"
target = { hosts = [] }

[containers.e]
image = "busybox"
target = "edge-1"
"#;
        let errs = errors(&[("/m/a.toml", t)], &HostIdentity::new("edge-1"));
        assert_eq!(
            errs,
            [
                r#"/m/a.toml:2:1: error: target.host: unknown field; did you mean "hosts"?"#,
                r#"/m/a.toml:6:21: error: containers.a.target.hosts[0]: a host glob must not be empty"#,
                r#"/m/a.toml:6:25: error: containers.a.target.hosts[1]: host glob "web[0-9" has a '[' without its closing ']'"#,
                r#"/m/a.toml:10:23: error: containers.b.target.labels."role db": label key "role db" contains ' '; use letters, digits, '.', '-', '_' and '/'"#,
                r#"/m/a.toml:14:1: error: containers.c.target: a target needs hosts, labels or both (leave target out to apply to every host)"#,
                r#"/m/a.toml:18:20: error: containers.d.target.hosts: an empty list matches no host; list host name globs, or leave hosts out"#,
                r#"/m/a.toml:22:10: error: containers.e.target: expected a table, found a string"#,
            ]
        );
    }
}
