//! `moor image verify` against a real registry (Debian's
//! `docker-registry`): images signed the way `cosign sign --key` signs
//! them (a simple-signing payload, signed with an ECDSA P-256 key, pushed
//! as the `sha256-<hex>.sig` tag), checked with the public key. Debian's
//! cosign-capable tools are built without sigstore, so the signatures are
//! made here, and every verdict is cross-checked with OpenSSL's verifier.

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
    assert!(openssl_verifies(tmp.path(), &ours_pub, &good, &der));
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

    // Another key: refused, and OpenSSL agrees.
    assert!(!openssl_verifies(tmp.path(), &theirs_pub, &good, &der));
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
    assert!(openssl_verifies(tmp.path(), &ours_pub, &good, &der));
    let out = verify(
        &state,
        &format!("{}/team/other:1", registry.addr),
        &[&ours_pub],
    );
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
    push_signature(
        &registry,
        "team/signed",
        &moved.manifest_digest,
        &forged,
        &theirs,
    );
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
