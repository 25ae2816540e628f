//! `moor image verify` against a real registry (Debian's
//! `docker-registry`): images signed the way `cosign sign --key` signs
//! them (a simple-signing payload, signed with an ECDSA P-256 key, pushed
//! as the `sha256-<hex>.sig` tag), checked with the public key. Debian's
//! cosign-capable tools are built without sigstore, so the signatures are
//! made here, and every verdict on a signature is cross-checked with
//! OpenSSL's verifier and the Sigstore project's own (the `sigstore`
//! crate's cosign key verification), which must agree. Sigstore bundles
//! (cosign v3) are made here too, as referrers of the image.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};

use super::layers::{self, Layer, OCI_MANIFEST, TestImage, digest, file, tar_of};
use super::registry::Registry;
use super::{moor_in, stderr, stdout};

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

fn key(dir: &Path, name: &str, seed: u8) -> (SigningKey, std::path::PathBuf) {
    let sk = SigningKey::from_slice(&[seed; 32]).unwrap();
    let pem = sk
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let path = dir.join(format!("{name}.pub"));
    std::fs::write(&path, pem).unwrap();
    (sk, path)
}

fn image(content: &[u8]) -> TestImage {
    layers::image(vec![Layer::gzip(&tar_of(|b| file(b, "app", content)))])
}

/// The payload `cosign sign` writes for `digest`.
fn payload(reference: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

/// Pushes a signature of `payload` by `sk` under the `.sig` tag of
/// `for_digest` in `repo`; returns the DER signature.
fn push_signature(
    registry: &Registry,
    repo: &str,
    for_digest: &str,
    payload: &[u8],
    sk: &SigningKey,
) -> Vec<u8> {
    let sig: Signature = sk.sign(payload);
    let der = sig.to_der().as_bytes().to_vec();
    let config =
        br#"{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}"#;
    registry.push_blob(repo, config);
    registry.push_blob(repo, payload);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": SIMPLE_SIGNING,
            "digest": digest(payload),
            "size": payload.len(),
            "annotations": {
                "dev.cosignproject.cosign/signature":
                    base64::engine::general_purpose::STANDARD.encode(&der),
            },
        }],
    });
    let tag = format!("{}.sig", for_digest.replacen(':', "-", 1));
    registry.push_manifest(
        repo,
        &tag,
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    der
}

/// OpenSSL's verdict on a DER signature of `data` by the key in `public`.
fn openssl_verifies(dir: &Path, public: &Path, data: &[u8], der: &[u8]) -> bool {
    let (d, s) = (dir.join("data"), dir.join("sig.der"));
    std::fs::write(&d, data).unwrap();
    std::fs::write(&s, der).unwrap();
    Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&s)
        .arg(&d)
        .output()
        .expect("run openssl")
        .status
        .success()
}

/// The Sigstore project's verdict (the `sigstore` crate's cosign key
/// verification) on a DER signature of `data` by the key in `public`.
fn sigstore_verifies(public: &Path, data: &[u8], der: &[u8]) -> bool {
    use sigstore::crypto::{CosignVerificationKey, Signature as SigstoreSignature, SigningScheme};
    let pem = std::fs::read(public).unwrap();
    let key = CosignVerificationKey::from_pem(&pem, &SigningScheme::ECDSA_P256_SHA256_ASN1)
        .expect("the sigstore crate reads the key");
    key.verify_signature(SigstoreSignature::Raw(der), data)
        .is_ok()
}

/// OpenSSL's and the `sigstore` crate's verdict on a DER signature of
/// `data` by the key in `public`, which must agree.
#[track_caller]
fn verdict(dir: &Path, public: &Path, data: &[u8], der: &[u8]) -> bool {
    let openssl = openssl_verifies(dir, public, data, der);
    let sigstore = sigstore_verifies(public, data, der);
    assert_eq!(openssl, sigstore, "OpenSSL and the sigstore crate disagree");
    openssl
}

fn verify(state: &Path, reference: &str, keys: &[&Path]) -> std::process::Output {
    let mut args = vec!["image".to_string(), "verify".to_string()];
    for k in keys {
        args.push("--key".into());
        args.push(k.to_str().unwrap().into());
    }
    args.push(reference.into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    moor_in(state, &args)
}

#[test]
fn cosign_signatures_verify_only_for_their_key_and_digest() {
    if !crate::common::require(&["openssl"], false) {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (ours, ours_pub) = key(tmp.path(), "ours", 7);
    let (theirs, theirs_pub) = key(tmp.path(), "theirs", 9);

    // Signed by our key: verifies, with either key file listed.
    let signed = image(b"signed\n");
    registry.push("team/signed", "1", &signed);
    let reference = format!("{}/team/signed:1", registry.addr);
    let good = payload(&reference, &signed.manifest_digest);
    let der = push_signature(
        &registry,
        "team/signed",
        &signed.manifest_digest,
        &good,
        &ours,
    );
    assert!(verdict(tmp.path(), &ours_pub, &good, &der));
    let out = verify(&state, &reference, &[&theirs_pub, &ours_pub]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("verified {reference} {}", signed.manifest_digest)),
        "{}",
        stdout(&out)
    );
    // By digest too.
    let by_digest = format!("{}/team/signed@{}", registry.addr, signed.manifest_digest);
    assert!(verify(&state, &by_digest, &[&ours_pub]).status.success());
    // With the keys of the agent's `[[verify]]` rule that covers it.
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[verify]]\nmatch = \"{0}/other/*\"\nkey = \"{1}\"\n[[verify]]\nmatch = \"{0}/team/*\"\nkey = \"{2}\"\n",
            registry.addr,
            theirs_pub.display(),
            ours_pub.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = moor_in(&state, &["image", "verify", "--config", config, &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = moor_in(
        &state,
        &[
            "image",
            "verify",
            "--config",
            config,
            "elsewhere.example.com/x:1",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no [[verify]] rule of"),
        "{}",
        stderr(&out)
    );

    // Another key: refused, and OpenSSL agrees.
    assert!(!verdict(tmp.path(), &theirs_pub, &good, &der));
    let out = verify(&state, &reference, &[&theirs_pub]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("signed by none of the keys"),
        "{}",
        stderr(&out)
    );

    // Unsigned: refused, naming the tag looked for.
    let unsigned = image(b"unsigned\n");
    registry.push("team/unsigned", "1", &unsigned);
    let out = verify(
        &state,
        &format!("{}/team/unsigned:1", registry.addr),
        &[&ours_pub],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not signed"), "{}", stderr(&out));

    // A good signature of another digest, copied beside this image: the
    // signature is valid (OpenSSL says so) but vouches for something else.
    let other = image(b"other\n");
    registry.push("team/other", "1", &other);
    let der = push_signature(
        &registry,
        "team/other",
        &other.manifest_digest,
        &good,
        &ours,
    );
    assert!(verdict(tmp.path(), &ours_pub, &good, &der));
    // What would vouch for this image, the payload naming its digest, is
    // not what was signed: OpenSSL and the sigstore crate say so too.
    let other_ref = format!("{}/team/other:1", registry.addr);
    let wanted = payload(&other_ref, &other.manifest_digest);
    assert!(!verdict(tmp.path(), &ours_pub, &wanted, &der));
    let out = verify(&state, &other_ref, &[&ours_pub]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("signature is for {}", signed.manifest_digest)),
        "{}",
        stderr(&out)
    );

    // A tag re-pushed to new content loses its signature.
    let moved = image(b"moved\n");
    registry.push("team/signed", "1", &moved);
    let out = verify(&state, &reference, &[&ours_pub]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("is not signed"), "{}", stderr(&out));

    // A signature by a key that is not ours, over our digest.
    let forged = payload(&reference, &moved.manifest_digest);
    let der = push_signature(
        &registry,
        "team/signed",
        &moved.manifest_digest,
        &forged,
        &theirs,
    );
    assert!(!verdict(tmp.path(), &ours_pub, &forged, &der));
    assert!(verdict(tmp.path(), &theirs_pub, &forged, &der));
    let out = verify(&state, &reference, &[&ours_pub]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("signed by none of the keys"),
        "{}",
        stderr(&out)
    );

    // Nothing was pulled or stored by verifying.
    let images = stdout(&moor_in(&state, &["images", "--json"]));
    assert_eq!(images.trim(), "[]", "{images}");
}

/// The agent with a `[[verify]]` rule: a signed image runs, pulled by the
/// digest its signature names; a manifest change to an unsigned image of
/// the same repository is refused, the running container stays, and the
/// checks and pulls are counted in the metrics.
#[test]
fn the_agent_runs_only_signed_images_of_a_covered_repository() {
    use std::time::Duration;

    use crate::common::instance::Instance;
    use crate::common::{http_get, wait_for};

    let Some(mut host) = Instance::with_busybox("ver", &["docker-registry"]) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (ours, ours_pub) = key(tmp.path(), "ours", 7);
    let signed = layers::standard_image();
    registry.push("team/app", "1", &signed);
    let signed_ref = format!("{}/team/app:1", registry.addr);
    push_signature(
        &registry,
        "team/app",
        &signed.manifest_digest,
        &payload(&signed_ref, &signed.manifest_digest),
        &ours,
    );
    let mut unsigned_layers = signed.layers.clone();
    unsigned_layers.push(Layer::gzip(&tar_of(|b| file(b, "unsigned", b"x\n"))));
    let unsigned = layers::image(unsigned_layers);
    registry.push("team/app", "2", &unsigned);

    let src = tmp.path().join("ver");
    std::fs::create_dir(&src).unwrap();
    let manifest = |image: &str| {
        std::fs::write(
            src.join("app.toml"),
            format!(
                "[containers.app]\nimage = \"{image}\"\ncommand = [\"sleep\", \"3600\"]\nnetwork_mode = \"none\"\n"
            ),
        )
        .unwrap();
    };
    manifest(&signed_ref);
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "resync = \"1s\"\n[[source]]\nname = \"ver\"\nurl = \"{}\"\n\
             [[verify]]\nmatch = \"{}/team/*\"\nkey = \"{}\"\n",
            src.display(),
            registry.addr,
            ours_pub.display()
        ),
    )
    .unwrap();
    host.start_agent(&["--config", config.to_str().unwrap()]);
    wait_for("app running", Duration::from_secs(60), || {
        host.running("app")
    });
    let images = host.moor_ok(&["images", "--json"]);
    assert!(images.contains(&signed.manifest_digest), "{images}");
    let pid = host.pid("app");

    manifest(&format!("{}/team/app:2", registry.addr));
    let count = |result: &str| -> u64 {
        let prefix = format!("moor_image_verify_total{{result=\"{result}\"}} ");
        http_get(host.port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    };
    wait_for(
        "the unsigned image refused",
        Duration::from_secs(60),
        || count("refused") >= 1,
    );
    // Some resyncs later the signed container still runs, untouched, and
    // the unsigned image was never stored.
    std::thread::sleep(Duration::from_secs(3));
    assert!(host.running("app"));
    assert_eq!(host.pid("app"), pid, "the running container was replaced");
    let images = host.moor_ok(&["images", "--json"]);
    assert!(!images.contains(&unsigned.manifest_digest), "{images}");
    assert_eq!(
        count("verified"),
        1,
        "one check, one pull of the signed image"
    );
    let (_, body) = http_get(host.port, "/metrics").unwrap();
    let pulled: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("moor_image_pull_bytes_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(pulled > 300_000, "pull bytes counted: {pulled}");
    host.stop_agent();
    let log = host.agent_log();
    assert!(
        log.contains("is not signed"),
        "the refusal is logged:\n{log}"
    );
}

const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const IN_TOTO: &str = "application/vnd.in-toto+json";

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// DSSE's pre-authentication encoding, written here from the DSSE
/// specification (not taken from moor).
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The in-toto statement `cosign sign` (v3) signs for an image.
fn statement(reference: &str, digest: &str, predicate: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": reference, "digest": {"sha256": &digest[7..]}}],
        "predicateType": predicate,
        "predicate": {},
    }))
    .unwrap()
}

/// A Sigstore bundle (v0.3) with a DSSE envelope of `statement` signed by
/// `sk`, as `cosign sign --key` (v3) writes it; also what was signed and
/// the DER signature, for OpenSSL.
fn dsse_bundle(sk: &SigningKey, statement: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let signed = pae(IN_TOTO, statement);
    let sig: Signature = sk.sign(&signed);
    let der = sig.to_der().as_bytes().to_vec();
    let bundle = serde_json::to_vec(&serde_json::json!({
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": ""}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": b64(statement),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": b64(&der), "keyid": ""}],
        },
    }))
    .unwrap();
    (bundle, signed, der)
}

/// A bundle with a message signature over the image manifest `manifest`
/// (its SHA-256 the message digest); also the DER signature.
fn message_bundle(sk: &SigningKey, manifest: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use sha2::Digest as _;
    let sig: Signature = sk.sign(manifest);
    let der = sig.to_der().as_bytes().to_vec();
    let bundle = serde_json::to_vec(&serde_json::json!({
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64(&sha2::Sha256::digest(manifest))},
            "signature": b64(&der),
        },
    }))
    .unwrap();
    (bundle, der)
}

/// Pushes `bundle` as an artifact whose subject is `subject` (manifest
/// digest and size), and lists it, with `listed` (what was listed
/// before), in the referrers tag schema's index of `listed_under`, as
/// cosign does on a registry without the referrers API.
fn push_bundle(
    registry: &Registry,
    repo: &str,
    subject: (&str, usize),
    listed_under: &str,
    bundle: &[u8],
    listed: &mut Vec<serde_json::Value>,
) {
    let empty = b"{}";
    registry.push_blob(repo, empty);
    registry.push_blob(repo, bundle);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(empty), "size": 2},
        "layers": [{"mediaType": BUNDLE, "digest": digest(bundle), "size": bundle.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.0, "size": subject.1},
        "annotations": {
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": SIGN_PREDICATE,
        },
    }))
    .unwrap();
    let manifest_digest = digest(&manifest);
    registry.push_manifest(repo, &manifest_digest, OCI_MANIFEST, &manifest);
    listed.push(serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": manifest_digest,
        "size": manifest.len(),
        "artifactType": BUNDLE,
    }));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": listed,
    }))
    .unwrap();
    registry.push_manifest(
        repo,
        &listed_under.replacen(':', "-", 1),
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
}

/// Sigstore bundles among an image's referrers (Debian's registry lacks
/// the referrers API, so they are found through the `sha256-<hex>` index
/// of the referrers tag schema): a cosign v3 signature (DSSE) and a
/// message signature verify with their key; another key, a bundle of
/// another image, a tampered bundle and an attestation that is not a
/// signature are refused. OpenSSL checks every signature too.
#[test]
fn sigstore_bundles_among_referrers_verify_offline_with_the_key() {
    if !crate::common::require(&["openssl"], false) {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (ours, ours_pub) = key(tmp.path(), "ours", 7);
    let (theirs, theirs_pub) = key(tmp.path(), "theirs", 9);
    let push = |repo: &str, content: &[u8]| {
        let img = image(content);
        registry.push(repo, "1", &img);
        (format!("{}/{repo}:1", registry.addr), img)
    };

    // A DSSE signature, as `cosign sign --key` (v3) makes it.
    let (reference, signed) = push("team/dsse", b"dsse\n");
    let subject = (signed.manifest_digest.as_str(), signed.manifest.len());
    let (bundle, pae_bytes, der) = dsse_bundle(
        &ours,
        &statement(&reference, &signed.manifest_digest, SIGN_PREDICATE),
    );
    assert!(verdict(tmp.path(), &ours_pub, &pae_bytes, &der));
    assert!(!verdict(tmp.path(), &theirs_pub, &pae_bytes, &der));
    let mut listed = Vec::new();
    push_bundle(
        &registry,
        "team/dsse",
        subject,
        subject.0,
        &bundle,
        &mut listed,
    );
    let out = verify(&state, &reference, &[&ours_pub]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("verified {reference} {}", signed.manifest_digest)),
        "{}",
        stdout(&out)
    );
    let out = verify(&state, &reference, &[&theirs_pub]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("signed by none of the keys"),
        "{}",
        stderr(&out)
    );

    // A message signature over the manifest.
    let (reference, signed) = push("team/message", b"message\n");
    let subject = (signed.manifest_digest.as_str(), signed.manifest.len());
    let (bundle, der) = message_bundle(&theirs, &signed.manifest);
    assert!(verdict(tmp.path(), &theirs_pub, &signed.manifest, &der));
    assert!(!verdict(tmp.path(), &ours_pub, &signed.manifest, &der));
    push_bundle(
        &registry,
        "team/message",
        subject,
        subject.0,
        &bundle,
        &mut Vec::new(),
    );
    assert!(
        verify(&state, &reference, &[&ours_pub, &theirs_pub])
            .status
            .success()
    );
    assert_eq!(
        verify(&state, &reference, &[&ours_pub]).status.code(),
        Some(1)
    );

    // Bundles that must not pass, each the only referrer of its image.
    let (reference, victim) = push("team/victim", b"victim\n");
    let vsubject = (victim.manifest_digest.as_str(), victim.manifest.len());
    let (_, other) = push("team/victim-other", b"other\n");
    let refused = |bundle: &[u8], subject: (&str, usize), expect: &str| {
        push_bundle(
            &registry,
            "team/victim",
            subject,
            vsubject.0,
            bundle,
            &mut Vec::new(),
        );
        let out = verify(&state, &reference, &[&ours_pub]);
        assert_eq!(out.status.code(), Some(1), "{expect}: {}", stdout(&out));
        assert!(stderr(&out).contains(expect), "{expect}: {}", stderr(&out));
    };
    // A good signature of another image, listed as this one's referrer.
    let (for_other, pae_bytes, der) = dsse_bundle(
        &ours,
        &statement(&reference, &other.manifest_digest, SIGN_PREDICATE),
    );
    assert!(verdict(tmp.path(), &ours_pub, &pae_bytes, &der));
    refused(
        &for_other,
        vsubject,
        &format!("signature is for {}", other.manifest_digest),
    );
    // The same artifact still naming the other image as its subject.
    refused(
        &for_other,
        (other.manifest_digest.as_str(), other.manifest.len()),
        &format!("the referrer's subject is {}", other.manifest_digest),
    );
    // Tampered: the statement rewritten to name this image after signing.
    let (good, _, _) = dsse_bundle(
        &ours,
        &statement(&reference, &other.manifest_digest, SIGN_PREDICATE),
    );
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let forged = statement(&reference, &victim.manifest_digest, SIGN_PREDICATE);
    v["dsseEnvelope"]["payload"] = b64(&forged).into();
    assert!(!verdict(
        tmp.path(),
        &ours_pub,
        &pae(IN_TOTO, &forged),
        &der
    ));
    refused(
        &serde_json::to_vec(&v).unwrap(),
        vsubject,
        "signed by none of the keys",
    );
    // A message digest rewritten to this image's.
    let (other_message, der) = message_bundle(&ours, &other.manifest);
    assert!(!verdict(tmp.path(), &ours_pub, &victim.manifest, &der));
    let mut v: serde_json::Value = serde_json::from_slice(&other_message).unwrap();
    {
        use sha2::Digest as _;
        v["messageSignature"]["messageDigest"]["digest"] =
            b64(&sha2::Sha256::digest(&victim.manifest)).into();
    }
    refused(
        &serde_json::to_vec(&v).unwrap(),
        vsubject,
        "signed by none of the keys",
    );
    // An SBOM attestation of this very image by our key: not a signature.
    let (sbom, pae_bytes, der) = dsse_bundle(
        &ours,
        &statement(
            &reference,
            &victim.manifest_digest,
            "https://cyclonedx.org/bom",
        ),
    );
    assert!(verdict(tmp.path(), &ours_pub, &pae_bytes, &der));
    refused(&sbom, vsubject, "is an attestation");

    // No signature anywhere: unsigned.
    let (reference, _) = push("team/bare", b"bare\n");
    let out = verify(&state, &reference, &[&ours_pub]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not signed"), "{}", stderr(&out));
}

/// The referrers API, where a registry has it (the fake registry answers
/// `GET /v2/<name>/referrers/<digest>`): a bundle listed there verifies,
/// and the tag schema's index is then not asked for.
#[test]
fn the_referrers_api_is_asked_first() {
    use super::fake::{FakeRegistry, Reply};

    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (ours, ours_pub) = key(tmp.path(), "ours", 7);
    let (_, theirs_pub) = key(tmp.path(), "theirs", 9);
    let fake = FakeRegistry::start(0);
    let img = image(b"api\n");
    fake.serve_image("team/api", "1", &img);
    let reference = format!("{}/team/api:1", fake.host());
    let (bundle, _, _) = dsse_bundle(
        &ours,
        &statement(&reference, &img.manifest_digest, SIGN_PREDICATE),
    );
    fake.serve_blob("team/api", &bundle);
    let empty = b"{}";
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(empty), "size": 2},
        "layers": [{"mediaType": BUNDLE, "digest": digest(&bundle), "size": bundle.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": img.manifest.len()},
    }))
    .unwrap();
    let artifact_digest = digest(&artifact);
    fake.route(
        &format!("/v2/team/api/manifests/{artifact_digest}"),
        Reply::Body {
            content_type: OCI_MANIFEST.into(),
            body: artifact.clone(),
        },
    );
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": digest(b"sbom"), "size": 4, "artifactType": "application/spdx+json"},
            {"mediaType": OCI_MANIFEST, "digest": artifact_digest, "size": artifact.len(), "artifactType": BUNDLE},
        ],
    }))
    .unwrap();
    fake.route(
        &format!("/v2/team/api/referrers/{}", img.manifest_digest),
        Reply::Body {
            content_type: "application/vnd.oci.image.index.v1+json".into(),
            body: index,
        },
    );
    let out = verify(&state, &reference, &[&ours_pub]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = verify(&state, &reference, &[&theirs_pub]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("signed by none of the keys"),
        "{}",
        stderr(&out)
    );
    let tag_schema = img.manifest_digest.replacen(':', "-", 1);
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r.contains("/referrers/")),
        "{requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.ends_with(&format!("/manifests/{tag_schema}"))),
        "{requests:?}"
    );
    // The SBOM listed beside it was never fetched.
    assert!(
        !requests.iter().any(|r| r.contains(&digest(b"sbom"))),
        "{requests:?}"
    );

    // A registry that answers 405 to the referrers path has no API: the
    // tag schema's index is read instead. One that answers 500 is broken:
    // an error, not a fallback.
    for (status, verifies) in [(405, true), (500, false)] {
        let repo = format!("team/s{status}");
        let img = image(format!("status {status}\n").as_bytes());
        fake.serve_image(&repo, "1", &img);
        let reference = format!("{}/{repo}:1", fake.host());
        let (bundle, _, _) = dsse_bundle(
            &ours,
            &statement(&reference, &img.manifest_digest, SIGN_PREDICATE),
        );
        fake.serve_blob(&repo, &bundle);
        let artifact = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(empty), "size": 2},
            "layers": [{"mediaType": BUNDLE, "digest": digest(&bundle), "size": bundle.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": img.manifest.len()},
        }))
        .unwrap();
        fake.route(
            &format!("/v2/{repo}/manifests/{}", digest(&artifact)),
            Reply::Body {
                content_type: OCI_MANIFEST.into(),
                body: artifact.clone(),
            },
        );
        fake.route(
            &format!("/v2/{repo}/referrers/{}", img.manifest_digest),
            Reply::Status(status),
        );
        fake.route(
            &format!(
                "/v2/{repo}/manifests/{}",
                img.manifest_digest.replacen(':', "-", 1)
            ),
            Reply::Body {
                content_type: "application/vnd.oci.image.index.v1+json".into(),
                body: serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest(&artifact),
                                   "size": artifact.len(), "artifactType": BUNDLE}],
                }))
                .unwrap(),
            },
        );
        let out = verify(&state, &reference, &[&ours_pub]);
        assert_eq!(out.status.success(), verifies, "{status}: {}", stderr(&out));
        if !verifies {
            assert!(
                stderr(&out).contains("registry answered 500"),
                "{}",
                stderr(&out)
            );
        }
    }
}

/// `moor apply` of a manifest whose `[images]` entry says `verify = { key
/// }` (a key file of the project, beside the manifest): a signed image is
/// pulled by the digest its signature names and runs; a change to an
/// unsigned image, to one signed by another key, or to a key outside the
/// project's tree is refused, and the running container stays as it is.
#[test]
fn moor_apply_runs_an_image_with_verify_only_when_signed_by_the_key() {
    use crate::common::instance::Instance;

    let Some(host) = Instance::with_busybox("vap", &["docker-registry"]) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("vap");
    std::fs::create_dir_all(project.join("keys")).unwrap();
    let (ours, ours_pub) = key(&project.join("keys"), "ours", 7);
    let (theirs, _) = key(tmp.path(), "theirs", 9);
    let signed = layers::standard_image();
    registry.push("team/app", "1", &signed);
    let signed_ref = format!("{}/team/app:1", registry.addr);
    let (bundle, _, _) = dsse_bundle(
        &ours,
        &statement(&signed_ref, &signed.manifest_digest, SIGN_PREDICATE),
    );
    push_bundle(
        &registry,
        "team/app",
        (&signed.manifest_digest, signed.manifest.len()),
        &signed.manifest_digest,
        &bundle,
        &mut Vec::new(),
    );
    let variant = |tag: &str, extra: &[u8]| {
        let mut l = signed.layers.clone();
        l.push(Layer::gzip(&tar_of(|b| file(b, "variant", extra))));
        let img = layers::image(l);
        registry.push("team/app", tag, &img);
        img
    };
    let unsigned = variant("2", b"unsigned\n");
    let foreign = variant("3", b"foreign\n");
    let foreign_ref = format!("{}/team/app:3", registry.addr);
    push_signature(
        &registry,
        "team/app",
        &foreign.manifest_digest,
        &payload(&foreign_ref, &foreign.manifest_digest),
        &theirs,
    );

    let manifest = |tag: &str, key: &str| {
        std::fs::write(
            project.join("app.toml"),
            format!(
                "[images.app]\nref = \"{}/team/app:{tag}\"\nverify = {{ key = \"{key}\" }}\n\n\
                 [containers.app]\nimage = \"app\"\ncommand = [\"sleep\", \"3600\"]\nnetwork_mode = \"none\"\n",
                registry.addr
            ),
        )
        .unwrap();
    };
    let apply = |host: &Instance, extra: &[&str]| {
        let mut args = vec!["apply", "-p", "vap", "--timeout", "30s"];
        args.extend_from_slice(extra);
        args.push(project.to_str().unwrap());
        host.moor(&args)
    };
    manifest("1", "keys/ours.pub");
    let out = apply(&host, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(host.running("app"));
    let images = host.moor_ok(&["images", "--json"]);
    assert!(images.contains(&signed.manifest_digest), "{images}");
    let pid = host.pid("app");

    let refused = |host: &Instance, tag: &str, key: &str, extra: &[&str], expect: &str| {
        manifest(tag, key);
        let out = apply(host, extra);
        assert!(!out.status.success(), "{tag}: applied");
        assert!(stderr(&out).contains(expect), "{tag}: {}", stderr(&out));
        assert!(host.running("app"), "{tag}");
        assert_eq!(host.pid("app"), pid, "{tag}: the container was replaced");
    };
    refused(&host, "2", "keys/ours.pub", &[], "is not signed");
    refused(
        &host,
        "3",
        "keys/ours.pub",
        &[],
        "signed by none of the keys",
    );
    // The key named in the refusal is the manifest's.
    refused(&host, "3", "keys/ours.pub", &[], ours_pub.to_str().unwrap());
    // A key path leading out of the project: the manifest is invalid,
    // nothing is pulled.
    std::fs::copy(&ours_pub, tmp.path().join("outside.pub")).unwrap();
    refused(
        &host,
        "2",
        "../outside.pub",
        &[],
        "app.toml:3:18: error: images.app.verify.key",
    );
    let images = host.moor_ok(&["images", "--json"]);
    assert!(!images.contains(&unsigned.manifest_digest), "{images}");
    assert!(!images.contains(&foreign.manifest_digest), "{images}");

    // `--verify-config` adds the agent's `[[verify]]` rules: one asking for
    // their key too. An image signed by ours alone (which the manifest's
    // verify accepts) is refused; one signed by both runs.
    let theirs_pub = tmp.path().join("theirs.pub");
    let rules = tmp.path().join("agent.toml");
    std::fs::write(
        &rules,
        format!(
            "resync = \"1m\"\n[[verify]]\nmatch = \"{}/team/*\"\nkey = \"{}\"\n",
            registry.addr,
            theirs_pub.display()
        ),
    )
    .unwrap();
    let rules_arg = ["--verify-config", rules.to_str().unwrap()];
    let sign_bundle = |img: &TestImage, tag: &str| {
        let r = format!("{}/team/app:{tag}", registry.addr);
        let (bundle, _, _) =
            dsse_bundle(&ours, &statement(&r, &img.manifest_digest, SIGN_PREDICATE));
        push_bundle(
            &registry,
            "team/app",
            (&img.manifest_digest, img.manifest.len()),
            &img.manifest_digest,
            &bundle,
            &mut Vec::new(),
        );
    };
    let ours_only = variant("4", b"ours only\n");
    sign_bundle(&ours_only, "4");
    refused(
        &host,
        "4",
        "keys/ours.pub",
        &rules_arg,
        &format!("has no valid signature by {}", theirs_pub.display()),
    );
    // A file with no rule in it checks nothing: an error.
    let empty = tmp.path().join("empty.toml");
    std::fs::write(&empty, "[[verfy]]\nmatch = \"x\"\n").unwrap();
    refused(
        &host,
        "4",
        "keys/ours.pub",
        &["--verify-config", empty.to_str().unwrap()],
        "no [[verify]] tables",
    );
    let both = variant("5", b"both\n");
    sign_bundle(&both, "5");
    let both_ref = format!("{}/team/app:5", registry.addr);
    push_signature(
        &registry,
        "team/app",
        &both.manifest_digest,
        &payload(&both_ref, &both.manifest_digest),
        &theirs,
    );
    manifest("5", "keys/ours.pub");
    let out = apply(&host, &rules_arg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(host.running("app"));
    assert_ne!(host.pid("app"), pid, "the container runs the new image");
    let images = host.moor_ok(&["images", "--json"]);
    assert!(images.contains(&both.manifest_digest), "{images}");
    assert!(!images.contains(&ours_only.manifest_digest), "{images}");
}

/// The agent with a `[[verify]]` rule (key A) and a manifest whose image
/// says `verify = { key = B }`: both must pass. An image signed by both
/// (A by the `.sig` tag, B by a bundle) runs; one signed by A alone is
/// refused though the rule is satisfied, and the container stays.
#[test]
fn the_agent_requires_both_its_rule_and_the_manifests_verify() {
    use std::time::Duration;

    use crate::common::instance::Instance;
    use crate::common::wait_for;

    let Some(mut host) = Instance::with_busybox("vboth", &["docker-registry"]) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("vboth");
    std::fs::create_dir(&src).unwrap();
    let (a, a_pub) = key(tmp.path(), "a", 7);
    let (b, _) = key(&src, "b", 11);
    let both = layers::standard_image();
    registry.push("team/app", "1", &both);
    let both_ref = format!("{}/team/app:1", registry.addr);
    push_signature(
        &registry,
        "team/app",
        &both.manifest_digest,
        &payload(&both_ref, &both.manifest_digest),
        &a,
    );
    let (bundle, _, _) = dsse_bundle(
        &b,
        &statement(&both_ref, &both.manifest_digest, SIGN_PREDICATE),
    );
    push_bundle(
        &registry,
        "team/app",
        (&both.manifest_digest, both.manifest.len()),
        &both.manifest_digest,
        &bundle,
        &mut Vec::new(),
    );
    let mut l = both.layers.clone();
    l.push(Layer::gzip(&tar_of(|t| file(t, "only-a", b"a\n"))));
    let only_a = layers::image(l);
    registry.push("team/app", "2", &only_a);
    let only_a_ref = format!("{}/team/app:2", registry.addr);
    push_signature(
        &registry,
        "team/app",
        &only_a.manifest_digest,
        &payload(&only_a_ref, &only_a.manifest_digest),
        &a,
    );

    let manifest = |tag: &str| {
        std::fs::write(
            src.join("app.toml"),
            format!(
                "[images.app]\nref = \"{}/team/app:{tag}\"\nverify = {{ key = \"b.pub\" }}\n\n\
                 [containers.app]\nimage = \"app\"\ncommand = [\"sleep\", \"3600\"]\nnetwork_mode = \"none\"\n",
                registry.addr
            ),
        )
        .unwrap();
    };
    manifest("1");
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "resync = \"1s\"\n[[source]]\nname = \"vboth\"\nurl = \"{}\"\n\
             [[verify]]\nmatch = \"{}/team/*\"\nkey = \"{}\"\n",
            src.display(),
            registry.addr,
            a_pub.display()
        ),
    )
    .unwrap();
    host.start_agent(&["--config", config.to_str().unwrap()]);
    wait_for("app running", Duration::from_secs(60), || {
        host.running("app")
    });
    let pid = host.pid("app");
    manifest("2");
    wait_for(
        "the image signed by one key of two refused",
        Duration::from_secs(60),
        || host.agent_log().contains("signed by none of the keys"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(host.running("app"));
    assert_eq!(host.pid("app"), pid, "the running container was replaced");
    let images = host.moor_ok(&["images", "--json"]);
    assert!(images.contains(&both.manifest_digest), "{images}");
    assert!(!images.contains(&only_a.manifest_digest), "{images}");
    host.stop_agent();
    let log = host.agent_log();
    assert!(log.contains("b.pub"), "the manifest's key is named:\n{log}");
}
