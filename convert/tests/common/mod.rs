//! What the conversion tests share: the manifests they convert.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use moor_spec::{DesiredState, LoadOptions};

/// The environment the Compose corpus is read with (as its own test does).
pub const ENV: &[(&str, &str)] = &[("DEPLOY_ENV", "staging")];

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every case: the Compose corpus's stacks (their Compose file) and
/// `examples/manifests` and `convert/tests/fixtures/kitchen-sink` (every
/// field the export maps or warns about), by name.
pub fn cases() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root().join("tests/compose")).expect("tests/compose") {
        let dir = e.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let file = moor_spec::compose::FILE_NAMES
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{} holds no Compose file", dir.display()));
        out.push((
            dir.file_name().unwrap().to_string_lossy().into_owned(),
            file,
        ));
    }
    out.sort();
    assert!(out.len() >= 30, "the corpus has {} stacks", out.len());
    out.push(("examples".into(), root().join("examples/manifests")));
    out.push((
        "kitchen-sink".into(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kitchen-sink"),
    ));
    out
}

/// Loads a case as the corpus test does: its environment, every profile on.
pub fn load(path: &Path) -> DesiredState {
    let mut options = LoadOptions {
        env: ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..LoadOptions::default()
    };
    if path.is_file() {
        let text = std::fs::read_to_string(path).unwrap();
        let docs = moor_spec::parse::parse(moor_spec::parse::Format::Yaml, &text).unwrap();
        for doc in &docs {
            for (_, svc) in map(get(doc, "services")) {
                if let Some(moor_spec::node::Value::Seq(items)) =
                    get(svc, "profiles").map(|n| &n.value)
                {
                    options
                        .profiles
                        .extend(items.iter().filter_map(|i| i.scalar_text()));
                }
            }
        }
    }
    moor_spec::load_with(&[path], None, &options)
        .unwrap_or_else(|d| panic!("{} should load:\n{d}", path.display()))
}

fn get<'n>(n: &'n moor_spec::node::Node, key: &str) -> Option<&'n moor_spec::node::Node> {
    match &n.value {
        moor_spec::node::Value::Map(e) => e.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
        _ => None,
    }
}

fn map(n: Option<&moor_spec::node::Node>) -> Vec<(String, &moor_spec::node::Node)> {
    match n.map(|n| &n.value) {
        Some(moor_spec::node::Value::Map(e)) => {
            e.iter().map(|(k, v)| (k.name.to_string(), v)).collect()
        }
        _ => Vec::new(),
    }
}

/// The directory a case's output is read from.
pub fn base(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap().to_path_buf()
    }
}

/// Every resource's spec hash, by `kind.name`; images only when `images`.
pub fn hashes(state: &DesiredState, images: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if images {
        for (n, r) in &state.images {
            out.insert(format!("images.{n}"), r.hash.to_string());
        }
    }
    for (n, r) in &state.networks {
        out.insert(format!("networks.{n}"), r.hash.to_string());
    }
    for (n, r) in &state.volumes {
        out.insert(format!("volumes.{n}"), r.hash.to_string());
    }
    for (n, r) in &state.containers {
        // Secrets (a Compose file's secrets and configs among them) are
        // never converted (each is a note): the rest must be the same.
        let hash = if r.spec.secrets.is_empty() {
            r.hash.clone()
        } else {
            let mut spec = (*r.spec).clone();
            spec.secrets.clear();
            moor_spec::hash::container(&spec)
        };
        out.insert(format!("containers.{n}"), hash.to_string());
    }
    out
}
