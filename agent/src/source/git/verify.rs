//! Commit signature verification against configured keys, without shelling
//! out: SSH signatures (`-----BEGIN SSH SIGNATURE-----`, namespace `git`)
//! against an OpenSSH `allowed_signers` file.

use std::path::PathBuf;

use ssh_key::{HashAlg, PublicKey, SshSig};

/// Which keys may sign the commits a source applies.
#[derive(Debug, Clone, Default)]
pub struct VerifyConfig {
    /// An OpenSSH `allowed_signers` file (`principals [options] keytype key`),
    /// as for `git config gpg.ssh.allowedSignersFile`. Of the options,
    /// `namespaces=` is honoured (it must allow `git`) and `cert-authority`
    /// lines are skipped (certificates are not supported); `valid-after` and
    /// `valid-before` are not checked.
    pub allowed_signers: Option<PathBuf>,
    /// OpenPGP public keys (armored). Not supported yet: a source that lists
    /// them is refused at the first sync, so that no commit is ever applied
    /// unverified.
    pub openpgp_keys: Vec<PathBuf>,
}

/// Why a commit was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unsigned,
    /// Signed by a key the configuration does not list (its fingerprint).
    UnknownKey(String),
    /// The signature is malformed, of another namespace, of an unsupported
    /// kind, or does not match the commit.
    Bad(String),
}

/// One usable line of an allowed_signers file.
#[derive(Debug)]
pub(crate) struct AllowedSigner {
    pub principals: String,
    pub key: PublicKey,
}

/// Parses an allowed_signers file: lines whose namespaces do not include
/// `git`, and certificate authorities, are left out. A line that cannot be
/// parsed is an error naming its number.
pub(crate) fn parse_allowed_signers(text: &str) -> Result<Vec<AllowedSigner>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let tokens = tokenize(line);
        let bad = |what: &str| format!("line {}: {what}", n + 1);
        if tokens.len() < 3 {
            return Err(bad("expected `principals [options] keytype key`"));
        }
        let principals = tokens[0].trim_matches('"').to_string();
        let (options, key_at) = if is_key_type(&tokens[1]) {
            ("", 1)
        } else {
            (tokens[1].as_str(), 2)
        };
        if tokens.len() < key_at + 2 {
            return Err(bad("no key after the options"));
        }
        let key = PublicKey::from_openssh(&format!("{} {}", tokens[key_at], tokens[key_at + 1]))
            .map_err(|e| bad(&format!("bad public key: {e}")))?;
        let mut namespaces: Option<Vec<String>> = None;
        let mut cert_authority = false;
        for opt in split_options(options) {
            let (k, v) = opt.split_once('=').unwrap_or((opt.as_str(), ""));
            match k.to_ascii_lowercase().as_str() {
                "namespaces" => {
                    namespaces = Some(
                        v.trim_matches('"')
                            .split(',')
                            .map(|s| s.trim().to_string())
                            .collect(),
                    )
                }
                "cert-authority" => cert_authority = true,
                _ => {}
            }
        }
        if cert_authority
            || namespaces.as_ref().is_some_and(|ns| {
                !ns.iter()
                    .any(|p| super::known_hosts::wildcard_match(p, "git"))
            })
        {
            continue;
        }
        out.push(AllowedSigner { principals, key });
    }
    Ok(out)
}

/// Verifies an SSH signature (`signature`, the commit's gpgsig header) over
/// `signed` (the commit without that header). Returns the signer's
/// principals and key fingerprint.
pub(crate) fn verify_ssh(
    allowed: &[AllowedSigner],
    signature: &str,
    signed: &[u8],
) -> Result<String, Refusal> {
    let sig = SshSig::from_pem(signature.trim())
        .map_err(|e| Refusal::Bad(format!("unreadable SSH signature: {e}")))?;
    if sig.namespace() != "git" {
        return Err(Refusal::Bad(format!(
            "the SSH signature is for namespace `{}`, not `git`",
            sig.namespace()
        )));
    }
    let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
    let Some(signer) = allowed
        .iter()
        .find(|a| a.key.key_data() == sig.public_key())
    else {
        return Err(Refusal::UnknownKey(fingerprint));
    };
    signer.key.verify("git", signed, &sig).map_err(|_| {
        Refusal::Bad(format!(
            "the signature by {fingerprint} does not match the commit"
        ))
    })?;
    Ok(format!("{} ({fingerprint})", signer.principals))
}

fn is_key_type(token: &str) -> bool {
    token.starts_with("ssh-") || token.starts_with("ecdsa-") || token.starts_with("sk-")
}

/// Splits on white space outside double quotes.
fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Splits an options field on commas outside double quotes.
fn split_options(options: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in options.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII7v8HFdvg47lJEngaGm842Lh8nigQQiK4ZgGo7DwY+m";

    #[test]
    fn allowed_signers_lines() {
        let text = format!(
            "# comment\n\
             alice@example.com {KEY} laptop\n\
             bob@example.com,carol@example.com namespaces=\"file,git\" {KEY}\n\
             dave@example.com namespaces=\"file\" {KEY}\n\
             *@example.com cert-authority {KEY}\n\
             erin@example.com valid-after=\"20240101\",namespaces=\"g*\" {KEY}\n"
        );
        let signers = parse_allowed_signers(&text).unwrap();
        let names: Vec<&str> = signers.iter().map(|s| s.principals.as_str()).collect();
        assert_eq!(
            names,
            [
                "alice@example.com",
                "bob@example.com,carol@example.com",
                "erin@example.com"
            ]
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        let e = parse_allowed_signers("\nalice ssh-ed25519 notakey\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse_allowed_signers("alice\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
    }

    #[test]
    fn garbage_signatures_are_bad() {
        let signers = parse_allowed_signers(&format!("a {KEY}")).unwrap();
        let r = verify_ssh(
            &signers,
            "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----",
            b"x",
        );
        assert!(matches!(r, Err(Refusal::Bad(_))), "{r:?}");
    }
}
