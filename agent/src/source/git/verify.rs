//! Commit signature verification against configured keys, without shelling
//! out: SSH signatures (`-----BEGIN SSH SIGNATURE-----`, namespace `git`)
//! against an OpenSSH `allowed_signers` file (with `ssh-key`), and OpenPGP
//! signatures (`-----BEGIN PGP SIGNATURE-----`) against public key files
//! (with rPGP).

use std::path::PathBuf;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::{KeyDetails, KeyId};
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
    /// OpenPGP public key files (armored, as `gpg --export --armor` writes
    /// them, or binary), each holding one or more keys. A signature by the
    /// primary key or by a subkey bound to it verifies. Expiry and revocation
    /// are not checked: remove a key from the list to stop trusting it.
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

/// Parses OpenPGP public keys (armored or binary), checking that every
/// subkey and user id is bound to its primary key.
pub(crate) fn parse_openpgp_keys(bytes: &[u8]) -> Result<Vec<SignedPublicKey>, String> {
    let keys: Vec<SignedPublicKey> = if bytes.trim_ascii_start().starts_with(b"-----BEGIN PGP") {
        let (keys, _) = SignedPublicKey::from_armor_many(bytes).map_err(|e| e.to_string())?;
        keys.collect::<Result<_, _>>().map_err(|e| e.to_string())?
    } else {
        SignedPublicKey::from_bytes_many(bytes)
            .map_err(|e| e.to_string())?
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?
    };
    if keys.is_empty() {
        return Err("no OpenPGP public key in it".into());
    }
    for k in &keys {
        k.verify_bindings()
            .map_err(|e| format!("key {:X}: bad binding signature: {e}", k.fingerprint()))?;
    }
    Ok(keys)
}

/// Verifies an OpenPGP detached signature over `signed` with the key (or
/// subkey) that the signature names as its issuer. Returns the signer's user
/// id and fingerprint.
pub(crate) fn verify_openpgp(
    keys: &[SignedPublicKey],
    signature: &str,
    signed: &[u8],
) -> Result<String, Refusal> {
    let (sig, _) = DetachedSignature::from_string(signature)
        .map_err(|e| Refusal::Bad(format!("unreadable OpenPGP signature: {e}")))?;
    let fingerprints = sig.signature.issuer_fingerprint();
    let key_ids: Vec<&KeyId> = sig.signature.issuer_key_id();
    let names = |k: &dyn KeyDetails| {
        fingerprints.iter().any(|f| **f == k.fingerprint())
            || key_ids.iter().any(|id| **id == k.legacy_key_id())
    };
    let issuer = fingerprints
        .first()
        .map(|f| format!("{f:X}"))
        .or_else(|| key_ids.first().map(|k| k.to_string().to_uppercase()))
        .unwrap_or_else(|| "(the signature names no issuer)".into());
    for key in keys {
        let user = key
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .unwrap_or_default();
        let signer = format!("{user} (OpenPGP {:X})", key.fingerprint());
        if names(key) {
            return sig.verify(key, signed).map(|()| signer).map_err(|_| {
                Refusal::Bad(format!(
                    "the signature by {issuer} does not match the commit"
                ))
            });
        }
        for sub in &key.public_subkeys {
            if names(sub) {
                return sig.verify(sub, signed).map(|()| signer).map_err(|_| {
                    Refusal::Bad(format!(
                        "the signature by {issuer} does not match the commit"
                    ))
                });
            }
        }
    }
    Err(Refusal::UnknownKey(issuer))
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
