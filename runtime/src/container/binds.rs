//! Bind sources that live next to the manifests, mounted by handle.
//!
//! A relative bind source (`./conf/nginx.conf`) was checked when the
//! manifests were loaded to stay inside the source's tree (`moor_spec`'s
//! `tree`), but an OCI runtime mounts a *path*, resolved again when it
//! mounts it: a symbolic link swapped in meanwhile (by a container writing
//! into a read-write bind of the tree, or a replaced checkout) would send
//! the mount anywhere on the host, `/etc` included. So the engine opens such
//! a source itself, beneath the tree's root, with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)`: the kernel refuses any `..` or link that leads
//! out at the moment of opening, and links inside are followed as the
//! loader followed them. The opened file or directory is then cloned as a
//! mount (`open_tree`) and attached at a staging path of the container
//! (`move_mount`), under its directory, which only root can reach; the
//! bundle binds that staging path, which nothing can swap. Once the
//! executor has created the container (its mounts are made in its own mount
//! namespace) the staging mounts are detached again ([`unstage`]); one that
//! a crash left behind is detached at the next start or at removal, and
//! removal never recurses into a mount.
//!
//! ```text
//! <state>/containers/NAME/binds/0, 1, …   (by the mount's index in the spec)
//! ```

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use moor_spec::{Mount, MountSource};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use super::error::{ContainerError, Result};
use super::rootfs;

/// The staging directory of the container whose directory is `dir`.
pub(crate) fn staging_dir(dir: &Path) -> PathBuf {
    dir.join("binds")
}

/// Opens every bind of `mounts` that records its tree beneath that tree and
/// attaches it at a staging path under `dir` (the container's directory);
/// returns, per mount, the staging path the bundle binds instead of the
/// source. What an earlier start left staged is detached first. On error
/// nothing stays staged.
pub(crate) fn stage(dir: &Path, mounts: &[Mount]) -> Result<Vec<Option<PathBuf>>> {
    unstage(dir)?;
    let mut staged = Vec::with_capacity(mounts.len());
    for (i, m) in mounts.iter().enumerate() {
        let MountSource::Bind {
            source,
            tree: Some(tree),
            ..
        } = &m.source
        else {
            staged.push(None);
            continue;
        };
        match stage_one(dir, i, source, tree, &m.target) {
            Ok(path) => staged.push(Some(path)),
            Err(e) => {
                let _ = unstage(dir);
                return Err(e);
            }
        }
    }
    Ok(staged)
}

fn stage_one(
    dir: &Path,
    index: usize,
    source: &Path,
    tree: &Path,
    target: &str,
) -> Result<PathBuf> {
    let handle = open_beneath(tree, source, target)?;
    let staging = staging_dir(dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&staging)
        .map_err(ContainerError::io("create directory", &staging))?;
    let at = staging.join(index.to_string());
    let kind = rustix::fs::fstat(&handle)
        .map(|st| FileType::from_raw_mode(st.st_mode))
        .map_err(|e| ContainerError::io("stat bind source", source)(e.into()))?;
    // A mount point of the same kind as what is mounted on it.
    if kind == FileType::Directory {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&at)
            .map_err(ContainerError::io("create directory", &at))?;
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&at)
            .map_err(ContainerError::io("create", &at))?;
    }
    // The opened file or directory (with what is mounted beneath it, as
    // `rbind` would take it), as a detached mount, attached at `at`.
    let tree_fd = rustix::mount::open_tree(
        &handle,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| {
        sys(
            format!("clone bind source {} as a mount", source.display()),
            e,
        )
    })?;
    rustix::mount::move_mount(
        &tree_fd,
        "",
        rustix::fs::CWD,
        &at,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| {
        sys(
            format!(
                "attach bind source {} at {}",
                source.display(),
                at.display()
            ),
            e,
        )
    })?;
    Ok(at)
}

/// Opens `source` (absolute, lexically beneath `tree`) by resolving what
/// lies beneath `tree` with `RESOLVE_BENEATH`: `..` above the tree, an
/// absolute link or a link leading out, and `/proc` magic links are refused
/// ([`ContainerError::BindEscapes`]). The tree's root itself is trusted, as
/// the loader trusts it (it may be a link, as a git source's `current` is).
pub(crate) fn open_beneath(tree: &Path, source: &Path, target: &str) -> Result<OwnedFd> {
    let rest = source.strip_prefix(tree).map_err(|_| {
        ContainerError::Invalid(format!(
            "bind source {} is not beneath its tree {}",
            source.display(),
            tree.display()
        ))
    })?;
    let rest = if rest.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rest
    };
    let root = rustix::fs::open(
        tree,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ContainerError::io("open the tree of a bind source", tree)(e.into()))?;
    // EAGAIN: a rename or mount elsewhere raced with a `..`; ask again.
    let mut tries = 0;
    loop {
        let opened = rustix::fs::openat2(
            root.as_fd(),
            rest,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        );
        match opened {
            Ok(fd) => return Ok(fd),
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            Err(Errno::NOENT) => {
                return Err(ContainerError::BindSourceMissing {
                    source_path: source.to_path_buf(),
                    target: target.to_string(),
                });
            }
            Err(Errno::XDEV | Errno::LOOP) => {
                return Err(ContainerError::BindEscapes {
                    source_path: source.to_path_buf(),
                    tree: tree.to_path_buf(),
                    target: target.to_string(),
                });
            }
            Err(e) => {
                return Err(sys(
                    format!(
                        "open bind source {} beneath {} (openat2, Linux 5.6 or later)",
                        source.display(),
                        tree.display()
                    ),
                    e,
                ));
            }
        }
    }
}

/// Detaches and removes every staging mount of the container whose
/// directory is `dir`. Never removes anything still mounted.
pub(crate) fn unstage(dir: &Path) -> Result<()> {
    let staging = staging_dir(dir);
    let entries = match fs::read_dir(&staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ContainerError::io("read directory", &staging)(e)),
    };
    for entry in entries {
        let path = entry
            .map_err(ContainerError::io("read directory", &staging))?
            .path();
        rootfs::unmount_all(&path)?;
        if rootfs::is_mount_point(&path) {
            return Err(ContainerError::Invalid(format!(
                "{} is still mounted",
                path.display()
            )));
        }
        // Either an empty directory or an empty file: neither removal
        // recurses.
        let removed = fs::remove_dir(&path).or_else(|_| fs::remove_file(&path));
        removed.map_err(ContainerError::io("remove", &path))?;
    }
    fs::remove_dir(&staging).map_err(ContainerError::io("remove", &staging))
}

fn sys(action: String, e: Errno) -> ContainerError {
    ContainerError::Sys {
        action,
        source: nix::Error::from_raw(e.raw_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Where `fd` leads, as the kernel names it.
    fn path_of(fd: &OwnedFd) -> PathBuf {
        use std::os::fd::AsRawFd;
        fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn opens_beneath_the_tree_following_links_inside_only() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("repo");
        fs::create_dir_all(tree.join("common/v1")).unwrap();
        fs::create_dir_all(tree.join("app")).unwrap();
        fs::write(tree.join("common/v1/site.conf"), "x").unwrap();
        fs::write(tmp.path().join("secret"), "s").unwrap();
        symlink("../common/v1", tree.join("app/conf")).unwrap();
        symlink("/etc", tree.join("app/etc")).unwrap();
        symlink("../../secret", tree.join("app/up")).unwrap();
        symlink("/proc/self/root/etc", tree.join("app/proc")).unwrap();
        let open = |rel: &str| open_beneath(&tree, &tree.join(rel), "/t");
        let real = fs::canonicalize(&tree).unwrap();
        assert_eq!(
            path_of(&open("app/conf/site.conf").unwrap()),
            real.join("common/v1/site.conf")
        );
        assert_eq!(path_of(&open("app/conf").unwrap()), real.join("common/v1"));
        assert_eq!(path_of(&open("").unwrap()), real);
        for escape in ["app/etc", "app/etc/passwd", "app/up", "app/proc"] {
            assert!(
                matches!(open(escape), Err(ContainerError::BindEscapes { .. })),
                "{escape}: {:?}",
                open(escape).map(|fd| path_of(&fd))
            );
        }
        assert!(matches!(
            open("app/missing"),
            Err(ContainerError::BindSourceMissing { .. })
        ));
        assert!(matches!(
            open_beneath(&tree, Path::new("/etc"), "/t"),
            Err(ContainerError::Invalid(_))
        ));
    }

    #[test]
    fn unstage_removes_empty_staging_paths_and_tolerates_none() {
        let tmp = tempfile::tempdir().unwrap();
        unstage(tmp.path()).unwrap();
        let staging = staging_dir(tmp.path());
        fs::create_dir_all(staging.join("0")).unwrap();
        fs::write(staging.join("1"), "").unwrap();
        unstage(tmp.path()).unwrap();
        assert!(!staging.exists());
    }
}
