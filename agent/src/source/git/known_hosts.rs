//! Host key problems of ssh remotes, and OpenSSH's host and pattern
//! spellings. ssh itself checks the server's key against known_hosts (see
//! [`super::ssh`]); this names what it refused.

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

    #[test]
    fn host_names_and_wildcards() {
        assert_eq!(host_name("example.com", None), "example.com");
        assert_eq!(host_name("example.com", Some(22)), "example.com");
        assert_eq!(host_name("127.0.0.1", Some(2222)), "[127.0.0.1]:2222");
        assert!(wildcard_match("g?t*.org", "git.x.org"));
        assert!(!wildcard_match("g?t*.org", "gt.org"));
        assert!(wildcard_match("*", ""));
    }
}
