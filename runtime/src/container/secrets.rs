//! A container's secrets: a tmpfs of its own at `<state>/secrets/NAME`
//! (mode 0700, never on disk), one file per `secrets` entry owned by the
//! container's user (or the entry's `uid`/`gid`) with the entry's mode,
//! each bound read-only at its target (`/run/secrets/NAME`). The tmpfs is
//! made when the container is created and unmounted when it is removed.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use moor_spec::{ContainerSpec, Mount, MountSource};
use nix::mount::MsFlags;

use super::error::{ContainerError, Result};
use super::{rootfs, users};

/// Where the secrets of container `name` are mounted on the host.
pub fn dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("secrets").join(name)
}

/// Unmounts and deletes the secrets of container `name`, if it has any.
pub fn remove(state_dir: &Path, name: &str) -> Result<()> {
    let dir = dir(state_dir, name);
    rootfs::unmount_all(&dir)?;
    if rootfs::is_mount_point(&dir) {
        // Never delete inside a mount that stayed.
        return Err(ContainerError::Invalid(format!(
            "{} is still mounted",
            dir.display()
        )));
    }
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ContainerError::io("remove", &dir)(e))
        }
        _ => Ok(()),
    }
}

/// The owner of a secret file when its entry names none: the container's
/// user, numeric or resolved in the image's `/etc/passwd` (`lowers`: the
/// image's layers, bottom first).
fn default_owner(spec: &ContainerSpec, lowers: &[PathBuf]) -> Result<(u32, u32)> {
    let user = spec.user.as_deref().unwrap_or("");
    let numeric = |s: &str| s.parse::<u32>().ok();
    match user.split_once(':') {
        None if user.is_empty() => return Ok((0, 0)),
        Some((u, g)) => {
            if let (Some(u), Some(g)) = (numeric(u), numeric(g)) {
                return Ok((u, g));
            }
        }
        None => {}
    }
    // The top layer that has an /etc/passwd (whiteouts aside) is the image's.
    let root = lowers
        .iter()
        .rev()
        .find(|l| l.join("etc/passwd").symlink_metadata().is_ok())
        .cloned()
        .unwrap_or_default();
    let id = users::resolve(&root, Some(user))?;
    Ok((id.uid, id.gid))
}

/// Mounts the tmpfs of container `name`, writes its secrets into it and
/// returns the read-only binds of each at its target. A spec without
/// secrets gets nothing (and a leftover tmpfs is removed).
pub fn prepare(
    state_dir: &Path,
    name: &str,
    spec: &ContainerSpec,
    lowers: &[PathBuf],
) -> Result<Vec<Mount>> {
    remove(state_dir, name)?;
    if spec.secrets.is_empty() {
        return Ok(Vec::new());
    }
    let dir = dir(state_dir, name);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(ContainerError::io("create directory", &dir))?;
    let size: usize = spec
        .secrets
        .iter()
        .map(|s| s.value.expose().map_or(0, <[u8]>::len) + 4096)
        .sum();
    let data = format!(
        "mode=0700,size={},nr_inodes={}",
        size + 4096,
        spec.secrets.len() + 8
    );
    nix::mount::mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(ContainerError::sys(format!(
        "mount the secrets tmpfs on {}",
        dir.display()
    )))?;
    let result = write_all(&dir, spec, lowers);
    if result.is_err() {
        let _ = remove(state_dir, name);
    }
    result
}

fn write_all(dir: &Path, spec: &ContainerSpec, lowers: &[PathBuf]) -> Result<Vec<Mount>> {
    let mut owner = None;
    let mut mounts = Vec::with_capacity(spec.secrets.len());
    for (i, s) in spec.secrets.iter().enumerate() {
        let Some(value) = s.value.expose() else {
            // A spec read back from disk: the value was never stored.
            return Err(ContainerError::Invalid(format!(
                "secret {} has no value in memory: the manifests must be loaded again",
                s.source
            )));
        };
        let (uid, gid) = match (s.uid, s.gid) {
            (Some(u), Some(g)) => (u, g),
            (u, g) => {
                let (du, dg) = match owner {
                    Some(o) => o,
                    None => *owner.insert(default_owner(spec, lowers)?),
                };
                (u.unwrap_or(du), g.unwrap_or(dg))
            }
        };
        let path = dir.join(i.to_string());
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(ContainerError::io("create", &path))?;
        f.write_all(value)
            .map_err(ContainerError::io("write", &path))?;
        drop(f);
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .map_err(ContainerError::io("chown", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(s.mode))
            .map_err(ContainerError::io("chmod", &path))?;
        mounts.push(Mount {
            target: s.target.clone(),
            source: MountSource::Bind {
                source: path,
                content_digest: None,
                tree: None,
            },
            read_only: true,
        });
    }
    Ok(mounts)
}
