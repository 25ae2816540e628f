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
//! This module is the check itself, without a network; the registry side
//! (resolving the tag, fetching the `.sig` manifest and its payloads) is
//! [`super::pull::verify`].

use std::path::Path;

use base64::Engine as _;
use moor_spec::reference::ImageRef;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;

/// The media type of a simple-signing payload.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a payload's signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// What `critical.type` says in a cosign signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
/// The largest payload read.
pub const MAX_PAYLOAD: u64 = 64 << 10;
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
    /// No signature is published for the digest.
    #[error(
        "{reference} ({digest}) is not signed: no {tag} in the registry and no Sigstore bundle among its referrers"
    )]
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

/// Checks the signature manifest `sigs` (the `.sig` tag's) for `digest`
/// with `keys`, reading each payload with `fetch` (a blob digest → its
/// bytes, checked against the digest by the caller).
pub fn check_signatures(
    reference: &str,
    digest: &str,
    sigs: &[u8],
    keys: &[Key],
    fetch: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Verified, VerifyError> {
    let tag = signature_tag(digest);
    let invalid = |reasons: Vec<String>| VerifyError::Invalid {
        reference: reference.to_string(),
        digest: digest.to_string(),
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
    let manifest: SigManifest = serde_json::from_slice(sigs)
        .map_err(|e| invalid(vec![format!("{tag} is not a manifest: {e}")]))?;
    let mut reasons = Vec::new();
    for layer in manifest.layers.iter().take(MAX_SIGNATURES) {
        if layer.media_type != SIMPLE_SIGNING {
            continue;
        }
        if !is_digest(&layer.digest) {
            reasons.push(format!(
                "payload digest \"{}\" is not a sha256 digest",
                layer.digest.escape_debug()
            ));
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
        let payload = match fetch(&layer.digest) {
            Ok(p) => p,
            Err(e) => {
                reasons.push(format!("{}: {e}", layer.digest));
                continue;
            }
        };
        match check_payload(&payload, sig, digest, keys) {
            Ok(key) => {
                return Ok(Verified {
                    digest: digest.to_string(),
                    key,
                });
            }
            Err(why) => reasons.push(format!("{}: {why}", layer.digest)),
        }
    }
    Err(invalid(reasons))
}

/// The media types of a Sigstore bundle, as a referrer's `artifactType`
/// and as the layer holding it: v0.3 (what cosign v3 pushes), and the
/// older v0.1 and v0.2 spellings.
pub const BUNDLE_TYPES: &[&str] = &[
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];
/// The largest bundle read (one holds a signature, perhaps a certificate
/// and transparency-log entries: a few kilobytes).
pub const MAX_BUNDLE: u64 = 256 << 10;
/// What an image signature's in-toto statement says it is: the predicate
/// type `cosign sign` writes. Attestations (SBOMs, provenance) of the same
/// image, signed by the same key, are not signatures of it.
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// Referrers looked at, at most.
pub const MAX_REFERRERS: usize = 32;

/// Whether `digest` is written as a registry must be asked for it
/// (`sha256:` and 64 lower-case hex digits): a digest a registry's answer
/// names goes into the path of the next request.
pub fn is_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether `media_type` is one of [`BUNDLE_TYPES`].
pub fn is_bundle(media_type: &str) -> bool {
    BUNDLE_TYPES.contains(&media_type)
}

/// The tag the OCI referrers tag schema keeps the referrers of `digest`
/// under, for registries without the referrers API (`sha256-<hex>`).
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    message_signature: Option<MessageSignature>,
    dsse_envelope: Option<Envelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageSignature {
    message_digest: Option<HashOutput>,
    signature: String,
}

#[derive(Deserialize)]
struct HashOutput {
    algorithm: String,
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<Subject>,
    predicate_type: String,
}

#[derive(Deserialize)]
struct Subject {
    digest: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ReferrerIndex {
    #[serde(default)]
    manifests: Vec<ReferrerDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerDescriptor {
    digest: String,
    artifact_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    artifact_type: Option<String>,
    config: Option<ArtifactConfig>,
    subject: Option<ArtifactSubject>,
    #[serde(default)]
    layers: Vec<SigLayer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactConfig {
    media_type: String,
}

#[derive(Deserialize)]
struct ArtifactSubject {
    digest: String,
}

/// The referrers that are Sigstore bundles, by digest, in an image index
/// listing referrers (what the referrers API answers, or the referrers
/// tag schema's index): at most [`MAX_REFERRERS`].
pub fn bundle_referrers(index: &[u8]) -> Result<Vec<String>, String> {
    let index: ReferrerIndex = serde_json::from_slice(index)
        .map_err(|e| format!("the referrers list is not an image index: {e}"))?;
    Ok(index
        .manifests
        .into_iter()
        .filter(|d| d.artifact_type.as_deref().is_some_and(is_bundle))
        .map(|d| d.digest)
        .take(MAX_REFERRERS)
        .collect())
}

/// The bundle layer (digest) of the referrer manifest `manifest`, which
/// must be a Sigstore bundle artifact whose subject is `digest`.
pub fn bundle_layer(manifest: &[u8], digest: &str) -> Result<String, String> {
    let m: ArtifactManifest =
        serde_json::from_slice(manifest).map_err(|e| format!("not an artifact manifest: {e}"))?;
    let kind = m
        .artifact_type
        .or(m.config.map(|c| c.media_type))
        .unwrap_or_default();
    if !is_bundle(&kind) {
        return Err(format!(
            "artifact type \"{kind}\" is not a Sigstore bundle's"
        ));
    }
    match m.subject {
        Some(s) if s.digest == digest => {}
        Some(s) => return Err(format!("the referrer's subject is {}", s.digest)),
        None => return Err("the referrer names no subject".into()),
    }
    let layer = m
        .layers
        .iter()
        .find(|l| is_bundle(&l.media_type))
        .ok_or("the artifact holds no bundle layer")?;
    if !is_digest(&layer.digest) {
        return Err(format!(
            "bundle layer digest \"{}\" is not a sha256 digest",
            layer.digest.escape_debug()
        ));
    }
    if layer.size > MAX_BUNDLE {
        return Err(format!(
            "{}: bundle larger than {MAX_BUNDLE} bytes",
            layer.digest
        ));
    }
    Ok(layer.digest.clone())
}

/// DSSE's pre-authentication encoding of a payload: what its signatures
/// sign (`DSSEv1 <len> <type> <len> <body>`, lengths in ASCII decimal).
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn b64(what: &str, text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("{what} is not base64: {e}"))
}

fn ecdsa_signature(der: &[u8]) -> Result<Signature, String> {
    Signature::from_der(der)
        .or_else(|_| Signature::from_slice(der))
        .map_err(|e| format!("signature is not an ECDSA signature: {e}"))
}

/// Checks a Sigstore bundle (the JSON of a referrer's bundle layer)
/// against the image manifest digest `digest` and `keys`, offline: the
/// key that signed it, or why not.
///
/// A bundle vouches for the image in one of two ways: a
/// `messageSignature` whose message digest is the manifest's (SHA-256)
/// and whose signature is over it, or a `dsseEnvelope` whose in-toto
/// statement (`predicateType` [`SIGN_PREDICATE`]) names the manifest's
/// digest among its subjects, signed over DSSE's pre-authentication
/// encoding. The bundle's verification material (a certificate, the
/// transparency-log entries) is not checked: a key given here is trusted
/// as it is, as `cosign verify --key --insecure-ignore-tlog` does.
pub fn check_bundle(bundle: &[u8], digest: &str, keys: &[Key]) -> Result<String, String> {
    let b: Bundle =
        serde_json::from_slice(bundle).map_err(|e| format!("not a Sigstore bundle: {e}"))?;
    if !is_bundle(&b.media_type) {
        return Err(format!(
            "bundle media type \"{}\" is not a Sigstore bundle's",
            b.media_type
        ));
    }
    let want = digest
        .strip_prefix("sha256:")
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| format!("{digest} is not a sha256 digest"))?;
    match (b.message_signature, b.dsse_envelope) {
        (Some(m), None) => {
            let md = m
                .message_digest
                .ok_or("the message signature names no message digest")?;
            if md.algorithm != "SHA2_256" {
                return Err(format!(
                    "message digest algorithm {} is not SHA2_256",
                    md.algorithm
                ));
            }
            let got = b64("message digest", &md.digest)?;
            if got != want {
                return Err(format!("signature is for sha256:{}", hex::encode(&got)));
            }
            let sig = ecdsa_signature(&b64("signature", &m.signature)?)?;
            keys.iter()
                .find(|k| k.key.verify_prehash(&want, &sig).is_ok())
                .map(|k| k.name.clone())
                .ok_or_else(|| "signed by none of the keys".to_string())
        }
        (None, Some(env)) => {
            let payload = b64("DSSE payload", &env.payload)?;
            let signed = pae(&env.payload_type, &payload);
            let mut key = None;
            for s in env.signatures.iter().take(MAX_SIGNATURES) {
                let Ok(sig) = b64("signature", &s.sig).and_then(|d| ecdsa_signature(&d)) else {
                    continue;
                };
                if let Some(k) = keys.iter().find(|k| k.key.verify(&signed, &sig).is_ok()) {
                    key = Some(k.name.clone());
                    break;
                }
            }
            let key = key.ok_or("signed by none of the keys")?;
            if env.payload_type != IN_TOTO {
                return Err(format!(
                    "DSSE payload type \"{}\" is not an in-toto statement's",
                    env.payload_type
                ));
            }
            let st: Statement = serde_json::from_slice(&payload)
                .map_err(|e| format!("DSSE payload is not an in-toto statement: {e}"))?;
            if !matches!(
                st.kind.as_str(),
                "https://in-toto.io/Statement/v1" | "https://in-toto.io/Statement/v0.1"
            ) {
                return Err(format!("statement type \"{}\" is not in-toto's", st.kind));
            }
            if st.predicate_type != SIGN_PREDICATE {
                return Err(format!(
                    "statement is an attestation ({}), not a signature ({SIGN_PREDICATE})",
                    st.predicate_type
                ));
            }
            let hex_want = hex::encode(&want);
            if !st.subject.iter().any(|s| {
                s.digest
                    .get("sha256")
                    .is_some_and(|h| h.eq_ignore_ascii_case(&hex_want))
            }) {
                let named: Vec<String> = st
                    .subject
                    .iter()
                    .filter_map(|s| s.digest.get("sha256"))
                    .map(|h| format!("sha256:{h}"))
                    .collect();
                return Err(format!(
                    "signature is for {}",
                    if named.is_empty() {
                        "no sha256 digest".to_string()
                    } else {
                        named.join(", ")
                    }
                ));
            }
            Ok(key)
        }
        (Some(_), Some(_)) => {
            Err("the bundle holds both a message signature and a DSSE envelope".into())
        }
        (None, None) => Err("the bundle holds no signature".into()),
    }
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

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    fn hex_of(digest: &str) -> Vec<u8> {
        hex::decode(&digest[7..]).unwrap()
    }

    /// A bundle with a message signature over the manifest whose digest is
    /// `digest` (the signature made over `signed_digest`).
    fn message_bundle(sk: &SigningKey, digest: &str, signed_digest: &str) -> Vec<u8> {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let sig: Signature = sk.sign_prehash(&hex_of(signed_digest)).unwrap();
        serde_json::to_vec(&serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "k"}, "tlogEntries": []},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": b64(&hex_of(digest))},
                "signature": b64(sig.to_der().as_bytes()),
            },
        }))
        .unwrap()
    }

    fn statement(digest: &str, predicate: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "r/x", "digest": {"sha256": &digest[7..]}}],
            "predicateType": predicate,
            "predicate": {},
        }))
        .unwrap()
    }

    fn dsse_bundle(sk: &SigningKey, payload: &[u8], payload_type: &str) -> Vec<u8> {
        let sig: Signature = sk.sign(&pae(payload_type, payload));
        serde_json::to_vec(&serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "k"}},
            "dsseEnvelope": {
                "payload": b64(payload),
                "payloadType": payload_type,
                "signatures": [{"sig": b64(sig.to_der().as_bytes()), "keyid": ""}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn pae_is_dsses() {
        // The example of the DSSE specification.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn a_message_signature_bundle_verifies_only_for_its_digest_and_key() {
        let (sk1, k1) = key(1);
        let (_, k2) = key(2);
        let b = message_bundle(&sk1, D, D);
        assert_eq!(
            check_bundle(&b, D, std::slice::from_ref(&k1)).unwrap(),
            "key1"
        );
        assert_eq!(
            check_bundle(&b, D, &[k2.clone(), k1.clone()]).unwrap(),
            "key1"
        );
        let e = check_bundle(&b, D, std::slice::from_ref(&k2)).unwrap_err();
        assert!(e.contains("none of the keys"), "{e}");
        // The bundle of another image, beside this one.
        let e = check_bundle(&b, E, std::slice::from_ref(&k1)).unwrap_err();
        assert_eq!(e, format!("signature is for {D}"));
        // A message digest rewritten to this image's: the signature is
        // still over the other digest.
        let lying = message_bundle(&sk1, E, D);
        let e = check_bundle(&lying, E, std::slice::from_ref(&k1)).unwrap_err();
        assert!(e.contains("none of the keys"), "{e}");
    }

    #[test]
    fn a_dsse_bundle_verifies_only_as_a_signature_of_its_subject() {
        let (sk1, k1) = key(1);
        let (sk2, k2) = key(2);
        let keys = std::slice::from_ref(&k1);
        let good = dsse_bundle(&sk1, &statement(D, SIGN_PREDICATE), IN_TOTO);
        assert_eq!(check_bundle(&good, D, keys).unwrap(), "key1");
        // Another subject.
        let e = check_bundle(&good, E, keys).unwrap_err();
        assert_eq!(e, format!("signature is for {D}"));
        // Another key.
        let theirs = dsse_bundle(&sk2, &statement(D, SIGN_PREDICATE), IN_TOTO);
        assert!(
            check_bundle(&theirs, D, keys)
                .unwrap_err()
                .contains("none of the keys")
        );
        assert_eq!(check_bundle(&theirs, D, &[k2]).unwrap(), "key2");
        // An attestation (an SBOM) by the same key is not a signature.
        let sbom = dsse_bundle(&sk1, &statement(D, "https://cyclonedx.org/bom"), IN_TOTO);
        let e = check_bundle(&sbom, D, keys).unwrap_err();
        assert!(e.contains("an attestation"), "{e}");
        // A payload type other than in-toto's (PAE binds it: changing it
        // after signing breaks the signature; signed so, it is refused).
        let other = dsse_bundle(&sk1, &statement(D, SIGN_PREDICATE), "application/json");
        assert!(
            check_bundle(&other, D, keys)
                .unwrap_err()
                .contains("payload type")
        );
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["dsseEnvelope"]["payloadType"] = "application/json".into();
        let e = check_bundle(&serde_json::to_vec(&v).unwrap(), D, keys).unwrap_err();
        assert!(e.contains("none of the keys"), "{e}");
        // The payload swapped for a statement about this digest: the
        // signature does not cover it.
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["dsseEnvelope"]["payload"] = b64(&statement(E, SIGN_PREDICATE)).into();
        let e = check_bundle(&serde_json::to_vec(&v).unwrap(), E, keys).unwrap_err();
        assert!(e.contains("none of the keys"), "{e}");
        // Not a bundle, or a bundle of nothing.
        assert!(check_bundle(b"{}", D, keys).is_err());
        assert!(check_bundle(b"[]", D, keys).is_err());
        let e = check_bundle(
            br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#,
            D,
            keys,
        )
        .unwrap_err();
        assert!(e.contains("no signature"), "{e}");
        let e = check_bundle(br#"{"mediaType":"text/plain"}"#, D, keys).unwrap_err();
        assert!(e.contains("not a Sigstore bundle"), "{e}");
    }

    #[test]
    fn referrers_and_their_manifests_are_read_strictly() {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:01", "size": 1,
                 "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:02", "size": 1,
                 "artifactType": "application/spdx+json"},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:03", "size": 1,
                 "artifactType": "application/vnd.dev.sigstore.bundle+json;version=0.1"},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:04", "size": 1},
            ],
        });
        assert_eq!(
            bundle_referrers(&serde_json::to_vec(&index).unwrap()).unwrap(),
            ["sha256:01", "sha256:03"]
        );
        assert!(bundle_referrers(b"not json").is_err());
        let many = serde_json::json!({"manifests": (0..1000).map(|i| serde_json::json!({
            "digest": format!("sha256:{i}"), "artifactType": BUNDLE_TYPES[0]})).collect::<Vec<_>>()});
        assert_eq!(
            bundle_referrers(&serde_json::to_vec(&many).unwrap())
                .unwrap()
                .len(),
            MAX_REFERRERS
        );

        let manifest = |subject: &str, size: u64| {
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": BUNDLE_TYPES[0],
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44", "size": 2},
                "layers": [{"mediaType": BUNDLE_TYPES[0], "digest": E, "size": size}],
                "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 1},
            }))
            .unwrap()
        };
        assert_eq!(bundle_layer(&manifest(D, 100), D).unwrap(), E);
        let e = bundle_layer(&manifest(E, 100), D).unwrap_err();
        assert!(e.contains("subject is"), "{e}");
        let e = bundle_layer(&manifest(D, MAX_BUNDLE + 1), D).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        let e = bundle_layer(br#"{"layers":[]}"#, D).unwrap_err();
        assert!(e.contains("not a Sigstore bundle"), "{e}");
    }

    #[test]
    fn digests_a_registry_names_are_checked_before_they_are_asked_for() {
        assert!(is_digest(D));
        for bad in [
            "sha256:../../../v2/_catalog",
            "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "sha512:aaaa",
            &D[..70],
            &format!("{D}?x=1"),
            "",
        ] {
            assert!(!is_digest(bad), "{bad}");
        }
        // A bundle artifact whose layer names a path, not a digest.
        let m = serde_json::to_vec(&serde_json::json!({
            "artifactType": BUNDLE_TYPES[0],
            "layers": [{"mediaType": BUNDLE_TYPES[0], "digest": "sha256:../../x", "size": 1}],
            "subject": {"digest": D},
        }))
        .unwrap();
        let e = bundle_layer(&m, D).unwrap_err();
        assert!(e.contains("not a sha256 digest"), "{e}");
        // A `.sig` manifest whose payload digest is a path: never fetched.
        let sigs = serde_json::to_vec(&serde_json::json!({
            "layers": [{"mediaType": SIMPLE_SIGNING, "digest": "sha256:../../x", "size": 1,
                        "annotations": {SIGNATURE_ANNOTATION: "AAAA"}}],
        }))
        .unwrap();
        let (_, k) = key(1);
        let fetched = std::cell::Cell::new(false);
        let e = check_signatures("r", D, &sigs, &[k], &|_| {
            fetched.set(true);
            Err("fetched".into())
        })
        .unwrap_err();
        assert!(!fetched.get());
        assert!(e.to_string().contains("not a sha256 digest"), "{e}");
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
