//! Registry credentials, bound to their registry.
//!
//! They come from one file in the `auths` format of Docker's `config.json`
//! (what `docker login` and `podman login --authfile` write): the file given
//! ([`super::pull::PullOptions::auth_file`], `--registry-auth FILE`), else
//! [`DEFAULT_AUTH_FILE`] when it exists. Each entry is keyed by a registry
//! (`host[:port]`, or a URL such as `https://index.docker.io/v1/`) and is
//! only ever sent to that registry: not to another host a registry redirects
//! to, and not to a token service on another host or port (see
//! [`may_receive`]). Docker Hub's token service, `auth.docker.io`, is the one
//! built-in exception, as Docker's own entries for the Hub are keyed by
//! `index.docker.io`.
//!
//! The file is read at every pull, so a rotated password applies at the next
//! one. Nothing of its content ever appears in a message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// The credentials file read when none is given, if it exists.
pub const DEFAULT_AUTH_FILE: &str = "/etc/moor/auth.json";

/// A user name and password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why the credentials file cannot be used. No variant holds its content.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file cannot be read.
    #[error("cannot read the registry credentials file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not JSON in the shape of Docker's `config.json`.
    #[error(
        "the registry credentials file {path} is not {what} (line {line}, column {column}); \
         it should look like Docker's config.json: {{\"auths\": {{\"HOST\": {{\"auth\": \"BASE64(user:password)\"}}}}}}"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// `valid JSON` or `in the expected shape`.
        what: &'static str,
        /// Where.
        line: usize,
        /// Where.
        column: usize,
    },
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The credentials of a file, by registry.
#[derive(Debug, Default, Clone)]
pub struct AuthFile {
    /// By registry as [`registry_key`] spells it.
    entries: BTreeMap<String, Credentials>,
}

impl AuthFile {
    /// The credentials in `path` (an explicit file must exist); with None,
    /// those in [`DEFAULT_AUTH_FILE`] if it exists, else none.
    pub fn load(path: Option<&Path>) -> Result<Self, AuthFileError> {
        let path = match path {
            Some(p) => p,
            None if Path::new(DEFAULT_AUTH_FILE).exists() => Path::new(DEFAULT_AUTH_FILE),
            None => return Ok(Self::default()),
        };
        let bytes = std::fs::read(path).map_err(|source| AuthFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes).map_err(|e| AuthFileError::Parse {
            path: path.to_path_buf(),
            what: if e.is_syntax() || e.is_eof() {
                "valid JSON"
            } else {
                "in the expected shape"
            },
            line: e.line(),
            column: e.column(),
        })
    }

    fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let config: ConfigFile = serde_json::from_slice(bytes)?;
        let mut entries = BTreeMap::new();
        for (key, entry) in config.auths {
            if let Some(c) = entry.credentials() {
                entries.insert(registry_key(&key), c);
            }
        }
        Ok(Self { entries })
    }

    /// The credentials for `registry` (as an image reference names it:
    /// `docker.io`, `ghcr.io`, `localhost:5000`), if the file has some.
    pub fn for_registry(&self, registry: &str) -> Option<&Credentials> {
        self.entries.get(&registry_key(registry))
    }
}

impl AuthEntry {
    fn credentials(&self) -> Option<Credentials> {
        if let Some(auth) = &self.auth {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()?;
            let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
            return Some(Credentials {
                username: u.into(),
                password: p.into(),
            });
        }
        Some(Credentials {
            username: self.username.clone()?,
            password: self.password.clone()?,
        })
    }
}

/// A registry as the file keys it: `host[:port]`, lower-case, without a
/// scheme or path; Docker Hub's many names are all `docker.io`.
fn registry_key(key: &str) -> String {
    let key = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

/// A URL's scheme, host (lower-case, IPv6 without brackets) and port (the
/// scheme's default when none is written). None for anything else,
/// including a URL with user information (`https://registry@evil/`).
pub(crate) fn endpoint(url: &str) -> Option<(&str, String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// True for `localhost` and loopback addresses.
pub(crate) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a token service at `realm` may receive the credentials of the
/// registry served at `registry_url` (`http(s)://host[:port]`) and named
/// `registry` in references: only when it is the same host and port, or
/// Docker Hub's own token service for Docker Hub.
pub(crate) fn may_receive(registry: &str, registry_url: &str, realm: &str) -> bool {
    let (Some((_, rh, rp)), Some((_, th, tp))) = (endpoint(registry_url), endpoint(realm)) else {
        return false;
    };
    (rh == th && rp == tp) || (registry == "docker.io" && th == "auth.docker.io" && tp == 443)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_docker_config_entries_by_registry() {
        let f = AuthFile::parse(
            br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"localhost:5000":{"username":"a","password":"b"},"GHCR.io":{"identitytoken":"x"}},"credsStore":"desktop"}"#,
        )
        .unwrap();
        let hub = f.for_registry("docker.io").unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("u", "p"));
        assert_eq!(f.for_registry("localhost:5000").unwrap().password, "b");
        assert!(
            f.for_registry("localhost:5001").is_none(),
            "bound to the port too"
        );
        assert!(f.for_registry("localhost").is_none());
        assert!(
            f.for_registry("ghcr.io").is_none(),
            "identity tokens are not used"
        );
        assert!(format!("{hub:?}").contains("<redacted>"));
        assert!(!format!("{hub:?}").contains("\"p\""));
    }

    #[test]
    fn a_bad_file_is_named_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        for bad in [
            r#"{"auths": "s3cr3t-password"}"#,
            r#"{"auths": {"r": {"auth": ["s3cr3t-password"]}}}"#,
            r#"{"auths": {"r": {"auth": "s3cr3t-password""#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = AuthFile::load(Some(&path)).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains("line 1, column"), "{e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
        let missing = dir.path().join("missing.json");
        assert!(matches!(
            AuthFile::load(Some(&missing)),
            Err(AuthFileError::Read { .. })
        ));
    }

    #[test]
    fn only_the_registry_s_own_host_and_port_receive_its_credentials() {
        let local = "http://127.0.0.1:5000";
        assert!(may_receive(
            "127.0.0.1:5000",
            local,
            "http://127.0.0.1:5000/token"
        ));
        assert!(!may_receive(
            "127.0.0.1:5000",
            local,
            "http://127.0.0.1:5001/token"
        ));
        assert!(!may_receive(
            "127.0.0.1:5000",
            local,
            "http://localhost:5000/token"
        ));
        let ghcr = "https://ghcr.io";
        assert!(may_receive("ghcr.io", ghcr, "https://ghcr.io/token?x=1"));
        assert!(may_receive("ghcr.io", ghcr, "https://ghcr.io:443/token"));
        assert!(
            !may_receive("ghcr.io", ghcr, "http://ghcr.io/token"),
            "another port"
        );
        assert!(!may_receive("ghcr.io", ghcr, "https://evil.example/token"));
        assert!(!may_receive(
            "ghcr.io",
            ghcr,
            "https://ghcr.io@evil.example/token"
        ));
        assert!(!may_receive(
            "ghcr.io",
            ghcr,
            "https://ghcr.io.evil.example/token"
        ));
        let hub = "https://registry-1.docker.io";
        assert!(may_receive(
            "docker.io",
            hub,
            "https://auth.docker.io/token"
        ));
        assert!(!may_receive(
            "ghcr.io",
            ghcr,
            "https://auth.docker.io/token"
        ));
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            endpoint("http://[::1]:8080/x"),
            Some(("http", "::1".into(), 8080))
        );
        assert_eq!(
            endpoint("https://A.example"),
            Some(("https", "a.example".into(), 443))
        );
        assert_eq!(endpoint("ftp://a/"), None);
        assert_eq!(endpoint("https://u:p@a/"), None);
        assert_eq!(endpoint("https://a:99999/"), None);
    }
}
