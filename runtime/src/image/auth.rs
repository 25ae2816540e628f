//! Registry credentials: from the environment (`MOOR_REGISTRY_USER` and
//! `MOOR_REGISTRY_PASSWORD`, for every registry), else from a Docker-style
//! `config.json` (`$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`,
//! `~/.docker/config.json`, first found), by registry host.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;

/// A user name and password (or token).
#[derive(Clone)]
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

/// Credentials for `registry`, if any are configured.
pub fn credentials_for(registry: &str) -> Option<Credentials> {
    if let (Ok(username), Ok(password)) = (
        std::env::var("MOOR_REGISTRY_USER"),
        std::env::var("MOOR_REGISTRY_PASSWORD"),
    ) {
        return Some(Credentials { username, password });
    }
    let file = config_paths().into_iter().find(|p| p.is_file())?;
    let config: ConfigFile = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    lookup(&config, registry)
}

fn config_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        out.push(PathBuf::from(d).join("config.json"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        out.push(PathBuf::from(h).join(".docker/config.json"));
    }
    out
}

fn lookup(config: &ConfigFile, registry: &str) -> Option<Credentials> {
    let keys: Vec<String> = if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![registry.to_string()]
    };
    let entry = config.auths.iter().find_map(|(k, v)| {
        let host = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let host = host.split('/').next().unwrap_or(host);
        (keys.iter().any(|want| want == k || want == host)).then_some(v)
    })?;
    if let Some(auth) = &entry.auth {
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
        username: entry.username.clone()?,
        password: entry.password.clone()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_docker_config_entries() {
        let config: ConfigFile = serde_json::from_str(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"localhost:5000":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        let hub = lookup(&config, "docker.io").unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("u", "p"));
        assert_eq!(lookup(&config, "localhost:5000").unwrap().password, "b");
        assert!(lookup(&config, "ghcr.io").is_none());
        assert!(!format!("{hub:?}").contains('p') || format!("{hub:?}").contains("redacted"));
    }
}
