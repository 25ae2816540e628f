//! A container's networks: plugging it in between its create and its start.

use std::path::PathBuf;

use moor_reconcile::RuntimeError;
use moor_spec::{ContainerSpec, NetworkAttachment, NetworkMode, NetworkSpec};

use super::error::network;
use super::{DEFAULT_NETWORK, Inner, labels};

impl Inner {
    /// Plugs a created container (PID 1 `pid`, not yet running its process)
    /// into its networks; one with a network namespace and no network gets
    /// its loopback interface up.
    pub(super) fn plug(
        &self,
        name: &str,
        spec: &ContainerSpec,
        pid: i32,
    ) -> Result<(), RuntimeError> {
        match spec.network_mode {
            NetworkMode::Bridge => {}
            NetworkMode::None => {
                let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
                return self.nets.loopback_only(&netns).map_err(network);
            }
            NetworkMode::Host | NetworkMode::Container(_) => return Ok(()),
        }
        let mut attachments = attachments(spec);
        // The instance name finds the container in DNS whatever its id; while
        // two instances run, it finds both, then only the one that stays.
        if let Some(instance) = spec.labels.get(labels::INSTANCE).filter(|i| *i != name) {
            for a in &mut attachments {
                if !a.aliases.contains(instance) {
                    a.aliases.push(instance.clone());
                }
            }
        }
        if attachments.iter().any(|a| a.network == DEFAULT_NETWORK) {
            let exists = self
                .nets
                .state()
                .map_err(network)?
                .networks
                .contains_key(DEFAULT_NETWORK);
            if !exists {
                self.nets
                    .create_network(DEFAULT_NETWORK, &NetworkSpec::default())
                    .map_err(network)?;
            }
        }
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        self.nets
            .attach(name, &netns, &attachments, &spec.ports)
            .map_err(network)?;
        Ok(())
    }
}

/// A container's networks; the implicit default network when it names none.
pub(super) fn attachments(spec: &ContainerSpec) -> Vec<NetworkAttachment> {
    if spec.network_mode != NetworkMode::Bridge {
        return Vec::new();
    }
    if spec.networks.is_empty() {
        vec![NetworkAttachment {
            network: DEFAULT_NETWORK.to_string(),
            aliases: Vec::new(),
            ipv4_address: None,
        }]
    } else {
        spec.networks.clone()
    }
}
