//! Remote URLs: the transport, host and port (for known_hosts), and a
//! redacted spelling that is safe to put in any message or log.

/// The transports a git source accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Https,
    /// Plain http: accepted, but credentials are sent only to loopback hosts.
    Http,
    Ssh,
    Git,
    File,
}

/// A parsed remote URL.
#[derive(Debug, Clone)]
pub(crate) struct RemoteUrl {
    pub scheme: Scheme,
    /// Host name or address (without brackets); None for file://.
    pub host: Option<String>,
    /// Port given in the URL.
    pub port: Option<u16>,
    /// User name given in the URL.
    pub user: Option<String>,
    /// The path as written: after the host (with its `/`) for a URL, after
    /// the `:` for scp-like ssh.
    pub path: String,
    /// Secrets written into the URL (a password, or a token given as user
    /// name over http(s)), to scrub from messages.
    pub secrets: Vec<String>,
    /// The URL with every credential replaced by `***`.
    pub redacted: String,
}

impl RemoteUrl {
    /// Parses `url` (what followed `git+`). The error text never repeats a
    /// credential.
    pub fn parse(url: &str) -> Result<RemoteUrl, String> {
        if url.is_empty() {
            return Err("the URL is empty".into());
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("the URL contains white space or control characters".into());
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Self::parse_scp_like(url);
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            "ssh" => Scheme::Ssh,
            "git" => Scheme::Git,
            "file" => Scheme::File,
            other => {
                return Err(format!(
                    "unsupported transport `{other}` (use https, http, ssh, git or file)"
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (mut user, mut password) = (None, None);
        if let Some(info) = userinfo {
            match info.split_once(':') {
                Some((u, p)) => {
                    user = Some(u.to_string());
                    password = Some(p.to_string());
                }
                None => user = Some(info.to_string()),
            }
        }
        let (host, port) = split_host_port(hostport)?;
        if scheme == Scheme::Ssh && user.as_deref().is_some_and(|u| u.starts_with('-')) {
            return Err("the URL's user name starts with `-`: refused".into());
        }
        if scheme == Scheme::File {
            if host.is_some() && host.as_deref() != Some("localhost") {
                return Err("a file:// URL names no host: write file:///path/to/repo".into());
            }
            if path.is_empty() {
                return Err("the file:// URL has no path".into());
            }
        } else if host.is_none() {
            return Err("the URL has no host".into());
        }
        // A token is often written as the user name over http(s): treat the
        // whole user part as secret there.
        let web = matches!(scheme, Scheme::Https | Scheme::Http);
        let mut secrets = Vec::new();
        let shown_userinfo = match (&user, &password) {
            (Some(u), Some(p)) => {
                secrets.push(p.clone());
                if web {
                    secrets.push(u.clone());
                    "***:***@".to_string()
                } else {
                    format!("{u}:***@")
                }
            }
            (Some(u), None) if web => {
                secrets.push(u.clone());
                "***@".to_string()
            }
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        secrets.retain(|s| !s.is_empty());
        let scheme_text = &url[..url.find("://").expect("checked above")];
        let redacted = format!(
            "{scheme_text}://{shown_userinfo}{hostport}{}",
            redact_query(path)
        );
        Ok(RemoteUrl {
            scheme,
            host,
            port,
            user: if web { None } else { user },
            path: path.to_string(),
            secrets,
            redacted,
        })
    }

    /// `[user@]host:path`, scp-like ssh.
    fn parse_scp_like(url: &str) -> Result<RemoteUrl, String> {
        let colon = url.find(':');
        let slash = url.find('/');
        let Some(colon) = colon.filter(|c| slash.is_none_or(|s| *c < s)) else {
            return Err(
                "the URL has no transport: write https://, ssh://, git:// or file:///…".into(),
            );
        };
        let (userhost, path) = url.split_at(colon);
        let (user, host) = match userhost.rfind('@') {
            Some(i) => (Some(userhost[..i].to_string()), &userhost[i + 1..]),
            None => (None, userhost),
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        if host.starts_with('-') {
            return Err("the URL's host starts with `-`: refused".into());
        }
        if user.as_deref().is_some_and(|u| u.contains(':')) {
            return Err("an scp-like ssh URL cannot carry a password".into());
        }
        if user.as_deref().is_some_and(|u| u.starts_with('-')) {
            return Err("the URL's user name starts with `-`: refused".into());
        }
        Ok(RemoteUrl {
            scheme: Scheme::Ssh,
            host: Some(host.to_string()),
            port: None,
            user,
            path: path[1..].to_string(),
            secrets: Vec::new(),
            redacted: url.to_string(),
        })
    }

    /// True when the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        match self.host.as_deref() {
            Some("localhost") => true,
            Some(h) => h
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => true,
        }
    }

    /// Replaces every credential in `text` (the URL's and `more`) by `***`.
    pub fn scrub(&self, text: &str, more: &[&str]) -> String {
        let mut out = text.to_string();
        let mut all: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        all.extend(more.iter().copied().filter(|s| !s.is_empty()));
        // Longest first, so that a secret containing another goes whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in all {
            out = out.replace(s, "***");
        }
        out
    }
}

fn split_host_port(hostport: &str) -> Result<(Option<String>, Option<u16>), String> {
    if hostport.is_empty() {
        return Ok((None, None));
    }
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err("the URL has an unclosed `[` in its host".into());
        };
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err("the URL has text after its host's `]`".into()),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some("") | None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("the URL's port `{p}` is not a number"))?,
        ),
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if host.starts_with('-') {
        return Err("the URL's host starts with `-`: refused".into());
    }
    Ok((Some(host.to_string()), port))
}

/// Hides a query string, which may carry tokens (`?private_token=…`).
fn redact_query(path: &str) -> String {
    match path.split_once('?') {
        Some((p, _)) => format!("{p}?***"),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_credentials_are_redacted() {
        let u = RemoteUrl::parse("https://alice:s3cret@example.com/org/repo.git").unwrap();
        assert_eq!(u.scheme, Scheme::Https);
        assert_eq!(u.host.as_deref(), Some("example.com"));
        assert_eq!(u.redacted, "https://***:***@example.com/org/repo.git");
        assert!(!u.redacted.contains("s3cret"));
        assert_eq!(
            u.scrub("GET https://alice:s3cret@example.com failed (s3cret)", &[]),
            "GET https://***:***@example.com failed (***)"
        );
    }

    #[test]
    fn token_as_user_name_is_redacted() {
        let u = RemoteUrl::parse("https://ghp_abcdef@example.com/r?private_token=x").unwrap();
        assert_eq!(u.redacted, "https://***@example.com/r?***");
        assert_eq!(u.user, None);
    }

    #[test]
    fn ssh_forms() {
        let u = RemoteUrl::parse("ssh://git@[::1]:2222/srv/r.git").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_deref(), u.port, u.user.as_deref()),
            (Scheme::Ssh, Some("::1"), Some(2222), Some("git"))
        );
        assert_eq!(u.redacted, "ssh://git@[::1]:2222/srv/r.git");
        assert_eq!(u.path, "/srv/r.git");
        let u = RemoteUrl::parse("git@example.com:org/r.git").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_deref(), u.port, u.user.as_deref()),
            (Scheme::Ssh, Some("example.com"), None, Some("git"))
        );
        assert_eq!(u.path, "org/r.git");
        let u = RemoteUrl::parse("example.com:/srv/it's.git").unwrap();
        assert_eq!((u.user, u.path.as_str()), (None, "/srv/it's.git"));
    }

    #[test]
    fn hosts_and_users_that_ssh_would_take_for_options_are_refused() {
        for bad in [
            "ssh://-oProxyCommand=touch%20x/r",
            "ssh://git@-oProxyCommand=x/r",
            "ssh://-oProxyCommand=x@example.com/r",
            "-oProxyCommand=x:r",
            "git@-oProxyCommand=x:r",
            "-l@example.com:r",
            "https://-example.com/r",
            "ssh://-oProxyCommand=touch /tmp/x/r",
            "ssh://host\tname/r",
        ] {
            let e = RemoteUrl::parse(bad).expect_err(bad);
            assert!(
                e.contains("refused") || e.contains("white space"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn file_and_git() {
        let u = RemoteUrl::parse("file:///srv/repo").unwrap();
        assert_eq!((u.scheme, u.host.as_deref()), (Scheme::File, None));
        assert!(u.is_loopback());
        let u = RemoteUrl::parse("git://127.0.0.1:9418/repo").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Git, Some(9418)));
        assert!(u.is_loopback());
    }

    #[test]
    fn bad_urls_are_refused() {
        for bad in [
            "",
            "ftp://example.com/r",
            "/srv/repo",
            "https:///r",
            "file://otherhost/r",
            "https://example.com:99999/r",
            "https://exa mple.com/r",
        ] {
            assert!(RemoteUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
        // The error never repeats the password.
        let e = RemoteUrl::parse("ftp://u:hunter2@x/r").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
