//! The OCI image format types moor reads and writes (image-spec v1, and
//! Docker's schema 2, which has the same shape under other media types).

use serde::{Deserialize, Serialize};

/// Media types.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer (gzip, despite the name).
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer (`docker save`).
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Everything moor accepts as a manifest, for `Accept` headers.
    pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the content.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// The platform (in indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture variant (`v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Self {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
        }
    }

    /// True when an image for `self` runs on `host` (a missing variant matches).
    pub fn matches(&self, host: &Platform) -> bool {
        self.os == host.os
            && self.architecture == host.architecture
            && (self.variant.is_none() || host.variant.is_none() || self.variant == host.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
}

/// An image index or manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests it lists.
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config moor reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Architecture variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The layers' diff IDs.
    pub rootfs: RootFs,
    /// How to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// When it was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// The root filesystem section of a config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layers, base first.
    pub diff_ids: Vec<String>,
}

/// The run section of a config (a subset).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// Environment, `KEY=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What a manifest-like document turned out to be.
#[derive(Debug)]
pub enum Parsed {
    /// An image manifest.
    Manifest(Manifest, String),
    /// An index or manifest list.
    Index(Index, String),
}

/// Parses a manifest or index, telling which by media type (the document's
/// own field first, then the one the server announced).
pub fn parse_manifest(body: &[u8], announced: Option<&str>) -> Result<Parsed, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let announced = announced.map(|a| a.split(';').next().unwrap_or(a).trim().to_string());
    let media = probe.media_type.or(announced).unwrap_or_default();
    let is_index = media == media::OCI_INDEX
        || media == media::DOCKER_LIST
        || (media.is_empty() && probe.manifests.is_some());
    if is_index {
        let i: Index = serde_json::from_slice(body).map_err(|e| format!("bad image index: {e}"))?;
        let media = if media.is_empty() {
            media::OCI_INDEX.to_string()
        } else {
            media
        };
        return Ok(Parsed::Index(i, media));
    }
    if !media.is_empty() && media != media::OCI_MANIFEST && media != media::DOCKER_MANIFEST {
        return Err(format!("unsupported manifest media type \"{media}\""));
    }
    let m: Manifest =
        serde_json::from_slice(body).map_err(|e| format!("bad image manifest: {e}"))?;
    if m.schema_version != 2 {
        return Err(format!(
            "unsupported manifest schema version {}",
            m.schema_version
        ));
    }
    let media = if media.is_empty() {
        media::OCI_MANIFEST.to_string()
    } else {
        media
    };
    Ok(Parsed::Manifest(m, media))
}

/// Chain IDs of a list of diff IDs (image-spec: `ChainID(L₀) = DiffID(L₀)`,
/// `ChainID(Lₙ) = sha256(ChainID(Lₙ₋₁) + " " + DiffID(Lₙ))`).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                moor_store::sha256_hex(format!("{prev} {d}").as_bytes())
            ),
        };
        out.push(next);
    }
    out
}

/// Picks the manifest for `host` from an index.
pub fn select_platform<'a>(index: &'a Index, host: &Platform) -> Option<&'a Descriptor> {
    let candidates = index.manifests.iter().filter(|d| {
        d.media_type == media::OCI_MANIFEST
            || d.media_type == media::DOCKER_MANIFEST
            || d.media_type.is_empty()
    });
    let mut untagged = None;
    for d in candidates {
        match &d.platform {
            Some(p) if p.matches(host) && p.variant == host.variant => return Some(d),
            Some(p) if p.matches(host) => untagged = untagged.or(Some(d)),
            Some(_) => {}
            None => untagged = untagged.or(Some(d)),
        }
    }
    untagged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(
            c[1],
            format!(
                "sha256:{}",
                moor_store::sha256_hex(format!("{a} {b}").as_bytes())
            )
        );
    }

    #[test]
    fn selects_the_host_platform() {
        let d = |arch: &str, digest: &str| Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: None,
            }),
            annotations: Default::default(),
        };
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![d("s390x", "x"), d("amd64", "a"), d("arm64", "b")],
        };
        let host = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(select_platform(&index, &host).unwrap().digest, "b");
        let host = Platform {
            architecture: "riscv64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert!(select_platform(&index, &host).is_none());
    }
}
