//! moor's manifests in other spellings.
//!
//! Start at [`convert`]: a loaded [`DesiredState`] written back as moor's
//! TOML or YAML ([`moor`]) or as a Compose file ([`compose`]), so that
//! loading the output gives the same spec hashes. [`kube`] exports the same
//! state as Kubernetes objects, one YAML document per object.
//!
//! Everything here is pure: it reads a state and returns text and
//! [`Note`]s (what the target format cannot say). Writing files is the
//! caller's.

pub mod compose;
mod doc;
pub mod kube;
pub mod moor;

use std::fmt;
use std::path::{Component, Path};

pub use doc::Doc;
use moor_spec::DesiredState;

/// What a conversion could not carry over faithfully.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    /// The resource, as `containers.web`.
    pub resource: String,
    /// The field of it (empty for the whole resource).
    pub field: String,
    /// What was done instead.
    pub message: String,
}

impl Note {
    /// A note about `resource`'s `field`.
    pub fn new(resource: &str, field: &str, message: impl Into<String>) -> Note {
        Note {
            resource: resource.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.resource, self.message)
        } else {
            write!(f, "{}.{}: {}", self.resource, self.field, self.message)
        }
    }
}

/// The format [`convert`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// moor's TOML.
    Toml,
    /// moor's YAML.
    Yaml,
    /// A Compose file.
    Compose,
}

/// `state` as one manifest in `format`, to be read from the directory
/// `base` (bind sources under it are written relative to it), and what
/// the format could not say. Same state, same bytes.
pub fn convert(state: &DesiredState, base: &Path, format: Format) -> (String, Vec<Note>) {
    let mut notes = Vec::new();
    let text = match format {
        Format::Toml => moor::document(state, base, &mut notes).to_toml(),
        Format::Yaml => moor::document(state, base, &mut notes).to_yaml(),
        Format::Compose => compose::document(state, base, &mut notes).to_yaml(),
    };
    // The spec keeps a secret's value, never where it came from: writing
    // the value into the output would put it in plaintext on disk.
    for (name, c) in &state.containers {
        for secret in &c.spec.secrets {
            notes.push(Note::new(
                &format!("containers.{name}"),
                &format!("secrets[{}]", secret.source),
                "not converted: declare the secret again in the output by hand",
            ));
        }
    }
    notes.sort();
    notes.dedup();
    (text, notes)
}

/// A host path as a manifest in `base` writes it: `./rel` when it is
/// under `base` (so that moor hashes its content, as it did when it was
/// loaded), else absolute.
/// An image's build (`context` as [`host_path`] writes it, and the
/// `dockerfile`, `args` and `target` that differ from the defaults), spelt
/// alike by moor's formats and Compose.
pub(crate) fn build_doc(b: &moor_spec::BuildSpec, base: &Path) -> Doc {
    let mut d = Doc::map();
    d.set("context", Doc::s(host_path(&b.context, base)));
    if b.dockerfile != Path::new("Dockerfile") {
        d.set("dockerfile", Doc::s(b.dockerfile.display().to_string()));
    }
    if !b.args.is_empty() {
        d.set("args", Doc::str_map(&b.args));
    }
    if let Some(t) = &b.target {
        d.set("target", Doc::s(t));
    }
    d
}

pub(crate) fn host_path(source: &Path, base: &Path) -> String {
    let base = moor_spec::tree::normalize(base);
    match source.strip_prefix(&base) {
        Ok(rel) if rel.components().all(|c| matches!(c, Component::Normal(_))) => {
            if rel.as_os_str().is_empty() {
                ".".to_string()
            } else {
                format!("./{}", rel.display())
            }
        }
        _ => source.display().to_string(),
    }
}
