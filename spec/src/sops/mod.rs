//! Files encrypted with [SOPS](https://github.com/getsops/sops), decrypted
//! in memory with age identities.
//!
//! A SOPS file keeps its shape and encrypts each value ("leaf") on its own
//! with AES-256-GCM under a random 256-bit data key, with the leaf's path
//! (its keys joined by `:`, plus a trailing `:`; list items add nothing) as
//! additional data: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:str]`. The data
//! key is wrapped for each recipient; here, age recipients (`sops.age[].enc`,
//! an armored age file). The MAC is SHA-512 over every plaintext leaf in
//! document order (values sops left unencrypted too, unless
//! `mac_only_encrypted`), written in upper-case hex and itself encrypted
//! with the data key and `lastmodified` as additional data.
//!
//! Stores, as sops writes them: YAML (the metadata under a top-level `sops`
//! key of the first document), JSON (the same, in document order), dotenv
//! (`KEY=ENC[…]` lines, the metadata flattened into `sops_…` lines) and
//! binary (any other file: `{"data": "ENC[…]", "sops": {…}}`, which is what
//! sops makes of a `.toml` file).
//!
//! Nothing here echoes a plaintext value: errors name the file (the caller
//! does), the path of the leaf and what failed.

pub(crate) mod json;

use std::io::Read as _;
use std::sync::Arc;

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::{U12, U32};
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use sha2::{Digest as _, Sha512};

use crate::node::{Key, Node, Pos, Value};

/// The top-level key holding a file's SOPS metadata.
const METADATA: &str = "sops";
/// sops's `MACOnlyEncryptedInitialization`: hashed first when only
/// encrypted values are in the MAC, so that the two kinds of MAC differ.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];
/// sops's default `unencrypted_suffix`, when a file names no rule.
const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// The age identities SOPS files are decrypted with (an age key file, as
/// `age-keygen` writes it: `AGE-SECRET-KEY-1…` lines, `#` comments).
///
/// Compared by the key file's text; shown as the number of identities only.
#[derive(Clone)]
pub struct AgeKeys {
    text: Arc<str>,
    identities: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
}

impl AgeKeys {
    /// The identities of an age key file's `text`. An error never quotes
    /// the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file = age::IdentityFile::from_buffer(text.as_bytes())
            .map_err(|_| "not an age identity file (AGE-SECRET-KEY-1… lines)".to_string())?;
        let identities = file.into_identities().map_err(|_| {
            "an identity of the file is not usable (plugin identities are not supported)"
                .to_string()
        })?;
        if identities.is_empty() {
            return Err("no age identity in the file".into());
        }
        Ok(Self {
            text: text.into(),
            identities: Arc::new(identities),
        })
    }

    /// How many identities there are.
    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// Whether there are none (never, for keys that parsed).
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// The data key from the first wrapped key these identities open.
    fn unwrap(&self, meta: &Metadata) -> Result<Vec<u8>, String> {
        if meta.age.is_empty() {
            return Err(format!(
                "its data key is not encrypted for any age recipient{} (moor decrypts with age keys only)",
                meta.others
            ));
        }
        for enc in &meta.age {
            let reader = age::armor::ArmoredReader::new(enc.enc.as_bytes());
            let Ok(decryptor) = age::Decryptor::new(reader) else {
                continue;
            };
            let ids = self
                .identities
                .iter()
                .map(|i| i.as_ref() as &dyn age::Identity);
            let Ok(mut stream) = decryptor.decrypt(ids) else {
                continue;
            };
            // A data key is 32 bytes: nothing longer is read.
            let mut key = Vec::new();
            if (&mut stream).take(33).read_to_end(&mut key).is_ok() && key.len() == 32 {
                return Ok(key);
            }
        }
        let recipients: Vec<&str> = meta.age.iter().map(|a| a.recipient.as_str()).collect();
        Err(format!(
            "no age identity of the key file can decrypt its data key (it is encrypted for {})",
            recipients.join(", ")
        ))
    }
}

impl PartialEq for AgeKeys {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for AgeKeys {}

impl std::fmt::Debug for AgeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgeKeys({} identities)", self.identities.len())
    }
}

/// What a decrypted file holds.
#[derive(Debug)]
pub(crate) enum Plain {
    /// A tree (YAML or JSON documents; dotenv pairs as one map).
    Tree(Vec<Node>),
    /// A binary file's content.
    Data(String),
}

/// A wrapped data key.
#[derive(Debug, Clone)]
struct AgeKey {
    recipient: String,
    enc: String,
}

/// The `sops` metadata moor needs.
#[derive(Debug, Default)]
struct Metadata {
    age: Vec<AgeKey>,
    /// The other kinds of key the data key is wrapped for, for messages.
    others: String,
    lastmodified: String,
    mac: String,
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<regex::Regex>,
    encrypted_regex: Option<regex::Regex>,
    mac_only_encrypted: bool,
}

/// Whether parsed documents carry SOPS metadata: a `sops` table at the top
/// of the first.
pub(crate) fn is_encrypted(docs: &[Node]) -> bool {
    docs.first()
        .is_some_and(|d| metadata_node(d).is_some_and(|m| matches!(m.value, Value::Map(_))))
}

fn metadata_node(doc: &Node) -> Option<&Node> {
    match &doc.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.name == METADATA)
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Whether env-file text is a SOPS dotenv file (it has `sops_mac=` or
/// `sops_lastmodified=` lines).
pub(crate) fn is_encrypted_dotenv(text: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with("sops_mac=") || l.starts_with("sops_lastmodified="))
}

/// Decrypts SOPS documents (YAML or JSON, parsed): the `sops` metadata
/// taken out, every value decrypted and the MAC checked. A file holding
/// nothing but `data` was a binary file: its content is returned.
pub(crate) fn decrypt(mut docs: Vec<Node>, keys: Option<&AgeKeys>) -> Result<Plain, String> {
    let Some(Value::Map(first)) = docs.first_mut().map(|d| &mut d.value) else {
        return Err("no SOPS metadata".into());
    };
    let at = first
        .iter()
        .position(|(k, _)| k.name == METADATA)
        .ok_or("no SOPS metadata")?;
    let (_, meta) = first.remove(at);
    let meta = Metadata::from_node(&meta)?;
    // sops writes the metadata into every document, and reads the first's.
    for doc in docs.iter_mut().skip(1) {
        if let Value::Map(entries) = &mut doc.value {
            entries.retain(|(k, _)| k.name != METADATA);
        }
    }
    let key = data_key(&meta, keys)?;
    decrypt_tree(&mut docs, &meta, &key)?;
    let binary = docs.len() == 1
        && matches!(&docs[0].value, Value::Map(e) if e.len() == 1 && e[0].0.name == "data" && matches!(e[0].1.value, Value::Str(_)));
    if binary {
        let Value::Map(mut e) = docs.remove(0).value else {
            unreachable!("checked above")
        };
        let Value::Str(data) = e.remove(0).1.value else {
            unreachable!("checked above")
        };
        return Ok(Plain::Data(data.to_string()));
    }
    Ok(Plain::Tree(docs))
}

/// Decrypts a SOPS dotenv file: the variables in order, each with its line
/// (1-based), and the metadata lines left out.
pub(crate) fn decrypt_dotenv(
    text: &str,
    keys: Option<&AgeKeys>,
) -> Result<Vec<(usize, String, String)>, String> {
    let mut entries: Vec<(Key, Node)> = Vec::new();
    let mut metadata: Vec<(String, String)> = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: not KEY=VALUE", i + 1));
        };
        let v = v.replace("\\n", "\n");
        if let Some(m) = k.strip_prefix("sops_") {
            metadata.push((m.to_string(), v));
        } else {
            let pos = Pos::new(i as u32 + 1, 1);
            entries.push((
                Key {
                    name: k.to_string().into(),
                    pos,
                },
                Node::new(pos, Value::Str(v.into())),
            ));
        }
    }
    let meta = Metadata::from_node(&unflatten(&metadata)?)?;
    let key = data_key(&meta, keys)?;
    let mut docs = vec![Node::new(Pos::new(1, 1), Value::Map(entries))];
    decrypt_tree(&mut docs, &meta, &key)?;
    let Some(Node {
        value: Value::Map(entries),
        ..
    }) = docs.pop()
    else {
        unreachable!("a map was made above")
    };
    entries
        .into_iter()
        .map(|(k, v)| match v.value {
            Value::Str(s) => Ok((k.pos.line as usize, k.name.into_string(), s.into_string())),
            _ => Err(format!("{}: a dotenv value must be a string", k.name)),
        })
        .collect()
}

/// The flattened metadata of a dotenv file (`age__list_0__map_enc`) as the
/// tree it stands for.
fn unflatten(flat: &[(String, String)]) -> Result<Node, String> {
    let mut root = Node::new(Pos::new(1, 1), Value::Map(Vec::new()));
    for (path, value) in flat {
        let mut tokens: Vec<Result<usize, &str>> = Vec::new();
        let mut rest = path.as_str();
        let first_end = [rest.find("__map_"), rest.find("__list_")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
        tokens.push(Err(&rest[..first_end]));
        rest = &rest[first_end..];
        while !rest.is_empty() {
            let (is_list, body) = if let Some(b) = rest.strip_prefix("__map_") {
                (false, b)
            } else if let Some(b) = rest.strip_prefix("__list_") {
                (true, b)
            } else {
                return Err(format!("metadata key sops_{path} is malformed"));
            };
            let end = [body.find("__map_"), body.find("__list_")]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(body.len());
            let token = &body[..end];
            tokens.push(if is_list {
                Ok(token
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n < 1024)
                    .ok_or_else(|| format!("metadata key sops_{path} is malformed"))?)
            } else {
                Err(token)
            });
            rest = &body[end..];
        }
        let mut at = &mut root;
        for token in tokens {
            at = match token {
                Err(name) => {
                    if matches!(at.value, Value::Null) {
                        at.value = Value::Map(Vec::new());
                    }
                    let Value::Map(entries) = &mut at.value else {
                        return Err(format!("metadata key sops_{path} is malformed"));
                    };
                    let i = match entries.iter().position(|(k, _)| k.name == name) {
                        Some(i) => i,
                        None => {
                            let key = Key {
                                name: name.to_string().into(),
                                pos: Pos::new(1, 1),
                            };
                            entries.push((key, Node::new(Pos::new(1, 1), Value::Null)));
                            entries.len() - 1
                        }
                    };
                    &mut entries[i].1
                }
                Ok(n) => {
                    if matches!(at.value, Value::Null) {
                        at.value = Value::Seq(Vec::new());
                    }
                    let Value::Seq(items) = &mut at.value else {
                        return Err(format!("metadata key sops_{path} is malformed"));
                    };
                    while items.len() <= n {
                        items.push(Node::new(Pos::new(1, 1), Value::Null));
                    }
                    &mut items[n]
                }
            };
        }
        at.value = Value::Str(value.clone().into());
    }
    Ok(root)
}

fn str_field(map: &[(Key, Node)], name: &str) -> Result<Option<String>, String> {
    match map
        .iter()
        .find(|(k, _)| k.name == name)
        .map(|(_, v)| &v.value)
    {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(s) | Value::DateTime(s)) => Ok(Some(s.to_string())),
        Some(other) => Err(format!(
            "sops.{name} must be a string, found {}",
            other.kind()
        )),
    }
}

fn age_keys(node: Option<&Node>, into: &mut Vec<AgeKey>) -> Result<(), String> {
    let items = match node.map(|n| &n.value) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Seq(items)) => items,
        Some(_) => return Err("sops.age must be a list".into()),
    };
    for item in items {
        let Value::Map(m) = &item.value else {
            return Err("sops.age must be a list of tables".into());
        };
        into.push(AgeKey {
            recipient: str_field(m, "recipient")?.unwrap_or_default(),
            enc: str_field(m, "enc")?.ok_or("an entry of sops.age has no enc")?,
        });
    }
    Ok(())
}

impl Metadata {
    fn from_node(node: &Node) -> Result<Self, String> {
        let Value::Map(m) = &node.value else {
            return Err("the sops metadata is not a table".into());
        };
        let get = |name: &str| m.iter().find(|(k, _)| k.name == name).map(|(_, v)| v);
        let mut meta = Metadata::default();
        age_keys(get("age"), &mut meta.age)?;
        let mut others: Vec<&str> = Vec::new();
        for kind in ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms"] {
            if matches!(get(kind).map(|n| &n.value), Some(Value::Seq(s)) if !s.is_empty()) {
                others.push(kind);
            }
        }
        if let Some(groups) = get("key_groups") {
            let Value::Seq(groups) = &groups.value else {
                return Err("sops.key_groups must be a list".into());
            };
            if groups.len() > 1 {
                return Err(format!(
                    "its data key is split among {} key groups (Shamir's secret sharing), which moor does not support",
                    groups.len()
                ));
            }
            for g in groups {
                let Value::Map(g) = &g.value else {
                    return Err("sops.key_groups must be a list of tables".into());
                };
                let age = g.iter().find(|(k, _)| k.name == "age").map(|(_, v)| v);
                age_keys(age, &mut meta.age)?;
                for (k, v) in g {
                    if k.name != "age" && matches!(&v.value, Value::Seq(s) if !s.is_empty()) {
                        others.push(match k.name.as_str() {
                            "pgp" => "pgp",
                            "kms" => "kms",
                            _ => "other keys",
                        });
                    }
                }
            }
        }
        if !others.is_empty() {
            meta.others = format!(" (only {})", others.join(", "));
        }
        meta.lastmodified = str_field(m, "lastmodified")?.unwrap_or_default();
        meta.mac = str_field(m, "mac")?.unwrap_or_default();
        meta.unencrypted_suffix = str_field(m, "unencrypted_suffix")?.filter(|s| !s.is_empty());
        meta.encrypted_suffix = str_field(m, "encrypted_suffix")?.filter(|s| !s.is_empty());
        let regex = |name: &str| -> Result<Option<regex::Regex>, String> {
            match str_field(m, name)?.filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(r) => regex::Regex::new(&r)
                    .map(Some)
                    .map_err(|_| format!("sops.{name} is not a regular expression moor can read")),
            }
        };
        meta.unencrypted_regex = regex("unencrypted_regex")?;
        meta.encrypted_regex = regex("encrypted_regex")?;
        for name in ["unencrypted_comment_regex", "encrypted_comment_regex"] {
            if str_field(m, name)?.is_some_and(|s| !s.is_empty()) {
                return Err(format!(
                    "sops.{name} is not supported: which values are encrypted then depends on comments"
                ));
            }
        }
        let rules = [
            meta.unencrypted_suffix.is_some(),
            meta.encrypted_suffix.is_some(),
            meta.unencrypted_regex.is_some(),
            meta.encrypted_regex.is_some(),
        ];
        match rules.iter().filter(|r| **r).count() {
            0 => meta.unencrypted_suffix = Some(DEFAULT_UNENCRYPTED_SUFFIX.into()),
            1 => {}
            _ => {
                return Err(
                    "it names more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex and unencrypted_regex"
                        .into(),
                );
            }
        }
        meta.mac_only_encrypted = match get("mac_only_encrypted").map(|n| &n.value) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Str(s)) => s == "true",
            Some(_) => return Err("sops.mac_only_encrypted must be a boolean".into()),
        };
        Ok(meta)
    }

    /// sops's `shouldBeEncrypted`, for a leaf at `path`.
    fn encrypts(&self, path: &[String]) -> bool {
        if let Some(s) = &self.unencrypted_suffix {
            return !path.iter().any(|p| p.ends_with(s.as_str()));
        }
        if let Some(s) = &self.encrypted_suffix {
            return path.iter().any(|p| p.ends_with(s.as_str()));
        }
        if let Some(r) = &self.unencrypted_regex {
            return !path.iter().any(|p| r.is_match(p));
        }
        if let Some(r) = &self.encrypted_regex {
            return path.iter().any(|p| r.is_match(p));
        }
        true
    }
}

fn data_key(meta: &Metadata, keys: Option<&AgeKeys>) -> Result<Vec<u8>, String> {
    match keys {
        Some(keys) => keys.unwrap(meta),
        None => Err(
            "no age key is configured (age_key_file in [source.decryption], --age-key-file or MOOR_AGE_KEY_FILE)"
                .into(),
        ),
    }
}

/// An `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` value, decrypted: its
/// plaintext and its type.
fn decrypt_value(value: &str, key: &[u8], aad: &str) -> Result<(Vec<u8>, String), String> {
    let malformed = || "not a SOPS value (ENC[AES256_GCM,data:…,iv:…,tag:…,type:…])".to_string();
    let body = value
        .strip_prefix("ENC[AES256_GCM,data:")
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(malformed)?;
    let (data, rest) = body.split_once(",iv:").ok_or_else(malformed)?;
    let (iv, rest) = rest.split_once(",tag:").ok_or_else(malformed)?;
    let (tag, kind) = rest.split_once(",type:").ok_or_else(malformed)?;
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| "its data, iv or tag is not base64".to_string())
    };
    let (mut data, iv, tag) = (b64(data)?, b64(iv)?, b64(tag)?);
    if tag.len() != 16 {
        return Err("its tag is not 16 bytes".into());
    }
    data.extend_from_slice(&tag);
    let payload = Payload {
        msg: &data,
        aad: aad.as_bytes(),
    };
    let failed = |_| {
        "it does not decrypt (authentication failed: the value, its place or the key is wrong)"
            .to_string()
    };
    let plain = match iv.len() {
        32 => AesGcm::<Aes256, U32>::new_from_slice(key)
            .map_err(|_| "the data key is not 256 bits".to_string())?
            .decrypt(GenericArray::from_slice(&iv), payload)
            .map_err(failed)?,
        12 => AesGcm::<Aes256, U12>::new_from_slice(key)
            .map_err(|_| "the data key is not 256 bits".to_string())?
            .decrypt(GenericArray::from_slice(&iv), payload)
            .map_err(failed)?,
        n => return Err(format!("its iv is {n} bytes (sops writes 32)")),
    };
    Ok((plain, kind.to_string()))
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn mac_bool(b: bool) -> &'static [u8] {
    if b { b"True" } else { b"False" }
}

/// Decrypts every leaf of `docs` in place and checks the MAC.
fn decrypt_tree(docs: &mut [Node], meta: &Metadata, key: &[u8]) -> Result<(), String> {
    let mut walk = Walk {
        meta,
        key,
        mac: Sha512::new(),
    };
    if meta.mac_only_encrypted {
        walk.mac.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let mut path = Vec::new();
    for doc in docs.iter_mut() {
        walk.node(doc, &mut path)?;
    }
    let computed = hex::encode_upper(walk.mac.finalize());
    if meta.mac.is_empty() {
        return Err(
            "it has no MAC (sops.mac): refused, as its values could have been changed".into(),
        );
    }
    let (stored, _) = decrypt_value(&meta.mac, key, &rfc3339(&meta.lastmodified))
        .map_err(|e| format!("its MAC: {e}"))?;
    if stored != computed.as_bytes() {
        return Err(
            "MAC mismatch: the file was changed after sops encrypted it (values added, removed, reordered or replaced)"
                .into(),
        );
    }
    Ok(())
}

/// `lastmodified` as sops hands it to the MAC: Go's `time.RFC3339` layout,
/// which has no fraction of a second.
fn rfc3339(s: &str) -> String {
    match s.find('.') {
        Some(dot) if s[..dot].contains('T') => {
            let rest = &s[dot + 1..];
            let zone = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{}{}", &s[..dot], zone)
        }
        _ => s.to_string(),
    }
}

struct Walk<'a> {
    meta: &'a Metadata,
    key: &'a [u8],
    mac: Sha512,
}

impl Walk<'_> {
    fn node(&mut self, node: &mut Node, path: &mut Vec<String>) -> Result<(), String> {
        match &mut node.value {
            Value::Map(entries) => {
                for (k, v) in entries.iter_mut() {
                    path.push(k.name.to_string());
                    self.node(v, path)?;
                    path.pop();
                }
                Ok(())
            }
            Value::Seq(items) => {
                for item in items.iter_mut() {
                    self.node(item, path)?;
                }
                Ok(())
            }
            Value::Null => Ok(()),
            _ => self.leaf(node, path),
        }
    }

    fn leaf(&mut self, node: &mut Node, path: &[String]) -> Result<(), String> {
        let encrypted = self.meta.encrypts(path);
        let at = || {
            if path.is_empty() {
                "a value".to_string()
            } else {
                format!("the value at {}", path.join("."))
            }
        };
        let bytes: Vec<u8> = if encrypted {
            let Value::Str(s) = &node.value else {
                return Err(format!(
                    "{}: expected an encrypted value, found {}",
                    at(),
                    node.value.kind()
                ));
            };
            if s.is_empty() {
                Vec::new()
            } else {
                let aad = format!("{}:", path.join(":"));
                let (plain, kind) =
                    decrypt_value(s, self.key, &aad).map_err(|e| format!("{}: {e}", at()))?;
                let text = String::from_utf8(plain)
                    .map_err(|_| format!("{}: the plaintext is not UTF-8 text", at()))?;
                let bad = || format!("{}: the plaintext is not of its type ({kind})", at());
                let (value, raw, mac) = match kind.as_str() {
                    "str" | "bytes" => {
                        let mac = text.as_bytes().to_vec();
                        (Value::Str(text.into()), None, mac)
                    }
                    "int" => {
                        let i: i64 = text.parse().map_err(|_| bad())?;
                        (Value::Int(i), Some(text), i.to_string().into_bytes())
                    }
                    "float" => {
                        let f: f64 = text.parse().map_err(|_| bad())?;
                        (Value::Float(f), Some(text), json::go_float(f).into_bytes())
                    }
                    "bool" => {
                        let b = go_bool(&text).ok_or_else(bad)?;
                        (Value::Bool(b), None, mac_bool(b).to_vec())
                    }
                    "time" => {
                        let mac = text.as_bytes().to_vec();
                        (Value::Str(text.into()), None, mac)
                    }
                    other => {
                        return Err(format!("{}: unknown SOPS value type {other:?}", at()));
                    }
                };
                node.value = value;
                node.raw = raw.map(Into::into);
                mac
            }
        } else {
            match &node.value {
                Value::Str(s) | Value::DateTime(s) => s.as_bytes().to_vec(),
                Value::Int(i) => i.to_string().into_bytes(),
                Value::Float(f) => json::go_float(*f).into_bytes(),
                Value::Bool(b) => mac_bool(*b).to_vec(),
                _ => Vec::new(),
            }
        };
        if !self.meta.mac_only_encrypted || encrypted {
            self.mac.update(&bytes);
        }
        Ok(())
    }
}

/// Reads the text of a SOPS file in any store, if it is one: dotenv
/// (`sops_mac=` lines), JSON (it starts with `{`) or YAML (a top-level
/// `sops` table). `None`: not a SOPS file.
fn parse_any(text: &str) -> Option<Result<Vec<Node>, String>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return match json::parse(trimmed) {
            Ok(n) if is_encrypted(std::slice::from_ref(&n)) => Some(Ok(vec![n])),
            _ => None,
        };
    }
    if !text.contains(METADATA) {
        return None;
    }
    match crate::parse::parse(crate::parse::Format::Yaml, text) {
        Ok(docs) if is_encrypted(&docs) => Some(Ok(docs)),
        _ => None,
    }
}

/// A manifest's documents: `text` parsed in `format`, or, when it is a SOPS
/// file, decrypted first. A SOPS YAML tree keeps the positions of the
/// encrypted file (the decrypted values stand where they were); a binary
/// one (what sops makes of a `.toml` file) is parsed from the decrypted text,
/// so positions are those of the plaintext.
pub(crate) fn manifest(
    format: crate::parse::Format,
    text: &str,
    keys: Option<&AgeKeys>,
) -> Result<Vec<Node>, crate::parse::SyntaxError> {
    use crate::parse::{Format, SyntaxError, parse};
    let refused = |message: String| SyntaxError {
        pos: Pos::new(1, 1),
        message: format!("cannot decrypt this SOPS file: {message}"),
    };
    let docs = match format {
        Format::Yaml => {
            let docs = parse(format, text)?;
            if !is_encrypted(&docs) {
                return Ok(docs);
            }
            docs
        }
        Format::Toml => match parse(format, text) {
            Ok(docs) => return Ok(docs),
            Err(e) => match parse_any(text) {
                Some(Ok(docs)) => docs,
                _ => return Err(e),
            },
        },
    };
    match decrypt(docs, keys).map_err(refused)? {
        Plain::Tree(docs) => Ok(docs),
        Plain::Data(plain) => {
            if crate::sops::parse_any(&plain).is_some() {
                return Err(refused("it holds another SOPS file".into()));
            }
            parse(format, &plain)
        }
    }
}

/// A decrypted env file.
#[derive(Debug)]
pub(crate) enum EnvPlain {
    /// A binary file's content: env-file text.
    Text(String),
    /// Variables (a dotenv file's, or a tree's top-level scalars as `sops
    /// exec-env` passes them), each with its line (1-based; 1 in JSON).
    Vars(Vec<(usize, String, String)>),
}

/// An env file decrypted, when `text` is a SOPS file; `None` when it is not.
pub(crate) fn env_file(text: &str, keys: Option<&AgeKeys>) -> Option<Result<EnvPlain, String>> {
    if is_encrypted_dotenv(text) {
        return Some(decrypt_dotenv(text, keys).map(EnvPlain::Vars));
    }
    let docs = parse_any(text)?;
    Some(docs.and_then(|docs| match decrypt(docs, keys)? {
        Plain::Data(plain) => Ok(EnvPlain::Text(plain)),
        Plain::Tree(docs) => {
            let mut vars = Vec::new();
            for doc in docs {
                let Value::Map(entries) = doc.value else {
                    return Err("an encrypted env file must be a table of variables".into());
                };
                for (k, v) in entries {
                    let value = v.into_scalar_text().ok_or_else(|| {
                        format!(
                            "{}: an env file's values must be strings, numbers or booleans",
                            k.name
                        )
                    })?;
                    vars.push((
                        k.pos.line as usize,
                        k.name.into_string(),
                        value.into_string(),
                    ));
                }
            }
            Ok(EnvPlain::Vars(vars))
        }
    }))
}

/// A secret file's plaintext when `text` is a SOPS file (`None` when it is
/// not): a binary file's content, a dotenv file's lines, or a YAML or JSON
/// tree written out again without its metadata.
pub(crate) fn secret_file(text: &str, keys: Option<&AgeKeys>) -> Option<Result<String, String>> {
    if is_encrypted_dotenv(text) {
        return Some(decrypt_dotenv(text, keys).map(|vars| {
            vars.into_iter()
                .map(|(_, k, v)| format!("{k}={}\n", v.replace('\n', "\\n")))
                .collect()
        }));
    }
    let json = text.trim_start().starts_with('{');
    let docs = parse_any(text)?;
    Some(docs.and_then(|docs| match decrypt(docs, keys)? {
        Plain::Data(plain) => Ok(plain),
        Plain::Tree(docs) if json => Ok(docs.first().map(json::to_json).unwrap_or_default()),
        Plain::Tree(docs) => Ok(json::to_yaml(&docs)),
    }))
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
