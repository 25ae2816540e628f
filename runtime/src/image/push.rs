//! `moor image push`: an image from the store to a registry, as `docker
//! push` sends it.
//!
//! Each blob (layers, then the config) is asked for first (`HEAD`) and sent
//! only when the registry lacks it; a blob the image also has under another
//! repository of the same registry (one of its other references) is
//! mounted from there (`POST …/blobs/uploads/?mount=…&from=…`) rather than
//! sent again. Uploads are monolithic (`POST`, then `PUT …&digest=…` with
//! the blob streamed from the store). The manifest goes last, byte for byte
//! as stored, so the digest a later pull sees is the image's own.
//!
//! Transport and credentials are the pull's ([`super::pull`]): plain HTTP
//! only to loopback or an `--insecure-registry`, the credentials of the
//! target registry alone, and an `Authorization` header only on requests to
//! the registry itself (an upload location on another host gets none).

use moor_spec::reference::ImageRef;
use moor_store::Digest;

use super::pull::{Client, Payload, PullError, PullOptions};
use super::{ImageError, Images};

/// What happened to one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry had it in the repository already.
    Present,
    /// Mounted from another repository of the registry.
    Mounted {
        /// The repository it came from.
        from: String,
    },
    /// Sent.
    Uploaded {
        /// Its size.
        bytes: u64,
    },
}

/// The outcome of a push.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The reference pushed, normalised.
    pub reference: String,
    /// The manifest's digest (the same before and after).
    pub digest: String,
    /// Each blob, layers base first then the config, and what was done.
    pub blobs: Vec<(String, BlobPush)>,
}

/// Pushes the image named `reference` in `images` to the registry the
/// reference names, under its tag.
pub fn push(images: &Images, reference: &str, opts: &PullOptions) -> Result<Pushed, PullError> {
    let r = moor_spec::reference::parse(reference).map_err(PullError::Reference)?;
    if r.digest.is_some() {
        return Err(PullError::Reference(format!(
            "{reference}: push names a tag, not a digest (tag the image first: moor image tag)"
        )));
    }
    let name = r.to_string();
    let image = images
        .resolve(&name)?
        .filter(|i| i.refs.contains(&name))
        .ok_or_else(|| {
            PullError::Image(ImageError::NotFound(format!(
                "{name} (give the image this name first: moor image tag SRC {name})"
            )))
        })?;
    // Shared: a prune cannot remove the blobs while they are sent.
    let _lock = images.store.lock_shared()?;
    let client = Client::new(&r, opts)?;
    let siblings = siblings(&r, &image.refs);
    let mut blobs = Vec::new();
    for digest in image
        .layers
        .iter()
        .map(|l| l.blob.as_str())
        .chain([image.config.as_str()])
    {
        let outcome = push_blob(images, &client, digest, &siblings)?;
        blobs.push((digest.to_string(), outcome));
    }
    let manifest: Digest = image.digest.parse().map_err(ImageError::Digest)?;
    let body = images
        .store
        .blobs
        .read(&manifest)
        .map_err(|source| PullError::Blob {
            digest: image.digest.clone(),
            source,
        })?;
    let tag = r.tag.as_deref().unwrap_or("latest");
    let url = format!("{}/v2/{}/manifests/{tag}", client.base, client.repository);
    let resp = client.request(
        "PUT",
        &url,
        &[("Content-Type", image.media_type.as_str())],
        &Payload::Bytes(&body),
    )?;
    let resp = client.success(url.clone(), resp)?;
    if let Some(said) = header(&resp, "docker-content-digest")
        && said != image.digest
    {
        return Err(PullError::ManifestDigest {
            reference: name,
            expected: image.digest,
            actual: said,
        });
    }
    Ok(Pushed {
        reference: name,
        digest: image.digest,
        blobs,
    })
}

/// Other repositories of the same registry the image is known under: where
/// its blobs may be mounted from.
fn siblings(r: &ImageRef, refs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = refs
        .iter()
        .filter_map(|s| moor_spec::reference::parse(s).ok())
        .filter(|o| o.registry == r.registry && o.repository != r.repository)
        .map(|o| o.repository)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// Makes sure the registry has one blob in the client's repository.
fn push_blob(
    images: &Images,
    client: &Client,
    digest: &str,
    siblings: &[String],
) -> Result<BlobPush, PullError> {
    let d: Digest = digest.parse().map_err(ImageError::Digest)?;
    let repo = &client.repository;
    let base = &client.base;
    let url = format!("{base}/v2/{repo}/blobs/{digest}");
    let resp = client.request("HEAD", &url, &[], &Payload::Empty)?;
    match resp.status().as_u16() {
        200 => return Ok(BlobPush::Present),
        404 => {}
        _ => {
            client.success(url, resp)?;
        }
    }
    let mut location = None;
    for from in siblings {
        let url = format!("{base}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let resp = client.request("POST", &url, &[], &Payload::Empty)?;
        match resp.status().as_u16() {
            201 => {
                return Ok(BlobPush::Mounted { from: from.clone() });
            }
            // Not mounted (the registry lacks it there, or may not read
            // it): an upload was started instead.
            202 => {
                location = header(&resp, "location");
                break;
            }
            _ => {}
        }
    }
    let location = match location {
        Some(l) => l,
        None => {
            let url = format!("{base}/v2/{repo}/blobs/uploads/");
            let resp = client.request("POST", &url, &[], &Payload::Empty)?;
            let resp = client.success(url.clone(), resp)?;
            header(&resp, "location").ok_or_else(|| PullError::Status {
                url,
                status: resp.status().as_u16(),
                detail: ": no Location for the upload".into(),
            })?
        }
    };
    let mut put = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    put.push(if put.contains('?') { '&' } else { '?' });
    put.push_str("digest=");
    put.push_str(digest);
    let bytes = images.store.blobs.size(&d).unwrap_or(0);
    let open = || {
        images
            .store
            .blobs
            .open_blob(&d)
            .map_err(std::io::Error::other)
    };
    let resp = client.request(
        "PUT",
        &put,
        &[("Content-Type", "application/octet-stream")],
        &Payload::File(&open),
    )?;
    client.success(put, resp)?;
    Ok(BlobPush::Uploaded { bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_are_other_repositories_of_the_same_registry() {
        let r = moor_spec::reference::parse("localhost:5000/team/b:1").unwrap();
        let refs = [
            "localhost:5000/team/b:1",
            "localhost:5000/team/a:1",
            "localhost:5000/team/a:2",
            "localhost:5001/team/c:1",
            "docker.io/library/busybox:1",
        ]
        .map(String::from);
        assert_eq!(siblings(&r, &refs), ["team/a"]);
    }
}
