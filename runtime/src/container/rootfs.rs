//! The root filesystem: an overlay of the image's layers and the
//! container's own upper dir, and paths resolved *inside* it.
//!
//! A path in the container (a mount destination, `/etc/passwd`, the working
//! dir) is resolved component by component, with every symlink read from the
//! image and interpreted as the container would see it: an absolute target
//! restarts at the container's root, `..` never climbs above it. So a
//! symlink `/data -> /` or `/x -> ../../..` in an image cannot send a mount
//! or a read onto the host.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::error::{ContainerError, Result};

/// How many symlinks a resolution follows before giving up (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (absolute, in the container) against the root filesystem
/// at `root`, following symlinks inside it. Returns the container path with
/// no symlinks left in its existing part; components that do not exist yet
/// are kept as written.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: Vec<OsString> = components(Path::new(path));
    pending.reverse();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(part);
        let host = host_path(root, &resolved);
        let Ok(meta) = fs::symlink_metadata(&host) else {
            continue;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(ContainerError::Invalid(format!(
                "too many symlinks resolving {path} in the image"
            )));
        }
        let target = fs::read_link(&host).map_err(ContainerError::io("read symlink", &host))?;
        resolved.pop();
        if target.is_absolute() {
            resolved.clear();
        }
        let mut more = components(&target);
        more.reverse();
        pending.extend(more);
    }
    let mut out = PathBuf::from("/");
    out.extend(resolved);
    Ok(out)
}

/// `root` joined with a resolved container path.
pub fn host_path(root: &Path, resolved: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(resolved);
    p
}

/// `root` joined with the container path `path` resolved inside it.
pub fn host_path_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let inner = resolve_in_root(root, path)?;
    Ok(root.join(inner.strip_prefix("/").unwrap_or(&inner)))
}

fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Creates the directory `path` (in the container) and its parents inside
/// the root filesystem, resolving symlinks inside it; returns its host path.
pub fn mkdir_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let host = host_path_in_root(root, path)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&host)
        .map_err(ContainerError::io("create directory", &host))?;
    Ok(host)
}

/// Mounts the overlay of `lowers` (bottom first) with `upper` and `work`
/// on `target`. A single lower and no layers at all are both fine.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    if lowers.is_empty() {
        return Err(ContainerError::Invalid(
            "a root filesystem needs at least one layer".into(),
        ));
    }
    let fresh_upper = !upper.exists();
    for dir in [upper, work, target] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(ContainerError::io("create directory", dir))?;
    }
    if fresh_upper {
        // The container's `/` is the upper dir's root: 0755 as in Docker,
        // whatever this process's umask made it (0700 under `umask 077`,
        // which would lock every non-root process out of the container).
        fs::set_permissions(upper, fs::Permissions::from_mode(0o755))
            .map_err(ContainerError::io("chmod", upper))?;
    }
    // overlayfs lists the top layer first.
    let lower: Vec<String> = lowers.iter().rev().map(|p| escape(p)).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape(upper),
        escape(work)
    );
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(ContainerError::sys(format!(
        "mount the overlay root filesystem on {}",
        target.display()
    )))
}

/// Escapes the characters overlayfs options treat specially.
fn escape(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// True when something is mounted exactly at `path`.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Unmounts everything mounted at `path` (lazily, so a straggling process
/// cannot keep it busy); a path with nothing mounted is fine.
pub fn unmount_all(path: &Path) -> Result<()> {
    while is_mount_point(path) {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => break,
            Err(e) => {
                return Err(ContainerError::Sys {
                    action: format!("unmount {}", path.display()),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real/etc")).unwrap();
        symlink("/", root.join("toroot")).unwrap();
        symlink("../../../..", root.join("up")).unwrap();
        symlink("real", root.join("rel")).unwrap();
        symlink("/real/etc", root.join("abs")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let r = |p| resolve_in_root(root, p).unwrap();
        assert_eq!(r("/toroot"), PathBuf::from("/"));
        assert_eq!(r("/toroot/etc/passwd"), PathBuf::from("/etc/passwd"));
        assert_eq!(r("/up/etc"), PathBuf::from("/etc"));
        assert_eq!(r("/../../etc"), PathBuf::from("/etc"));
        assert_eq!(r("/rel/etc/x"), PathBuf::from("/real/etc/x"));
        assert_eq!(r("/abs/../etc"), PathBuf::from("/real/etc"));
        assert_eq!(r("/missing/a/b"), PathBuf::from("/missing/a/b"));
        assert!(resolve_in_root(root, "/loop1").is_err());
        assert_eq!(
            host_path_in_root(root, "/toroot/tmp").unwrap(),
            root.join("tmp")
        );
    }

    #[test]
    fn mkdir_follows_links_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        symlink("/", root.join("toroot")).unwrap();
        let made = mkdir_in_root(root, "/toroot/data/x").unwrap();
        assert_eq!(made, root.join("data/x"));
        assert!(made.is_dir());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn overlay_options_escape_separators() {
        assert_eq!(escape(Path::new("/a:b,c")), "/a\\:b\\,c");
    }
}
