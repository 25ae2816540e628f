//! A [`Loader`]: loads that parse only the manifest files that changed.
//!
//! Start at [`Loader::load`]. Each file is decoded on its own (on every
//! core), and what it gave is kept with everything it depended on; the
//! checks across files then run on the whole set, as for a fresh load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::decode::{Decoder, Drafts, Read, still_holds};
use crate::diag::{Diagnostic, Diagnostics};
use crate::load::{LoadOptions, Source, read_capped_with_meta, too_large, walk};
use crate::model::DesiredState;
use crate::node::Pos;
use crate::parse::Format;
use crate::target::HostIdentity;
use crate::tree::Tree;
use crate::writes::{Writes, rw_binds};

/// Loads manifests again and again (as an agent does after every change),
/// parsing and decoding only the files that changed since the last load.
///
/// A file's decoded resources are kept, keyed by its path, with its text
/// and everything decoding read outside it: where its relative paths lead
/// in its tree (through links), its env files, the existence and content
/// digest of its bind sources, the current directory for relative ones. A
/// later load reuses them when the text is the same, byte for byte, and
/// every one of those reads finds the same again (in the tree the file is
/// in now); otherwise the file is decoded afresh. Files that are gone are
/// forgotten. The checks across files (duplicate names, references, ports,
/// subnets, cycles) run on the whole set every time, so a load through a
/// `Loader` returns exactly what [`crate::load_with`] returns.
#[derive(Default)]
pub struct Loader {
    options: LoadOptions,
    cache: HashMap<PathBuf, Cached>,
    last: LoadStats,
}

impl std::fmt::Debug for Loader {
    // Not what is kept: env files' values are in there.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("options", &self.options)
            .field("files_kept", &self.cache.len())
            .field("last", &self.last)
            .finish()
    }
}

/// What the last [`Loader::load`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Manifest files read.
    pub files: usize,
    /// Files whose resources were kept from an earlier load, unparsed.
    pub reused: usize,
    /// Files read from disk (the others were known unchanged by their
    /// [`Stamp`]).
    pub read: usize,
}

/// One file's decoded resources, as a [`Loader`] keeps them.
#[derive(Debug)]
struct Cached {
    /// The file's text. Comparing it costs less than hashing it, and
    /// cannot collide.
    text: Arc<str>,
    /// The file's inode as it was when the text was read, if it had
    /// settled by then (see [`Stamp`]): while it is the same, the file is
    /// not read again.
    stamp: Option<Stamp>,
    decoded: Arc<Decoded>,
}

/// What `stat` says of a file that tells a change: the inode (a file
/// replaced by a rename is another), its size, and when its content and
/// its inode last changed.
///
/// File times come from a clock that may lag by a tick (a few
/// milliseconds), so two writes within one tick can leave the same times:
/// a stamp is only kept for a file whose times are well before the load
/// that read it began ([`SETTLED`]). A later write is then a write after
/// the read began, and leaves later times. (This is git's "racily clean"
/// rule for its index.) The ctime cannot be set from user space, so
/// `touch -d` cannot hide a change; setting the clock back by more than the
/// margin could, and a host whose clock jumps back needs a fresh
/// [`Loader`] (an agent restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// How long before a load began a file must have last changed for its
/// [`Stamp`] to be kept.
const SETTLED: std::time::Duration = std::time::Duration::from_millis(100);

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of a file read by a load that began at `began`, if the
    /// file had settled by then.
    fn settled(meta: &std::fs::Metadata, began: std::time::SystemTime) -> Option<Self> {
        let before = began.checked_sub(SETTLED)?;
        let since = before.duration_since(std::time::UNIX_EPOCH).ok()?;
        let limit = (since.as_secs() as i64, i64::from(since.subsec_nanos()));
        let stamp = Stamp::of(meta);
        (stamp.mtime < limit && stamp.ctime < limit).then_some(stamp)
    }
}

/// What decoding one file gave.
#[derive(Debug, Default)]
struct Decoded {
    drafts: Drafts,
    diags: Diagnostics,
    /// What decoding read outside the file, and found.
    reads: Vec<Read>,
}

impl Loader {
    /// A loader with `options` and nothing kept yet.
    pub fn new(options: LoadOptions) -> Self {
        Self {
            options,
            cache: HashMap::new(),
            last: LoadStats::default(),
        }
    }

    /// The options every load uses.
    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// What the last load did.
    pub fn last_load(&self) -> LoadStats {
        self.last
    }

    /// [`crate::load_with`] of `paths` for `host` (every host when `None`),
    /// reusing what earlier loads decoded where it still holds.
    pub fn load<P: AsRef<Path>>(
        &mut self,
        paths: &[P],
        host: Option<&HostIdentity>,
    ) -> Result<DesiredState, Diagnostics> {
        let began = std::time::SystemTime::now();
        let (mut files, diags) = walk(paths, &self.options.skip);
        crate::compose::skip_used(&mut files, self.options.max_file_size);
        // Each file is read by the thread that decodes it.
        let (options, cache) = (&self.options, &self.cache);
        let outcomes = crate::par::map(&files, 1, 4, |(file, tree)| {
            let kept = cache.get(file);
            // A file whose stamp is the same is not read again: its text is.
            if let Some(kept) = kept
                && let Some(stamp) = kept.stamp
                && std::fs::metadata(file).is_ok_and(|m| Stamp::of(&m) == stamp)
            {
                let outcome = decode_one(file, &kept.text, tree, options, Some(kept));
                return (Some((kept.text.clone(), Some(stamp), false)), outcome);
            }
            match read_capped_with_meta(file, options.max_file_size) {
                Ok((text, meta)) => {
                    let outcome = decode_one(file, &text, tree, options, kept);
                    let stamp = Stamp::settled(&meta, began);
                    (Some((Arc::from(text), stamp, true)), outcome)
                }
                Err(message) => {
                    let diag = Diagnostic::error(file, Pos::new(1, 1), "", message);
                    (None, Outcome::alone(diag))
                }
            }
        });
        let mut cache = HashMap::with_capacity(files.len());
        let (mut reused, mut read_from_disk) = (0, 0);
        let mut decoded = Vec::with_capacity(files.len());
        for ((file, _), (read, outcome)) in files.into_iter().zip(outcomes) {
            reused += usize::from(outcome.reused);
            read_from_disk += usize::from(read.as_ref().is_none_or(|(_, _, fresh)| *fresh));
            decoded.push((file.clone(), outcome.decoded.clone()));
            if let Some((text, stamp, _)) = read.filter(|_| outcome.keep) {
                let entry = Cached {
                    text,
                    stamp,
                    decoded: outcome.decoded,
                };
                cache.insert(file, entry);
            }
        }
        self.cache = cache;
        self.last = LoadStats {
            files: decoded.len(),
            reused,
            read: read_from_disk,
        };
        finish(&decoded, diags, host, self.options.writes)
    }
}

/// Decodes `sources` (already read) and checks them, keeping nothing.
pub(crate) fn load_sources(
    sources: &[Source],
    options: &LoadOptions,
    host: Option<&HostIdentity>,
) -> Result<DesiredState, Diagnostics> {
    let decoded: Vec<Arc<Decoded>> = crate::par::map(sources, 1, 4, |s| {
        decode_one(&s.file, &s.text, &s.tree, options, None).decoded
    });
    let decoded: Vec<(PathBuf, Arc<Decoded>)> = sources
        .iter()
        .map(|s| s.file.clone())
        .zip(decoded)
        .collect();
    finish(&decoded, Diagnostics::default(), host, options.writes)
}

/// The checks across files, on what every file (in order) decoded.
///
/// With [`Writes::Skip`], what the files under a read-write bind of this
/// load declared (and what is wrong with them) is left out first (see
/// [`crate::writes`]).
fn finish(
    decoded: &[(PathBuf, Arc<Decoded>)],
    mut diags: Diagnostics,
    host: Option<&HostIdentity>,
    writes: Writes,
) -> Result<DesiredState, Diagnostics> {
    let decoded: Vec<Arc<Decoded>> = match writes {
        Writes::Skip => skip_written(decoded),
        Writes::Refuse => decoded.iter().map(|(_, d)| d.clone()).collect(),
    };
    for d in &decoded {
        if !d.diags.is_empty() {
            diags.extend(d.diags.clone());
        }
    }
    let drafts: Vec<&Drafts> = decoded.iter().map(|d| &d.drafts).collect();
    crate::validate::finish(&drafts, diags, host)
}

/// [`Writes::Skip`]: the files not under a read-write bind of any of them,
/// with the read-only binds that a read-write bind overlaps hashed by path
/// alone.
///
/// Every read-write bind counts, even one declared under another: what is
/// unsure is left unread. (What a running container wrote is not even
/// decoded: the agent skips it by [`LoadOptions::skip`].)
fn skip_written(decoded: &[(PathBuf, Arc<Decoded>)]) -> Vec<Arc<Decoded>> {
    let written = rw_binds(decoded.iter().map(|(_, d)| &d.drafts));
    if written.is_empty() {
        return decoded.iter().map(|(_, d)| d.clone()).collect();
    }
    let kept: Vec<&Arc<Decoded>> = decoded
        .iter()
        .filter(|(file, _)| !crate::writes::is_under(file, &written))
        .map(|(_, d)| d)
        .collect();
    let written = rw_binds(kept.iter().map(|d| &d.drafts));
    kept.into_iter()
        .map(
            |d| match crate::writes::unhash_overlapped(&d.drafts, &written) {
                Some(drafts) => Arc::new(Decoded {
                    drafts,
                    diags: d.diags.clone(),
                    reads: d.reads.clone(),
                }),
                None => d.clone(),
            },
        )
        .collect()
}

/// What one file of a load came to.
struct Outcome {
    decoded: Arc<Decoded>,
    /// Whether a later load may reuse it (it was decoded, or reused).
    keep: bool,
    /// Whether it was kept from an earlier load.
    reused: bool,
}

impl Outcome {
    /// A file that is not decoded: one diagnostic says why.
    fn alone(diag: Diagnostic) -> Self {
        let mut decoded = Decoded::default();
        decoded.diags.push(diag);
        Outcome {
            decoded: Arc::new(decoded),
            keep: false,
            reused: false,
        }
    }
}

/// Decodes `text`, the manifest `file` of `tree`, unless `kept` (what an
/// earlier load decoded from it) still holds.
fn decode_one(
    file: &Path,
    text: &str,
    tree: &Tree,
    options: &LoadOptions,
    kept: Option<&Cached>,
) -> Outcome {
    if crate::compose::is_override_file(file) {
        // Beside a Compose file it is merged into it (and not listed).
        return Outcome::alone(Diagnostic::warning(
            file,
            Pos::new(1, 1),
            "",
            "an override file is merged into the Compose file beside it (compose.yaml, docker-compose.yml…), and there is none; not read",
        ));
    }
    let Some(format) = Format::from_path(file) else {
        return Outcome::alone(Diagnostic::error(
            file,
            Pos::new(1, 1),
            "",
            "not a manifest: the name must end in .toml, .yaml or .yml",
        ));
    };
    if text.len() as u64 > options.max_file_size {
        let message = too_large(text.len() as u64, options.max_file_size);
        return Outcome::alone(Diagnostic::error(file, Pos::new(1, 1), "", message));
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    // The same text, or the very text kept (its stamp held).
    if let Some(kept) = kept
        && (std::ptr::eq(kept.text.as_ptr(), text.as_ptr()) || *kept.text == *text)
        && still_holds(&kept.decoded.reads, dir, tree, options.policy.as_ref())
    {
        return Outcome {
            decoded: kept.decoded.clone(),
            keep: true,
            reused: true,
        };
    }
    let mut decoded = Decoded::default();
    match crate::sops::manifest(format, text, options.age.as_ref()) {
        Ok(docs) => {
            let mut decoder = Decoder::new(file, dir, tree);
            decoder.policy = options.policy.as_ref();
            decoder.writes = options.writes;
            decoder.env = Some(&options.env);
            decoder.secret_key = &options.secret_key;
            decoder.age = options.age.as_ref();
            if crate::compose::is_compose_file(file) {
                decoder.compose(&docs, options, &mut decoded.drafts);
            } else {
                for doc in &docs {
                    decoder.document(doc, &mut decoded.drafts);
                }
            }
            if !decoder.others.is_empty() {
                decoded.drafts.others = Some((file.to_path_buf(), decoder.others));
            }
            decoded.diags = decoder.diags;
            decoded.reads = decoder.reads;
            decoded.drafts.hash();
        }
        Err(e) => decoded
            .diags
            .push(Diagnostic::error(file, e.pos, "", e.message)),
    }
    Outcome {
        decoded: Arc::new(decoded),
        keep: true,
        reused: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A tree whose manifests read outside themselves in every way: an env
    /// file through a link, a bind directory, a bind file, an `[images]`
    /// entry in another file, a network and a dependency across files.
    fn write_tree(root: &Path) {
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(
            "app/app.toml",
            "[containers.app]\nimage = \"base\"\nenv_file = [\"app.env\", \"../common/common.env\"]\n\
             networks = [\"front\"]\nports = [\"8080:80\"]\n\
             mounts = [\"./conf:/etc/conf:ro\", \"./site.conf:/etc/site.conf:ro\"]\n\
             healthcheck = { cmd = \"true\" }\n",
        );
        write("app/app.env", "A=1\n");
        write("common/common.env", "B=2\n");
        write("app/conf/one.conf", "one");
        write("app/site.conf", "site");
        write(
            "base.yaml",
            "images:\n  base: {ref: \"busybox:1\"}\nnetworks:\n  front: {}\n\
             containers:\n  worker:\n    image: base\n    depends_on: {app: healthy}\n    networks: [front]\n",
        );
        write("other.toml", "[containers.other]\nimage = \"alpine\"\n");
        symlink("../common/common.env", root.join("app/link.env")).unwrap();
    }

    /// Loads `paths` through `loader` and afresh, for every host and for
    /// one, and checks that they agree. Returns the cached load for all
    /// hosts, and how many files it reused.
    fn both(loader: &mut Loader, paths: &[&Path]) -> (Result<DesiredState, Diagnostics>, usize) {
        let host = HostIdentity::new("edge-1").with_label("role", "web");
        let cached = loader.load(paths, None);
        let reused = loader.last_load().reused;
        let fresh = crate::load_with(paths, None, &LoadOptions::default());
        assert_eq!(cached, fresh, "a cached load differs from a fresh one");
        let cached_for = loader.load(paths, Some(&host));
        let fresh_for = crate::load_with(paths, Some(&host), &LoadOptions::default());
        assert_eq!(cached_for, fresh_for, "a cached load for a host differs");
        assert_eq!(
            loader.last_load().reused,
            loader.last_load().files,
            "the same files, loaded again at once, are all reused"
        );
        (cached, reused)
    }

    /// The value of `MODE` in container `a` of a load.
    fn mode(r: Result<DesiredState, Diagnostics>) -> String {
        state(&r).containers["a"].spec.env["MODE"].clone()
    }

    /// Rewrites `file` with `text` (of the same length as before) and puts
    /// its modification time back to what it was: only the ctime tells.
    fn rewrite_keeping_mtime(file: &Path, text: &str) {
        let mtime = std::fs::metadata(file).unwrap().modified().unwrap();
        std::fs::write(file, text).unwrap();
        let f = std::fs::File::options().write(true).open(file).unwrap();
        f.set_modified(mtime).unwrap();
    }

    #[test]
    fn a_settled_file_is_not_read_again_until_its_inode_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a.toml");
        let text = |mode: &str| {
            format!("[containers.a]\nimage = \"busybox\"\nenv = {{ MODE = \"{mode}\" }}\n")
        };
        std::fs::write(&file, text("one")).unwrap();
        // Older than the margin when the first load begins: settled.
        std::thread::sleep(SETTLED + std::time::Duration::from_millis(50));
        let mut loader = Loader::default();
        assert_eq!(mode(loader.load(&[tmp.path()], None)), "one");
        assert_eq!(loader.last_load().read, 1);
        assert_eq!(mode(loader.load(&[tmp.path()], None)), "one");
        assert_eq!(
            loader.last_load(),
            LoadStats {
                files: 1,
                reused: 1,
                read: 0
            },
            "an unchanged settled file is neither read nor parsed"
        );

        // The same length and the same mtime: the ctime changed.
        rewrite_keeping_mtime(&file, &text("two"));
        assert_eq!(mode(loader.load(&[tmp.path()], None)), "two");
        assert_eq!(loader.last_load().read, 1);

        // Replaced by a rename (as git checks out): another inode.
        let next = tmp.path().join("a.toml.new");
        std::fs::write(&next, text("six")).unwrap();
        std::fs::rename(&next, &file).unwrap();
        assert_eq!(mode(loader.load(&[tmp.path()], None)), "six");
    }

    #[test]
    fn a_file_written_just_before_a_load_is_read_again() {
        // Written within the margin, then rewritten with the same length
        // and times (as two writes within one clock tick can be): the
        // first load kept no stamp, so the second reads the file again.
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a.toml");
        let text = |mode: &str| {
            format!("[containers.a]\nimage = \"busybox\"\nenv = {{ MODE = \"{mode}\" }}\n")
        };
        std::fs::write(&file, text("one")).unwrap();
        let mut loader = Loader::default();
        assert_eq!(mode(loader.load(&[tmp.path()], None)), "one");
        rewrite_keeping_mtime(&file, &text("two"));
        assert_eq!(mode(loader.load(&[tmp.path()], None)), "two");
        assert_eq!(loader.last_load().read, 1);
    }

    #[test]
    fn what_is_kept_is_never_printed() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("s.env"), "TOKEN=hunter2-s3cr3t\n").unwrap();
        std::fs::write(
            tmp.path().join("a.toml"),
            "[containers.a]\nimage = \"busybox\"\nenv_file = \"s.env\"\n",
        )
        .unwrap();
        let mut loader = Loader::default();
        loader.load(&[tmp.path()], None).unwrap();
        let shown = format!("{loader:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("files_kept: 1"), "{shown}");
    }

    fn state(r: &Result<DesiredState, Diagnostics>) -> &DesiredState {
        r.as_ref().unwrap_or_else(|d| panic!("should load:\n{d}"))
    }

    fn hash(r: &Result<DesiredState, Diagnostics>, name: &str) -> String {
        state(r).containers[name].hash.to_string()
    }

    #[test]
    fn a_cached_load_equals_a_fresh_one_across_edits() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        write_tree(&root);
        let root = root.as_path();
        let paths = [root];
        let mut loader = Loader::default();
        let (first, reused) = both(&mut loader, &paths);
        assert_eq!(reused, 0);
        assert_eq!(state(&first).len(), 5);
        let (again, reused) = both(&mut loader, &paths);
        assert_eq!(reused, 3, "nothing changed: nothing is parsed");
        assert_eq!(again, first);

        // Rewriting a file with the same text changes nothing.
        let app = root.join("app/app.toml");
        let app_text = std::fs::read_to_string(&app).unwrap();
        std::fs::write(&app, &app_text).unwrap();
        assert_eq!(both(&mut loader, &paths).1, 3);

        // Each edit outside the manifest re-decodes the manifest that read
        // it, and only that one.
        // (what, the edit, whether the container changes)
        let edits: [(&str, &dyn Fn(), bool); 6] = [
            (
                "an env file",
                &|| std::fs::write(root.join("app/app.env"), "A=2\n").unwrap(),
                true,
            ),
            (
                "an env file outside the manifest's directory",
                &|| std::fs::write(root.join("common/common.env"), "B=3\n").unwrap(),
                true,
            ),
            (
                "a file in a bind directory",
                &|| std::fs::write(root.join("app/conf/one.conf"), "uno").unwrap(),
                true,
            ),
            (
                "a new file in a bind directory",
                &|| std::fs::write(root.join("app/conf/two.conf"), "dos").unwrap(),
                true,
            ),
            (
                "a bind file",
                &|| std::fs::write(root.join("app/site.conf"), "site, edited").unwrap(),
                true,
            ),
            (
                // The mount shows the same files: the same container.
                "a bind directory moved behind a link",
                &|| {
                    std::fs::rename(root.join("app/conf"), root.join("conf-v2")).unwrap();
                    symlink("../conf-v2", root.join("app/conf")).unwrap();
                },
                false,
            ),
        ];
        let mut before = hash(&first, "app");
        for (what, edit, changes) in edits {
            edit();
            let (r, reused) = both(&mut loader, &paths);
            assert_eq!(reused, 2, "{what}: only app.toml is decoded again");
            let now = hash(&r, "app");
            assert_eq!(now != before, changes, "{what}: the hash follows the edit");
            before = now;
        }

        // An env file reached through a link: the link re-pointed.
        std::fs::write(&app, app_text.replace("app.env", "link.env")).unwrap();
        let (r, _) = both(&mut loader, &paths);
        assert_eq!(state(&r).containers["app"].spec.env["B"], "3");
        std::fs::remove_file(root.join("app/link.env")).unwrap();
        std::fs::write(root.join("app/other.env"), "C=4\n").unwrap();
        symlink("other.env", root.join("app/link.env")).unwrap();
        let (r, reused) = both(&mut loader, &paths);
        assert_eq!(reused, 2);
        assert_eq!(state(&r).containers["app"].spec.env["C"], "4");

        // A missing env file or bind source is an error, and its return
        // is not: the cache remembers neither.
        std::fs::remove_file(root.join("app/other.env")).unwrap();
        let (r, _) = both(&mut loader, &paths);
        assert!(r.unwrap_err().to_string().contains("does not exist"));
        std::fs::write(root.join("app/other.env"), "C=4\n").unwrap();
        assert!(both(&mut loader, &paths).0.is_ok());
        std::fs::remove_file(root.join("app/site.conf")).unwrap();
        assert!(both(&mut loader, &paths).0.is_err());
        std::fs::write(root.join("app/site.conf"), "back").unwrap();
        let (r, _) = both(&mut loader, &paths);
        let app_hash = hash(&r, "app");

        // Another file's edit changes what an unchanged file's container
        // runs: its hash follows, though its file is not decoded again.
        let base = root.join("base.yaml");
        let base_text = std::fs::read_to_string(&base).unwrap();
        std::fs::write(&base, base_text.replace("busybox:1", "busybox:2")).unwrap();
        let (r, reused) = both(&mut loader, &paths);
        assert_eq!(reused, 2);
        assert_ne!(hash(&r, "app"), app_hash);
        assert_eq!(
            state(&r).containers["app"].spec.image.tag.as_deref(),
            Some("2")
        );

        // A file removed, one added (with a name already taken), one that
        // does not parse, and each put right.
        std::fs::remove_file(root.join("other.toml")).unwrap();
        let (r, reused) = both(&mut loader, &paths);
        assert_eq!((reused, loader.last_load().files), (2, 2));
        assert!(!state(&r).containers.contains_key("other"));
        std::fs::write(
            root.join("dup.yaml"),
            "containers:\n  worker: {image: alpine}\n",
        )
        .unwrap();
        let (r, reused) = both(&mut loader, &paths);
        assert_eq!(reused, 2);
        assert!(r.unwrap_err().to_string().contains("defined twice"));
        std::fs::write(root.join("dup.yaml"), "containers:\n  worker: [\n").unwrap();
        assert!(both(&mut loader, &paths).0.is_err());
        std::fs::remove_file(root.join("dup.yaml")).unwrap();
        assert!(both(&mut loader, &paths).0.is_ok());

        // The same file loaded in another tree: `../common` now leaves it.
        let (r, reused) = both(&mut loader, &[&root.join("app")]);
        assert_eq!(reused, 0);
        assert!(
            r.unwrap_err()
                .to_string()
                .contains("outside the source's tree")
        );
        assert!(both(&mut loader, &paths).0.is_ok());
    }

    /// Under a policy, a kept file is reused only while the host paths it
    /// was allowed still lead where they did: a link under an allowed
    /// directory re-pointed out of it is refused at the next load.
    #[test]
    fn a_cached_load_under_a_policy_follows_links_under_host_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let allowed = tmp.path().join("srv");
        std::fs::create_dir_all(allowed.join("data")).unwrap();
        std::fs::create_dir_all(tmp.path().join("secret")).unwrap();
        symlink("data", allowed.join("link")).unwrap();
        let root = tmp.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(
            root.join("app.toml"),
            format!(
                "[containers.app]\nimage = \"busybox\"\nmounts = [\"{}:/data\"]\n",
                allowed.join("link").display()
            ),
        )
        .unwrap();
        let keys = crate::PolicyKeys {
            host_paths: vec![allowed.clone()],
            ..crate::PolicyKeys::default()
        };
        let options = LoadOptions {
            policy: Some(crate::Policy::new(keys, "[source.policy]").unwrap()),
            writes: crate::Writes::Refuse,
            ..LoadOptions::default()
        };
        let mut loader = Loader::new(options.clone());
        loader.load(&[&root], None).unwrap();
        std::fs::remove_file(allowed.join("link")).unwrap();
        symlink("../secret", allowed.join("link")).unwrap();
        let cached = loader.load(&[&root], None);
        assert_eq!(cached, crate::load_with(&[&root], None, &options));
        let e = cached.unwrap_err().to_string();
        assert!(e.contains("leads outside"), "{e}");
        // And back: allowed again, without a restart.
        std::fs::remove_file(allowed.join("link")).unwrap();
        symlink("data", allowed.join("link")).unwrap();
        loader.load(&[&root], None).unwrap();
    }
}
