//! The reconciler's verbs on the live host: [`Runtime`] for [`Host`].

use std::time::Duration;

use moor_reconcile::{
    BuildInputs, ContainerState, Health, Instance, Observed, Runtime, RuntimeError,
};
use moor_spec::{BuildSpec, ImageRef, NetworkSpec, Resource, VerifySpec, VolumeSpec};

use super::error::{ErrorContext, build, container, image, network, volume};
use super::owners::Owner;
use super::{Host, instances, labels};
use crate::build::inputs;
use crate::container::{Status, volumes};
use crate::image::pull::pull;

impl Runtime for Host {
    async fn observe(&self) -> Result<Observed, RuntimeError> {
        // A current-thread runtime (`moor apply`, `moor down`) waits for
        // the observation with nothing else to run: read the host on this
        // thread rather than hand the work to a pool thread, a hand-off
        // that costs a scheduling delay on a busy machine.
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread
        {
            return self.inner.observe();
        }
        self.blocking(|inner| inner.observe()).await
    }

    async fn pull(
        &self,
        reference: &ImageRef,
        verify: &[VerifySpec],
    ) -> Result<String, RuntimeError> {
        let r = reference.to_string();
        let verify = verify.to_vec();
        self.blocking(move |inner| {
            let mut opts = inner.pull.clone();
            for v in &verify {
                let key = crate::image::verify::Key::from_pem(&v.key.display().to_string(), &v.pem)
                    .map_err(|e| crate::image::pull::PullError::Verify(Box::new(e)))
                    .map_err(ErrorContext::new(format!("pulling {r}")))
                    .map_err(image)?;
                opts.require.push(key);
            }
            let images = inner.images.lock().expect("image store poisoned");
            let record = pull(&images, &r, &opts, &|_| {})
                .map_err(ErrorContext::new(format!("pulling {r}")))
                .map_err(image)?;
            Ok(record.digest)
        })
        .await
    }

    async fn tag_moved(&self, reference: &ImageRef) -> Result<Option<String>, RuntimeError> {
        let r = reference.clone();
        self.blocking(move |inner| inner.tag_moved(&r)).await
    }

    async fn build_inputs(&self, spec: &BuildSpec) -> Result<BuildInputs, RuntimeError> {
        let spec = spec.clone();
        self.blocking(move |inner| inner.build_inputs(&spec)).await
    }

    async fn build(&self, reference: &ImageRef, spec: &BuildSpec) -> Result<String, RuntimeError> {
        let (r, spec) = (reference.to_string(), spec.clone());
        self.blocking(move |inner| {
            // A store handle of its own, as `moor build` has: a long build
            // does not hold up the observations of the host meanwhile.
            let images = crate::image::Images::open(&inner.state_dir)
                .map_err(ErrorContext::new(format!("building {r}")))
                .map_err(build)?;
            let fail =
                |e: crate::build::BuildError| build(ErrorContext::new(format!("building {r}"))(e));
            let before = inputs::inputs(&images, &spec).map_err(fail)?;
            let mut engine = inner.engine.config().clone();
            // RUN containers live apart from the host's, as `moor build`'s.
            engine.state_dir = engine.state_dir.join("build");
            let opts = crate::build::BuildOptions {
                context: spec.context.clone(),
                dockerfile: Some(inputs::dockerfile_path(&spec).0),
                build_args: spec.args.clone(),
                target: spec.target.clone(),
                tags: vec![r.clone()],
                no_cache: false,
                network: crate::build::RunNetwork::None,
                pull: inner.pull.clone(),
                // The agent's own `SOURCE_DATE_EPOCH` makes its builds
                // reproducible, as `moor build`'s.
                source_date_epoch: crate::build::source_date_epoch(
                    std::env::var("SOURCE_DATE_EPOCH").ok().as_deref(),
                    false,
                )
                .map_err(|e| fail(crate::build::BuildError::Invalid(e)))?,
            };
            // The steps' output goes to the log as it comes; the last of
            // it is logged again as a warning when the build fails, so
            // that `moor apply` (which logs only warnings) shows it too.
            const TAIL: usize = 40;
            let tail = std::sync::Mutex::new(std::collections::VecDeque::with_capacity(TAIL));
            let progress = |line: &str| {
                tracing::info!(image = %r, "build: {line}");
                let mut t = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if t.len() == TAIL {
                    t.pop_front();
                }
                t.push_back(line.to_string());
            };
            let built = match crate::build::build(&images, engine, &opts, &progress) {
                Ok(b) => b,
                Err(e) => {
                    let t = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let lines: Vec<&str> = t.iter().map(String::as_str).collect();
                    tracing::warn!(image = %r, "build failed: {e}; its last output:\n{}", lines.join("\n"));
                    return Err(fail(e));
                }
            };
            // Base images the build pulled have their IDs now; what it read
            // is what was read before, unless the context changed meanwhile
            // (then the next pass builds again).
            let after = inputs::inputs(&images, &spec).map_err(fail)?;
            let used = if after.context == before.context && after.dockerfile == before.dockerfile {
                after
            } else {
                before
            };
            inputs::record(images.store.root(), &r, &built.image.digest, &used).map_err(fail)?;
            Ok(built.image.digest)
        })
        .await
    }

    async fn create_network(
        &self,
        project: &str,
        network: &Resource<NetworkSpec>,
    ) -> Result<(), RuntimeError> {
        let (project, network) = (project.to_string(), network.clone());
        self.blocking(move |inner| {
            // Ownership first: a crash after this leaves a network this
            // project can finish or remove, never one it takes for foreign.
            inner.with_owners(|o| {
                o.networks.insert(
                    network.name.clone(),
                    Owner {
                        project,
                        spec_hash: network.hash.clone(),
                        prune: true,
                    },
                );
            })?;
            inner
                .nets
                .create_network(&network.name, &network.spec)
                .map_err(self::network)
                .map(drop)
        })
        .await
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            inner.nets.remove_network(&name).map_err(network)?;
            inner.with_owners(|o| {
                o.networks.remove(&name);
            })
        })
        .await
    }

    async fn create_volume(
        &self,
        project: &str,
        volume: &Resource<VolumeSpec>,
    ) -> Result<(), RuntimeError> {
        let (project, volume) = (project.to_string(), volume.clone());
        self.blocking(move |inner| {
            // The directory itself is made by the first container that mounts
            // the volume, so that it is filled from that container's image.
            inner.with_owners(|o| {
                o.volumes.insert(
                    volume.name.clone(),
                    Owner {
                        project,
                        spec_hash: volume.hash.clone(),
                        prune: volume.spec.prune,
                    },
                );
            })?;
            if !volumes::data_dir(&inner.state_dir, &volume.name).is_dir() {
                volumes::ensure(&inner.state_dir, &volume.name, None).map_err(self::volume)?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            volumes::remove(&inner.state_dir, &name).map_err(volume)?;
            inner.with_owners(|o| {
                o.volumes.remove(&name);
            })
        })
        .await
    }

    async fn create_container(
        &self,
        project: &str,
        instance: &Instance<'_>,
    ) -> Result<(), RuntimeError> {
        let mut spec = instance.spec.clone();
        spec.labels
            .insert(labels::PROJECT.into(), project.to_string());
        spec.labels
            .insert(labels::RESOURCE.into(), instance.resource.to_string());
        spec.labels
            .insert(labels::REPLICA.into(), instance.replica.to_string());
        spec.labels
            .insert(labels::HASH.into(), instance.hash.to_string());
        spec.labels
            .insert(labels::IMAGE_DIGEST.into(), instance.image_digest.clone());
        spec.labels
            .insert(labels::INSTANCE.into(), instance.name.clone());
        // The container's own name is the instance's id: the instance name,
        // or a unique one while it runs beside the old instance (start-first).
        let name = instance.id.clone();
        moor_spec::check_name(&name)
            .map_err(|e| container(format!("container id for {}: {e}", instance.name)))?;
        let reference = instance.spec.image.to_string();
        self.blocking(move |inner| {
            let mut spec = spec;
            let (config, lowers) = {
                let images = inner.images.lock().expect("image store poisoned");
                let record = images
                    .resolve(&reference)
                    .map_err(image)?
                    .ok_or_else(|| image(format!("image {reference} is not in the image store")))?;
                let config = images.run_config(&record).map_err(image)?;
                images
                    .hold(&record, &format!("container:{name}"))
                    .map_err(image)?;
                (config, images.layer_dirs(&record))
            };
            if let Some(mount) = inner.resolv_conf_mount(&name, &spec)? {
                spec.mounts.push(mount);
            }
            // A leftover of the same name (a crash between remove and
            // create, or during create before its record was written) goes first.
            if inner.engine.record(&name).is_ok() {
                inner.engine.remove(&name, true).map_err(container)?;
            } else {
                let dir = inner.engine.paths(&name).dir;
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .map_err(ErrorContext::new(format!(
                            "remove the leftover {}",
                            dir.display()
                        )))
                        .map_err(container)?;
                }
            }
            // Written into a tmpfs of the container's own; the values never
            // reach the record (they are not serialised).
            let secrets =
                crate::container::secrets::prepare(&inner.state_dir, &name, &spec, &lowers)
                    .map_err(container)?;
            spec.mounts.extend(secrets);
            spec.mounts.sort();
            let created = inner.engine.create(&name, spec.clone(), config, lowers);
            if created.is_err() {
                let _ = crate::container::secrets::remove(&inner.state_dir, &name);
            }
            created.map_err(container)?;
            inner.start(&name, &spec)
        })
        .await
    }

    async fn start_container(&self, name: &str) -> Result<(), RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            let record = inner.engine.record(&name).map_err(container)?;
            // `moor start` and this never start one container at once, and
            // a container stopped on purpose since it was observed stays so.
            let _lock = inner.engine.lock_container(&name).map_err(container)?;
            let info = inner.engine.inspect(&name).map_err(container)?;
            if inner.engine.manual_stop(&name).is_some()
                || matches!(info.status, Status::Running { .. })
            {
                return Ok(());
            }
            let restarts = inner.engine.restart_count(&name) + 1;
            inner
                .engine
                .set_restart_count(&name, restarts)
                .map_err(container)?;
            inner.nets.detach(&name).map_err(network)?;
            inner.start(&name, &record.spec)
        })
        .await
    }

    async fn stop_container(
        &self,
        name: &str,
        _signal: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            inner.health.forget(&name);
            inner.engine.stop(&name, Some(grace)).map_err(container)?;
            inner.nets.detach(&name).map_err(network)
        })
        .await
    }

    async fn remove_container(
        &self,
        name: &str,
        _signal: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            inner.health.forget(&name);
            // Already gone is fine: removal is idempotent.
            if inner.engine.record(&name).is_ok() {
                inner.engine.stop(&name, Some(grace)).map_err(container)?;
                inner.engine.remove(&name, true).map_err(container)?;
            }
            inner.nets.release(&name).map_err(network)?;
            let _ =
                std::fs::remove_file(inner.state_dir.join("resolv").join(format!("{name}.conf")));
            let images = inner.images.lock().expect("image store poisoned");
            images
                .release(&format!("container:{name}"))
                .map_err(image)?;
            Ok(())
        })
        .await
    }

    async fn health(&self, name: &str) -> Result<Health, RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            let id = instances::resolve(&inner.engine, &name).map_err(container)?;
            Ok(inner.health.health(&id))
        })
        .await
    }

    async fn state(&self, name: &str) -> Result<ContainerState, RuntimeError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            let id = instances::resolve(&inner.engine, &name).map_err(container)?;
            let info = match inner.engine.inspect(&id) {
                Err(crate::container::ContainerError::NotFound(_)) => {
                    return Err(RuntimeError::NotFound {
                        what: format!("container {name}"),
                    });
                }
                other => other.map_err(container)?,
            };
            Ok(match info.status {
                Status::Created => ContainerState::Created,
                Status::Running { .. } => ContainerState::Running,
                Status::Exited(exit) => ContainerState::Exited {
                    code: exit.exit_code,
                    oom: exit.oom_killed,
                },
                Status::Lost { .. } => ContainerState::Dead,
            })
        })
        .await
    }
}
