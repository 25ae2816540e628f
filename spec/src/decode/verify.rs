//! `verify = { key = "…" }` of an `[images]` entry: the public key a pull
//! of the image must find a signature by.
//!
//! The key is read here, once, when the manifest is loaded, and kept in
//! the spec: the key a pull checks with is the key that was validated. A
//! manifest may come from a repository its operator does not control, so
//! the key file is confined as an `env_file` is: a relative path is read
//! from the manifest's directory and must stay inside the source's tree
//! (`..` and links included); an absolute one is a host path, which the
//! source's policy must allow (`host_paths`).

use std::path::Path;

use p256::pkcs8::DecodePublicKey as _;

use super::outside::FileKind;
use super::{Decoder, Field};
use crate::model::VerifySpec;
use crate::node::Node;

/// The largest key file read: a PEM public key is a few hundred bytes.
const MAX_KEY_SIZE: u64 = 16 << 10;

/// Checks that `pem` is an ECDSA P-256 public key in PEM (`-----BEGIN
/// PUBLIC KEY-----`), as `cosign generate-key-pair` writes it.
pub(crate) fn check_public_key(pem: &str) -> Result<(), String> {
    p256::ecdsa::VerifyingKey::from_public_key_pem(pem.trim())
        .map(drop)
        .map_err(|e| format!("not an ECDSA P-256 public key in PEM (-----BEGIN PUBLIC KEY-----, as cosign writes it): {e}"))
}

impl Decoder<'_> {
    /// `verify = { key = "…" }`.
    pub(super) fn image_verify(&mut self, node: &Node, field: &Field<'_>) -> Option<VerifySpec> {
        let f = self.fields(node, field, &["key"], &[])?;
        let Some(n) = f.get("key") else {
            self.error(f.pos, field, "missing required field \"key\"");
            return None;
        };
        let kf = field.key("key");
        let written = self.string(n, &kf)?;
        let path = Path::new(&written);
        if written.is_empty() {
            self.error(n.pos, &kf, "the key path is empty");
            return None;
        }
        // Checked before anything is read from the host.
        if let Some(p) = self.policy
            && path.is_absolute()
            && let Err(e) = self.host_path(p, "verify key", path)
        {
            self.error(n.pos, &kf, e);
            return None;
        }
        let (lexical, real) = match self.in_tree(path) {
            Ok(found) => found,
            Err(e) => {
                self.error(n.pos, &kf, format!("verify key \"{written}\": {e}"));
                return None;
            }
        };
        let what = match self.file_kind(&real) {
            FileKind::File => None,
            FileKind::Missing => Some("does not exist"),
            FileKind::Dir | FileKind::Other => Some("is not a file"),
        };
        if let Some(what) = what {
            let hint = if path.is_absolute() {
                ""
            } else {
                "; relative paths are read from the manifest's directory"
            };
            self.error(
                n.pos,
                &kf,
                format!(
                    "verify key \"{written}\" {what} (looked for {}{hint})",
                    lexical.display()
                ),
            );
            return None;
        }
        let pem = match self.text_file(&real) {
            Ok(text) if text.len() as u64 > MAX_KEY_SIZE => Err(format!(
                "the file is larger than {MAX_KEY_SIZE} bytes, too large for a public key"
            )),
            other => other,
        }
        .and_then(|text| check_public_key(&text).map(|()| text));
        let pem = self.check(
            n.pos,
            &kf,
            pem.map_err(|e| format!("verify key \"{written}\": {e}")),
        )?;
        Some(VerifySpec {
            key: self.absolute(lexical),
            pem,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use crate::load::{load, load_with};
    use crate::policy::{Policy, PolicyKeys};

    /// A P-256 public key as cosign writes it.
    const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9QXc8dxDb/lNblZ2K9QIWfMry0Yr
7ZkNhOv+U64T/CIFgNHUqCG/rpZu/zvEPMFD4qf/v5CyNfhqbwjWA/uVIA==
-----END PUBLIC KEY-----
";

    /// A repository `repo/` with `keys/cosign.pub` and the manifest
    /// `repo/app/m.toml` holding `toml`; beside the repository, outside
    /// it, `outside.pub`.
    fn repo(toml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        std::fs::create_dir_all(root.join("keys")).unwrap();
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(root.join("keys/cosign.pub"), KEY).unwrap();
        std::fs::write(tmp.path().join("outside.pub"), KEY).unwrap();
        std::fs::write(root.join("app/m.toml"), toml).unwrap();
        (tmp, root)
    }

    fn manifest(key: &str) -> String {
        format!(
            "[images.app]\nref = \"registry.example.com/team/app:1\"\nverify = {{ key = \"{key}\" }}\n"
        )
    }

    /// The one diagnostic of loading `root`, as `file:line:column: field: message`.
    fn error_of(root: &Path, policy: Option<Policy>) -> String {
        let options = crate::LoadOptions {
            policy,
            ..crate::LoadOptions::default()
        };
        let d = load_with(&[root], None, &options).unwrap_err();
        assert_eq!(d.len(), 1, "{d}");
        let d = d.iter().next().unwrap();
        format!(
            "{}:{}:{}: {}: {}",
            d.file.file_name().unwrap().to_string_lossy(),
            d.line,
            d.column,
            d.field,
            d.message
        )
    }

    #[test]
    fn a_key_inside_the_tree_is_read_into_the_spec() {
        let (_tmp, root) = repo(&manifest("../keys/cosign.pub"));
        let state = load(&[&root]).unwrap();
        let v = state.images["app"].spec.verify.as_ref().unwrap();
        assert_eq!(v.pem, KEY);
        assert_eq!(v.key, root.join("keys/cosign.pub"));
        // The key is part of the image's spec hash; no verify, no change
        // to the hash of images that have none.
        let (_tmp2, plain) = repo("[images.app]\nref = \"registry.example.com/team/app:1\"\n");
        let plain = load(&[&plain]).unwrap();
        assert!(plain.images["app"].spec.verify.is_none());
        assert_ne!(plain.images["app"].hash, state.images["app"].hash);
    }

    #[test]
    fn a_key_path_leaving_the_tree_by_dotdot_is_refused() {
        let (_tmp, root) = repo(&manifest("../../outside.pub"));
        let e = error_of(&root, None);
        assert!(
            e.starts_with("m.toml:3:18: images.app.verify.key: verify key \"../../outside.pub\""),
            "{e}"
        );
        assert!(e.contains("outside"), "{e}");
    }

    #[test]
    fn a_key_path_leaving_the_tree_by_a_link_is_refused() {
        let (tmp, root) = repo(&manifest("innocent.pub"));
        symlink(
            tmp.path().join("outside.pub"),
            root.join("app/innocent.pub"),
        )
        .unwrap();
        let e = error_of(&root, None);
        assert!(
            e.starts_with("m.toml:3:18: images.app.verify.key: verify key \"innocent.pub\""),
            "{e}"
        );
        assert!(e.contains("outside"), "{e}");
        // A link that stays inside the tree is followed.
        std::fs::remove_file(root.join("app/innocent.pub")).unwrap();
        symlink("../keys/cosign.pub", root.join("app/innocent.pub")).unwrap();
        let state = load(&[&root]).unwrap();
        assert_eq!(state.images["app"].spec.verify.as_ref().unwrap().pem, KEY);
    }

    #[test]
    fn an_absolute_key_path_is_a_host_path_under_the_policy() {
        let (tmp, root) = repo("");
        let outside = tmp.path().join("outside.pub");
        std::fs::write(root.join("app/m.toml"), manifest(outside.to_str().unwrap())).unwrap();
        // No policy (`moor apply` of the operator's own directory): read.
        let state = load(&[&root]).unwrap();
        assert_eq!(
            state.images["app"].spec.verify.as_ref().unwrap().key,
            outside
        );
        // A restricted policy (a git source's default): refused, unread.
        let e = error_of(&root, Some(Policy::restricted("[source.policy]")));
        assert!(
            e.starts_with("m.toml:3:18: images.app.verify.key: verify key"),
            "{e}"
        );
        assert!(e.contains("host_paths"), "{e}");
        // Allowed by host_paths: read.
        let allowed = Policy::new(
            PolicyKeys {
                host_paths: vec![tmp.path().to_path_buf()],
                ..PolicyKeys::default()
            },
            "[source.policy]",
        )
        .unwrap();
        let options = crate::LoadOptions {
            policy: Some(allowed.clone()),
            ..crate::LoadOptions::default()
        };
        assert!(load_with(&[&root], None, &options).is_ok());
        // A link under the allowed directory that leads out of it: refused.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("k.pub"), KEY).unwrap();
        symlink(elsewhere.path().join("k.pub"), tmp.path().join("link.pub")).unwrap();
        let link = tmp.path().join("link.pub");
        std::fs::write(root.join("app/m.toml"), manifest(link.to_str().unwrap())).unwrap();
        let e = error_of(&root, Some(allowed));
        assert!(
            e.starts_with("m.toml:3:18: images.app.verify.key: verify key"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_or_malformed_key_is_named() {
        let (_tmp, root) = repo(&manifest("../keys/nope.pub"));
        let e = error_of(&root, None);
        assert!(
            e.starts_with(
                "m.toml:3:18: images.app.verify.key: verify key \"../keys/nope.pub\" does not exist"
            ),
            "{e}"
        );

        for (name, text) in [
            ("empty.pub", String::new()),
            ("garbage.pub", "not a key\n".to_string()),
            // Armor with a body that is not a key.
            (
                "short.pub",
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_string(),
            ),
            // A private key where the public one belongs.
            (
                "private.pub",
                "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgpFjbUjbWq5n45FLagoPm95fGZcU/W4i4c0NgHxoPYKWhRANCAAT1Bdzx3ENv+U1uVnYr1AhZ8yvLRivtmQ2E6/5TrhP8IgWA0dSoIb+ulm7/O8Q8wUPip/+/kLI1+GpvCNYD+5Ug\n-----END PRIVATE KEY-----\n".to_string(),
            ),
            // An Ed25519 key: not the curve cosign keys are on.
            (
                "ed25519.pub",
                "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAw6DIWmsNiS7SBK39zrGkVIdBpWFPU7YgAMmDcylHAeM=\n-----END PUBLIC KEY-----\n".to_string(),
            ),
            // A P-384 key: ECDSA, but not on cosign's curve.
            (
                "p384.pub",
                "-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEnQU89qfybCejUFWbpLEfBwgaxfHbiukO\nKUTEUJTHS3qOFuBXmgDBQY1QPFphA4cfK08N2AkHNo4/QEIJiRWfNsos9UJg+GeY\n0d++wysT3mj2VDQ1WZdT0nJ/+X1dTCAK\n-----END PUBLIC KEY-----\n".to_string(),
            ),
        ] {
            std::fs::write(root.join("keys").join(name), &text).unwrap();
            std::fs::write(root.join("app/m.toml"), manifest(&format!("../keys/{name}"))).unwrap();
            let e = error_of(&root, None);
            assert!(
                e.starts_with(&format!(
                    "m.toml:3:18: images.app.verify.key: verify key \"../keys/{name}\": not an ECDSA P-256 public key"
                )),
                "{name}: {e}"
            );
        }

        // A directory, a key too large to be one, a field that is not a table.
        std::fs::write(root.join("app/m.toml"), manifest("../keys")).unwrap();
        assert!(error_of(&root, None).contains("is not a file"));
        std::fs::write(root.join("keys/huge.pub"), vec![b'A'; 64 << 10]).unwrap();
        std::fs::write(root.join("app/m.toml"), manifest("../keys/huge.pub")).unwrap();
        assert!(error_of(&root, None).contains("too large for a public key"));
        std::fs::write(
            root.join("app/m.toml"),
            "[images.app]\nref = \"r.example.com/a:1\"\nverify = { keys = \"x\" }\n",
        )
        .unwrap();
        let d = load(&[&root]).unwrap_err().to_string();
        assert!(
            d.contains(
                "m.toml:3:12: error: images.app.verify.keys: unknown field; did you mean \"key\"?"
            ),
            "{d}"
        );
        std::fs::write(
            root.join("app/m.toml"),
            "[images.app]\nref = \"r.example.com/a:1\"\nverify = \"../keys/cosign.pub\"\n",
        )
        .unwrap();
        assert!(error_of(&root, None).starts_with("m.toml:3:10: images.app.verify:"));
    }

    #[test]
    fn a_built_image_has_nothing_to_verify() {
        let (_tmp, root) = repo(
            "[images.app]\nref = \"app:1\"\nbuild = \".\"\nverify = { key = \"../keys/cosign.pub\" }\n",
        );
        std::fs::write(root.join("app/Dockerfile"), "FROM busybox\n").unwrap();
        let e = error_of(&root, None);
        assert!(
            e.starts_with("m.toml:4:1: images.app.verify: a built image is never pulled"),
            "{e}"
        );
    }
}
