//! The build context: its files after `.dockerignore`, with what a cache key
//! needs to know of each (type, mode, size, content digest, link target —
//! never times or owners), and the selection and digest of what one
//! `COPY`/`ADD` reads.
//!
//! [`Context::walk`] reads a directory (symlinks are not followed; sockets,
//! FIFOs and devices are left out); [`Context::from_entries`] builds one
//! from data. [`Context::digest`] is the cache input of a `COPY`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ignore::{Ignore, clean};

/// A file of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (with setuid, setgid, sticky): `0o7777` at most.
    pub mode: u32,
}

/// The type of an [`Entry`] and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Its size in bytes.
        size: u64,
        /// `sha256:<hex>` of its content.
        digest: String,
    },
    /// A symbolic link.
    Symlink {
        /// Where it points, as written.
        target: String,
    },
}

/// Why the context cannot be read or a source is not in it.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// Reading the context failed.
    #[error("reading the build context at {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file name that is not UTF-8.
    #[error("build context: file name {path:?} is not UTF-8")]
    NotUtf8 {
        /// The path, lossily.
        path: PathBuf,
    },
    /// A file that was regular when listed but is not when opened (a
    /// FIFO, a device or a symlink swapped in).
    #[error("build context: {path} is no longer a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// A `COPY` source that is not there (or is ignored).
    #[error("file not found in build context or excluded by .dockerignore: {source_path}")]
    NotFound {
        /// The source as written.
        source_path: String,
    },
    /// A `COPY` source that climbs out of the context (`../x`).
    #[error("forbidden path outside the build context: {source_path}")]
    Forbidden {
        /// The source as written.
        source_path: String,
    },
    /// A `COPY` glob that matches nothing.
    #[error("no source files were specified: {pattern} matches nothing in the build context")]
    NoMatch {
        /// The glob.
        pattern: String,
    },
}

/// The files of a build context, by path relative to its root
/// (`/`-separated, no leading `/`; the root itself is not an entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    entries: BTreeMap<String, Entry>,
}

impl Context {
    /// A context from data: `(path, entry)` pairs.
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Entry)>) -> Context {
        Context {
            entries: entries.into_iter().collect(),
        }
    }

    /// Reads the directory `root`, leaving out what `ignore` excludes, and
    /// hashes every file kept.
    pub fn walk(root: &Path, ignore: &Ignore) -> Result<Context, ContextError> {
        let mut entries = BTreeMap::new();
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            let dir_path = root.join(&dir);
            let read = |source| ContextError::Read {
                path: dir_path.clone(),
                source,
            };
            for item in std::fs::read_dir(&dir_path).map_err(read)? {
                let item = item.map_err(read)?;
                let name = item.file_name();
                let name = name.to_str().ok_or_else(|| ContextError::NotUtf8 {
                    path: dir_path.join(item.file_name()),
                })?;
                let rel = if dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{dir}/{name}")
                };
                let path = root.join(&rel);
                let meta =
                    std::fs::symlink_metadata(&path).map_err(|source| ContextError::Read {
                        path: path.clone(),
                        source,
                    })?;
                let kind = meta.file_type();
                if ignore.excludes(&rel) {
                    // An excluded directory is entered only for an
                    // exception under it; it is not an entry itself.
                    if kind.is_dir() && ignore.must_enter(&rel) {
                        stack.push(rel);
                    }
                    continue;
                }
                let mode = meta.permissions().mode() & 0o7777;
                let kind = if kind.is_dir() {
                    stack.push(rel.clone());
                    EntryKind::Dir
                } else if kind.is_symlink() {
                    let target =
                        std::fs::read_link(&path).map_err(|source| ContextError::Read {
                            path: path.clone(),
                            source,
                        })?;
                    let target = target
                        .to_str()
                        .ok_or_else(|| ContextError::NotUtf8 { path: path.clone() })?
                        .to_owned();
                    EntryKind::Symlink { target }
                } else if kind.is_file() {
                    EntryKind::File {
                        size: meta.len(),
                        digest: hash_file(&path)?,
                    }
                } else {
                    continue;
                };
                entries.insert(rel, Entry { kind, mode });
            }
        }
        Ok(Context { entries })
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// What a `COPY` source selects: the matching paths (`""` for the root),
    /// each with everything under it. A source is cleaned (`/x` is `x`); a
    /// glob (`*`, `?`, `[`) is matched against
    /// every path with `*` not crossing `/`. A relative source that leaves
    /// the context is refused, as Docker's classic builder does.
    pub fn select(&self, source: &str) -> Result<Vec<String>, ContextError> {
        // `/x` is the context's `x`; a relative path may not climb out.
        let cleaned = clean(source);
        if !cleaned.starts_with('/') && (cleaned == ".." || cleaned.starts_with("../")) {
            return Err(ContextError::Forbidden {
                source_path: source.to_owned(),
            });
        }
        let rel = cleaned.trim_start_matches('/');
        let rel = if rel == "." { "" } else { rel };
        if rel.is_empty() {
            return Ok(vec![String::new()]);
        }
        if !has_wildcards(rel) {
            // A directory left out by .dockerignore but with an exception
            // under it exists, implied by its content.
            let under = format!("{rel}/");
            let implied = self
                .entries
                .range(under.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&under));
            if implied || self.entries.contains_key(rel) {
                return Ok(vec![rel.to_owned()]);
            }
            return Err(ContextError::NotFound {
                source_path: source.to_owned(),
            });
        }
        let pattern: Vec<char> = rel.chars().collect();
        let mut out: Vec<String> = Vec::new();
        for path in self.entries.keys() {
            // A matched directory brings its content: skip what is under it.
            if out
                .last()
                .is_some_and(|d| path.starts_with(&format!("{d}/")))
            {
                continue;
            }
            let chars: Vec<char> = path.chars().collect();
            if glob(&pattern, &chars) {
                out.push(path.clone());
            }
        }
        if out.is_empty() {
            return Err(ContextError::NoMatch {
                pattern: source.to_owned(),
            });
        }
        Ok(out)
    }

    /// The digest of what the sources read: every selected path and
    /// everything under it, by path, type, mode, size, content and link
    /// target. Times and owners are not part of it.
    pub fn digest(&self, sources: &[String]) -> Result<String, ContextError> {
        let mut h = Sha256::new();
        for source in sources {
            h.update(b"source\0");
            h.update(source.as_bytes());
            h.update(b"\0");
            for root in self.select(source)? {
                let under = format!("{root}/");
                let selected = self
                    .entries
                    .iter()
                    .filter(|(p, _)| root.is_empty() || **p == root || p.starts_with(&under));
                for (path, entry) in selected {
                    h.update(path.as_bytes());
                    h.update(b"\0");
                    h.update(format!("{:o}\0", entry.mode).as_bytes());
                    match &entry.kind {
                        EntryKind::Dir => h.update(b"dir\0"),
                        EntryKind::File { size, digest } => {
                            h.update(format!("file\0{size}\0{digest}\0").as_bytes());
                        }
                        EntryKind::Symlink { target } => {
                            h.update(b"symlink\0");
                            h.update(target.as_bytes());
                            h.update(b"\0");
                        }
                    }
                }
            }
        }
        Ok(format!("sha256:{}", hex::encode(h.finalize())))
    }
}

fn hash_file(path: &Path) -> Result<String, ContextError> {
    let err = |source| ContextError::Read {
        path: path.to_owned(),
        source,
    };
    // Not followed if swapped for a symlink, and no wait on a FIFO swapped
    // in: what is opened must still be a regular file.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(ContextError::NotRegular {
            path: path.to_owned(),
        });
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Docker's test for a glob source: `*`, `?` or `[` not escaped.
/// Whether one path component `name` matches `pattern` as Go's
/// `filepath.Match` does (Docker's rule for `COPY` sources).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    glob(
        &pattern.chars().collect::<Vec<_>>(),
        &name.chars().collect::<Vec<_>>(),
    )
}

/// Whether `path` has an unescaped `*`, `?` or `[`.
pub fn has_wildcards(path: &str) -> bool {
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Go's `filepath.Match`: `*` any run without `/`, `?` one character but
/// `/`, `[...]` a class (never `/`), `\` escapes. A malformed class matches
/// nothing.
fn glob(pattern: &[char], name: &[char]) -> bool {
    let mut memo = vec![None; (pattern.len() + 1) * (name.len() + 1)];
    glob_at(pattern, name, 0, 0, &mut memo)
}

fn glob_at(pattern: &[char], name: &[char], p: usize, n: usize, memo: &mut [Option<bool>]) -> bool {
    let key = p * (name.len() + 1) + n;
    if let Some(known) = memo[key] {
        return known;
    }
    let result = match pattern.get(p) {
        None => n == name.len(),
        Some('*') => {
            let mut m = n;
            loop {
                if glob_at(pattern, name, p + 1, m, memo) {
                    break true;
                }
                if m == name.len() || name[m] == '/' {
                    break false;
                }
                m += 1;
            }
        }
        Some('?') => {
            name.get(n).is_some_and(|c| *c != '/') && glob_at(pattern, name, p + 1, n + 1, memo)
        }
        Some('[') => match (name.get(n), class(pattern, p + 1)) {
            (Some(c), Some((set, negated, next))) if *c != '/' => {
                let inside = set.iter().any(|(lo, hi)| (lo..=hi).contains(&c));
                inside != negated && glob_at(pattern, name, next, n + 1, memo)
            }
            _ => false,
        },
        Some('\\') => match pattern.get(p + 1) {
            Some(lit) => name.get(n) == Some(lit) && glob_at(pattern, name, p + 2, n + 1, memo),
            None => false,
        },
        Some(lit) => name.get(n) == Some(lit) && glob_at(pattern, name, p + 1, n + 1, memo),
    };
    memo[key] = Some(result);
    result
}

/// A class after its `[` at `i`: its ranges, whether negated, and where the
/// pattern goes on; `None` if malformed.
type Class = (Vec<(char, char)>, bool, usize);

fn class(pattern: &[char], mut i: usize) -> Option<Class> {
    let negated = pattern.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut set = Vec::new();
    loop {
        match pattern.get(i)? {
            ']' if !set.is_empty() => return Some((set, negated, i + 1)),
            _ => {
                let one = |i: usize| -> Option<(char, usize)> {
                    match pattern.get(i)? {
                        '\\' => Some((*pattern.get(i + 1)?, i + 2)),
                        '-' | ']' => None,
                        c => Some((*c, i + 1)),
                    }
                };
                let (lo, next) = one(i)?;
                i = next;
                let hi = if pattern.get(i) == Some(&'-') {
                    let (hi, next) = one(i + 1)?;
                    i = next;
                    hi
                } else {
                    lo
                };
                set.push((lo, hi));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> Entry {
        Entry {
            kind: EntryKind::File {
                size: content.len() as u64,
                digest: format!("sha256:{}", hex::encode(Sha256::digest(content))),
            },
            mode: 0o644,
        }
    }

    fn dir() -> Entry {
        Entry {
            kind: EntryKind::Dir,
            mode: 0o755,
        }
    }

    fn ctx(files: &[(&str, Entry)]) -> Context {
        Context::from_entries(files.iter().map(|(p, e)| (p.to_string(), e.clone())))
    }

    fn sample() -> Context {
        ctx(&[
            ("a.txt", file("a")),
            ("b.txt", file("b")),
            ("src", dir()),
            ("src/main.rs", file("fn main")),
            ("src/lib", dir()),
            ("src/lib/x.rs", file("x")),
            ("srcx", file("not src")),
        ])
    }

    #[test]
    fn select_paths_globs_and_the_root() {
        let c = sample();
        assert_eq!(c.select("a.txt").unwrap(), vec!["a.txt"]);
        assert_eq!(c.select("./src/").unwrap(), vec!["src"]);
        // As Docker's classic builder: a path that leaves the context is
        // refused, one that only passes through a parent is not.
        assert_eq!(
            c.select("../../a.txt").unwrap_err().to_string(),
            "forbidden path outside the build context: ../../a.txt"
        );
        assert!(c.select("..").is_err());
        assert_eq!(c.select("src/../a.txt").unwrap(), vec!["a.txt"]);
        assert_eq!(c.select("/../a.txt").unwrap(), vec!["a.txt"]);
        assert_eq!(c.select("/a.txt").unwrap(), vec!["a.txt"]);
        assert_eq!(c.select(".").unwrap(), vec![""]);
        assert_eq!(c.select("*.txt").unwrap(), vec!["a.txt", "b.txt"]);
        assert_eq!(
            c.select("src*").unwrap(),
            vec!["src", "srcx"],
            "a matched directory brings its content"
        );
        assert_eq!(c.select("src/*.rs").unwrap(), vec!["src/main.rs"]);
        assert_eq!(
            c.select("*/x.rs").unwrap_err().to_string(),
            "no source files were specified: */x.rs matches nothing in the build context"
        );
        assert_eq!(c.select("[ab].txt").unwrap(), vec!["a.txt", "b.txt"]);
        let implied = ctx(&[("keep/public", file("p"))]);
        assert_eq!(
            implied.select("keep").unwrap(),
            vec!["keep"],
            "a directory implied by its content"
        );
        assert!(implied.select("kee").is_err());
        assert_eq!(
            c.select("missing").unwrap_err().to_string(),
            "file not found in build context or excluded by .dockerignore: missing"
        );
    }

    #[test]
    fn digest_covers_content_mode_names_and_only_what_is_read() {
        let base = sample();
        let d = |c: &Context, s: &[&str]| {
            c.digest(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
        };
        let src = d(&base, &["src"]);
        assert_eq!(src, d(&sample(), &["src"]), "deterministic");

        // A file outside what is read changes nothing.
        let mut other = base.clone();
        other.entries.insert("b.txt".into(), file("changed"));
        assert_eq!(d(&other, &["src"]), src);
        assert_ne!(d(&other, &["."]), d(&base, &["."]));

        // Content, mode, a rename and a new file under it all count.
        let mut content = base.clone();
        content.entries.insert("src/lib/x.rs".into(), file("y"));
        assert_ne!(d(&content, &["src"]), src);
        let mut mode = base.clone();
        mode.entries.get_mut("src/main.rs").unwrap().mode = 0o755;
        assert_ne!(d(&mode, &["src"]), src);
        let mut renamed = base.clone();
        let e = renamed.entries.remove("src/lib/x.rs").unwrap();
        renamed.entries.insert("src/lib/z.rs".into(), e);
        assert_ne!(d(&renamed, &["src"]), src);
        let mut added = base.clone();
        added.entries.insert("src/new".into(), file(""));
        assert_ne!(d(&added, &["src"]), src);
        let mut link = base.clone();
        link.entries.insert(
            "src/l".into(),
            Entry {
                kind: EntryKind::Symlink { target: "a".into() },
                mode: 0o777,
            },
        );
        let mut link2 = base.clone();
        link2.entries.insert(
            "src/l".into(),
            Entry {
                kind: EntryKind::Symlink { target: "b".into() },
                mode: 0o777,
            },
        );
        assert_ne!(d(&link, &["src"]), d(&link2, &["src"]));
    }

    #[test]
    fn walk_applies_dockerignore_and_ignores_times() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let w = |p: &str, c: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        };
        w("app/main.py", "print(1)");
        w("app/cache/x.pyc", "bytes");
        w("logs/a.log", "log");
        w("keep/secret", "s");
        w("keep/public", "p");
        w("deep/x/kept", "k");
        w(".git/HEAD", "ref");
        std::os::unix::fs::symlink("app/main.py", root.join("link")).unwrap();
        let ignore =
            Ignore::parse(".git\n**/cache\nlogs\nkeep\n!keep/public\ndeep\n!**/kept\n").unwrap();
        let c = Context::walk(root, &ignore).unwrap();
        let paths: Vec<&str> = c.entries().map(|(p, _)| p).collect();
        assert_eq!(paths, vec!["app", "app/main.py", "keep/public", "link"]);
        assert_eq!(
            c.get("link").unwrap().kind,
            EntryKind::Symlink {
                target: "app/main.py".into()
            }
        );
        let digest = c.digest(&[".".to_string()]).unwrap();

        // Touching a file (same content) changes nothing; editing does.
        let f = std::fs::File::options()
            .write(true)
            .open(root.join("app/main.py"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        drop(f);
        assert_eq!(
            Context::walk(root, &ignore)
                .unwrap()
                .digest(&[".".to_string()])
                .unwrap(),
            digest
        );
        w("logs/a.log", "ignored change");
        assert_eq!(
            Context::walk(root, &ignore)
                .unwrap()
                .digest(&[".".to_string()])
                .unwrap(),
            digest
        );
        w("app/main.py", "print(2)");
        assert_ne!(
            Context::walk(root, &ignore)
                .unwrap()
                .digest(&[".".to_string()])
                .unwrap(),
            digest
        );
    }

    /// Contexts built by Docker 28's CLI with the classic builder
    /// (`DOCKER_BUILDKIT=0`, `FROM scratch`, `COPY . /ctx/`) and listed from
    /// the image: (.dockerignore, files in the context, paths in the image;
    /// a trailing `/` is a directory, implied ones included).
    const SEEN_IN_DOCKER: &[(&str, &[&str], &[&str])] = &[
        (
            "dir\n!**/kept\nkeep\n!keep/public\n",
            &["dir/x/kept", "dir/y", "keep/public", "keep/secret", "other"],
            &["keep/", "keep/public", "other"],
        ),
        ("a\\*b\n", &["a*b", "axb", "a\\*b"], &["a\\*b", "axb"]),
        ("**b\n", &["xb", "a/xb", "b", "c"], &["a/", "c"]),
        ("#foo\n #bar\n", &["#foo", "#bar", "z"], &["#foo", "z"]),
        ("a/**\n", &["a/b/c", "a/d", "e"], &["a/", "e"]),
        (
            "*.md\n!README*.md\nREADME-secret.md\n",
            &["README.md", "README-secret.md", "notes.md"],
            &["README.md"],
        ),
        (
            "/foo/bar\nfoo/../x/foo\n",
            &["foo/bar", "bar", "x/foo", "foo/baz"],
            &["bar", "foo/", "foo/baz", "x/"],
        ),
        (
            "*/temp*\ntemp?\n",
            &[
                "somedir/temporary.txt",
                "temp",
                "a/b/temporary.txt",
                "tempa",
                "tempab",
            ],
            &[
                "a/",
                "a/b/",
                "a/b/temporary.txt",
                "somedir/",
                "temp",
                "tempab",
            ],
        ),
        ("[^a].txt\n", &["a.txt", "b.txt"], &["a.txt"]),
        (
            "**/cache\n",
            &["a/cache/x", "cache/y", "b/c/cache/z", "b/c/d"],
            &["a/", "b/", "b/c/", "b/c/d"],
        ),
        ("*\n! x\n", &["x", "y", "z/w"], &["x"]),
        (
            "d\n!d/e/f\n",
            &["d/e/f", "d/e/g", "d/h"],
            &["d/", "d/e/", "d/e/f"],
        ),
        ("*/\n", &["a/b", "c"], &[]),
        (
            "a?c\na*c\n",
            &["abc", "a/c", "ab/c"],
            &["a/", "a/c", "ab/", "ab/c"],
        ),
    ];

    #[test]
    fn walk_keeps_what_docker_keeps() {
        for (ignore, files, want) in SEEN_IN_DOCKER {
            let tmp = tempfile::tempdir().unwrap();
            for f in *files {
                let p = tmp.path().join(f);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, f).unwrap();
            }
            let c = Context::walk(tmp.path(), &Ignore::parse(ignore).unwrap()).unwrap();
            // What the image holds: the entries, and the directories their
            // extraction implies.
            let mut got = std::collections::BTreeSet::new();
            for (path, entry) in c.entries() {
                let mut parent = path;
                while let Some((p, _)) = parent.rsplit_once('/') {
                    got.insert(format!("{p}/"));
                    parent = p;
                }
                got.insert(match entry.kind {
                    EntryKind::Dir => format!("{path}/"),
                    _ => path.to_owned(),
                });
            }
            let want: std::collections::BTreeSet<String> =
                want.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, want, ".dockerignore {ignore:?} over {files:?}");
        }
    }

    /// A FIFO in the context (or a file swapped for one) must not hang
    /// the walk; special files are left out.
    #[test]
    fn a_fifo_in_the_context_is_left_out_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), "a").unwrap();
        let fifo = tmp.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let c = Context::walk(tmp.path(), &Ignore::default()).unwrap();
        assert_eq!(c.entries().map(|(p, _)| p).collect::<Vec<_>>(), vec!["a"]);
        // Opening it for hashing, as after a swap, is refused, not a hang.
        assert!(matches!(
            hash_file(&fifo),
            Err(ContextError::NotRegular { .. })
        ));
        // And a file swapped for a symlink is not followed.
        std::os::unix::fs::symlink("/etc/hostname", tmp.path().join("link")).unwrap();
        assert!(hash_file(&tmp.path().join("link")).is_err());
    }

    #[test]
    fn globs_like_go_filepath_match() {
        let g = |p: &str, n: &str| {
            glob(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert!(g("*.c", "x.c"));
        assert!(!g("*.c", "d/x.c"));
        assert!(g("a?c", "abc"));
        assert!(!g("a?c", "a/c"));
        assert!(g("[a-c]x", "bx"));
        assert!(!g("[^a-c]x", "bx"));
        assert!(!g("[a-c]x", "/x"));
        assert!(g("a\\*", "a*"));
        assert!(!g("a\\*", "ab"));
        assert!(!g("[", "["), "malformed matches nothing");
        assert!(!g(&"*a".repeat(30), &("a".repeat(100) + "b")));
    }
}
