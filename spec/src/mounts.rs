//! Mounts: `volume:path[:ro]`, `/host/path:path[:ro]`, `./relative:path[:ro]`,
//! `tmpfs:path[:size=64m]`.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a mount's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum MountSource {
    /// A named volume declared under `[volumes]`.
    Volume {
        /// The volume's name.
        name: String,
    },
    /// A host path. Relative paths are resolved against the manifest file's
    /// directory when the manifest is loaded.
    Bind {
        /// Absolute host path.
        source: PathBuf,
        /// sha256 of the content of a read-only bind source that lives next
        /// to the manifests (a relative path): editing it changes the spec
        /// hash. None for a read-write one (the container's own data).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        content_digest: Option<String>,
        /// For a source that lives next to the manifests: the root of the
        /// source's tree (absolute), which `source` lies beneath and must
        /// still resolve beneath when it is mounted, links included (the
        /// runtime opens it there race-free; see `crate::tree`). Not part
        /// of the spec hash: the content is.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        tree: Option<PathBuf>,
    },
    /// A tmpfs.
    Tmpfs {
        /// Size limit in bytes, if any.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        size: Option<u64>,
    },
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container. First so that sorting mounts puts
    /// a parent before what is mounted beneath it.
    pub target: String,
    /// Where the content comes from.
    pub source: MountSource,
    /// Mounted read-only.
    pub read_only: bool,
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            MountSource::Volume { name } => write!(f, "{name}:{}", self.target)?,
            MountSource::Bind { source, .. } => write!(f, "{}:{}", source.display(), self.target)?,
            MountSource::Tmpfs { .. } => write!(f, "tmpfs:{}", self.target)?,
        }
        if self.read_only {
            write!(f, ":ro")?;
        }
        Ok(())
    }
}

/// True when a mount source names a host path rather than a volume.
pub fn is_host_path(source: &str) -> bool {
    source.starts_with('/')
        || source.starts_with("./")
        || source.starts_with("../")
        || source == "."
        || source == ".."
}

/// Checks that a mount target is an absolute, normal path other than `/`.
pub fn check_target(target: &str) -> Result<(), String> {
    let path = Path::new(target);
    if !path.is_absolute() {
        return Err(format!(
            "mount target \"{target}\" must be an absolute path"
        ));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("mount target \"{target}\" must not contain \"..\""));
    }
    if path.components().count() < 2 {
        return Err("mount target must not be \"/\"".to_string());
    }
    Ok(())
}

/// Parses the short form. Names of volumes are checked by the caller.
pub fn parse(s: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [source, target] => (*source, *target, None),
        [source, target, options] => (*source, *target, Some(*options)),
        _ => {
            return Err(format!(
                "mount \"{s}\" must look like volume:/path[:ro], /host/path:/path[:ro] or tmpfs:/path"
            ));
        }
    };
    check_target(target)?;
    let mut read_only = false;
    let mut size = None;
    for option in options.into_iter().flat_map(|o| o.split(',')) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            o if source == "tmpfs" && o.starts_with("size=") => {
                size = Some(crate::units::parse_size(&o[5..])?);
            }
            o => {
                let allowed = if source == "tmpfs" {
                    "ro, rw or size=N"
                } else {
                    "ro or rw"
                };
                return Err(format!(
                    "mount option \"{o}\" in \"{s}\" is not one of {allowed}"
                ));
            }
        }
    }
    let source = if source == "tmpfs" {
        MountSource::Tmpfs { size }
    } else if is_host_path(source) {
        MountSource::Bind {
            source: PathBuf::from(source),
            content_digest: None,
            tree: None,
        }
    } else if source.is_empty() {
        return Err(format!("mount \"{s}\" has an empty source"));
    } else {
        MountSource::Volume {
            name: source.to_string(),
        }
    };
    Ok(Mount {
        target: target.to_string(),
        source,
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let m = parse("site:/www:ro").unwrap();
        assert_eq!(
            m.source,
            MountSource::Volume {
                name: "site".into()
            }
        );
        assert!(m.read_only);
        let m = parse("/etc/hosts:/etc/hosts").unwrap();
        assert!(matches!(m.source, MountSource::Bind { .. }));
        assert!(!m.read_only);
        let m = parse("./conf/nginx.conf:/etc/nginx/nginx.conf:ro").unwrap();
        assert!(
            matches!(m.source, MountSource::Bind { ref source, .. } if source == Path::new("./conf/nginx.conf"))
        );
        let m = parse("tmpfs:/run:size=64m").unwrap();
        assert_eq!(
            m.source,
            MountSource::Tmpfs {
                size: Some(64 << 20)
            }
        );
        assert_eq!(
            parse("data:/var/lib/x:rw").unwrap().to_string(),
            "data:/var/lib/x"
        );
    }

    #[test]
    fn rejects_bad_mounts() {
        for bad in [
            "site",
            "site:www",
            "site:/",
            "site:/a/../b",
            "site:/www:rx",
            "a:b:c:d",
            ":/www",
            "/x:/y:size=1m",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
