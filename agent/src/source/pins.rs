//! What image updates (`[images.X] update`) have put in force: for each
//! image a `digest` or `semver:` policy follows, the tag and digest its
//! last check found, which then stand in for the written reference in the
//! desired state (the containers using the image included) — so a new
//! digest reaches the host through the ordinary reconcile, as a new
//! desired state, and `moor apply`, which reads the same record, does not
//! put the older image back.
//!
//! Kept in `<state>/sources/<project>/image-updates.json`, written
//! atomically by the agent. A pin holds only while the manifests still say
//! what it was found for (the same written reference, the same policy): an
//! edited reference or policy starts afresh.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use moor_spec::reference::ImageRef;
use moor_spec::update::UpdatePolicy;
use moor_spec::{DesiredState, ImageSpec};
use serde::{Deserialize, Serialize};

/// One image's pin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// The policy it was found under (`digest`, `semver:^1.4`).
    pub policy: String,
    /// The tag in force.
    pub tag: String,
    /// The digest the tag pointed at (an index's for a multi-platform image).
    pub digest: String,
    /// When it was found (Unix seconds).
    pub since: f64,
}

/// The pins of one project, by written reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pins {
    #[serde(default)]
    images: BTreeMap<String, Pin>,
    /// Digests an update put in force whose revision failed and was
    /// rolled back, by written reference: not pinned again until the
    /// registry offers another.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    refused: BTreeMap<String, String>,
}

/// Where `project`'s pins are kept.
pub fn path(state_dir: &Path, project: &str) -> PathBuf {
    state_dir
        .join("sources")
        .join(project)
        .join("image-updates.json")
}

impl Pins {
    /// The pins of `project`: none when there is no record yet; an error
    /// when it cannot be read or parsed.
    pub fn load(state_dir: &Path, project: &str) -> anyhow::Result<Self> {
        let file = path(state_dir, project);
        match std::fs::read(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a record of image updates (remove it, and the written tags apply)",
                    file.display()
                )
            }),
        }
    }

    /// Writes the pins of `project` through a temporary file, synced and renamed.
    pub fn save(&self, state_dir: &Path, project: &str) -> std::io::Result<()> {
        let file = path(state_dir, project);
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = file.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    }

    /// The pin of `spec`, if it still holds: `spec` follows a `digest` or
    /// `semver:` policy, and the pin was found for this written reference
    /// under this policy.
    pub fn get(&self, spec: &ImageSpec) -> Option<&Pin> {
        let policy = pinned_policy(spec)?;
        self.images
            .get(&spec.reference.to_string())
            .filter(|p| p.policy == policy.to_string())
            .filter(|p| {
                *policy != UpdatePolicy::Digest || Some(&p.tag) == written_tag(spec).as_ref()
            })
    }

    /// Records `pin` for `spec`'s written reference (the registry offers
    /// something else than a digest refused: the refusal ends).
    pub fn set(&mut self, spec: &ImageSpec, pin: Pin) {
        let key = spec.reference.to_string();
        self.refused.remove(&key);
        self.images.insert(key, pin);
    }

    /// Whether `digest` was put in force for `spec` and rolled back.
    pub fn is_refused(&self, spec: &ImageSpec, digest: &str) -> bool {
        self.refused
            .get(&spec.reference.to_string())
            .is_some_and(|d| d == digest)
    }

    /// Goes back to `previous` (the pins before an update whose revision
    /// failed and was rolled back): each digest pinned here and not there
    /// is refused until the registry offers another. Returns the
    /// references whose pins went back.
    pub fn revert_to(&mut self, previous: &Pins) -> Vec<String> {
        let mut reverted = Vec::new();
        let mut refused = previous.refused.clone();
        for (key, pin) in &self.images {
            if previous.images.get(key).map(|p| &p.digest) != Some(&pin.digest) {
                refused.insert(key.clone(), pin.digest.clone());
                reverted.push(key.clone());
            }
        }
        // Refusals of earlier rollbacks stay.
        for (key, digest) in &self.refused {
            refused.entry(key.clone()).or_insert_with(|| digest.clone());
        }
        self.images = previous.images.clone();
        self.refused = refused;
        reverted
    }

    /// The pins in force for `desired`: written reference → `tag@digest`,
    /// as [`Pins::apply`] puts them in.
    pub fn in_force(&self, desired: &DesiredState) -> BTreeMap<String, String> {
        desired
            .images
            .values()
            .filter_map(|i| {
                let pin = self.get(&i.spec)?;
                pinned_ref(&i.spec.reference, pin)?;
                Some((
                    i.spec.reference.to_string(),
                    format!("{}@{}", pin.tag, pin.digest),
                ))
            })
            .collect()
    }

    /// The revision of `desired` with these pins in force: the source's
    /// `revision` as it is when none is, else
    /// `<revision>+img:<16 hex digits of the pins' hash>` — so that an
    /// image update is a revision of its own, judged and rolled back like
    /// any other.
    pub fn revision(&self, revision: Option<&str>, desired: &DesiredState) -> Option<String> {
        let revision = revision?;
        let pins = self.in_force(desired);
        if pins.is_empty() {
            return Some(revision.to_string());
        }
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (k, v) in &pins {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        let hash = hex::encode(h.finalize());
        Some(format!(
            "{revision}{}{}",
            moor_reconcile::IMAGES_MARK,
            &hash[..16]
        ))
    }

    /// Forgets the pins no image of `desired` can use any more; returns
    /// whether any was.
    pub fn retain_used(&mut self, desired: &DesiredState) -> bool {
        let before = self.images.len();
        let used: Vec<String> = desired
            .images
            .values()
            .filter(|i| pinned_policy(&i.spec).is_some())
            .map(|i| i.spec.reference.to_string())
            .collect();
        self.images.retain(|k, _| used.contains(k));
        let refused = self.refused.len();
        self.refused.retain(|k, _| used.contains(k));
        self.images.len() != before || self.refused.len() != refused
    }

    /// `desired` with each pinned image's reference in force in place of
    /// the written one, in its `[images]` entry and in every container that
    /// uses it. Spec hashes stay those of the written manifests: a
    /// container is replaced when the image's digest changes, not because
    /// a pin names the same image anew. A pin that does not make a valid
    /// reference (a hand-edited record) is ignored.
    pub fn apply(&self, desired: &DesiredState) -> DesiredState {
        let mut out = desired.clone();
        let mut pinned_images = Vec::new();
        for (name, image) in &desired.images {
            let Some(pin) = self.get(&image.spec) else {
                continue;
            };
            let Some(pinned) = pinned_ref(&image.spec.reference, pin) else {
                tracing::warn!(image = %name, tag = %pin.tag, digest = %pin.digest, "ignoring an image update record that does not make a reference");
                continue;
            };
            pinned_images.push((name.clone(), image.spec.reference.clone(), pinned));
        }
        for (name, written, pinned) in pinned_images {
            moor_reconcile::rollout::pin_image(&mut out, Some(&name), &written, &pinned);
        }
        out
    }
}

/// The policy of an image that pins (`digest`, `semver:`), if it has one.
fn pinned_policy(spec: &ImageSpec) -> Option<&UpdatePolicy> {
    spec.update
        .as_ref()
        .map(|u| &u.policy)
        .filter(|p| **p != UpdatePolicy::Notify)
}

/// The tag a reference names (`latest` when it names none).
pub fn written_tag(spec: &ImageSpec) -> Option<String> {
    match (&spec.reference.tag, &spec.reference.digest) {
        (Some(t), _) => Some(t.clone()),
        (None, None) => Some("latest".into()),
        (None, Some(_)) => None,
    }
}

/// `registry/repository:TAG@DIGEST` from `written` and `pin`, checked as
/// any reference is.
fn pinned_ref(written: &ImageRef, pin: &Pin) -> Option<ImageRef> {
    let text = format!("{}:{}@{}", written.name(), pin.tag, pin.digest);
    let r = moor_spec::reference::parse(&text).ok()?;
    (r.name() == written.name() && r.tag.as_deref() == Some(pin.tag.as_str())).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn state(policy: &str) -> DesiredState {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("m.toml"),
            format!(
                "[images.app]\nref = \"localhost:5000/app:1.4.0\"\nupdate = {{ interval = \"1m\", policy = \"{policy}\" }}\n\
                 [containers.web]\nimage = \"app\"\n\
                 [containers.direct]\nimage = \"localhost:5000/app:1.4.0\"\n\
                 [containers.other]\nimage = \"localhost:5000/other:1\"\n"
            ),
        )
        .unwrap();
        moor_spec::load(&[tmp.path()]).unwrap()
    }

    fn pin(policy: &str, tag: &str, digest: &str) -> Pin {
        Pin {
            policy: policy.into(),
            tag: tag.into(),
            digest: digest.into(),
            since: 1.0,
        }
    }

    #[test]
    fn a_pin_stands_in_for_the_written_reference_and_keeps_the_hashes() {
        let desired = state("semver:^1.4");
        let mut pins = Pins::default();
        pins.set(
            &desired.images["app"].spec,
            pin("semver:^1.4", "1.10.0", &d('b')),
        );
        let pinned = pins.apply(&desired);
        let want = format!("localhost:5000/app:1.10.0@{}", d('b'));
        assert_eq!(pinned.images["app"].spec.reference.to_string(), want);
        assert_eq!(pinned.containers["web"].spec.image.to_string(), want);
        assert_eq!(pinned.containers["direct"].spec.image.to_string(), want);
        assert_eq!(
            pinned.containers["other"].spec.image.to_string(),
            "localhost:5000/other:1"
        );
        assert_eq!(
            pinned.containers["web"].hash,
            desired.containers["web"].hash
        );
        // The written state is untouched.
        assert_eq!(
            desired.containers["web"].spec.image.to_string(),
            "localhost:5000/app:1.4.0"
        );
    }

    #[test]
    fn a_pin_found_for_something_else_does_not_hold() {
        let semver = state("semver:^1.4");
        let mut pins = Pins::default();
        pins.set(
            &semver.images["app"].spec,
            pin("semver:^1.4", "1.10.0", &d('b')),
        );
        // The policy changed in the manifests since.
        let digest = state("digest");
        assert!(pins.get(&digest.images["app"].spec).is_none());
        assert_eq!(
            pins.apply(&digest).containers["web"].spec.image.to_string(),
            "localhost:5000/app:1.4.0"
        );
        // `notify` never pins.
        assert!(pins.get(&state("notify").images["app"].spec).is_none());
        // A digest pin must keep the written tag.
        let mut pins = Pins::default();
        pins.set(&digest.images["app"].spec, pin("digest", "9.9.9", &d('c')));
        assert!(pins.get(&digest.images["app"].spec).is_none());
        // And unused pins are forgotten.
        assert!(pins.retain_used(&state("notify")));
        assert_eq!(pins, Pins::default());
    }

    #[test]
    fn a_tampered_record_is_ignored_or_refused() {
        let desired = state("digest");
        for (tag, digest) in [
            ("1.4.0", "sha256:zz"),
            ("1.4.0", "md5:abc"),
            ("1.4.0/../../x", d('a').as_str()),
            ("1.4.0@sha256:x", d('a').as_str()),
        ] {
            let mut pins = Pins::default();
            pins.set(&desired.images["app"].spec, pin("digest", tag, digest));
            let applied = pins.apply(&desired);
            assert_eq!(
                applied.containers["web"].spec.image.to_string(),
                "localhost:5000/app:1.4.0",
                "{tag} {digest}"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let file = path(tmp.path(), "site");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "{not json").unwrap();
        let err = Pins::load(tmp.path(), "site").unwrap_err();
        assert!(format!("{err:#}").contains("is not a record of image updates"));
    }

    #[test]
    fn an_update_rolled_back_goes_back_and_its_digest_is_refused() {
        let desired = state("digest");
        let spec = &desired.images["app"].spec;
        let mut pins = Pins::default();
        // No pin: the source's revision as it is.
        assert_eq!(
            pins.revision(Some("c0ffee"), &desired).as_deref(),
            Some("c0ffee")
        );
        pins.set(spec, pin("digest", "1.4.0", &d('a')));
        let good = pins.revision(Some("c0ffee"), &desired).expect("revision");
        assert!(
            good.starts_with("c0ffee+img:") && good.len() == "c0ffee+img:".len() + 16,
            "{good}"
        );
        let previous = pins.clone();
        pins.set(spec, pin("digest", "1.4.0", &d('b')));
        let bad = pins.revision(Some("c0ffee"), &desired).expect("revision");
        assert_ne!(bad, good);
        assert_eq!(pins.revert_to(&previous), ["localhost:5000/app:1.4.0"]);
        // The revision rolled back to, and the bad digest refused.
        assert_eq!(pins.revision(Some("c0ffee"), &desired), Some(good));
        assert!(pins.is_refused(spec, &d('b')));
        assert!(!pins.is_refused(spec, &d('a')));
        // It survives a restart.
        let tmp = tempfile::tempdir().unwrap();
        pins.save(tmp.path(), "site").unwrap();
        let mut pins = Pins::load(tmp.path(), "site").unwrap();
        assert!(pins.is_refused(spec, &d('b')));
        // Another digest offered: pinned, and the refusal ends.
        pins.set(spec, pin("digest", "1.4.0", &d('c')));
        assert!(!pins.is_refused(spec, &d('b')));
        // A tampered pin is not in force, so not in the revision either.
        let mut tampered = Pins::default();
        tampered.set(spec, pin("digest", "1.4.0", "sha256:zz"));
        assert_eq!(
            tampered.revision(Some("c0ffee"), &desired).as_deref(),
            Some("c0ffee")
        );
    }

    #[test]
    fn pins_survive_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(Pins::load(tmp.path(), "site").unwrap(), Pins::default());
        let desired = state("digest");
        let mut pins = Pins::default();
        pins.set(&desired.images["app"].spec, pin("digest", "1.4.0", &d('e')));
        pins.save(tmp.path(), "site").unwrap();
        assert_eq!(Pins::load(tmp.path(), "site").unwrap(), pins);
    }
}
