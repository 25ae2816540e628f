//! What a source may ask of the host: the operator's [`Policy`].
//!
//! Manifests come from whoever can commit to their source. A few fields
//! reach past the container into the host: an absolute bind source,
//! `env_file` or `[images] verify` key (mounted or read from the host), a capability beyond Docker's
//! default set (`SYS_ADMIN`, `SYS_MODULE`, `NET_ADMIN`… or `ALL`), the
//! host's network namespace (`network_mode = "host"`) and no system call
//! filter (`seccomp = "unconfined"`). Loaded under a policy
//! ([`crate::LoadOptions::policy`]), each of those is an error at the field
//! that asks for it — so the whole revision is refused, and the last good
//! one stays in force — unless the policy allows it; the message names the
//! policy key to change and where it lives.
//!
//! A policy allows nothing by default ([`Policy::restricted`]): that is
//! what a git source gets when its operator wrote none. The checks are
//! [`Policy`]'s methods, which the decoder calls as it reads each field.
//! (`network_mode = "container:NAME"` needs no check here: `NAME` must be
//! a container of the same manifests.)

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::linux::{DEFAULT_CAPABILITIES, normalize_capability};
use crate::model::{NetworkMode, Seccomp};
use crate::tree::{Escape, Tree};

/// A policy as the operator writes it: `[source.policy]` in the agent's
/// configuration, or the whole of a file given to `--policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyKeys {
    /// Absolute bind sources and env files are allowed only under these
    /// directories.
    #[serde(default)]
    pub host_paths: Vec<PathBuf>,
    /// Capabilities `cap_add` may name beyond Docker's default set
    /// (`NET_ADMIN`, `CAP_SYS_TIME`; `ALL` allows every one).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `network_mode = "host"` is allowed.
    #[serde(default)]
    pub host_network: bool,
    /// `seccomp = "unconfined"` is allowed.
    #[serde(default)]
    pub unconfined: bool,
}

/// A checked policy: what a source's manifests may ask of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Absolute and normalised.
    host_paths: Vec<PathBuf>,
    /// Normalised (`CAP_NET_ADMIN`, or `ALL`), sorted.
    capabilities: Vec<String>,
    host_network: bool,
    unconfined: bool,
    /// Where the operator changes it (`[source.policy]`, `the policy file
    /// p.toml`), for messages.
    place: String,
}

impl Policy {
    /// A policy that allows nothing beyond Docker's defaults, kept at
    /// `place` (what a git source without a policy of its own gets).
    pub fn restricted(place: impl Into<String>) -> Self {
        Self {
            host_paths: Vec::new(),
            capabilities: Vec::new(),
            host_network: false,
            unconfined: false,
            place: place.into(),
        }
    }

    /// Checks the operator's keys: host paths must be absolute, without
    /// `.` or `..`; capabilities must be known. The error names the key.
    pub fn new(keys: PolicyKeys, place: impl Into<String>) -> Result<Self, String> {
        let mut host_paths = Vec::new();
        for (i, p) in keys.host_paths.iter().enumerate() {
            plain_absolute(p).map_err(|e| format!("host_paths[{i}]: \"{}\" {e}", p.display()))?;
            host_paths.push(crate::tree::normalize(p));
        }
        let mut capabilities = Vec::new();
        for (i, c) in keys.capabilities.iter().enumerate() {
            capabilities
                .push(normalize_capability(c).map_err(|e| format!("capabilities[{i}]: {e}"))?);
        }
        capabilities.sort();
        capabilities.dedup();
        Ok(Self {
            host_paths,
            capabilities,
            host_network: keys.host_network,
            unconfined: keys.unconfined,
            place: place.into(),
        })
    }

    /// Where the policy is kept, as messages name it.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// `cap_add` naming `cap` (normalised: `CAP_SYS_ADMIN`, or `ALL`).
    pub fn allows_capability(&self, cap: &str) -> Result<(), String> {
        let bare = cap.strip_prefix("CAP_").unwrap_or(cap);
        if DEFAULT_CAPABILITIES.contains(&bare)
            || self
                .capabilities
                .iter()
                .any(|c| c == "ALL" || c.as_str() == cap)
        {
            return Ok(());
        }
        let mut listed: Vec<&str> = self
            .capabilities
            .iter()
            .map(|c| c.strip_prefix("CAP_").unwrap_or(c))
            .collect();
        listed.push(bare);
        let why = if cap == "ALL" {
            ": ALL grants every capability, the host's own among them"
        } else {
            ""
        };
        Err(format!(
            "capability {bare} is not allowed by the source's policy{why} (allow it with capabilities = {} in {})",
            list(&listed),
            self.place
        ))
    }

    /// `network_mode`.
    pub fn allows_network_mode(&self, mode: &NetworkMode) -> Result<(), String> {
        if *mode == NetworkMode::Host && !self.host_network {
            return Err(format!(
                "network_mode = \"host\" is not allowed by the source's policy: the container would share the host's network stack (allow it with host_network = true in {})",
                self.place
            ));
        }
        Ok(())
    }

    /// `seccomp`.
    pub fn allows_seccomp(&self, seccomp: Seccomp) -> Result<(), String> {
        if seccomp == Seccomp::Unconfined && !self.unconfined {
            return Err(format!(
                "seccomp = \"unconfined\" is not allowed by the source's policy: every system call would reach the host's kernel unfiltered (allow it with unconfined = true in {})",
                self.place
            ));
        }
        Ok(())
    }

    /// An absolute host path the manifests mount or read (`what`: `bind
    /// source`, `env_file`). It must be written plainly (no `.` or `..`,
    /// which the kernel resolves after links) and lie under one of
    /// `host_paths`, links included: a link under an allowed directory that
    /// leads out of it (one a container wrote there, say) is refused as
    /// the tree check refuses links out of a source.
    pub fn allows_host_path(&self, what: &str, path: &Path) -> Result<(), String> {
        let shown = path.display();
        plain_absolute(path).map_err(|e| format!("{what} \"{shown}\" {e}"))?;
        let Some(root) = self.host_paths.iter().find(|r| path.starts_with(r)) else {
            let mut listed: Vec<String> = self
                .host_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let now = if listed.is_empty() {
                String::new()
            } else {
                format!(" ({})", listed.join(", "))
            };
            listed.push(shown.to_string());
            let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
            return Err(format!(
                "{what} \"{shown}\" is a host path outside those the source's policy allows{now} (allow it with host_paths = {} in {})",
                list(&listed),
                self.place
            ));
        };
        match Tree::new(root).resolve(path) {
            Ok(_) => Ok(()),
            Err(escape) => Err(format!(
                "{what} \"{shown}\": {}",
                Outside {
                    escape: &escape,
                    root
                }
            )),
        }
    }
}

/// Why a host path leaves the allowed directory it is under.
struct Outside<'a> {
    escape: &'a Escape,
    root: &'a Path,
}

impl fmt::Display for Outside<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = self.root.display();
        match self.escape {
            Escape::Link { link, target, .. } => write!(
                f,
                "\"{}\" is a symbolic link to \"{}\", which leads outside {root}, the host path the source's policy allows",
                self.root.join(link).display(),
                target.display()
            ),
            Escape::Loop { .. } => write!(
                f,
                "more than 40 symbolic links (a loop) under {root}, the host path the source's policy allows"
            ),
            Escape::DotDot { .. } => write!(f, "`..` leads outside {root}"),
        }
    }
}

/// A TOML array of strings.
fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Absolute, and without `.` or `..` (which the kernel resolves after the
/// links before them, so a check of the written path would not hold).
fn plain_absolute(p: &Path) -> Result<(), &'static str> {
    if !p.is_absolute() {
        return Err("must be an absolute path");
    }
    let bytes = p.as_os_str().as_encoded_bytes();
    if bytes.split(|b| *b == b'/').any(|s| s == b"." || s == b"..") {
        return Err("must be written without `.` or `..` under a policy");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(keys: PolicyKeys) -> Policy {
        Policy::new(keys, "[source.policy]").expect("valid")
    }

    #[test]
    fn a_restricted_policy_allows_only_dockers_defaults() {
        let p = Policy::restricted("[source.policy]");
        assert_eq!(p.allows_capability("CAP_CHOWN"), Ok(()));
        assert_eq!(p.allows_capability("CAP_NET_BIND_SERVICE"), Ok(()));
        for cap in [
            "CAP_SYS_ADMIN",
            "CAP_SYS_MODULE",
            "CAP_DAC_READ_SEARCH",
            "CAP_SYS_PTRACE",
            "CAP_SYS_RAWIO",
            "CAP_NET_ADMIN",
            "ALL",
        ] {
            assert!(p.allows_capability(cap).is_err(), "{cap}");
        }
        assert_eq!(
            p.allows_capability("CAP_SYS_ADMIN").unwrap_err(),
            "capability SYS_ADMIN is not allowed by the source's policy (allow it with capabilities = [\"SYS_ADMIN\"] in [source.policy])"
        );
        assert!(
            p.allows_capability("ALL")
                .unwrap_err()
                .contains("ALL grants every capability")
        );
        assert!(p.allows_network_mode(&NetworkMode::Host).is_err());
        assert_eq!(p.allows_network_mode(&NetworkMode::None), Ok(()));
        assert_eq!(
            p.allows_network_mode(&NetworkMode::Container("db".into())),
            Ok(())
        );
        assert!(p.allows_seccomp(Seccomp::Unconfined).is_err());
        assert_eq!(p.allows_seccomp(Seccomp::Default), Ok(()));
        assert_eq!(
            p.allows_host_path("bind source", Path::new("/etc"))
                .unwrap_err(),
            "bind source \"/etc\" is a host path outside those the source's policy allows (allow it with host_paths = [\"/etc\"] in [source.policy])"
        );
    }

    #[test]
    fn what_a_policy_lists_is_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("app-data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        let p = policy(PolicyKeys {
            host_paths: vec![data.clone()],
            capabilities: vec!["net_admin".into(), "CAP_SYS_TIME".into()],
            host_network: true,
            unconfined: true,
        });
        assert_eq!(p.allows_capability("CAP_NET_ADMIN"), Ok(()));
        assert_eq!(p.allows_capability("CAP_SYS_TIME"), Ok(()));
        let e = p.allows_capability("CAP_SYS_ADMIN").unwrap_err();
        assert!(
            e.contains("capabilities = [\"NET_ADMIN\", \"SYS_TIME\", \"SYS_ADMIN\"]"),
            "the hint keeps what is listed: {e}"
        );
        assert_eq!(p.allows_network_mode(&NetworkMode::Host), Ok(()));
        assert_eq!(p.allows_seccomp(Seccomp::Unconfined), Ok(()));
        assert_eq!(p.allows_host_path("bind source", &data), Ok(()));
        assert_eq!(
            p.allows_host_path("env_file", &data.join("sub/a.env")),
            Ok(())
        );
        // A sibling whose name starts the same is not under it.
        let twin = PathBuf::from(format!("{}2", data.display()));
        assert!(p.allows_host_path("bind source", &twin).is_err());
        let all = policy(PolicyKeys {
            capabilities: vec!["ALL".into()],
            ..PolicyKeys::default()
        });
        assert_eq!(all.allows_capability("CAP_SYS_ADMIN"), Ok(()));
        assert_eq!(all.allows_capability("ALL"), Ok(()));
    }

    #[test]
    fn host_paths_cannot_be_left_through_links_or_dot_dot() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // What a container with a read-write bind of the directory could write.
        symlink("/", data.join("root")).unwrap();
        symlink("../..", data.join("up")).unwrap();
        std::fs::create_dir(data.join("real")).unwrap();
        symlink("real", data.join("inside")).unwrap();
        let p = policy(PolicyKeys {
            host_paths: vec![data.clone()],
            ..PolicyKeys::default()
        });
        for bad in ["root/etc", "up/etc", "root"] {
            let e = p
                .allows_host_path("bind source", &data.join(bad))
                .unwrap_err();
            assert!(e.contains("which leads outside"), "{bad}: {e}");
        }
        assert_eq!(
            p.allows_host_path("bind source", &data.join("inside")),
            Ok(())
        );
        for bad in ["real/../../etc", "./real", "real/."] {
            let path = PathBuf::from(format!("{}/{bad}", data.display()));
            let e = p.allows_host_path("bind source", &path).unwrap_err();
            assert!(e.contains("without `.` or `..`"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_load_reports_each_field_a_policy_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        // A FIFO: reading it would hang the load; it must not be opened.
        let fifo = tmp.path().join("fifo.env");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        std::fs::write(
            root.join("app.toml"),
            format!(
                r#"[containers.app]
image = "busybox"
cap_add = ["chown", "SYS_ADMIN", "ALL"]
cap_drop = ["SYS_ADMIN"]
network_mode = "host"
seccomp = "unconfined"
mounts = ["/etc:/host-etc:ro", "tmpfs:/t"]
env_file = "{}"
"#,
                fifo.display()
            ),
        )
        .unwrap();
        let options = crate::LoadOptions {
            policy: Some(Policy::restricted("[source.policy]")),
            ..crate::LoadOptions::default()
        };
        let errors: Vec<String> = crate::load_with(&[&root], None, &options)
            .unwrap_err()
            .iter()
            .map(|d| {
                let file = d.file.file_name().unwrap().to_string_lossy();
                format!("{file}:{}:{}: {}", d.line, d.column, d.field)
            })
            .collect();
        assert_eq!(
            errors,
            [
                "app.toml:3:21: containers.app.cap_add[1]",
                "app.toml:3:34: containers.app.cap_add[2]",
                "app.toml:5:16: containers.app.network_mode",
                "app.toml:6:11: containers.app.seccomp",
                "app.toml:7:11: containers.app.mounts[0]",
                "app.toml:8:12: containers.app.env_file",
            ]
        );
    }

    #[test]
    fn bad_keys_are_named() {
        let e = Policy::new(
            PolicyKeys {
                host_paths: vec!["srv/data".into()],
                ..PolicyKeys::default()
            },
            "p",
        )
        .unwrap_err();
        assert_eq!(e, "host_paths[0]: \"srv/data\" must be an absolute path");
        let e = Policy::new(
            PolicyKeys {
                capabilities: vec!["NET_ADMN".into()],
                ..PolicyKeys::default()
            },
            "p",
        )
        .unwrap_err();
        assert!(e.starts_with("capabilities[0]: unknown capability"), "{e}");
    }
}
