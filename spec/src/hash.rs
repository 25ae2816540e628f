//! Canonical spec hashes.
//!
//! A hash is sha256 over a canonical JSON encoding of the *normalised* spec:
//! struct fields in a fixed order, maps sorted by key, lists that are sets
//! sorted, every value already normalised. So the same resource written in
//! TOML or YAML, or with its keys in another order, hashes the same, and any
//! change to a field that matters changes the hash.
//!
//! For containers, "matters" means "the running process would differ": the
//! image, command, environment, mounts (with the content of read-only bind
//! sources kept next to the manifests; a read-write bind is the container's
//! own data, hashed by path, see [`crate::writes`]), ports, networks, limits and security settings.
//! Fields the reconciler applies without recreating the container — `replicas`,
//! `restart`, `healthcheck`, `depends_on`, `stop_signal`, `stop_grace_period`,
//! `update_order` — are left out, so changing them never restarts anything.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{
    ContainerSpec, ImageSpec, Kind, NetworkAttachment, NetworkMode, NetworkSpec, Resources,
    Seccomp, VolumeSpec,
};
use crate::mounts::{Mount, MountSource};
use crate::ports::PortMapping;
use crate::reference::ImageRef;

/// `sha256:<64 hex>` over a resource's canonical encoding. Shared, not
/// copied, when a resource is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecHash(std::sync::Arc<str>);

impl SpecHash {
    /// The hash as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hash of a container instance: this spec hash combined with the
    /// digest of the image it runs, so that a new image replaces the container.
    pub fn with_image_digest(&self, image_digest: &str) -> SpecHash {
        let mut h = Sha256::new();
        h.update(self.0.as_bytes());
        h.update(b"\0");
        h.update(image_digest.as_bytes());
        SpecHash::of_sum(&h.finalize())
    }

    /// `sha256:<hex of sum>`.
    fn of_sum(sum: &[u8]) -> SpecHash {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(sum, &mut hex).expect("a sha256 sum is 32 bytes");
        let mut s = [0u8; 7 + 64];
        s[..7].copy_from_slice(b"sha256:");
        s[7..].copy_from_slice(&hex);
        SpecHash(
            std::str::from_utf8(&s)
                .expect("hex digits are ASCII")
                .into(),
        )
    }

    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> &str {
        let hex = self.0.strip_prefix("sha256:").unwrap_or(&self.0);
        &hex[..12.min(hex.len())]
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn digest(kind: Kind, value: &impl Serialize) -> SpecHash {
    #[derive(Serialize)]
    struct Tagged<'a, T> {
        v: u32,
        kind: Kind,
        spec: &'a T,
    }
    thread_local! {
        /// The encoding of the last spec hashed on this thread: its
        /// allocation serves the next.
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let sum = BUFFER.with_borrow_mut(|bytes| {
        bytes.clear();
        let tagged = Tagged {
            v: 1,
            kind,
            spec: value,
        };
        serde_json::to_writer(&mut *bytes, &tagged)
            .expect("serialising plain data to JSON cannot fail");
        let sum = Sha256::digest(bytes.as_slice());
        // A huge spec does not keep its buffer.
        if bytes.capacity() > 64 << 10 {
            *bytes = Vec::new();
        }
        sum
    });
    SpecHash::of_sum(&sum)
}

/// The hash of an image entry.
pub fn image(spec: &ImageSpec) -> SpecHash {
    digest(Kind::Image, spec)
}

/// The hash of a network.
pub fn network(spec: &NetworkSpec) -> SpecHash {
    digest(Kind::Network, spec)
}

/// The hash of a volume (`prune` is a policy, not part of the volume).
pub fn volume(spec: &VolumeSpec) -> SpecHash {
    digest(Kind::Volume, &spec.labels)
}

/// The fields of a container that decide whether it must be replaced.
#[derive(Serialize)]
struct ContainerView<'a> {
    image: &'a ImageRef,
    entrypoint: &'a Option<Vec<String>>,
    command: &'a Option<Vec<String>>,
    env: &'a BTreeMap<String, String>,
    working_dir: &'a Option<String>,
    user: &'a Option<String>,
    hostname: &'a Option<String>,
    labels: &'a BTreeMap<String, String>,
    network_mode: &'a NetworkMode,
    networks: &'a [NetworkAttachment],
    ports: &'a [PortMapping],
    mounts: &'a [Mount],
    init: bool,
    resources: &'a Resources,
    read_only: bool,
    cap_add: &'a [String],
    cap_drop: &'a [String],
    // Left out when default, so that hashes from before the field existed
    // stay the same.
    #[serde(skip_serializing_if = "Seccomp::is_default")]
    seccomp: Seccomp,
    extra_hosts: &'a [(String, IpAddr)],
    // The secrets with their keyed digests (never their values); left out
    // when empty, so that hashes from before the field existed stay the same.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    secrets: &'a [crate::model::SecretMount],
}

/// The mounts as the hash sees them: without a bind's `tree`. Where the
/// source's tree starts changes nothing that is mounted (the source and its
/// content digest are hashed), and hashes from before the field existed
/// stay the same.
fn hashed_mounts(mounts: &[Mount]) -> Cow<'_, [Mount]> {
    let has_tree = |m: &Mount| matches!(m.source, MountSource::Bind { tree: Some(_), .. });
    if !mounts.iter().any(has_tree) {
        return Cow::Borrowed(mounts);
    }
    Cow::Owned(
        mounts
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if let MountSource::Bind { tree, .. } = &mut m.source {
                    *tree = None;
                }
                m
            })
            .collect(),
    )
}

/// The hash of a container. Expects the canonical order the loader gives
/// (ports and mounts sorted, capability lists sorted).
pub fn container(spec: &ContainerSpec) -> SpecHash {
    let mounts = hashed_mounts(&spec.mounts);
    digest(
        Kind::Container,
        &ContainerView {
            mounts: &mounts,
            ..ContainerView::of(spec)
        },
    )
}

impl<'a> ContainerView<'a> {
    fn of(spec: &'a ContainerSpec) -> Self {
        ContainerView {
            image: &spec.image,
            entrypoint: &spec.entrypoint,
            command: &spec.command,
            env: &spec.env,
            working_dir: &spec.working_dir,
            user: &spec.user,
            hostname: &spec.hostname,
            labels: &spec.labels,
            network_mode: &spec.network_mode,
            networks: &spec.networks,
            ports: &spec.ports,
            mounts: &spec.mounts,
            init: spec.init,
            resources: &spec.resources,
            read_only: spec.read_only,
            cap_add: &spec.cap_add,
            cap_drop: &spec.cap_drop,
            seccomp: spec.seccomp,
            extra_hosts: &spec.extra_hosts,
            secrets: &spec.secrets,
        }
    }
}

/// [`container`] of `spec` as the loader gives it, whatever the order of its
/// ports and mounts (sorted copies are hashed when they are not in order).
pub(crate) fn container_unsorted(spec: &ContainerSpec) -> SpecHash {
    if spec.ports.is_sorted() && spec.mounts.is_sorted() {
        return container(spec);
    }
    let mut ports = spec.ports.clone();
    ports.sort();
    let mut mounts = spec.mounts.clone();
    mounts.sort();
    let mounts = hashed_mounts(&mounts);
    digest(
        Kind::Container,
        &ContainerView {
            ports: &ports,
            mounts: &mounts,
            ..ContainerView::of(spec)
        },
    )
}

/// `hmac-sha256:<hex>` of secret `name`'s `value` under the host's `key`:
/// what a spec hash includes of a secret. Without the key, a digest of a
/// short password could be reversed by trying every guess: with no key
/// (empty), the digest says nothing of the value at all.
pub fn secret_digest(key: &[u8], name: &str, value: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    if key.is_empty() {
        return "hmac-sha256:unkeyed".to_string();
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(name.as_bytes());
    mac.update(b"\0");
    mac.update(value);
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}
