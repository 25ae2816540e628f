//! The host's key for secrets' digests: `<state>/secret.key`, 32 random
//! bytes, mode 0600, made on first use. A container's spec hash includes
//! an HMAC of each secret's value under it (see README "Secrets"), so a
//! rotated secret replaces its containers while the hash, shown in status
//! and plans, reveals nothing that could be checked against a guess.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;

/// The key's length in bytes.
const LEN: usize = 32;

/// The key of the host whose state is in `state_dir`, if it has one.
pub fn load(state_dir: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let path = state_dir.join("secret.key");
    match std::fs::read(&path) {
        Ok(key) if key.len() == LEN => Ok(Some(key)),
        Ok(key) => anyhow::bail!(
            "{} holds {} bytes, not {LEN}: remove it to make a new key",
            path.display(),
            key.len()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The key of a host that has none yet, for a plan that must not change
/// the host: random and kept nowhere. No container can have been made with
/// secrets hashed under a key that does not exist, so whatever it hashes
/// differs from every recorded hash, as the key `apply` makes will.
pub fn ephemeral() -> anyhow::Result<Vec<u8>> {
    let mut key = vec![0u8; LEN];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut key,
    )
    .context("reading random bytes for the secret key")?;
    Ok(key)
}

/// The key of the host whose state is in `state_dir`, made when missing.
pub fn load_or_create(state_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(key) = load(state_dir)? {
        return Ok(key);
    }
    let path = state_dir.join("secret.key");
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let key = ephemeral()?;
    // Written under a temporary name and renamed: never half a key, and a
    // second process racing this one keeps the first key made.
    let tmp = state_dir.join(format!(".secret.key.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&key)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    if let Err(e) = std::fs::hard_link(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return load_or_create(state_dir);
        }
        return Err(e).with_context(|| format!("creating {}", path.display()));
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn made_once_private_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let a = super::load_or_create(tmp.path()).unwrap();
        let b = super::load_or_create(tmp.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        let mode = std::fs::metadata(tmp.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(tmp.path().join("secret.key"), b"short").unwrap();
        assert!(super::load_or_create(tmp.path()).is_err());
        assert!(super::load(tmp.path()).is_err());
    }

    #[test]
    fn loading_makes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        assert_eq!(super::load(&state).unwrap(), None);
        assert!(!state.exists());
    }
}
