//! Named volumes: directories under `<state>/volumes/NAME/data`.
//!
//! As in Docker, a named volume that is empty when a container first mounts
//! it is filled with what the image holds at the mount point — files,
//! directories, symlinks and hard links, with their owners, modes, times
//! and extended attributes — so that images that ship data or a pre-owned
//! data directory work unchanged; an empty directory in the image gives the
//! volume its owner and mode. That happens once: a marker beside the data
//! (`filled`) records that the volume was filled, or found holding data, so
//! a volume its user emptied later is not filled again, and a volume that
//! holds anything is never written to. A volume is never deleted because a
//! container went away.
//!
//! ```text
//! <state>/volumes/NAME/data        the volume, bind-mounted into containers
//! <state>/volumes/NAME/filled      it was filled, or found in use: never fill again
//! <state>/volumes/NAME/fill/       a fill being prepared (a copy of the image's content)
//! <state>/volumes/NAME/fill.ready  that copy is complete; its entries are being moved in
//! <state>/volumes/NAME/lock        serialises fills of one volume (flock)
//! ```
//!
//! A fill copies into `fill/` first, then renames each entry into `data/`,
//! so a crash leaves either a copy to start again (no `fill.ready`) or one
//! to finish moving in — never a half-copied file in the volume.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{OFlags, Timespec, Timestamps};

use super::error::{ContainerError, Result};
use super::tree::{self, DirSink, Owners, WalkOptions};

/// The directory of every volume: `<state>/volumes`.
pub fn volumes_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("volumes")
}

/// The data directory of volume `name`.
pub fn data_dir(state_dir: &Path, name: &str) -> PathBuf {
    volumes_dir(state_dir).join(name).join("data")
}

/// Creates volume `name` if it does not exist and returns its data dir.
/// When `fill_from` names a root filesystem and a (resolved) container
/// path, and the volume has never been filled and is empty, what the root
/// filesystem holds there is copied in first (see the module's doc).
pub fn ensure(state_dir: &Path, name: &str, fill_from: Option<(&Path, &str)>) -> Result<PathBuf> {
    moor_spec::check_name(name)
        .map_err(|e| ContainerError::Invalid(format!("volume name: {e}")))?;
    let data = data_dir(state_dir, name);
    if !data.is_dir() {
        create(state_dir, name)?;
    }
    if let Some((root, path)) = fill_from {
        fill(&volumes_dir(state_dir).join(name), root, path)?;
    }
    Ok(data)
}

/// Makes the volume's directory and its empty data dir, all at once.
fn create(state_dir: &Path, name: &str) -> Result<()> {
    let dir = volumes_dir(state_dir).join(name);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(volumes_dir(state_dir))
        .map_err(ContainerError::io(
            "create directory",
            volumes_dir(state_dir),
        ))?;
    // Built beside, then renamed: a crash never leaves a volume without
    // its data dir. The name is this call's own: two threads making one
    // volume never share it (one of them wins the rename).
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.with_extension(format!("creating-{}-{seq}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let tmp_data = tmp.join("data");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&tmp_data)
        .map_err(ContainerError::io("create directory", &tmp_data))?;
    match fs::rename(&tmp, &dir) {
        Ok(()) => Ok(()),
        // Made meanwhile by another thread or process.
        Err(_) if dir.join("data").is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(ContainerError::io("rename into place", &dir)(e)),
    }
}

/// Fills the volume in `dir` from `path` in the root filesystem `root`,
/// if it was never filled and is empty (see the module's doc).
fn fill(dir: &Path, root: &Path, path: &str) -> Result<()> {
    let filled = dir.join("filled");
    if filled.exists() {
        return Ok(());
    }
    let lock_path = dir.join("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(ContainerError::io("open", &lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| ContainerError::io("lock", &lock_path)(e.into()))?;
    if filled.exists() {
        return Ok(());
    }
    let data = dir.join("data");
    let staging = dir.join("fill");
    let ready = dir.join("fill.ready");
    if !ready.exists() {
        if !is_empty(&data)? {
            // In use already: its data is never overwritten, now or later.
            return mark(&filled);
        }
        let _ = fs::remove_dir_all(&staging);
        let root_fd = tree::open_dir(root).map_err(ContainerError::io("open", root))?;
        let src = match tree::open_in_root(root_fd.as_fd(), path, OFlags::PATH | OFlags::DIRECTORY)
        {
            Ok(fd) => fd,
            // Nothing (or no directory) there in the image: nothing to fill.
            Err(_) => return Ok(()),
        };
        let mut sink = DirSink::new(
            tree::open_dir(dir).map_err(ContainerError::io("open", dir))?,
            Owners::Keep,
        )
        .with_xattrs(true);
        tree::walk(
            &src,
            vec!["fill".into()],
            &mut sink,
            WalkOptions { xattrs: true },
        )?;
        if is_empty(&staging)? {
            // An empty directory in the image: the volume takes its owner
            // and mode (as in Docker), and may still be filled later.
            copy_attrs(&staging, &data)?;
            let _ = fs::remove_dir_all(&staging);
            return Ok(());
        }
        mark(&ready)?;
    }
    // Move the copy in, entry by entry. On a resumed fill, what is there
    // already was moved before the crash; an entry that a container sharing
    // the volume made meanwhile wins over the image's.
    for entry in fs::read_dir(&staging).map_err(ContainerError::io("read directory", &staging))? {
        let entry = entry.map_err(ContainerError::io("read directory", &staging))?;
        let to = data.join(entry.file_name());
        if fs::rename(entry.path(), &to).is_err() {
            let _ = remove_any(&entry.path());
        }
    }
    copy_attrs(&staging, &data)?;
    mark(&filled)?;
    let _ = fs::remove_dir_all(&staging);
    let _ = fs::remove_file(&ready);
    Ok(())
}

fn is_empty(dir: &Path) -> Result<bool> {
    Ok(fs::read_dir(dir)
        .map_err(ContainerError::io("read directory", dir))?
        .next()
        .is_none())
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    }
}

/// Writes marker file `path` durably.
fn mark(path: &Path) -> Result<()> {
    super::state::write_atomic(path, b"")
}

/// Gives directory `to` the owner, mode, extended attributes and times of
/// directory `from`.
fn copy_attrs(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(from).map_err(ContainerError::io("stat", from))?;
    let dir = File::open(to).map_err(ContainerError::io("open", to))?;
    let sys =
        |what: &'static str| move |e: rustix::io::Errno| ContainerError::io(what, to)(e.into());
    rustix::fs::fchown(
        &dir,
        Some(rustix::fs::Uid::from_raw(meta.uid())),
        Some(rustix::fs::Gid::from_raw(meta.gid())),
    )
    .map_err(sys("chown"))?;
    rustix::fs::fchmod(&dir, rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777))
        .map_err(sys("chmod"))?;
    let src = File::open(from).map_err(ContainerError::io("open", from))?;
    let mut names = vec![0u8; rustix::fs::flistxattr_query(&src).unwrap_or(0)];
    if let Ok(len) = rustix::fs::flistxattr(&src, &mut names[..]) {
        for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let Ok(name) = std::ffi::CString::new(name) else {
                continue;
            };
            let size = rustix::fs::fgetxattr_query(&src, name.as_c_str()).unwrap_or(0);
            let mut value = vec![0u8; size];
            if let Ok(n) = rustix::fs::fgetxattr(&src, name.as_c_str(), &mut value[..]) {
                let _ = rustix::fs::fsetxattr(
                    &dir,
                    name.as_c_str(),
                    &value[..n],
                    rustix::fs::XattrFlags::empty(),
                );
            }
        }
    }
    let t = Timespec {
        tv_sec: meta.mtime(),
        tv_nsec: meta.mtime_nsec() as _,
    };
    rustix::fs::futimens(
        &dir,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
    )
    .map_err(sys("set times of"))
}

/// Every volume's name.
pub fn list(state_dir: &Path) -> Result<Vec<String>> {
    let dir = volumes_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ContainerError::io("read directory", &dir)(e)),
    };
    // A volume's name is a valid name: `NAME.creating-…` (what a crash
    // during a creation leaves) is none.
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("data").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| moor_spec::check_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Deletes volume `name` and its data.
pub fn remove(state_dir: &Path, name: &str) -> Result<()> {
    moor_spec::check_name(name)
        .map_err(|e| ContainerError::Invalid(format!("volume name: {e}")))?;
    let dir = volumes_dir(state_dir).join(name);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ContainerError::io("remove", &dir)(e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A root filesystem whose /srv/data holds a file and a directory
    /// owned by 33:33 with restrictive modes.
    fn image() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("srv/data");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("sub/seed"), "seed").unwrap();
        std::os::unix::fs::symlink("sub/seed", d.join("link")).unwrap();
        for (p, mode) in [("sub/seed", 0o640), ("sub", 0o750), ("", 0o700)] {
            let p = d.join(p);
            std::os::unix::fs::lchown(&p, Some(33), Some(33)).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        root
    }

    fn owner_mode(p: &Path) -> (u32, u32, u32) {
        let m = fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    }

    #[test]
    fn a_precreated_empty_volume_is_filled_on_first_mount_once() {
        let state = tempfile::tempdir().unwrap();
        let root = image();
        // Declared volumes are made empty before any container mounts them.
        let data = ensure(state.path(), "db", None).unwrap();
        assert!(is_empty(&data).unwrap());
        ensure(state.path(), "db", Some((root.path(), "/srv/data"))).unwrap();
        assert_eq!(fs::read_to_string(data.join("sub/seed")).unwrap(), "seed");
        assert_eq!(owner_mode(&data), (33, 33, 0o700));
        assert_eq!(owner_mode(&data.join("sub")), (33, 33, 0o750));
        assert_eq!(owner_mode(&data.join("sub/seed")), (33, 33, 0o640));
        assert_eq!(
            fs::read_link(data.join("link")).unwrap(),
            Path::new("sub/seed")
        );
        let dir = volumes_dir(state.path()).join("db");
        assert!(dir.join("filled").exists());
        assert!(!dir.join("fill").exists() && !dir.join("fill.ready").exists());
        // Emptied by its user: not filled again.
        fs::remove_dir_all(data.join("sub")).unwrap();
        fs::remove_file(data.join("link")).unwrap();
        ensure(state.path(), "db", Some((root.path(), "/srv/data"))).unwrap();
        assert!(is_empty(&data).unwrap());
    }

    #[test]
    fn a_volume_holding_data_is_never_written() {
        let state = tempfile::tempdir().unwrap();
        let root = image();
        let data = ensure(state.path(), "db", None).unwrap();
        fs::write(data.join("mine"), "x").unwrap();
        ensure(state.path(), "db", Some((root.path(), "/srv/data"))).unwrap();
        assert_eq!(
            fs::read_dir(&data).unwrap().count(),
            1,
            "only the user's file"
        );
        assert_eq!(owner_mode(&data).0, 0, "its owner is kept");
        // And stays so after it is emptied.
        fs::remove_file(data.join("mine")).unwrap();
        ensure(state.path(), "db", Some((root.path(), "/srv/data"))).unwrap();
        assert!(is_empty(&data).unwrap());
    }

    #[test]
    fn an_empty_image_dir_gives_owner_and_mode_and_a_later_image_may_fill() {
        let state = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let d = empty.path().join("var/lib/pg");
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(70), Some(70)).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        let data = ensure(state.path(), "pg", Some((empty.path(), "/var/lib/pg"))).unwrap();
        assert_eq!(owner_mode(&data), (70, 70, 0o700));
        assert!(is_empty(&data).unwrap());
        // Nothing there at all: nothing happens.
        ensure(state.path(), "pg", Some((empty.path(), "/nowhere"))).unwrap();
        let root = image();
        ensure(state.path(), "pg", Some((root.path(), "/srv/data"))).unwrap();
        assert!(data.join("sub/seed").exists());
    }

    #[test]
    fn an_interrupted_fill_is_finished() {
        let state = tempfile::tempdir().unwrap();
        let root = image();
        let data = ensure(state.path(), "db", None).unwrap();
        let dir = volumes_dir(state.path()).join("db");
        // A crash after the copy and one move: `fill.ready`, `link` moved.
        let staging = dir.join("fill");
        fs::create_dir_all(staging.join("sub")).unwrap();
        fs::write(staging.join("sub/seed"), "seed").unwrap();
        fs::write(data.join("link"), "moved before the crash").unwrap();
        mark(&dir.join("fill.ready")).unwrap();
        ensure(state.path(), "db", Some((root.path(), "/srv/data"))).unwrap();
        assert_eq!(fs::read_to_string(data.join("sub/seed")).unwrap(), "seed");
        assert!(dir.join("filled").exists() && !staging.exists());
        // A crash during the copy (no `fill.ready`): copied again from scratch.
        let data = ensure(state.path(), "db2", None).unwrap();
        let dir = volumes_dir(state.path()).join("db2");
        fs::create_dir_all(dir.join("fill/half")).unwrap();
        ensure(state.path(), "db2", Some((root.path(), "/srv/data"))).unwrap();
        assert!(!data.join("half").exists());
        assert!(data.join("sub/seed").exists());
    }

    #[test]
    fn the_image_path_is_resolved_inside_the_image() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("srv")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("srv/data")).unwrap();
        let data = ensure(state.path(), "v", Some((root.path(), "/srv/data"))).unwrap();
        assert!(is_empty(&data).unwrap(), "the host's /etc was not copied");
        std::os::unix::fs::symlink("../../../../..", root.path().join("srv/up")).unwrap();
        // Clamped at the image's root: the image's root is what is copied.
        ensure(state.path(), "v", Some((root.path(), "/srv/up"))).unwrap();
        assert!(data.join("srv/data").is_symlink());
        assert!(!data.join("etc").exists());
    }

    #[test]
    fn created_once_filled_from_image_and_kept() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("srv/www/sub")).unwrap();
        fs::write(root.path().join("srv/www/sub/index.html"), "hi").unwrap();
        fs::set_permissions(
            root.path().join("srv/www"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        let data = ensure(state.path(), "site", Some((root.path(), "/srv/www"))).unwrap();
        assert_eq!(
            fs::read_to_string(data.join("sub/index.html")).unwrap(),
            "hi"
        );
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o750
        );
        fs::write(data.join("mine"), "x").unwrap();
        // Second use: not refilled, not emptied.
        let again = ensure(state.path(), "site", Some((root.path(), "/srv/www"))).unwrap();
        assert!(again.join("mine").exists());
        // What a crash during a creation left is no volume.
        fs::create_dir_all(volumes_dir(state.path()).join("site.creating-1-0/data")).unwrap();
        assert_eq!(list(state.path()).unwrap(), vec!["site".to_string()]);
        remove(state.path(), "site").unwrap();
        assert!(list(state.path()).unwrap().is_empty());
        assert!(ensure(state.path(), "../x", None).is_err());
    }
}
