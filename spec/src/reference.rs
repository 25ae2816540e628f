//! Image references, normalised the way Docker does.
//!
//! `busybox` → `docker.io/library/busybox:latest`; `localhost:5000/x:1` keeps
//! its registry; `name@sha256:…` keeps the digest (and its tag, if any).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Docker Hub, the registry of references that name none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const MAX_NAME_LEN: usize = 255;

/// A fully-qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// Registry host, with port if any (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag, if any; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Content digest (`sha256:<64 hex>`), if pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// True when the registry is on a loopback address, where Docker allows plain HTTP.
    pub fn registry_is_loopback(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => self.registry.split(':').next().unwrap_or(""),
        };
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse(s)
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Checks a digest's form: `sha256:` and 64 lower-case hex digits (or
/// `sha512:` and 128).
pub fn check_digest(d: &str) -> Result<(), String> {
    let (algorithm, hex) = d
        .split_once(':')
        .ok_or_else(|| format!("digest \"{d}\" must look like sha256:<64 hex digits>"))?;
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        other => {
            return Err(format!(
                "digest algorithm \"{other}\" is not supported (use sha256)"
            ));
        }
    };
    if hex.len() != len
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "digest \"{d}\" must be \"{algorithm}:\" followed by {len} lower-case hex digits"
        ));
    }
    Ok(())
}

/// Parses and normalises a reference.
pub fn parse(s: &str) -> Result<ImageRef, String> {
    if s.is_empty() {
        return Err("image reference is empty".into());
    }
    if s.chars().any(|c| c.is_whitespace()) {
        return Err(format!("image reference \"{s}\" contains white space"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => {
            check_digest(digest)?;
            (rest, Some(digest.to_string()))
        }
        None => (s, None),
    };
    // A tag follows the last ':' that comes after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, path)) if looks_like_registry(first) => (first.to_string(), path.to_string()),
        _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
    };
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
        _ => registry,
    };
    check_registry(&registry)?;
    let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    check_repository(&repository, s)?;
    if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
        return Err(format!(
            "image name in \"{s}\" is longer than {MAX_NAME_LEN} characters"
        ));
    }
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    };
    Ok(ImageRef {
        registry,
        repository,
        tag,
        digest,
    })
}

fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag \"{tag}\" is invalid: use up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        ))
    }
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry \"{registry}\" has an unclosed '['"))?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "registry \"{registry}\" is not a valid IPv6 address"
            ));
        }
        (None, after.strip_prefix(':'))
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(format!("registry host \"{host}\" is not a valid host name"));
        }
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("registry port \"{port}\" is not a valid port"));
    }
    Ok(())
}

/// Path components: lower-case letters and digits, separated by `.`, `_`,
/// `__` or runs of `-`.
fn check_repository(repo: &str, whole: &str) -> Result<(), String> {
    for component in repo.split('/') {
        let bytes = component.as_bytes();
        let ok = !bytes.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes.iter().all(|&b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
            })
            && !component.contains("..")
            && !component.contains("___")
            && !component.contains("._")
            && !component.contains("_.");
        if !ok {
            let hint = if component.bytes().any(|b| b.is_ascii_uppercase()) {
                " (repository names must be lower-case)"
            } else {
                ""
            };
            return Err(format!(
                "image reference \"{whole}\" has an invalid repository component \"{component}\"{hint}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        let table = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/app:v2", "docker.io/user/app:v2"),
            ("index.docker.io/user/app", "docker.io/user/app:latest"),
            ("localhost:5000/x:1", "localhost:5000/x:1"),
            ("localhost/x", "localhost/x:latest"),
            (
                "ghcr.io/org/team/app:1.0-rc.1",
                "ghcr.io/org/team/app:1.0-rc.1",
            ),
            ("[::1]:5000/app", "[::1]:5000/app:latest"),
            ("127.0.0.1:5000/a_b/c-d.e:1", "127.0.0.1:5000/a_b/c-d.e:1"),
        ];
        for (input, want) in table {
            assert_eq!(norm(input), want, "{input}");
        }
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            norm(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "a/../b",
            "localhost:0/x",
            "bad_host!:5000/x",
            "x y",
            "-x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse(&"a".repeat(300)).is_err());
    }

    #[test]
    fn loopback_registries() {
        assert!(parse("localhost:5000/x").unwrap().registry_is_loopback());
        assert!(parse("127.0.0.1:5000/x").unwrap().registry_is_loopback());
        assert!(parse("[::1]:5000/x").unwrap().registry_is_loopback());
        assert!(!parse("ghcr.io/x").unwrap().registry_is_loopback());
        assert!(!parse("busybox").unwrap().registry_is_loopback());
    }

    #[test]
    fn round_trips_through_its_display() {
        for s in ["busybox", "localhost:5000/x:1", "ghcr.io/a/b:c"] {
            let r = parse(s).unwrap();
            assert_eq!(parse(&r.to_string()).unwrap(), r);
        }
    }
}
