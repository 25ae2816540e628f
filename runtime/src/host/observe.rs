//! What is on the host, as the reconciler sees it (`Inner::observe`): images,
//! networks and volumes with their owners and faults, and one current
//! container per instance, the others superseded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moor_reconcile::{
    ContainerState, Health, Hold, Observed, ObservedContainer, ObservedImage, ObservedNetwork,
    ObservedVolume, RuntimeError,
};
use moor_spec::{MountSource, NetworkMode, SpecHash};

use super::error::{container, host, image, network, volume};
use super::owners::Owners;
use super::plug::attachments;
use super::start::EngineProbe;
use super::{DEFAULT_NETWORK, Inner, instances, labels};
use crate::container::{Status, volumes};

/// Every name the images answer to, and what `value` makes of the image
/// for it (told the reference, or `None` for a digest): each reference,
/// and each image under its own digests too — the manifest's and the
/// index's it was chosen from, tagged or not — unless a reference or an
/// earlier image has that name already. A reference pinned to a digest
/// (`name:tag@digest`, a rollback's or an image update's) names an image
/// though no pull recorded that name (an image imported here, or one
/// whose tag moved since): its digest is how it is found.
pub(super) fn by_name<V>(
    images: &[moor_store::ImageRecord],
    mut value: impl FnMut(&moor_store::ImageRecord, Option<&str>) -> V,
) -> std::collections::BTreeMap<String, V> {
    let mut out = std::collections::BTreeMap::new();
    for img in images {
        for r in &img.refs {
            out.insert(r.clone(), value(img, Some(r)));
        }
        for d in std::iter::once(&img.digest).chain(img.index.as_ref()) {
            if !out.contains_key(d) {
                out.insert(d.clone(), value(img, None));
            }
        }
    }
    out
}

impl Inner {
    /// What `spec` would be built from now ([`crate::build::inputs`]).
    pub(super) fn build_inputs(
        &self,
        spec: &moor_spec::BuildSpec,
    ) -> Result<moor_reconcile::BuildInputs, RuntimeError> {
        let images = self.images.lock().expect("image store poisoned");
        crate::build::inputs::inputs(&images, spec).map_err(super::error::build)
    }

    pub(super) fn observe(self: &Arc<Self>) -> Result<Observed, RuntimeError> {
        let mut o = Observed::default();
        let images = self.images.lock().expect("image store poisoned");
        let listed = images.list().map_err(image)?;
        o.images = by_name(&listed, |img, reference| ObservedImage {
            digest: img.digest.clone(),
            remote_digest: None,
            built_from: reference
                .and_then(|r| crate::build::inputs::recorded(images.store.root(), r, &img.digest)),
        });
        drop(images);

        let owners = Owners::load(&self.state_dir).map_err(host)?;
        let net_state = self.nets.state().map_err(network)?;
        for (name, owner) in &owners.networks {
            let fault = match net_state.networks.get(name) {
                None => Some("not in the network engine's state".to_string()),
                Some(rec) => (!Path::new("/sys/class/net").join(&rec.bridge).exists())
                    .then(|| format!("bridge {} is missing", rec.bridge)),
            };
            o.networks.insert(
                name.clone(),
                ObservedNetwork {
                    project: Some(owner.project.clone()),
                    spec_hash: Some(owner.spec_hash.clone()),
                    fault,
                },
            );
        }
        for name in net_state.networks.keys() {
            if name != DEFAULT_NETWORK && !o.networks.contains_key(name) {
                o.networks.insert(
                    name.clone(),
                    ObservedNetwork {
                        project: None,
                        spec_hash: None,
                        fault: None,
                    },
                );
            }
        }
        for name in volumes::list(&self.state_dir).map_err(volume)? {
            o.volumes.insert(
                name.clone(),
                ObservedVolume {
                    project: None,
                    spec_hash: None,
                    fault: None,
                    prune: false,
                },
            );
        }
        for (name, owner) in &owners.volumes {
            let present = volumes::data_dir(&self.state_dir, name).is_dir();
            o.volumes.insert(
                name.clone(),
                ObservedVolume {
                    project: Some(owner.project.clone()),
                    spec_hash: Some(owner.spec_hash.clone()),
                    fault: (!present).then(|| "its directory is missing".to_string()),
                    prune: owner.prune,
                },
            );
        }

        let mut found = Vec::new();
        for info in self.engine.list().map_err(container)? {
            let labels = &info.record.spec.labels;
            let project = labels.get(labels::PROJECT).cloned();
            let name = info.record.name.clone();
            let (state, started_at, finished_at) = match &info.status {
                Status::Created => (ContainerState::Created, None, None),
                Status::Running { started_ms, .. } => {
                    (ContainerState::Running, Some(ms(*started_ms)), None)
                }
                Status::Exited(exit) => (
                    ContainerState::Exited {
                        code: exit.exit_code,
                        oom: exit.oom_killed,
                    },
                    exit.started_ms.map(ms),
                    Some(ms(exit.finished_ms)),
                ),
                Status::Lost { .. } => (ContainerState::Dead, None, None),
            };
            // A container stopped by another process (`moor stop`) is not
            // checked until it runs again; then its check starts afresh.
            if state != ContainerState::Running && self.health.watching(&name) {
                self.health.forget(&name);
            }
            // A running container with a health check is checked, also after an agent restart.
            if state == ContainerState::Running
                && let Some(check) = info.record.spec.healthcheck.clone()
                && !self.health.watching(&name)
            {
                self.health
                    .watch(&name, check, Arc::new(EngineProbe(self.clone())));
            }
            // Killed between starting it and plugging it in: running, but cut off.
            let fault = match (
                &info.status,
                info.record.spec.network_mode == NetworkMode::Bridge,
            ) {
                (Status::Running { pid, .. }, true) => {
                    let plugged = net_state
                        .containers
                        .get(&name)
                        .and_then(|c| c.netns.clone());
                    let expected = PathBuf::from(format!("/proc/{pid}/ns/net"));
                    (plugged.as_ref() != Some(&expected))
                        .then(|| "running but not plugged into its networks".to_string())
                }
                _ => None,
            };
            let mut spec = info.record.spec.clone();
            spec.labels.retain(|k, _| !k.starts_with(labels::PREFIX));
            let resolv_dir = self.state_dir.join("resolv");
            spec.mounts
                .retain(|m| !matches!(&m.source, MountSource::Bind { source, .. } if source.starts_with(&resolv_dir)));
            let hash = labels.get(labels::HASH).and_then(|h| {
                serde_json::from_value::<SpecHash>(serde_json::Value::String(h.clone())).ok()
            });
            let Some(hash) = hash else {
                // Not created by moor's reconciler (e.g. `moor dev run`): never touched.
                continue;
            };
            let instance = info.record.instance().to_string();
            let health = if state == ContainerState::Running {
                self.health.health(&name)
            } else {
                Health::None
            };
            let hold = match state {
                ContainerState::Running
                    if self.hierarchies().frozen(&info.record.cgroup_path()) =>
                {
                    Some(Hold::Paused)
                }
                // Stopped on purpose; or being started by `moor start`,
                // which keeps the mark until the container runs: between
                // its create and its start it shows as created, which the
                // reconciler must not take for an interrupted create.
                ContainerState::Exited { .. } | ContainerState::Created
                    if self.engine.manual_stop(&name).is_some() =>
                {
                    Some(Hold::Stopped)
                }
                _ => None,
            };
            let rank = instances::preference(
                state == ContainerState::Running,
                health,
                info.record.created_ms,
            );
            found.push((
                instance,
                rank,
                ObservedContainer {
                    id: name.clone(),
                    project,
                    resource: labels
                        .get(labels::RESOURCE)
                        .cloned()
                        .unwrap_or_else(|| name.clone()),
                    replica: labels
                        .get(labels::REPLICA)
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(1),
                    hash,
                    networks: attachments(&spec).into_iter().map(|a| a.network).collect(),
                    volumes: spec
                        .mounts
                        .iter()
                        .filter_map(|m| match &m.source {
                            MountSource::Volume { name } => Some(name.clone()),
                            _ => None,
                        })
                        .collect(),
                    spec: Some(spec),
                    state,
                    health,
                    restart_count: self.engine.restart_count(&name),
                    started_at,
                    finished_at,
                    fault,
                    hold,
                },
            ));
        }
        // One current container per instance; the others are superseded.
        found.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (instance, _, c) in found.into_iter().rev() {
            match o.containers.entry(instance) {
                std::collections::btree_map::Entry::Occupied(_) => {
                    o.superseded.insert(c.id.clone(), c);
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(c);
                }
            }
        }
        Ok(o)
    }
}

fn ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use moor_store::ImageRecord;

    fn image(digest: &str, index: Option<&str>, refs: &[&str]) -> ImageRecord {
        ImageRecord {
            digest: digest.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            config: "sha256:c".into(),
            index: index.map(String::from),
            platform: "linux/amd64".into(),
            size: 1,
            created: 0,
            layers: Vec::new(),
            refs: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn an_image_answers_to_its_references_and_its_digests() {
        let images = [
            image("sha256:a", Some("sha256:ia"), &["reg/app:1"]),
            // Tagged nowhere: found by its digests only.
            image("sha256:b", None, &[]),
            // Its index is the first image's manifest: the first keeps it.
            image("sha256:c", Some("sha256:a"), &["reg/app:2"]),
        ];
        let names = super::by_name(&images, |img, reference| {
            format!("{} {}", img.digest, reference.unwrap_or("-"))
        });
        let got: Vec<(&str, &str)> = names
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("reg/app:1", "sha256:a reg/app:1"),
                ("reg/app:2", "sha256:c reg/app:2"),
                ("sha256:a", "sha256:a -"),
                ("sha256:b", "sha256:b -"),
                ("sha256:c", "sha256:c -"),
                ("sha256:ia", "sha256:a -"),
            ]
        );
    }
}
