//! What the registry and the image store say about an image an update
//! follows (`[images.X] update`, asked by the agent between passes) or one
//! pulled with `pull = "always"` (asked by the reconciler's observation
//! through [`Inner::tag_moved`]); changing nothing on the host.

use std::time::{Duration, Instant};

use moor_reconcile::RuntimeError;
use moor_spec::reference::ImageRef;

use super::error::{ErrorContext, image};
use super::{Host, Inner};
use crate::image::import::error_chain;
use crate::image::remote;

/// How long the registry's answer for a `pull = "always"` tag is taken as
/// still true: the agent observes the host on every event (a container
/// exiting, a health check) and at least every resync, and a crash loop
/// must not become a request to the registry every second.
pub(super) const TAG_CHECK_EVERY: Duration = Duration::from_secs(30);

impl Inner {
    /// The digest `reference`'s tag points at in its registry, when it is
    /// not the one of the image the store's tag names; `None` when they
    /// are the same. The registry is asked at most once per
    /// [`TAG_CHECK_EVERY`] per reference; the store is read every time,
    /// so an image pulled meanwhile is seen at once.
    pub(super) fn tag_moved(&self, reference: &ImageRef) -> Result<Option<String>, RuntimeError> {
        let r = reference.to_string();
        let now = Instant::now();
        let cached = {
            let heads = self.heads.lock().expect("tag cache poisoned");
            heads
                .get(&r)
                .filter(|(at, _)| now.duration_since(*at) < TAG_CHECK_EVERY)
                .map(|(_, d)| d.clone())
        };
        let remote = match cached {
            Some(d) => d,
            None => {
                let d = remote::head_digest(reference, &self.pull)
                    .map_err(ErrorContext::new(format!("asking the registry for {r}")))
                    .map_err(image)?;
                let mut heads = self.heads.lock().expect("tag cache poisoned");
                heads.retain(|_, (at, _)| now.duration_since(*at) < TAG_CHECK_EVERY);
                heads.insert(r.clone(), (now, d.clone()));
                d
            }
        };
        let images = self.images.lock().expect("image store poisoned");
        let local = images
            .resolve(&r)
            .map_err(ErrorContext::new(format!(
                "reading the image store for {r}"
            )))
            .map_err(image)?
            .filter(|i| i.refs.contains(&r))
            .map(|i| i.index.unwrap_or(i.digest));
        Ok(match local {
            Some(local) if local != remote => Some(remote),
            _ => None,
        })
    }
}

impl Host {
    /// The digest `reference`'s tag points at in its registry now (an
    /// index's for a multi-platform image), from a `HEAD` request.
    pub async fn remote_digest(&self, reference: &ImageRef) -> Result<String, String> {
        let (r, inner) = (reference.clone(), self.inner.clone());
        tokio::task::spawn_blocking(move || {
            remote::head_digest(&r, &inner.pull).map_err(|e| error_chain(&e))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The tags of `reference`'s repository.
    pub async fn remote_tags(&self, reference: &ImageRef) -> Result<Vec<String>, String> {
        let (r, inner) = (reference.clone(), self.inner.clone());
        tokio::task::spawn_blocking(move || {
            remote::list_tags(&r, &inner.pull).map_err(|e| error_chain(&e))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The digest the image store holds for `reference`, as a registry
    /// would name it: the index it was chosen from, else its manifest's;
    /// `None` when the store has no such image.
    pub async fn local_digest(&self, reference: &ImageRef) -> Option<String> {
        let (r, inner) = (reference.to_string(), self.inner.clone());
        tokio::task::spawn_blocking(move || {
            let images = inner.images.lock().expect("image store poisoned");
            images
                .resolve(&r)
                .ok()
                .flatten()
                .filter(|i| i.refs.contains(&r))
                .map(|i| i.index.unwrap_or(i.digest))
        })
        .await
        .ok()
        .flatten()
    }

    /// Every name in the image store ([`super::observe::by_name`]) and
    /// the digest a registry names its image by (the index's, else the
    /// manifest's); empty when the store cannot be read.
    /// Never waits for a pull under way (which holds the host's handle on
    /// the store): it then reads through a handle of its own.
    pub fn image_digests(&self) -> std::collections::BTreeMap<String, String> {
        let list = match self.inner.images.try_lock() {
            Ok(images) => images.list(),
            Err(_) => crate::image::Images::open(&self.inner.state_dir).and_then(|i| i.list()),
        };
        super::observe::by_name(&list.unwrap_or_default(), |i, _| {
            i.index.clone().unwrap_or_else(|| i.digest.clone())
        })
    }
}

/// The digest [`Host::image_digests`] gives `reference`: its own entry, or
/// for a reference pinned to a digest (`name:tag@digest`, which no pull
/// may have recorded: an image imported here, or one whose tag has moved)
/// the entry of that digest.
pub fn digest_of<'a>(
    digests: &'a std::collections::BTreeMap<String, String>,
    reference: &str,
) -> Option<&'a String> {
    digests
        .get(reference)
        .or_else(|| reference.rsplit_once('@').and_then(|(_, d)| digests.get(d)))
}
