//! A container's `/etc/resolv.conf`: the DNS server of its first network.

use moor_reconcile::RuntimeError;
use moor_spec::{ContainerSpec, MountSource, NetworkMode, NetworkSpec};

use super::error::{ErrorContext, container, network};
use super::plug::attachments;
use super::{DEFAULT_NETWORK, Inner};

impl Inner {
    /// A read-only `/etc/resolv.conf` pointing at the DNS server of the
    /// container's first network (the host's resolvers when it has none).
    pub(super) fn resolv_conf_mount(
        &self,
        name: &str,
        spec: &ContainerSpec,
    ) -> Result<Option<moor_spec::Mount>, RuntimeError> {
        if spec.network_mode != NetworkMode::Bridge
            || spec.mounts.iter().any(|m| m.target == "/etc/resolv.conf")
        {
            return Ok(None);
        }
        let host_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let first = attachments(spec).into_iter().next().map(|a| a.network);
        // The implicit default network is made on first use: now, so that
        // the first containers on it get its DNS server too.
        if first.as_deref() == Some(DEFAULT_NETWORK)
            && !self
                .nets
                .state()
                .map_err(network)?
                .networks
                .contains_key(DEFAULT_NETWORK)
        {
            self.nets
                .create_network(DEFAULT_NETWORK, &NetworkSpec::default())
                .map_err(network)?;
        }
        let gateway =
            first.and_then(|n| self.nets.state().ok()?.networks.get(&n).map(|r| r.gateway));
        let text = match gateway {
            Some(gw) => crate::net::dns::resolv_conf(gw, &host_conf),
            None => host_conf,
        };
        let dir = self.state_dir.join("resolv");
        std::fs::create_dir_all(&dir)
            .map_err(ErrorContext::new(format!("create {}", dir.display())))
            .map_err(container)?;
        let path = dir.join(format!("{name}.conf"));
        crate::container::bundle::write_container_file(&path, text.as_bytes(), true)
            .map_err(container)?;
        Ok(Some(moor_spec::Mount {
            target: "/etc/resolv.conf".into(),
            source: MountSource::Bind {
                source: path,
                content_digest: None,
                tree: None,
            },
            read_only: true,
        }))
    }
}
