//! `user[:group]` resolved as Docker does, through the image's own
//! `/etc/passwd` and `/etc/group` (read inside the root filesystem).

use std::path::Path;

use super::error::{ContainerError, Result};
use super::tree;

/// The most of `/etc/passwd` or `/etc/group` that is read: a container
/// could make them as large as its disk.
const MAX_DB_BYTES: u64 = 4 << 20;

/// The identity a container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership).
    pub additional_gids: Vec<u32>,
    /// Home directory, when /etc/passwd names one.
    pub home: Option<String>,
}

#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The file at `path` in the root filesystem `root`, resolved inside it
/// (a running container may have made `/etc` a symlink to the host's, or
/// `/etc/passwd` a fifo); empty when it cannot be read.
fn read_in_root(root: &Path, path: &str) -> String {
    tree::read_in_root(root, path, MAX_DB_BYTES)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, …; empty means
/// root) against the root filesystem at `root` (an image's, or a running
/// container's `/proc/PID/root`).
pub fn resolve(root: &Path, user: Option<&str>) -> Result<Identity> {
    let passwd = parse_passwd(&read_in_root(root, "/etc/passwd"));
    let groups = parse_group(&read_in_root(root, "/etc/group"));
    resolve_with(&passwd, &groups, user.unwrap_or(""))
}

/// User names by uid, from the `/etc/passwd` of the root filesystem at
/// `root` (the first name of a uid wins).
pub fn names(root: &Path) -> std::collections::HashMap<u32, String> {
    let mut out = std::collections::HashMap::new();
    for e in parse_passwd(&read_in_root(root, "/etc/passwd")) {
        out.entry(e.uid).or_insert(e.name);
    }
    out
}

fn resolve_with(passwd: &[PasswdEntry], groups: &[GroupEntry], spec: &str) -> Result<Identity> {
    let err = |reason: String| ContainerError::User {
        user: spec.to_string(),
        reason,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry =
        match user.parse::<u32>() {
            Ok(uid) => passwd.iter().find(|e| e.uid == uid),
            Err(_) => Some(passwd.iter().find(|e| e.name == user).ok_or_else(|| {
                err(format!("no user \"{user}\" in the container's /etc/passwd"))
            })?),
        };
    let uid = match (user.parse::<u32>(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some(e)) => e.uid,
        (Err(_), None) => unreachable!("a named user without an entry returned an error above"),
    };
    // Docker: a numeric uid unknown to /etc/passwd runs with gid 0.
    let mut gid = entry.map_or(0, |e| e.gid);
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| err(format!("no group \"{g}\" in the container's /etc/group")))?,
        };
    }
    // As Docker: the primary group is a supplementary one too (`id` says
    // `groups=65534(nogroup)`), with the groups that list the user unless
    // the group was given.
    let mut additional_gids: Vec<u32> = match (group, entry) {
        (None, Some(e)) => groups
            .iter()
            .filter(|g| g.members.contains(&e.name))
            .map(|g| g.gid)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.push(gid);
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(Identity {
        uid,
        gid,
        additional_gids,
        home: entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n# comment\nbob:x:1000:1000::/home/bob:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nbob:x:1000:\nwheel:x:10:bob,alice\naudio:x:29:bob\n";

    fn r(spec: &str) -> Result<Identity> {
        resolve_with(&parse_passwd(PASSWD), &parse_group(GROUP), spec)
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(r("").unwrap().uid, 0);
        assert_eq!(r("").unwrap().home.as_deref(), Some("/root"));
        let bob = r("bob").unwrap();
        assert_eq!(
            (bob.uid, bob.gid, bob.additional_gids.clone()),
            (1000, 1000, vec![10, 29, 1000])
        );
        assert_eq!(r("33").unwrap().gid, 33);
        let unknown = r("4242").unwrap();
        assert_eq!((unknown.uid, unknown.gid, unknown.home), (4242, 0, None));
        let explicit = r("bob:www").unwrap();
        assert_eq!((explicit.uid, explicit.gid), (1000, 33));
        assert_eq!(explicit.additional_gids, [33]);
        assert_eq!(r("").unwrap().additional_gids, [0]);
        assert_eq!(r("4242:7").unwrap().additional_gids, [7]);
        assert_eq!(r("www:7").unwrap().gid, 7);
    }

    #[test]
    fn unknown_names_fail_clearly() {
        let e = r("nobody").unwrap_err().to_string();
        assert!(e.contains("no user \"nobody\""), "{e}");
        let e = r("bob:nogroup").unwrap_err().to_string();
        assert!(e.contains("no group \"nogroup\""), "{e}");
    }
}
