//! `[secrets.NAME]` (a file inside the source, or a variable of the agent's
//! environment) and a container's `secrets` list, which names them.
//!
//! A secret's value is read here, kept in [`SecretValue`] (never
//! serialised, never shown), and hashed with the host's key
//! ([`crate::hash::secret_digest`]) so that the container's spec hash
//! changes exactly when the value does. Secrets are declared in the same
//! manifest file as the containers that use them.

use std::path::Path;

use super::{Decoder, Field, ROOT, check_name};
use crate::model::{SecretMount, SecretValue};
use crate::node::{Node, Value};

/// The largest secret value, in bytes.
pub const MAX_SECRET_SIZE: usize = 1 << 20;

/// A declared secret: its value and keyed digest.
#[derive(Debug, Clone)]
pub(crate) struct Secret {
    value: SecretValue,
    digest: String,
}

impl Decoder<'_> {
    /// Declares the secret `name` with `value` (Compose's `secrets` and
    /// `configs`, whose values the Compose lowering reads).
    pub(crate) fn declare_secret(&mut self, name: &str, value: Vec<u8>) {
        let digest = crate::hash::secret_digest(self.secret_key, name, &value);
        let secret = Secret {
            value: SecretValue::new(value),
            digest,
        };
        self.secrets.insert(name.to_string(), secret);
    }

    /// The top-level `secrets` table of a document.
    pub(crate) fn secrets_table(&mut self, node: &Node) {
        let table = ROOT.key("secrets");
        if node.value == Value::Null {
            return;
        }
        let Some(entries) = self.entries(node, &table) else {
            return;
        };
        for (key, spec) in entries {
            let field = table.key(&key.name);
            if self.check(key.pos, &field, check_name(&key.name)).is_none() {
                continue;
            }
            let Some(f) = self.fields(spec, &field, &["file", "env"], &[]) else {
                continue;
            };
            let value = match (f.get("file"), f.get("env")) {
                (Some(n), None) => {
                    let ff = field.key("file");
                    let Some(path) = self.string(n, &ff) else {
                        continue;
                    };
                    let r = if Path::new(&path).is_absolute() {
                        Err(format!(
                            "secret file \"{path}\" must be a relative path inside the source"
                        ))
                    } else {
                        self.in_tree(Path::new(&path))
                            .map_err(|e| format!("secret file \"{path}\": {e}"))
                            .and_then(|(_, real)| self.text_file(&real))
                            .and_then(|text| match crate::sops::secret_file(&text, self.age) {
                                None => Ok(text),
                                Some(plain) => plain.map_err(|e| {
                                    format!(
                                        "secret file \"{path}\": cannot decrypt this SOPS file: {e}"
                                    )
                                }),
                            })
                            .map(String::into_bytes)
                    };
                    self.check(n.pos, &ff, r)
                }
                (None, Some(n)) => {
                    let ef = field.key("env");
                    let Some(var) = self.string(n, &ef) else {
                        continue;
                    };
                    let r = match self.env.and_then(|env| env.get(&var)) {
                        Some(v) => Ok(v.clone().into_bytes()),
                        None => Err(format!("the agent's environment has no variable \"{var}\"")),
                    };
                    self.check(n.pos, &ef, r)
                }
                (Some(_), Some(n)) => {
                    self.error(n.pos, &field, "give either file or env, not both");
                    None
                }
                (None, None) => {
                    self.error(f.pos, &field, "missing field \"file\" or \"env\"");
                    None
                }
            };
            let Some(value) = value else { continue };
            if value.len() > MAX_SECRET_SIZE {
                self.error(
                    f.pos,
                    &field,
                    format!("the value is larger than {MAX_SECRET_SIZE} bytes"),
                );
                continue;
            }
            let digest = crate::hash::secret_digest(self.secret_key, &key.name, &value);
            self.secrets.insert(
                key.name.to_string(),
                Secret {
                    value: SecretValue::new(value),
                    digest,
                },
            );
        }
    }

    /// A container's `secrets`: names, or `{ source, target, uid, gid, mode }`.
    pub(crate) fn container_secrets(&mut self, node: &Node, field: &Field<'_>) -> Vec<SecretMount> {
        let Value::Seq(items) = &node.value else {
            self.type_error(node, field, "a list of secrets");
            return Vec::new();
        };
        let mut out: Vec<SecretMount> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let sf = field.item(Some(i));
            let (source, mut m) = match &item.value {
                Value::Str(s) => (s.to_string(), SecretMount::default_for(s)),
                Value::Map(_) => {
                    let Some(f) =
                        self.fields(item, &sf, &["source", "target", "uid", "gid", "mode"], &[])
                    else {
                        continue;
                    };
                    let Some(source) = f
                        .get("source")
                        .and_then(|n| self.string(n, &sf.key("source")))
                    else {
                        if f.get("source").is_none() {
                            self.error(item.pos, &sf, "missing required field \"source\"");
                        }
                        continue;
                    };
                    let mut m = SecretMount::default_for(&source);
                    if let Some(n) = f.get("target") {
                        let tf = sf.key("target");
                        let Some(t) = self.string(n, &tf) else {
                            continue;
                        };
                        let t = if t.starts_with('/') {
                            t
                        } else {
                            format!("/run/secrets/{t}")
                        };
                        if self
                            .check(n.pos, &tf, crate::mounts::check_target(&t))
                            .is_none()
                        {
                            continue;
                        }
                        m.target = t;
                    }
                    for (k, slot) in [("uid", &mut m.uid), ("gid", &mut m.gid)] {
                        if let Some(n) = f.get(k) {
                            *slot = self
                                .integer(n, &sf.key(k), 0, i64::from(u32::MAX - 1))
                                .map(|v| v as u32);
                        }
                    }
                    if let Some(n) = f.get("mode") {
                        let mf = sf.key("mode");
                        let mode = match &n.value {
                            Value::Str(s) => u32::from_str_radix(s, 8)
                                .ok()
                                .filter(|m| *m <= 0o777)
                                .ok_or_else(|| {
                                    format!("mode \"{s}\" is not an octal mode like \"0440\"")
                                }),
                            Value::Int(v) if (0..=0o777).contains(v) => Ok(*v as u32),
                            _ => Err("expected an octal mode like \"0440\"".to_string()),
                        };
                        match self.check(n.pos, &mf, mode) {
                            Some(mode) => m.mode = mode,
                            None => continue,
                        }
                    }
                    (source, m)
                }
                _ => {
                    self.type_error(item, &sf, "a secret name or table");
                    continue;
                }
            };
            let Some(secret) = self.secrets.get(&source) else {
                let hint = super::did_you_mean(&source, self.secrets.keys().map(String::as_str))
                    .map(|h| format!("; did you mean \"{h}\"?"))
                    .unwrap_or_default();
                self.error(
                    item.pos,
                    &sf,
                    format!("unknown secret \"{source}\" (declare it under [secrets] in this file){hint}"),
                );
                continue;
            };
            if out.iter().any(|o| o.target == m.target) {
                self.error(item.pos, &sf, format!("two secrets at {}", m.target));
                continue;
            }
            m.digest = secret.digest.clone();
            m.value = secret.value.clone();
            out.push(m);
        }
        out.sort();
        out
    }
}

impl SecretMount {
    /// `NAME` at `/run/secrets/NAME`, mode 0400, owned by the container's user.
    fn default_for(name: &str) -> Self {
        SecretMount {
            target: format!("/run/secrets/{name}"),
            source: name.to_string(),
            uid: None,
            gid: None,
            mode: 0o400,
            digest: String::new(),
            value: SecretValue::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{DesiredState, Diagnostics, LoadOptions};

    const KEY: &[u8] = b"host key one";

    fn load_in(
        dir: &std::path::Path,
        manifest: &str,
        key: &[u8],
    ) -> Result<DesiredState, Diagnostics> {
        let file = dir.join("app.toml");
        std::fs::write(&file, manifest).unwrap();
        let mut options = LoadOptions {
            secret_key: key.to_vec(),
            ..LoadOptions::default()
        };
        options.env.insert("DB_TOKEN".into(), "tok-from-env".into());
        crate::load_with(&[dir.to_path_buf()], None, &options)
    }

    const MANIFEST: &str = "[secrets.db_password]\nfile = \"./db_password\"\n\
        [secrets.token]\nenv = \"DB_TOKEN\"\n\
        [containers.app]\nimage = \"busybox\"\nsecrets = [\"db_password\", { source = \"token\", target = \"tok\", uid = 65534, gid = 65534, mode = \"0440\" }]\n\
        [containers.other]\nimage = \"busybox\"\n";

    fn tree(value: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("db_password"), value).unwrap();
        tmp
    }

    #[test]
    fn decodes_short_and_long_forms() {
        let tmp = tree("hunter2");
        let state = load_in(tmp.path(), MANIFEST, KEY).unwrap();
        let app = &state.containers["app"].spec;
        assert_eq!(app.secrets.len(), 2);
        let db = &app.secrets[0];
        assert_eq!(db.target, "/run/secrets/db_password");
        assert_eq!((db.uid, db.gid, db.mode), (None, None, 0o400));
        assert_eq!(db.value.expose(), Some(&b"hunter2"[..]));
        let tok = &app.secrets[1];
        assert_eq!(tok.target, "/run/secrets/tok");
        assert_eq!(
            (tok.uid, tok.gid, tok.mode),
            (Some(65534), Some(65534), 0o440)
        );
        assert_eq!(tok.value.expose(), Some(&b"tok-from-env"[..]));
        assert!(db.digest.starts_with("hmac-sha256:"));
    }

    #[test]
    fn the_value_is_never_serialised_nor_shown() {
        let tmp = tree("hunter2-s3cr3t");
        let state = load_in(tmp.path(), MANIFEST, KEY).unwrap();
        let json = serde_json::to_string(&state).unwrap();
        let debug = format!("{state:?}");
        for shown in [&json, &debug] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("tok-from-env"), "{shown}");
        }
        // Read back (a record on disk), the spec has no value at all.
        let back: DesiredState = serde_json::from_str(&json).unwrap();
        assert!(
            back.containers["app"].spec.secrets[0]
                .value
                .expose()
                .is_none()
        );
        assert_eq!(back.containers["app"].hash, state.containers["app"].hash);
    }

    #[test]
    fn keyed_hash_changes_with_the_value_only() {
        let a = load_in(tree("one").path(), MANIFEST, KEY).unwrap();
        let same = load_in(tree("one").path(), MANIFEST, KEY).unwrap();
        let rotated = load_in(tree("two").path(), MANIFEST, KEY).unwrap();
        let other_key = load_in(tree("one").path(), MANIFEST, b"another host").unwrap();
        let hash = |s: &DesiredState, c: &str| s.containers[c].hash.clone();
        assert_eq!(hash(&a, "app"), hash(&same, "app"));
        assert_ne!(hash(&a, "app"), hash(&rotated, "app"));
        // The container that does not use the secret stays as it is.
        assert_eq!(hash(&a, "other"), hash(&rotated, "other"));
        // The digest is keyed: another host's key gives another one.
        assert_ne!(
            a.containers["app"].spec.secrets[0].digest,
            other_key.containers["app"].spec.secrets[0].digest
        );
        // Without a key the digest says nothing of the value.
        let one = load_in(tree("one").path(), MANIFEST, b"").unwrap();
        let two = load_in(tree("two").path(), MANIFEST, b"").unwrap();
        assert_eq!(hash(&one, "app"), hash(&two, "app"));
        assert_eq!(
            one.containers["app"].spec.secrets[0].digest,
            "hmac-sha256:unkeyed"
        );
    }

    fn errors(manifest: &str) -> Vec<String> {
        let tmp = tree("v");
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "not yours").unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("db_password"), "v").unwrap();
        std::os::unix::fs::symlink("../outside", src.join("link")).unwrap();
        let err = load_in(&src, manifest, KEY).unwrap_err();
        err.iter().map(|d| d.to_string()).collect()
    }

    fn has(errors: &[String], want: &str) {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{want:?} not in {errors:#?}"
        );
    }

    #[test]
    fn unknown_secret_is_a_diagnostic_with_file_line_field() {
        let e = errors(
            "[secrets.db_password]\nfile = \"db_password\"\n[containers.app]\nimage = \"busybox\"\nsecrets = [\"db_pasword\"]\n",
        );
        has(&e, "app.toml:5:");
        has(
            &e,
            "containers.app.secrets[0]: unknown secret \"db_pasword\"",
        );
        has(&e, "did you mean \"db_password\"");
    }

    #[test]
    fn paths_escaping_the_tree_are_refused() {
        for (file, want) in [
            ("../outside", "secrets.a.file: secret file \"../outside\""),
            ("link", "secrets.a.file: secret file \"link\""),
            ("/etc/shadow", "must be a relative path inside the source"),
        ] {
            let e = errors(&format!("[secrets.a]\nfile = \"{file}\"\n"));
            has(&e, "app.toml:2:");
            has(&e, want);
            assert!(!e.iter().any(|d| d.contains("not yours")), "{e:?}");
        }
    }

    #[test]
    fn bad_declarations_and_entries() {
        let e = errors(
            "[secrets.a]\nenv = \"NOPE\"\n[secrets.b]\nfile = \"db_password\"\nenv = \"DB_TOKEN\"\n[secrets.c]\n\
             [containers.app]\nimage = \"busybox\"\nsecrets = [{ source = \"b\", mode = \"999\" }, { target = \"x\" }, 7]\n",
        );
        has(
            &e,
            "secrets.a.env: the agent's environment has no variable \"NOPE\"",
        );
        has(&e, "secrets.b: give either file or env");
        has(&e, "secrets.c: missing field");
        has(&e, "containers.app.secrets[0].mode: mode \"999\"");
        has(
            &e,
            "containers.app.secrets[1]: missing required field \"source\"",
        );
        has(
            &e,
            "containers.app.secrets[2]: expected a secret name or table",
        );
    }
}
