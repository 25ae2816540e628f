//! Image signatures as cosign writes them ("simple signing"), checked with
//! a public key: `cosign sign --key` pushes, beside the image, a manifest
//! tagged `sha256-<hex of the image's digest>.sig` whose layers are JSON
//! payloads (`application/vnd.dev.cosign.simplesigning.v1+json`) naming the
//! digest they vouch for in `critical.image.docker-manifest-digest`, each
//! with its ECDSA signature (base64 of DER) in the annotation
//! `dev.cosignproject.cosign/signature`. An image verifies when one of
//! those payloads is signed by one of the keys, names exactly the digest
//! the reference resolves to, and says it is a cosign container image
//! signature.
//!
//! Keys are ECDSA P-256 public keys in PEM (`-----BEGIN PUBLIC KEY-----`),
//! as `cosign generate-key-pair` and skopeo write them. Docker Content
//! Trust (Notary v1) is not supported: Docker has retired it.
//!
//! What verifies is a digest: the caller pulls that digest, never the tag
//! again, so a tag moved between the check and the pull changes nothing.

use std::path::Path;

use base64::Engine as _;
use moor_spec::reference::ImageRef;
use moor_store::Digest;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;

use super::pull::{Client, PullError, PullOptions};

/// The media type of a simple-signing payload.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a payload's signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// What `critical.type` says in a cosign signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
/// The largest payload read.
const MAX_PAYLOAD: u64 = 64 << 10;
/// Signatures looked at, at most.
const MAX_SIGNATURES: usize = 32;

/// A public key to check signatures with.
#[derive(Debug, Clone)]
pub struct Key {
    /// Where it came from, for messages.
    pub name: String,
    key: VerifyingKey,
}

impl Key {
    /// Reads a PEM public key file.
    pub fn read(path: &Path) -> Result<Key, VerifyError> {
        let text = std::fs::read_to_string(path).map_err(|e| VerifyError::Key {
            key: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Key::from_pem(&path.display().to_string(), &text)
    }

    /// Parses a PEM public key (`-----BEGIN PUBLIC KEY-----`, ECDSA P-256).
    pub fn from_pem(name: &str, pem: &str) -> Result<Key, VerifyError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| VerifyError::Key {
            key: name.to_string(),
            reason: format!("not an ECDSA P-256 public key in PEM: {e}"),
        })?;
        Ok(Key {
            name: name.to_string(),
            key,
        })
    }
}

/// Why an image did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A key cannot be used.
    #[error("key {key}: {reason}")]
    Key {
        /// The key file.
        key: String,
        /// Why.
        reason: String,
    },
    /// The registry could not be asked.
    #[error(transparent)]
    Registry(#[from] PullError),
    /// No signature is published for the digest.
    #[error("{reference} ({digest}) is not signed: no {tag} in the registry")]
    Unsigned {
        /// The reference.
        reference: String,
        /// What it resolved to.
        digest: String,
        /// The signature tag looked for.
        tag: String,
    },
    /// Signatures exist, none good for this digest and these keys.
    #[error("{reference} ({digest}) has no valid signature by {keys}: {reasons}")]
    Invalid {
        /// The reference.
        reference: String,
        /// What it resolved to.
        digest: String,
        /// The keys tried.
        keys: String,
        /// What was wrong with each signature.
        reasons: String,
    },
}

/// A verified image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The digest the reference resolved to and the signature names: what
    /// to pull.
    pub digest: String,
    /// The key that signed it.
    pub key: String,
}

#[derive(Deserialize)]
struct SigManifest {
    #[serde(default)]
    layers: Vec<SigLayer>,
}

#[derive(Deserialize)]
struct SigLayer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: CriticalImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct CriticalImage {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// The tag cosign puts the signatures of `digest` under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// Checks one payload and its signature against `digest` and `keys`:
/// the key that signed it, or why not.
pub fn check_payload(
    payload: &[u8],
    signature_b64: &str,
    digest: &str,
    keys: &[Key],
) -> Result<String, String> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let signature = Signature::from_der(&der)
        .or_else(|_| Signature::from_slice(&der))
        .map_err(|e| format!("signature is not an ECDSA signature: {e}"))?;
    let key = keys
        .iter()
        .find(|k| k.key.verify(payload, &signature).is_ok())
        .ok_or_else(|| "signed by none of the keys".to_string())?;
    let p: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("payload is not a simple-signing document: {e}"))?;
    if p.critical.kind != SIGNATURE_TYPE {
        return Err(format!("payload type is \"{}\"", p.critical.kind));
    }
    if p.critical.image.digest != digest {
        return Err(format!("signature is for {}", p.critical.image.digest));
    }
    Ok(key.name.clone())
}

/// Resolves `reference` and checks its signatures with `keys`.
pub fn verify(reference: &str, keys: &[Key], opts: &PullOptions) -> Result<Verified, VerifyError> {
    let r = moor_spec::reference::parse(reference).map_err(PullError::Reference)?;
    verify_ref(&r, keys, opts)
}

/// [`verify`] of a parsed reference.
pub fn verify_ref(r: &ImageRef, keys: &[Key], opts: &PullOptions) -> Result<Verified, VerifyError> {
    let client = Client::new(r, opts)?;
    let (body, _) = match &r.digest {
        Some(d) => client.manifest(d, Some(d))?,
        None => client.manifest(r.tag.as_deref().unwrap_or("latest"), None)?,
    };
    let digest = Digest::of(&body).to_string();
    let tag = signature_tag(&digest);
    let sigs = match client.manifest(&tag, None) {
        Ok((b, _)) => b,
        Err(PullError::Status { status: 404, .. }) => {
            return Err(VerifyError::Unsigned {
                reference: r.to_string(),
                digest,
                tag,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let invalid = |reasons: Vec<String>| VerifyError::Invalid {
        reference: r.to_string(),
        digest: digest.clone(),
        keys: keys
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        reasons: if reasons.is_empty() {
            "the signature manifest holds no signatures".into()
        } else {
            reasons.join("; ")
        },
    };
    let manifest: SigManifest = serde_json::from_slice(&sigs)
        .map_err(|e| invalid(vec![format!("{tag} is not a manifest: {e}")]))?;
    let mut reasons = Vec::new();
    for layer in manifest.layers.iter().take(MAX_SIGNATURES) {
        if layer.media_type != SIMPLE_SIGNING {
            continue;
        }
        let Some(sig) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            reasons.push(format!("{}: no signature annotation", layer.digest));
            continue;
        };
        if layer.size > MAX_PAYLOAD {
            reasons.push(format!(
                "{}: payload larger than {MAX_PAYLOAD} bytes",
                layer.digest
            ));
            continue;
        }
        let payload = match fetch(&client, &layer.digest) {
            Ok(p) => p,
            Err(e) => {
                reasons.push(format!("{}: {e}", layer.digest));
                continue;
            }
        };
        match check_payload(&payload, sig, &digest, keys) {
            Ok(key) => return Ok(Verified { digest, key }),
            Err(why) => reasons.push(format!("{}: {why}", layer.digest)),
        }
    }
    Err(invalid(reasons))
}

/// A small blob, in memory, checked against its digest.
fn fetch(client: &Client, digest: &str) -> Result<Vec<u8>, String> {
    let path = format!("/v2/{}/blobs/{digest}", client.repository);
    let mut resp = client.get(&path, None).map_err(|e| e.to_string())?;
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_PAYLOAD)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    if Digest::of(&body).to_string() != digest {
        return Err("payload does not match its digest".into());
    }
    Ok(body)
}

/// A verification rule of the agent's configuration: images whose
/// reference matches `pattern` must be signed by one of `keys`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `registry/repository`, with `*` as [`Rule::matches`] reads it.
    pub pattern: String,
    /// The keys, any one of which may have signed.
    pub keys: Vec<Key>,
}

impl Rule {
    /// Whether the rule covers `r`: the pattern is matched against
    /// `registry/repository` (normalised: `docker.io/library/nginx`); `*`
    /// matches any characters but `/`, and a pattern ending in `/*`
    /// matches everything below that prefix, as a repository prefix.
    pub fn matches(&self, r: &ImageRef) -> bool {
        glob(&self.pattern, &r.name())
    }
}

fn glob(pattern: &str, name: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix("/*")
        && !prefix.contains('*')
    {
        return name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1);
    }
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .take_while(|&i| !rest[..i].contains('/'))
                .any(|i| rest.is_char_boundary(i) && glob(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};

    use super::*;

    fn key(seed: u8) -> (SigningKey, Key) {
        let sk = SigningKey::from_slice(&[seed; 32]).unwrap();
        let pem = sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let k = Key::from_pem(&format!("key{seed}"), &pem).unwrap();
        (sk, k)
    }

    fn payload(digest: &str) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/x"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"{SIGNATURE_TYPE}"}},"optional":null}}"#
        )
        .into_bytes()
    }

    fn sign(sk: &SigningKey, data: &[u8]) -> String {
        let sig: Signature = sk.sign(data);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const E: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn a_payload_verifies_only_for_its_digest_and_key() {
        let (sk1, k1) = key(1);
        let (sk2, k2) = key(2);
        let p = payload(D);
        assert_eq!(
            check_payload(&p, &sign(&sk1, &p), D, std::slice::from_ref(&k1)).unwrap(),
            "key1"
        );
        assert_eq!(
            check_payload(&p, &sign(&sk1, &p), D, &[k2.clone(), k1.clone()]).unwrap(),
            "key1"
        );
        let wrong_key =
            check_payload(&p, &sign(&sk2, &p), D, std::slice::from_ref(&k1)).unwrap_err();
        assert!(wrong_key.contains("none of the keys"), "{wrong_key}");
        let other = check_payload(&p, &sign(&sk1, &p), E, std::slice::from_ref(&k1)).unwrap_err();
        assert!(other.contains("signature is for"), "{other}");
        let mut flipped = p.clone();
        flipped[10] ^= 1;
        assert!(check_payload(&flipped, &sign(&sk1, &p), D, std::slice::from_ref(&k1)).is_err());
        assert!(check_payload(&p, "not base64!", D, &[k1]).is_err());
    }

    #[test]
    fn the_signature_tag_is_cosigns() {
        assert_eq!(signature_tag(D), format!("sha256-{}.sig", &D[7..]));
    }

    #[test]
    fn rules_match_repositories_and_prefixes() {
        let r = |s: &str| moor_spec::reference::parse(s).unwrap();
        let rule = |p: &str| Rule {
            pattern: p.into(),
            keys: vec![],
        };
        assert!(rule("registry.example.com/team/*").matches(&r("registry.example.com/team/app:1")));
        assert!(rule("registry.example.com/team/*").matches(&r("registry.example.com/team/a/b:1")));
        assert!(
            !rule("registry.example.com/team/*").matches(&r("registry.example.com/teams/app:1"))
        );
        assert!(!rule("registry.example.com/team/*").matches(&r("registry.example.com/team:1")));
        assert!(rule("docker.io/library/nginx").matches(&r("nginx:1.27")));
        assert!(rule("localhost:5000/*-signed").matches(&r("localhost:5000/app-signed:1")));
        assert!(!rule("localhost:5000/*-signed").matches(&r("localhost:5000/a/b-signed:1")));
    }

    #[test]
    fn a_key_that_is_not_p256_pem_is_named() {
        let e = Key::from_pem(
            "/etc/moor/cosign.pub",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("/etc/moor/cosign.pub"), "{e}");
    }
}
