//! Writes SOPS files as sops does, for tests: a data key wrapped by age
//! (the `age` crate, or Debian's `age` tool), each leaf AES-256-GCM with its
//! path as additional data, and the MAC.

use std::io::Write as _;

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U32;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use sha2::{Digest as _, Sha256, Sha512};

use super::json;
use crate::node::{Key, Node, Pos, Value};

/// When the files written here were "last modified".
pub(crate) const LASTMODIFIED: &str = "2026-12-05T12:00:00Z";

/// How the data key is wrapped for the recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrap {
    /// With the `age` crate.
    Crate,
    /// With Debian's `age` tool (`age -r RECIPIENT -a`).
    Tool,
}

/// A SOPS writer: one data key, and IVs that never repeat.
pub(crate) struct Writer {
    key: [u8; 32],
    ivs: u64,
    recipient: String,
    wrap: Wrap,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl Writer {
    /// A writer for the age `recipient` (`age1…`).
    pub(crate) fn new(recipient: &str, wrap: Wrap) -> Self {
        let key: [u8; 32] = Sha256::digest(format!("data key for {recipient}")).into();
        Self {
            key,
            ivs: 0,
            recipient: recipient.to_string(),
            wrap,
        }
    }

    /// `ENC[AES256_GCM,…]` of `plain` at `aad`.
    pub(crate) fn value(&mut self, plain: &[u8], kind: &str, aad: &str) -> String {
        self.ivs += 1;
        let iv: [u8; 32] = Sha256::digest(format!("iv {}", self.ivs)).into();
        let out = AesGcm::<Aes256, U32>::new_from_slice(&self.key)
            .expect("a 256-bit key")
            .encrypt(
                GenericArray::from_slice(&iv),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .expect("encrypts");
        let (data, tag) = out.split_at(out.len() - 16);
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
            b64(data),
            b64(&iv),
            b64(tag)
        )
    }

    /// The data key, wrapped for the recipient and armored.
    pub(crate) fn wrapped_key(&self) -> String {
        self.wrap_bytes(&self.key)
    }

    /// `bytes` encrypted for the recipient and armored.
    pub(crate) fn wrap_bytes(&self, bytes: &[u8]) -> String {
        match self.wrap {
            Wrap::Crate => {
                let r: age::x25519::Recipient = self.recipient.parse().expect("an age recipient");
                let e = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
                    .expect("a recipient");
                let mut out = Vec::new();
                let armor = age::armor::ArmoredWriter::wrap_output(
                    &mut out,
                    age::armor::Format::AsciiArmor,
                )
                .expect("armor");
                let mut w = e.wrap_output(armor).expect("encrypts");
                w.write_all(bytes).expect("writes");
                w.finish().and_then(|a| a.finish()).expect("finishes");
                String::from_utf8(out).expect("armored text")
            }
            Wrap::Tool => {
                let mut child = std::process::Command::new("age")
                    .args(["-r", &self.recipient, "-a"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("Debian's age tool (apt-get install age)");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(bytes)
                    .expect("writes");
                let out = child.wait_with_output().expect("age runs");
                assert!(out.status.success(), "age failed");
                String::from_utf8(out.stdout).expect("armored text")
            }
        }
    }

    /// The `sops` metadata table, with the MAC of `mac` (a SHA-512 state).
    fn metadata(&mut self, mac: Sha512) -> Node {
        let computed = hex::encode_upper(mac.finalize());
        let mac = self.value(computed.as_bytes(), "str", LASTMODIFIED);
        let s = |v: &str| Node::new(Pos::new(1, 1), Value::Str(v.to_string().into()));
        let k = |n: &str| Key {
            name: n.to_string().into(),
            pos: Pos::new(1, 1),
        };
        let age = Node::new(
            Pos::new(1, 1),
            Value::Map(vec![
                (k("recipient"), s(&self.recipient)),
                (k("enc"), s(&self.wrapped_key())),
            ]),
        );
        Node::new(
            Pos::new(1, 1),
            Value::Map(vec![
                (k("age"), Node::new(Pos::new(1, 1), Value::Seq(vec![age]))),
                (k("lastmodified"), s(LASTMODIFIED)),
                (k("mac"), s(&mac)),
                (k("unencrypted_suffix"), s("_unencrypted")),
                (k("version"), s("3.11.0")),
            ]),
        )
    }

    fn encrypt_node(&mut self, node: &mut Node, path: &mut Vec<String>, mac: &mut Sha512) {
        match &mut node.value {
            Value::Map(entries) => {
                for (k, v) in entries.iter_mut() {
                    path.push(k.name.to_string());
                    self.encrypt_node(v, path, mac);
                    path.pop();
                }
            }
            Value::Seq(items) => {
                for v in items.iter_mut() {
                    self.encrypt_node(v, path, mac);
                }
            }
            Value::Null => {}
            _ => {
                let (plain, kind) = match &node.value {
                    Value::Str(s) | Value::DateTime(s) => (s.to_string(), "str"),
                    Value::Int(i) => (i.to_string(), "int"),
                    Value::Float(f) => (json::go_float(*f), "float"),
                    Value::Bool(true) => ("True".to_string(), "bool"),
                    Value::Bool(false) => ("False".to_string(), "bool"),
                    _ => unreachable!("scalars only"),
                };
                mac.update(plain.as_bytes());
                if path.iter().any(|p| p.ends_with("_unencrypted")) {
                    return;
                }
                if !plain.is_empty() {
                    let aad = format!("{}:", path.join(":"));
                    node.value = Value::Str(self.value(plain.as_bytes(), kind, &aad).into());
                    node.raw = None;
                }
            }
        }
    }

    /// `docs` encrypted, with the `sops` table added to the first.
    pub(crate) fn tree(&mut self, mut docs: Vec<Node>) -> Vec<Node> {
        let mut mac = Sha512::new();
        for doc in docs.iter_mut() {
            self.encrypt_node(doc, &mut Vec::new(), &mut mac);
        }
        let meta = self.metadata(mac);
        if let Some(Value::Map(first)) = docs.first_mut().map(|d| &mut d.value) {
            first.push((
                Key {
                    name: "sops".into(),
                    pos: Pos::new(1, 1),
                },
                meta,
            ));
        }
        docs
    }

    /// A YAML file (the YAML store) from plaintext YAML.
    pub(crate) fn yaml(&mut self, plain: &str) -> String {
        let docs = crate::parse::parse(crate::parse::Format::Yaml, plain).expect("plain YAML");
        json::to_yaml(&self.tree(docs))
    }

    /// A JSON file (the JSON store) from plaintext JSON.
    pub(crate) fn json(&mut self, plain: &str) -> String {
        let doc = json::parse(plain).expect("plain JSON");
        json::to_json(&self.tree(vec![doc]).remove(0))
    }

    /// A binary file (`{"data": …, "sops": …}`, as sops writes a `.toml`).
    pub(crate) fn binary(&mut self, content: &str) -> String {
        let doc = Node::new(
            Pos::new(1, 1),
            Value::Map(vec![(
                Key {
                    name: "data".into(),
                    pos: Pos::new(1, 1),
                },
                Node::new(Pos::new(1, 1), Value::Str(content.to_string().into())),
            )]),
        );
        json::to_json(&self.tree(vec![doc]).remove(0))
    }

    /// A dotenv file (the dotenv store) of `vars`.
    pub(crate) fn dotenv(&mut self, vars: &[(&str, &str)]) -> String {
        let mut mac = Sha512::new();
        let mut out = String::new();
        for (k, v) in vars {
            mac.update(v.as_bytes());
            let enc = if v.is_empty() {
                String::new()
            } else {
                self.value(v.as_bytes(), "str", &format!("{k}:"))
            };
            out.push_str(&format!("{k}={enc}\n"));
        }
        let computed = hex::encode_upper(mac.finalize());
        let mac = self.value(computed.as_bytes(), "str", LASTMODIFIED);
        let enc = self.wrapped_key().replace('\n', "\\n");
        out.push_str(&format!(
            "sops_age__list_0__map_enc={enc}\nsops_age__list_0__map_recipient={}\nsops_lastmodified={LASTMODIFIED}\nsops_mac={mac}\nsops_unencrypted_suffix=_unencrypted\nsops_version=3.11.0\n",
            self.recipient
        ));
        out
    }
}
