//! The narrow interface through which the reconciler reaches the host.
//!
//! The real engine (the `runtime` crate) implements it against the kernel;
//! [`crate::fake::FakeRuntime`] implements it in memory for tests. The
//! runtime never decides *whether* to do something, only *how*.

use std::future::Future;
use std::time::Duration;

use moor_spec::{
    BuildSpec, ContainerSpec, DesiredState, ImageRef, NetworkSpec, Resource, SpecHash, VerifySpec,
    VolumeSpec,
};

use crate::observed::{BuildInputs, ContainerState, Health, Observed};

/// The error a runtime reports inside a [`RuntimeError`]: the engine's
/// own error (this crate cannot name the engine's types), or a message.
/// Downcast it to the engine's error type to inspect it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed runtime operation: what kind of thing failed, holding the
/// runtime's error, which is its message (and whose causes are this error's).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The thing operated on does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// Pulling, finding or holding an image failed.
    #[error(transparent)]
    Image(BoxError),
    /// Building an image failed (a `RUN` that exited non-zero, a
    /// Dockerfile that does not parse, a context that cannot be read).
    #[error(transparent)]
    Build(BoxError),
    /// Creating, starting, stopping, inspecting or removing a container
    /// failed.
    #[error(transparent)]
    Container(BoxError),
    /// Creating or removing a network, or plugging a container into its
    /// networks, failed.
    #[error(transparent)]
    Network(BoxError),
    /// Creating or removing a volume failed.
    #[error(transparent)]
    Volume(BoxError),
    /// The host's own records (what each project owns) or its workers failed.
    #[error(transparent)]
    Host(BoxError),
}

/// One container instance to create: a replica of a `[containers]` resource.
#[derive(Debug, Clone)]
pub struct Instance<'a> {
    /// The instance's name (`web`, `web-2`): what people, DNS and the
    /// reconciler call it.
    pub name: String,
    /// Its id on the host, unique among the containers there: the name, or
    /// `web--1a2b3c4d` for the new instance of a start-first update, which
    /// runs beside the old one until that is removed (see
    /// [`crate::ObservedContainer::id`]).
    pub id: String,
    /// The resource it is a replica of.
    pub resource: &'a str,
    /// Its replica number, from 1.
    pub replica: u32,
    /// The normalised spec.
    pub spec: &'a ContainerSpec,
    /// The instance hash (spec hash combined with the image digest) to record.
    pub hash: SpecHash,
    /// The digest of the image it runs.
    pub image_digest: String,
}

/// The host, as the reconciler sees it. Every operation is idempotent:
/// creating what exists as asked, or removing what is gone, succeeds.
///
/// Container operations take a container's id on the host
/// ([`crate::ObservedContainer::id`]), but for [`Runtime::health`] and
/// [`Runtime::state`], which also take an instance name (a `depends_on` target) and then reports on
/// the instance's current container.
pub trait Runtime: Send + Sync {
    /// Reports what is really on the host (checked against the kernel).
    fn observe(&self) -> impl Future<Output = Result<Observed, RuntimeError>> + Send;
    /// Pulls an image; returns its manifest digest. Each of `verify` (the
    /// `[images] verify` of the manifests naming this reference) is a
    /// requirement of its own: the image must carry a valid signature by
    /// every one of those keys, besides what the engine's own rules ask
    /// for, or nothing is pulled.
    fn pull(
        &self,
        reference: &ImageRef,
        verify: &[VerifySpec],
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Where `reference`'s tag points in its registry now, when that is
    /// not the image the store's tag names (`pull = "always"`): the new
    /// digest when the tag moved, `None` when it did not. Asks the
    /// registry (a `HEAD`: no pull counted), pulls nothing, changes
    /// nothing.
    fn tag_moved(
        &self,
        reference: &ImageRef,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send;
    /// What `build` would build from now: reads the context (after
    /// `.dockerignore`), the Dockerfile and the base images in the store.
    /// Changes nothing.
    fn build_inputs(
        &self,
        build: &BuildSpec,
    ) -> impl Future<Output = Result<BuildInputs, RuntimeError>> + Send;
    /// Builds `build` and tags the result `reference` (pulling base images
    /// it lacks), recording the inputs it was built from (reported as
    /// [`crate::ObservedImage::built_from`]); returns the new manifest
    /// digest. A failed build tags nothing: the reference keeps the image
    /// it named.
    fn build(
        &self,
        reference: &ImageRef,
        build: &BuildSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Creates a network owned by `project` (replacing a broken one of the same name).
    fn create_network(
        &self,
        project: &str,
        network: &Resource<NetworkSpec>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Removes a network.
    fn remove_network(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Creates a volume owned by `project` (its directory, if missing).
    fn create_volume(
        &self,
        project: &str,
        volume: &Resource<VolumeSpec>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Removes a volume and its data.
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Creates and starts a container owned by `project`.
    fn create_container(
        &self,
        project: &str,
        instance: &Instance<'_>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Starts an existing, stopped container.
    fn start_container(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Stops a container: `signal`, then SIGKILL after `grace`.
    fn stop_container(
        &self,
        name: &str,
        signal: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Stops (as [`Runtime::stop_container`]) and removes a container; its volumes stay.
    fn remove_container(
        &self,
        name: &str,
        signal: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The container's current health: the container with that id, or the
    /// current container of the instance of that name.
    fn health(&self, name: &str) -> impl Future<Output = Result<Health, RuntimeError>> + Send;
    /// The container's lifecycle state, as [`Runtime::health`] finds it (a
    /// `depends_on = "completed"` job is waited for through this).
    fn state(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ContainerState, RuntimeError>> + Send;
}

/// A shared runtime is a runtime (the agent shares one between the controller
/// and its HTTP endpoint).
impl<T: Runtime> Runtime for std::sync::Arc<T> {
    fn observe(&self) -> impl Future<Output = Result<Observed, RuntimeError>> + Send {
        (**self).observe()
    }
    fn pull(
        &self,
        reference: &ImageRef,
        verify: &[VerifySpec],
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        (**self).pull(reference, verify)
    }
    fn tag_moved(
        &self,
        reference: &ImageRef,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send {
        (**self).tag_moved(reference)
    }
    fn build_inputs(
        &self,
        build: &BuildSpec,
    ) -> impl Future<Output = Result<BuildInputs, RuntimeError>> + Send {
        (**self).build_inputs(build)
    }
    fn build(
        &self,
        reference: &ImageRef,
        build: &BuildSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        (**self).build(reference, build)
    }
    fn create_network(
        &self,
        project: &str,
        network: &Resource<NetworkSpec>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).create_network(project, network)
    }
    fn remove_network(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).remove_network(name)
    }
    fn create_volume(
        &self,
        project: &str,
        volume: &Resource<VolumeSpec>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).create_volume(project, volume)
    }
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).remove_volume(name)
    }
    fn create_container(
        &self,
        project: &str,
        instance: &Instance<'_>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).create_container(project, instance)
    }
    fn start_container(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).start_container(name)
    }
    fn stop_container(
        &self,
        name: &str,
        signal: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).stop_container(name, signal, grace)
    }
    fn remove_container(
        &self,
        name: &str,
        signal: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).remove_container(name, signal, grace)
    }
    fn health(&self, name: &str) -> impl Future<Output = Result<Health, RuntimeError>> + Send {
        (**self).health(name)
    }
    fn state(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ContainerState, RuntimeError>> + Send {
        (**self).state(name)
    }
}

/// Observes the host for `desired`: [`Runtime::observe`], then the
/// inputs of every image `desired` builds ([`Observed::builds`]), so that
/// the diff decides from data whether to build, and where the tag of
/// every `pull = "always"` image in the store points now
/// ([`crate::ObservedImage::remote_digest`]), so that it decides whether
/// to pull. A registry that cannot be asked leaves the image as it is
/// (the containers keep running on it), with a warning.
pub async fn observe<R: Runtime>(rt: &R, desired: &DesiredState) -> Result<Observed, RuntimeError> {
    let mut observed = rt.observe().await?;
    // A reference pinned to a digest (`name:tag@digest`) names the image
    // with that digest, which the runtime reports under the digest itself
    // when no pull recorded the whole reference.
    let pinned = desired
        .images
        .values()
        .map(|i| &i.spec.reference)
        .chain(desired.containers.values().map(|c| &c.spec.image));
    for r in pinned {
        let Some(d) = r.digest.as_deref() else {
            continue;
        };
        let name = r.to_string();
        if !observed.images.contains_key(&name)
            && let Some(image) = observed.images.get(d).cloned()
        {
            observed.images.insert(name, image);
        }
    }
    for image in desired.images.values() {
        if image.spec.pull != moor_spec::PullPolicy::Always || image.spec.build.is_some() {
            continue;
        }
        let reference = image.spec.reference.to_string();
        if !observed.images.contains_key(&reference) {
            continue;
        }
        match rt.tag_moved(&image.spec.reference).await {
            Ok(moved) => {
                if let Some(seen) = observed.images.get_mut(&reference) {
                    seen.remote_digest = moved;
                }
            }
            Err(e) => tracing::warn!(
                image = %reference,
                "pull = \"always\": cannot ask the registry where the tag points, keeping the image in the store: {}",
                error_chain(&e)
            ),
        }
    }
    for image in desired.images.values() {
        if let Some(build) = &image.spec.build {
            let inputs = rt.build_inputs(build).await.map_err(|e| error_chain(&e));
            observed
                .builds
                .insert(image.spec.reference.to_string(), inputs);
        }
    }
    Ok(observed)
}

/// An error and its causes, `: `-joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("stop container \"web\"")]
    struct EngineError {
        source: std::io::Error,
    }

    #[test]
    fn an_error_says_its_kind_and_keeps_the_engines_error() {
        let e = RuntimeError::Container(Box::new(EngineError {
            source: std::io::Error::other("no such process"),
        }));
        // Its text is the engine's, once; the engine's causes follow it.
        assert_eq!(e.to_string(), "stop container \"web\"");
        let causes: Vec<String> = std::iter::successors(
            std::error::Error::source(&e),
            |c: &&dyn std::error::Error| c.source(),
        )
        .map(ToString::to_string)
        .collect();
        assert_eq!(causes, ["no such process"]);
        // Code matches the kind and inspects the engine's error, never the text.
        let RuntimeError::Container(inner) = &e else {
            panic!("not a container error: {e:?}");
        };
        assert!(inner.downcast_ref::<EngineError>().is_some());
    }
}
