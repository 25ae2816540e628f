//! A source's tree: the directory manifests are loaded from, which relative
//! paths in them (bind sources, `env_file`s) and the manifest walk itself
//! must not leave.
//!
//! A path is resolved the way the kernel would resolve it for a mount with
//! `openat2(RESOLVE_BENEATH)`: component by component from the tree's root,
//! following symbolic links, and refused when a `..` climbs above the root,
//! when a link's target is absolute, or when a link leads above the root.
//! The root itself is trusted (it is what the operator named, and may be a
//! link, as a git source's `current` is).
//!
//! This is a load-time check: it tells the author what is wrong, at the
//! field that says it. The runtime still has to open the source race-free
//! when it mounts it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Symbolic links followed in one resolution at most (Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// The tree relative paths must stay in.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The root as given, without `.` and `..` (lexically).
    root: PathBuf,
    /// The root with every link resolved, when it exists.
    real: Option<PathBuf>,
}

/// Why a path is refused: it leads outside the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Escape {
    /// A `..` climbs above the root.
    DotDot {
        /// The tree's root, as given.
        root: PathBuf,
    },
    /// A symbolic link leads outside: its target is absolute, or climbs
    /// above the root.
    Link {
        /// The tree's root, as given.
        root: PathBuf,
        /// The link, relative to the root.
        link: PathBuf,
        /// What the link says.
        target: PathBuf,
    },
    /// More than 40 links were followed (a loop).
    Loop {
        /// The tree's root, as given.
        root: PathBuf,
    },
}

impl fmt::Display for Escape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Escape::DotDot { root } => {
                write!(f, "`..` leads outside the source's tree ({})", shown(root))
            }
            Escape::Link { root, link, target } => {
                write!(
                    f,
                    "\"{}\" is a symbolic link to \"{}\", which leads outside the source's tree ({})",
                    link.display(),
                    target.display(),
                    shown(root)
                )?;
                if target.is_absolute() {
                    write!(f, "; a link to an absolute path is never followed")?;
                }
                Ok(())
            }
            Escape::Loop { root } => write!(
                f,
                "more than {MAX_LINKS} symbolic links (a loop) inside the source's tree ({})",
                shown(root)
            ),
        }
    }
}

fn shown(root: &Path) -> String {
    if root.as_os_str().is_empty() {
        ".".into()
    } else {
        root.display().to_string()
    }
}

/// `path` without `.` components, and with each `..` removing the component
/// before it (lexically, without looking at the file system). A `..` at the
/// start of a relative path is kept; one at `/` is dropped, as the kernel does.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                Some(Component::ParentDir) | None => out.push(".."),
                Some(Component::CurDir) => unreachable!("never pushed"),
            },
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Tree {
    /// The tree rooted at `root` (a directory; its own links are followed).
    pub fn new(root: &Path) -> Self {
        let root = normalize(root);
        let on_disk = if root.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &root
        };
        let real = std::fs::canonicalize(on_disk).ok();
        Self { root, real }
    }

    /// The root as given (lexically normalised).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root with every link resolved, when it exists.
    pub fn real_root(&self) -> Option<&Path> {
        self.real.as_deref()
    }

    /// Resolves `path` — the root joined with a relative path, e.g. a
    /// manifest's directory joined with a bind source, lexically normalised
    /// as [`normalize`] does — inside the tree, following links as the
    /// kernel would. Returns the real path it names (which need not exist),
    /// or why it leads outside.
    ///
    /// When the root does not exist (manifests given as text), only `..` is
    /// checked, and the path is returned as it is.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, Escape> {
        let path = normalize(path);
        let rest = path.strip_prefix(&self.root).map_err(|_| Escape::DotDot {
            root: self.root.clone(),
        })?;
        let Some(real) = &self.real else {
            return Ok(path.clone());
        };
        // Each component to visit, and the link (by index) it came from.
        let mut todo: VecDeque<(OsString, Option<usize>)> = VecDeque::new();
        push_front(&mut todo, rest, None);
        let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut at: Vec<OsString> = Vec::new();
        while let Some((name, from)) = todo.pop_front() {
            if name == ".." {
                if at.pop().is_none() {
                    return Err(match from {
                        Some(i) => self.link_escape(&links[i]),
                        None => Escape::DotDot {
                            root: self.root.clone(),
                        },
                    });
                }
                continue;
            }
            let mut candidate = real.clone();
            candidate.extend(&at);
            candidate.push(&name);
            match std::fs::read_link(&candidate) {
                Ok(target) => {
                    let link: PathBuf = at.iter().chain([&name]).collect();
                    if target.is_absolute() {
                        return Err(self.link_escape(&(link, target)));
                    }
                    if links.len() >= MAX_LINKS {
                        return Err(Escape::Loop {
                            root: self.root.clone(),
                        });
                    }
                    links.push((link, target.clone()));
                    push_front(&mut todo, &target, Some(links.len() - 1));
                }
                // Not a link, or not there (the caller says what is missing).
                Err(_) => at.push(name),
            }
        }
        let mut out = real.clone();
        out.extend(&at);
        Ok(out)
    }

    fn link_escape(&self, (link, target): &(PathBuf, PathBuf)) -> Escape {
        Escape::Link {
            root: self.root.clone(),
            link: link.clone(),
            target: target.clone(),
        }
    }
}

/// Puts the components of `path` (relative) at the front of `todo`, in order.
fn push_front(todo: &mut VecDeque<(OsString, Option<usize>)>, path: &Path, from: Option<usize>) {
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    for p in parts.into_iter().rev() {
        todo.push_front((p, from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn normalises_lexically() {
        let n = |p: &str| normalize(Path::new(p));
        assert_eq!(n("/repo/app/./conf/../x"), PathBuf::from("/repo/app/x"));
        assert_eq!(n("/.."), PathBuf::from("/"));
        assert_eq!(n("../m/./a/.."), PathBuf::from("../m"));
        assert_eq!(n("a/../../b"), PathBuf::from("../b"));
        assert_eq!(n("."), PathBuf::new());
    }

    #[test]
    fn links_and_dot_dot_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        std::fs::create_dir_all(root.join("app/conf")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        symlink("conf", root.join("app/alias")).unwrap();
        symlink("../app/conf", root.join("app/up-and-back")).unwrap();
        symlink("../..", root.join("app/up")).unwrap();
        symlink("/etc", root.join("app/etc")).unwrap();
        symlink(root.join("app/conf"), root.join("app/absolute-inside")).unwrap();
        symlink("loop-b", root.join("loop-a")).unwrap();
        symlink("loop-a", root.join("loop-b")).unwrap();
        let tree = Tree::new(&root);
        let real = std::fs::canonicalize(&root).unwrap();
        let r = |p: &str| tree.resolve(&root.join(p));

        assert_eq!(r("app/alias/x.conf"), Ok(real.join("app/conf/x.conf")));
        assert_eq!(r("app/up-and-back"), Ok(real.join("app/conf")));
        assert_eq!(r("app/missing/file"), Ok(real.join("app/missing/file")));
        assert_eq!(
            r("app/up/outside"),
            Err(Escape::Link {
                root: root.clone(),
                link: "app/up".into(),
                target: "../..".into()
            })
        );
        let e = r("app/etc/passwd").unwrap_err();
        assert!(matches!(&e, Escape::Link { target, .. } if target == Path::new("/etc")));
        assert!(e.to_string().contains("never followed"), "{e}");
        assert!(matches!(r("app/absolute-inside"), Err(Escape::Link { .. })));
        assert!(matches!(r("loop-a"), Err(Escape::Loop { .. })));
        assert_eq!(
            tree.resolve(&normalize(&root.join("app/../../outside"))),
            Err(Escape::DotDot { root: root.clone() })
        );
    }

    #[test]
    fn a_root_that_is_a_link_is_followed() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("trees/abc/conf")).unwrap();
        symlink("trees/abc", tmp.path().join("current")).unwrap();
        let tree = Tree::new(&tmp.path().join("current"));
        let real = std::fs::canonicalize(tmp.path().join("trees/abc")).unwrap();
        assert_eq!(
            tree.resolve(&tmp.path().join("current/conf")),
            Ok(real.join("conf"))
        );
    }

    #[test]
    fn without_a_root_on_disk_only_dot_dot_is_checked() {
        let tree = Tree::new(Path::new("/no/such/m"));
        assert_eq!(
            tree.resolve(Path::new("/no/such/m/conf/x")),
            Ok(PathBuf::from("/no/such/m/conf/x"))
        );
        assert!(tree.resolve(Path::new("/no/such/x")).is_err());
    }
}
