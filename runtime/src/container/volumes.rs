//! Named volumes: directories under `<state>/volumes/NAME/data`.
//!
//! As in Docker, a volume created for a container is first filled with what
//! the image holds at the mount point (files, owners, modes), so images that
//! ship data or a pre-owned data directory work unchanged. A volume is never
//! deleted because a container went away.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::{ContainerError, Result};
use super::rootfs::host_path_in_root;

/// The directory of every volume: `<state>/volumes`.
pub fn volumes_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("volumes")
}

/// The data directory of volume `name`.
pub fn data_dir(state_dir: &Path, name: &str) -> PathBuf {
    volumes_dir(state_dir).join(name).join("data")
}

/// Creates volume `name` if it does not exist and returns its data dir.
/// When it is created here and `fill_from` names a root filesystem and a
/// (resolved) container path that holds something, that content is copied
/// in first.
pub fn ensure(state_dir: &Path, name: &str, fill_from: Option<(&Path, &str)>) -> Result<PathBuf> {
    moor_spec::check_name(name)
        .map_err(|e| ContainerError::Invalid(format!("volume name: {e}")))?;
    let data = data_dir(state_dir, name);
    if data.is_dir() {
        return Ok(data);
    }
    let dir = volumes_dir(state_dir).join(name);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(volumes_dir(state_dir))
        .map_err(ContainerError::io(
            "create directory",
            volumes_dir(state_dir),
        ))?;
    // Built beside, then renamed: a crash never leaves a half-filled volume.
    let tmp = dir.with_extension("creating");
    let _ = fs::remove_dir_all(&tmp);
    let tmp_data = tmp.join("data");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&tmp_data)
        .map_err(ContainerError::io("create directory", &tmp_data))?;
    if let Some((root, path)) = fill_from {
        let src = host_path_in_root(root, path)?;
        if src.is_dir() {
            copy_tree(&src, &tmp_data)?;
        }
    }
    fs::rename(&tmp, &dir).map_err(ContainerError::io("rename into place", &dir))?;
    Ok(data)
}

/// Every volume's name.
pub fn list(state_dir: &Path) -> Result<Vec<String>> {
    let dir = volumes_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ContainerError::io("read directory", &dir)(e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("data").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
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

/// Copies the tree under `src` into the existing dir `dst`, keeping modes,
/// owners and symlinks (never following them).
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src).map_err(ContainerError::io("stat", src))?;
    copy_attrs(&meta, dst)?;
    for entry in fs::read_dir(src).map_err(ContainerError::io("read directory", src))? {
        let entry = entry.map_err(ContainerError::io("read directory", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(ContainerError::io("stat", &from))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(ContainerError::io("read symlink", &from))?;
            std::os::unix::fs::symlink(&target, &to)
                .map_err(ContainerError::io("create symlink", &to))?;
            let _ = std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()));
        } else if ft.is_dir() {
            fs::create_dir(&to).map_err(ContainerError::io("create directory", &to))?;
            copy_tree(&from, &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(ContainerError::io("copy", &from))?;
            copy_attrs(&meta, &to)?;
        }
        // Device nodes, fifos and sockets are not copied into volumes.
    }
    Ok(())
}

fn copy_attrs(meta: &fs::Metadata, to: &Path) -> Result<()> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(ContainerError::io("chown", to))?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(ContainerError::io("chmod", to))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(list(state.path()).unwrap(), vec!["site".to_string()]);
        remove(state.path(), "site").unwrap();
        assert!(list(state.path()).unwrap().is_empty());
        assert!(ensure(state.path(), "../x", None).is_err());
    }
}
