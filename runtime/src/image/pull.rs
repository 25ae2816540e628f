//! Pull from an OCI distribution registry.
//!
//! A small client on `ureq` rather than `oci-client`: moor needs to hash and
//! size-check every byte as it streams into an ingest file (rejecting a blob
//! the moment it runs past its declared size), to skip blobs and snapshots it
//! already has before asking, and to unpack each layer on the download
//! thread as soon as it lands; `oci-client` buffers whole blobs in memory
//! or hands back unverified streams, and brings an async runtime that the
//! runtime crate's synchronous callers do not want. Layers are fetched by a
//! bounded pool of threads.
//!
//! Transport: plain HTTP only for registries on loopback addresses (as
//! Docker allows) and for registries listed in
//! [`PullOptions::insecure`]; TLS (rustls, webpki roots) everywhere else.
//! Auth: anonymous, then on `401` bearer tokens or basic auth, as the
//! registry's `WWW-Authenticate` asks, with the credentials of the registry
//! from [`PullOptions::auth_file`] (see [`super::auth`]). They go to the
//! registry itself and to a token service on the same host and port, never
//! elsewhere: a token service on another host is asked anonymously, a token
//! service over plain HTTP is refused unless it is on loopback or listed in
//! [`PullOptions::insecure`], and no `Authorization` header follows a
//! redirect (blobs are often served from elsewhere).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use moor_spec::reference::ImageRef;
use moor_store::{BlobError, Digest, ImageRecord};

use super::auth::{AuthFile, AuthFileError, Credentials};
use super::events::{Event, Observer};
use super::oci::{self, Descriptor, ImageConfig, Parsed, Platform, media};
use super::verify::{Key, Verified, VerifyError};
use super::{ImageError, Images};

/// Largest manifest or index accepted.
const MAX_MANIFEST: u64 = 4 << 20;
/// Largest config blob accepted.
const MAX_CONFIG: u64 = 8 << 20;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Registries (`host[:port]`) that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Layers downloaded at once.
    pub concurrency: usize,
    /// The registry credentials file (Docker's `config.json` `auths`
    /// format); None: [`super::auth::DEFAULT_AUTH_FILE`] if it exists.
    pub auth_file: Option<std::path::PathBuf>,
    /// The platform to pick from an index.
    pub platform: Platform,
    /// Images that must be signed (`[[verify]]`): the first rule whose
    /// pattern matches a reference decides its keys.
    pub verify: Vec<super::verify::Rule>,
    /// Keys each of which must have signed the image, whatever `verify`
    /// says (an `[images]` entry's `verify`): requirements added to the
    /// rules', never in their place.
    pub require: Vec<Key>,
    /// Also told of every pull's events (metrics).
    pub events: Option<super::events::SharedObserver>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            concurrency: 4,
            auth_file: None,
            platform: Platform::host(),
            verify: Vec::new(),
            require: Vec::new(),
            events: None,
        }
    }
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse.
    #[error("{0}")]
    Reference(String),
    /// The registry could not be reached or the connection broke.
    #[error("request {url}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        source: ureq::Error,
    },
    /// Reading a response body failed (the connection dropped).
    #[error("read {url}")]
    Read {
        /// The URL.
        url: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The registry answered with an error status.
    #[error("{url}: registry answered {status}{detail}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, if any.
        detail: String,
    },
    /// Authentication failed or is of an unknown kind.
    #[error("authenticate to {registry}: {reason}")]
    Auth {
        /// The registry.
        registry: String,
        /// Why.
        reason: String,
    },
    /// The credentials file cannot be used.
    #[error(transparent)]
    AuthFile(#[from] AuthFileError),
    /// A manifest fetched by digest hashes to something else.
    #[error("manifest {reference} hashes to {actual}, not the digest {expected} it was fetched by")]
    ManifestDigest {
        /// What was asked for.
        reference: String,
        /// The digest asked for (or announced).
        expected: String,
        /// What the body hashes to.
        actual: String,
    },
    /// A manifest is larger than allowed.
    #[error("manifest {reference} is larger than {MAX_MANIFEST} bytes")]
    ManifestTooLarge {
        /// What was asked for.
        reference: String,
    },
    /// A blob failed verification or could not be stored.
    #[error("blob {digest}")]
    Blob {
        /// The blob.
        digest: String,
        /// Why.
        source: BlobError,
    },
    /// The image store failed (including unpacking).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A verification rule covers the image and its signature is not good.
    #[error("{0}")]
    Verify(Box<super::verify::VerifyError>),
}

impl From<moor_store::LockError> for PullError {
    fn from(e: moor_store::LockError) -> Self {
        Self::Image(e.into())
    }
}

/// Pulls `reference` into `images` and records it under that reference.
pub fn pull(
    images: &Images,
    reference: &str,
    opts: &PullOptions,
    observer: &dyn Observer,
) -> Result<ImageRecord, PullError> {
    let started = Instant::now();
    let bytes = AtomicU64::new(0);
    let both = |e: Event| {
        if let Some(shared) = &opts.events {
            shared.0.event(e.clone());
        }
        observer.event(e);
    };
    let observer: &dyn Observer = &both;
    let result = moor_spec::reference::parse(reference)
        .map_err(PullError::Reference)
        .and_then(|r| pull_ref(images, &r, opts, observer, &bytes));
    observer.event(Event::Finished {
        reference: reference.to_string(),
        digest: result.as_ref().ok().map(|i| i.digest.clone()),
        bytes: bytes.load(Ordering::Relaxed),
        duration: started.elapsed(),
        result: result
            .as_ref()
            .map(drop)
            .map_err(|e| super::import::error_chain(e)),
    });
    result
}

/// The image in the store whose manifest is `digest`, or whose index is
/// and whose platform is `platform`.
fn local(
    images: &Images,
    digest: &str,
    platform: &oci::Platform,
) -> Result<Option<ImageRecord>, PullError> {
    let db = &images.store().db;
    if let Some(i) = db.image(digest).map_err(ImageError::from)? {
        return Ok(Some(i));
    }
    let wanted = platform.to_string();
    Ok(db
        .images()
        .map_err(ImageError::from)?
        .into_iter()
        .find(|i| i.index.as_deref() == Some(digest) && i.platform == wanted))
}

fn pull_ref(
    images: &Images,
    r: &ImageRef,
    opts: &PullOptions,
    observer: &dyn Observer,
    bytes: &AtomicU64,
) -> Result<ImageRecord, PullError> {
    let client = Client::new(r, opts)?;
    // An image a rule covers, or that must be signed by a key of its
    // own, is pulled by the digest its signatures name, never by the tag
    // again. Every requirement must pass, each checked against the digest
    // the first resolved: a tag moved in between is refused, not mixed.
    let mut requirements: Vec<&[Key]> = Vec::new();
    if let Some(rule) = opts.verify.iter().find(|rule| rule.matches(r)) {
        requirements.push(&rule.keys);
    }
    requirements.extend(opts.require.iter().map(std::slice::from_ref));
    let mut verified: Option<String> = None;
    for keys in requirements {
        let target = match &verified {
            None => r.clone(),
            Some(d) => ImageRef {
                digest: Some(d.clone()),
                ..r.clone()
            },
        };
        let outcome = verify_ref(&target, keys, opts);
        observer.event(Event::Verified {
            reference: r.to_string(),
            digest: outcome.as_ref().ok().map(|v| v.digest.clone()),
            result: outcome
                .as_ref()
                .map(|v| v.key.clone())
                .map_err(|e| e.to_string()),
        });
        verified = Some(outcome?.digest);
    }
    // A reference that names a digest the store holds (an image a
    // rollback returns to, kept from prune) needs no registry: the content
    // is the digest's. Not when signatures are required: those are checked
    // against the registry each time.
    if verified.is_none()
        && let Some(d) = &r.digest
        && let Some(image) = local(images, d, &opts.platform)?
    {
        observer.event(Event::Resolved {
            reference: r.to_string(),
            digest: d.clone(),
        });
        let _lock = images.store().lock_shared()?;
        let db = &images.store().db;
        if db
            .put_ref(&r.to_string(), &image.digest)
            .map_err(ImageError::from)?
            && let Some(i) = db.image(&image.digest).map_err(ImageError::from)?
        {
            return Ok(i);
        }
    }
    let pinned = verified.or_else(|| r.digest.clone());
    let wanted = pinned
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let (body, announced_media) = client.manifest(&wanted, pinned.as_deref())?;
    let top = Digest::of(&body);
    observer.event(Event::Resolved {
        reference: r.to_string(),
        digest: top.to_string(),
    });
    let _lock = images.store().lock_shared()?;
    let blobs = &images.store().blobs;
    let put = |data: &[u8], d: &Digest| {
        blobs.put(data, Some(d)).map_err(|source| PullError::Blob {
            digest: d.to_string(),
            source,
        })
    };
    put(&body, &top)?;
    let parsed = oci::parse_manifest(&body, announced_media.as_deref())
        .map_err(|e| PullError::Image(ImageError::Invalid(e)))?;
    let (manifest, manifest_digest, index) = match parsed {
        Parsed::Manifest(m, _) => (m, top, None),
        Parsed::Index(i, _) => {
            let chosen = oci::select_platform(&i, &opts.platform).ok_or_else(|| {
                PullError::Image(ImageError::Invalid(format!(
                    "{r} has no image for platform {}",
                    opts.platform
                )))
            })?;
            let (child, child_media) = client.manifest(&chosen.digest, Some(&chosen.digest))?;
            let d = Digest::of(&child);
            put(&child, &d)?;
            match oci::parse_manifest(&child, child_media.as_deref())
                .map_err(|e| PullError::Image(ImageError::Invalid(e)))?
            {
                Parsed::Manifest(m, _) => (m, d, Some(top)),
                Parsed::Index(..) => {
                    return Err(PullError::Image(ImageError::Invalid(format!(
                        "{} is a nested index",
                        chosen.digest
                    ))));
                }
            }
        }
    };
    let config_digest: Digest = manifest
        .config
        .digest
        .parse()
        .map_err(|e| PullError::Image(ImageError::Digest(e)))?;
    if manifest.config.size > MAX_CONFIG {
        return Err(PullError::Image(ImageError::Invalid(format!(
            "config {config_digest} is larger than {MAX_CONFIG} bytes"
        ))));
    }
    if !blobs.contains(&config_digest) {
        client.blob(images, &manifest.config, None, bytes)?;
    }
    let config: ImageConfig = serde_json::from_slice(
        &blobs.read(&config_digest).map_err(ImageError::from)?,
    )
    .map_err(|e| PullError::Image(ImageError::Invalid(format!("config {config_digest}: {e}"))))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(PullError::Image(ImageError::Invalid(format!(
            "manifest {manifest_digest} has {} layers but its config lists {} diff IDs",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        ))));
    }
    let chains = oci::chain_ids(&config.rootfs.diff_ids);
    for l in &manifest.layers {
        if ![
            media::OCI_LAYER,
            media::OCI_LAYER_GZIP,
            media::OCI_LAYER_ZSTD,
            media::DOCKER_LAYER,
            media::DOCKER_LAYER_TAR,
        ]
        .contains(&l.media_type.as_str())
        {
            return Err(PullError::Image(ImageError::Invalid(format!(
                "layer {} has unsupported media type \"{}\"",
                l.digest, l.media_type
            ))));
        }
    }

    // Download and unpack layers on a bounded pool; after the first failure
    // no new layer starts, but those in flight finish, so a retry reuses them.
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<PullError>> = Mutex::new(None);
    let workers = opts
        .concurrency
        .clamp(1, 16)
        .min(manifest.layers.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= manifest.layers.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let parent = i.checked_sub(1).map(|p| chains[p].as_str());
                    let layer = &manifest.layers[i];
                    let result = layer_job(
                        images,
                        &client,
                        layer,
                        &config.rootfs.diff_ids[i],
                        &chains[i],
                        parent,
                        observer,
                        bytes,
                    );
                    if let Err(e) = result {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(images.commit(&manifest_digest, index.as_ref(), &[r.to_string()])?)
}

/// Resolves `reference` and checks its cosign signatures with `keys` (see
/// [`super::verify`]): the digest it resolved to, when one of the keys
/// signed exactly that.
pub fn verify(reference: &str, keys: &[Key], opts: &PullOptions) -> Result<Verified, PullError> {
    let r = moor_spec::reference::parse(reference).map_err(PullError::Reference)?;
    verify_ref(&r, keys, opts)
}

fn verify_ref(r: &ImageRef, keys: &[Key], opts: &PullOptions) -> Result<Verified, PullError> {
    use super::verify::{self as v};
    let client = Client::new(r, opts)?;
    let (body, _) = match &r.digest {
        Some(d) => client.manifest(d, Some(d))?,
        None => client.manifest(r.tag.as_deref().unwrap_or("latest"), None)?,
    };
    let digest = Digest::of(&body).to_string();
    let tag = v::signature_tag(&digest);
    let mut reasons = Vec::new();
    let mut found = false;
    // cosign's simple signing: the `.sig` tag.
    match client.manifest(&tag, None) {
        Ok((sigs, _)) => {
            found = true;
            let fetch = |blob: &str| fetch_blob(&client, blob, v::MAX_PAYLOAD);
            match v::check_signatures(&r.to_string(), &digest, &sigs, keys, &fetch) {
                Ok(verified) => return Ok(verified),
                Err(VerifyError::Invalid { reasons: why, .. }) => reasons.push(why),
                Err(e) => return Err(PullError::Verify(Box::new(e))),
            }
        }
        Err(PullError::Status { status: 404, .. }) => {}
        Err(e) => return Err(e),
    }
    // Sigstore bundles among the image's referrers.
    for referrer in referrers(&client, &digest)? {
        found = true;
        if !v::is_digest(&referrer) {
            reasons.push(format!(
                "referrer \"{}\" is not a sha256 digest",
                referrer.escape_debug()
            ));
            continue;
        }
        let outcome = client
            .manifest(&referrer, Some(&referrer))
            .map_err(|e| super::import::error_chain(&e))
            .and_then(|(m, _)| v::bundle_layer(&m, &digest))
            .and_then(|layer| fetch_blob(&client, &layer, v::MAX_BUNDLE))
            .and_then(|bundle| v::check_bundle(&bundle, &digest, keys));
        match outcome {
            Ok(key) => return Ok(Verified { digest, key }),
            Err(why) => reasons.push(format!("bundle {referrer}: {why}")),
        }
    }
    let error = if found {
        VerifyError::Invalid {
            reference: r.to_string(),
            digest,
            keys: keys
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            reasons: reasons.join("; "),
        }
    } else {
        VerifyError::Unsigned {
            reference: r.to_string(),
            digest,
            tag,
        }
    };
    Err(PullError::Verify(Box::new(error)))
}

/// A blob of at most `limit` bytes, in memory, checked against its digest.
fn fetch_blob(client: &Client, blob: &str, limit: u64) -> Result<Vec<u8>, String> {
    let path = format!("/v2/{}/blobs/{blob}", client.repository);
    let mut resp = client.get(&path, None).map_err(|e| e.to_string())?;
    let body = resp
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    if Digest::of(&body).to_string() != blob {
        return Err("the blob does not match its digest".into());
    }
    Ok(body)
}

/// The Sigstore bundles among the referrers of `digest` (digests of their
/// manifests): from the referrers API, or, where the registry lacks it
/// (it answers 404, or 400, 405, 501), from the referrers tag schema's
/// `sha256-<hex>` index.
fn referrers(client: &Client, digest: &str) -> Result<Vec<String>, PullError> {
    use super::verify as v;
    let path = format!("/v2/{}/referrers/{digest}", client.repository);
    let invalid = |why: String| PullError::Status {
        url: format!("{}{path}", client.base),
        status: 200,
        detail: format!(": {why}"),
    };
    let index = match client.get(&path, Some(oci::media::OCI_INDEX)) {
        Ok(mut resp) => resp
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_vec()
            .map_err(|source| PullError::Http {
                url: format!("{}{path}", client.base),
                source,
            })?,
        // 404 is what the OCI distribution specification has a registry
        // without the API answer; one that routes the path nowhere may
        // answer 400, 405 or 501 instead, which mean the same here.
        Err(PullError::Status {
            status: 400 | 404 | 405 | 501,
            ..
        }) => match client.manifest(&v::referrers_tag(digest), None) {
            Ok((index, _)) => index,
            Err(PullError::Status { status: 404, .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    v::bundle_referrers(&index).map_err(invalid)
}

#[allow(clippy::too_many_arguments)]
fn layer_job(
    images: &Images,
    client: &Client,
    layer: &Descriptor,
    diff_id: &str,
    chain_id: &str,
    parent: Option<&str>,
    observer: &dyn Observer,
    bytes: &AtomicU64,
) -> Result<(), PullError> {
    let started = Instant::now();
    let digest: Digest = layer
        .digest
        .parse()
        .map_err(|e| PullError::Image(ImageError::Digest(e)))?;
    let store = images.store();
    let have_snapshot = store
        .db
        .snapshot(chain_id)
        .map_err(ImageError::from)?
        .is_some()
        && store.snapshots.exists(chain_id);
    let mut downloaded = 0;
    if !store.blobs.contains(&digest) {
        observer.event(Event::LayerStarted {
            digest: layer.digest.clone(),
            size: layer.size,
        });
        downloaded = client.blob(images, layer, Some(observer), bytes)?;
    }
    if !have_snapshot {
        images.ensure_snapshot(&digest, diff_id, chain_id, parent)?;
    }
    observer.event(Event::LayerDone {
        digest: layer.digest.clone(),
        bytes: downloaded,
        cached: downloaded == 0,
        duration: started.elapsed(),
    });
    Ok(())
}

/// What a request sends.
pub(super) enum Payload<'a> {
    /// Nothing.
    Empty,
    /// These bytes.
    Bytes(&'a [u8]),
    /// A file, opened afresh for each attempt.
    File(&'a dyn Fn() -> std::io::Result<std::fs::File>),
}

/// A registry connection for one repository.
pub(super) struct Client {
    agent: ureq::Agent,
    /// `http(s)://host[:port]` of the registry.
    pub(super) base: String,
    /// The registry as references name it (`docker.io`, `localhost:5000`).
    registry: String,
    pub(super) repository: String,
    /// Its credentials, sent to it alone.
    credentials: Option<Credentials>,
    /// Hosts that may be reached over plain HTTP.
    insecure: Vec<String>,
    authorization: Mutex<Option<String>>,
    /// Why the credentials were not sent where the registry asked, for the
    /// error if it then refuses.
    withheld: Mutex<Option<String>>,
}

impl Client {
    pub(super) fn new(r: &ImageRef, opts: &PullOptions) -> Result<Self, PullError> {
        let plain = r.registry_is_loopback() || opts.insecure.contains(&r.registry);
        let host = if r.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            r.registry.as_str()
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("moor/", env!("CARGO_PKG_VERSION")))
            // Never carry credentials to wherever a redirect points (ureq's
            // default, said here because it matters).
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            .build();
        let credentials = AuthFile::load(opts.auth_file.as_deref())?
            .for_registry(&r.registry)
            .cloned();
        Ok(Self {
            agent: config.into(),
            base: format!("{}://{host}", if plain { "http" } else { "https" }),
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            credentials,
            insecure: opts.insecure.clone(),
            authorization: Mutex::new(None),
            withheld: Mutex::new(None),
        })
    }

    /// The reason credentials were withheld, as a suffix for an error.
    fn withheld(&self) -> String {
        self.withheld
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default()
    }

    /// GETs a registry path, authenticating once on `401`.
    pub(super) fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, PullError> {
        let url = format!("{}{path}", self.base);
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let resp = self.request("GET", &url, &headers, &Payload::Empty)?;
        self.success(url, resp)
    }

    /// Turns a status outside 2xx into an error (its body's start as the
    /// detail).
    pub(super) fn success(
        &self,
        url: String,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>, PullError> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let detail = resp
            .body_mut()
            .with_config()
            .limit(512)
            .read_to_string()
            .ok()
            .map(|b| format!(": {}", b.trim()))
            .filter(|b| b.len() > 2)
            .unwrap_or_default();
        if status == 401 {
            return Err(PullError::Auth {
                registry: self.registry.clone(),
                reason: format!("credentials refused{detail}{}", self.withheld()),
            });
        }
        Err(PullError::Status {
            url,
            status,
            detail,
        })
    }

    /// Sends a request to `url` (on the registry, or where it pointed),
    /// answering one `401` with the challenge's credentials and sending
    /// again; returns whatever status came back.
    pub(super) fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        payload: &Payload<'_>,
    ) -> Result<ureq::http::Response<ureq::Body>, PullError> {
        let http = |source| PullError::Http {
            url: url.to_string(),
            source,
        };
        for attempt in 0..2 {
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            // Credentials for the registry go to the registry alone (an
            // upload location may point elsewhere).
            let ours = url
                .strip_prefix(self.base.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if let Some(auth) = self
                .authorization
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .filter(|_| ours)
            {
                req = req.header("Authorization", auth);
            }
            let resp = match payload {
                Payload::Empty => self.agent.run(req.body(()).map_err(|e| http(e.into()))?),
                Payload::Bytes(b) => self.agent.run(req.body(*b).map_err(|e| http(e.into()))?),
                Payload::File(open) => {
                    let file = open().map_err(|source| PullError::Read {
                        url: url.to_string(),
                        source,
                    })?;
                    self.agent.run(req.body(file).map_err(|e| http(e.into()))?)
                }
            }
            .map_err(http)?;
            if resp.status().as_u16() == 401 && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let auth = self.authenticate(&challenge)?;
                *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(auth);
                continue;
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Answers a `WWW-Authenticate` challenge with an `Authorization` value.
    fn authenticate(&self, challenge: &str) -> Result<String, PullError> {
        let err = |reason: String| PullError::Auth {
            registry: self.registry.clone(),
            reason,
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = parse_challenge(params);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let c = self.credentials.as_ref().ok_or_else(|| {
                    err(format!(
                        "registry wants basic auth and the credentials file has none for {}",
                        self.registry
                    ))
                })?;
                Ok(format!("Basic {}", c.basic()))
            }
            "bearer" => {
                let realm = params
                    .iter()
                    .find(|(k, _)| k == "realm")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| err("bearer challenge without realm".into()))?;
                let Some((scheme, host, port)) = super::auth::endpoint(&realm) else {
                    return Err(err(format!(
                        "token realm \"{realm}\" is not an http or https URL without user information"
                    )));
                };
                let listed = self
                    .insecure
                    .iter()
                    .any(|i| *i == host || *i == format!("{host}:{port}"));
                if scheme == "http" && !super::auth::is_loopback(&host) && !listed {
                    return Err(err(format!(
                        "token realm {realm} is plain http to {host}: refused (plain http only to loopback or an --insecure-registry)"
                    )));
                }
                let send = super::auth::may_receive(&self.registry, &self.base, &realm);
                if self.credentials.is_some() && !send {
                    *self.withheld.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                        "the credentials for {} were not sent to the token service at {host}:{port}, \
                         which is not the registry's host and port",
                        self.registry
                    ));
                }
                let mut url = realm;
                let mut sep = if url.contains('?') { '&' } else { '?' };
                for key in ["service", "scope"] {
                    let value = params
                        .iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.clone())
                        .or_else(|| {
                            (key == "scope").then(|| format!("repository:{}:pull", self.repository))
                        });
                    if let Some(v) = value {
                        url.push(sep);
                        url.push_str(key);
                        url.push('=');
                        url.push_str(&percent_encode(&v));
                        sep = '&';
                    }
                }
                let mut req = self.agent.get(&url);
                if let Some(c) = self.credentials.as_ref().filter(|_| send) {
                    req = req.header("Authorization", format!("Basic {}", c.basic()));
                }
                let mut resp = req.call().map_err(|source| PullError::Http {
                    url: url.clone(),
                    source,
                })?;
                if !resp.status().is_success() {
                    return Err(err(format!(
                        "token endpoint answered {}{}",
                        resp.status().as_u16(),
                        self.withheld()
                    )));
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: Token = resp
                    .body_mut()
                    .with_config()
                    .limit(1 << 20)
                    .read_json()
                    .map_err(|e| err(format!("bad token response: {e}")))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .ok_or_else(|| err("token response has no token".into()))?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(err(format!("unsupported auth scheme \"{other}\""))),
        }
    }

    /// Fetches a manifest by tag or digest; checks it against `digest` when
    /// given (and against the registry's `Docker-Content-Digest` always).
    pub(super) fn manifest(
        &self,
        reference: &str,
        digest: Option<&str>,
    ) -> Result<(Vec<u8>, Option<String>), PullError> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let mut resp = self.get(&path, Some(media::ACCEPT))?;
        let announced = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => PullError::ManifestTooLarge {
                    reference: reference.into(),
                },
                source => PullError::Http {
                    url: format!("{}{path}", self.base),
                    source,
                },
            })?;
        let actual = Digest::of(&body).to_string();
        for expected in [
            digest.map(String::from),
            header_digest.filter(|h| h.starts_with("sha256:")),
        ]
        .into_iter()
        .flatten()
        {
            if expected != actual {
                return Err(PullError::ManifestDigest {
                    reference: format!("{}:{reference}", self.repository),
                    expected,
                    actual,
                });
            }
        }
        Ok((body, announced))
    }

    /// Streams a blob into the store, checking size as it comes and digest
    /// at the end. Returns the bytes downloaded.
    fn blob(
        &self,
        images: &Images,
        desc: &Descriptor,
        observer: Option<&dyn Observer>,
        total: &AtomicU64,
    ) -> Result<u64, PullError> {
        let digest: Digest = desc
            .digest
            .parse()
            .map_err(|e| PullError::Image(ImageError::Digest(e)))?;
        let blob_err = |source| PullError::Blob {
            digest: desc.digest.clone(),
            source,
        };
        let path = format!("/v2/{}/blobs/{}", self.repository, desc.digest);
        let resp = self.get(&path, None)?;
        let mut ingest = images
            .store()
            .blobs
            .ingest(Some(&digest), Some(desc.size))
            .map_err(blob_err)?;
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut last_report = 0;
        loop {
            let n =
                std::io::Read::read(&mut reader, &mut buf).map_err(|source| PullError::Read {
                    url: format!("{}{path}", self.base),
                    source,
                })?;
            if n == 0 {
                break;
            }
            ingest.write_chunk(&buf[..n]).map_err(blob_err)?;
            total.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(o) = observer
                && ingest.written() - last_report >= 1 << 20
            {
                last_report = ingest.written();
                o.event(Event::LayerProgress {
                    digest: desc.digest.clone(),
                    bytes: last_report,
                    size: desc.size,
                });
            }
        }
        let n = ingest.written();
        ingest.commit().map_err(blob_err)?;
        Ok(n)
    }
}

/// `key="value", key2=value2` pairs of a challenge.
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Credentials {
    fn basic(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let p = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            p[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(
            p[2],
            ("scope".into(), "repository:library/busybox:pull".into())
        );
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
