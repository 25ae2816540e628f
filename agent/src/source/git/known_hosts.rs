//! OpenSSH `known_hosts` checking for ssh remotes: the key the server shows
//! must be listed for its host (plain or hashed names, `[host]:port`
//! spellings, wildcards and negations); an unknown host, a different key or a
//! `@revoked` key is refused. Nothing is ever added to the file.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Why a host key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostKeyError {
    /// No line names the host.
    Unknown,
    /// Lines name the host, with other keys.
    Mismatch,
    /// The key is marked `@revoked`.
    Revoked,
}

/// The name a host has in known_hosts: `host`, or `[host]:port` off port 22.
pub(crate) fn host_name(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_string(),
    }
}

/// Checks `key` (the SSH wire encoding of the server's public key) for the
/// host known as `name` (see [`host_name`]) against the text of known_hosts
/// files.
pub(crate) fn check(files: &[String], name: &str, key: &[u8]) -> Result<(), HostKeyError> {
    let mut host_listed = false;
    let mut accepted = false;
    for text in files {
        for line in text.lines() {
            let Some(entry) = Entry::parse(line) else {
                continue;
            };
            if !entry.matches_host(name) {
                continue;
            }
            let same_key = entry.key.as_deref() == Some(key);
            match entry.marker {
                Marker::Revoked if same_key => return Err(HostKeyError::Revoked),
                Marker::Revoked | Marker::CertAuthority => {}
                Marker::None => {
                    host_listed = true;
                    accepted |= same_key;
                }
            }
        }
    }
    match (accepted, host_listed) {
        (true, _) => Ok(()),
        (false, true) => Err(HostKeyError::Mismatch),
        (false, false) => Err(HostKeyError::Unknown),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    /// Host certificates are not checked: such lines are skipped.
    CertAuthority,
}

struct Entry<'a> {
    marker: Marker,
    hosts: &'a str,
    /// The decoded key blob, None when the base64 is bad.
    key: Option<Vec<u8>>,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Entry<'a>> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next()?;
        let marker = match first {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            m if m.starts_with('@') => return None,
            _ => Marker::None,
        };
        if marker != Marker::None {
            first = fields.next()?;
        }
        let _key_type = fields.next()?;
        let key = STANDARD.decode(fields.next()?).ok();
        Some(Entry {
            marker,
            hosts: first,
            key,
        })
    }

    fn matches_host(&self, name: &str) -> bool {
        if let Some(hashed) = self.hosts.strip_prefix("|1|") {
            return hashed_matches(hashed, name);
        }
        let mut matched = false;
        for pattern in self.hosts.split(',') {
            if let Some(negated) = pattern.strip_prefix('!') {
                if wildcard_match(&negated.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
                    return false;
                }
            } else if wildcard_match(&pattern.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
                matched = true;
            }
        }
        matched
    }
}

/// `salt|hash`, both base64: HMAC-SHA1 of the name keyed with the salt.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// OpenSSH patterns: `*` any run of characters, `?` one character.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAII7v8HFdvg47lJEngaGm842Lh8nigQQiK4ZgGo7DwY+m";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIEsDX3j253FnxU3Ah8DodLqCb8o9ov1AyBGE97EknTpO";

    fn key(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).unwrap()
    }

    #[test]
    fn plain_names_and_ports() {
        let files = vec![format!(
            "# comment\nexample.com,10.0.0.1 ssh-ed25519 {KEY_A}\n[127.0.0.1]:2222 ssh-ed25519 {KEY_B} test\n"
        )];
        assert_eq!(check(&files, "example.com", &key(KEY_A)), Ok(()));
        assert_eq!(check(&files, "EXAMPLE.com", &key(KEY_A)), Ok(()));
        assert_eq!(check(&files, "10.0.0.1", &key(KEY_A)), Ok(()));
        assert_eq!(
            check(&files, "example.com", &key(KEY_B)),
            Err(HostKeyError::Mismatch)
        );
        assert_eq!(
            check(&files, &host_name("127.0.0.1", Some(2222)), &key(KEY_B)),
            Ok(())
        );
        // The same address on port 22 is another host.
        assert_eq!(
            check(&files, &host_name("127.0.0.1", Some(22)), &key(KEY_B)),
            Err(HostKeyError::Unknown)
        );
        assert_eq!(
            check(&files, "other.org", &key(KEY_A)),
            Err(HostKeyError::Unknown)
        );
        assert_eq!(
            check(&[], "example.com", &key(KEY_A)),
            Err(HostKeyError::Unknown)
        );
    }

    #[test]
    fn hashed_names() {
        // `ssh-keygen -H` spelling of "example.com", computed here.
        let salt = [7u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"example.com");
        let hash = mac.finalize().into_bytes();
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}",
            STANDARD.encode(salt),
            STANDARD.encode(hash)
        );
        let files = vec![line];
        assert_eq!(check(&files, "example.com", &key(KEY_A)), Ok(()));
        assert_eq!(
            check(&files, "example.org", &key(KEY_A)),
            Err(HostKeyError::Unknown)
        );
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let files = vec![format!(
            "*.example.com,!bad.example.com ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n@cert-authority * ssh-ed25519 {KEY_B}\n"
        )];
        assert_eq!(check(&files, "git.example.com", &key(KEY_A)), Ok(()));
        assert_eq!(
            check(&files, "bad.example.com", &key(KEY_A)),
            Err(HostKeyError::Unknown)
        );
        assert_eq!(
            check(&files, "git.example.com", &key(KEY_B)),
            Err(HostKeyError::Revoked)
        );
        assert!(wildcard_match("g?t*.org", "git.x.org"));
        assert!(!wildcard_match("g?t*.org", "gt.org"));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let files = vec![format!(
            "@weird x y z\njunk\nexample.com ssh-ed25519 !!notbase64\nexample.com ssh-ed25519 {KEY_A}\n"
        )];
        assert_eq!(check(&files, "example.com", &key(KEY_A)), Ok(()));
    }
}
