//! Image builds on moor's own engine: `moor build` runs the plan that
//! `moor_build` makes of a Dockerfile (docs/ARCHITECTURE.md, "Builds").
//!
//! Start at [`build()`]: it reads the Dockerfile, `.dockerignore` and the
//! context, finds (or pulls) the base images, plans, then runs each needed
//! stage step by step on a [`State`] (layers and config JSON):
//!
//! - a step whose cache key is in the [`cache`] (and whose layers are still
//!   in the store) is reused: `---> Using cache`;
//! - `RUN` ([`run`]) runs in a container of the engine over an overlay of
//!   the state's snapshots; the upper directory becomes the layer
//!   ([`layer::from_upper`]);
//! - `COPY`/`ADD` ([`copy`]) and a missing `WORKDIR` write a layer directly;
//! - every other instruction changes the config only ([`config`]).
//!
//! Layers are uncompressed tars in the blob store, unpacked into snapshots
//! as pulled layers are: built and pulled images share both. The result is
//! committed as an OCI image under the `-t` references.

pub mod cache;
pub mod commit;
pub mod config;
mod copy;
mod error;
pub mod inputs;
pub mod layer;
mod run;
mod state;

pub use error::{BuildError, Progress};
pub use state::{Layer, State};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

use moor_build::context::Context;
use moor_build::dockerfile;
use moor_build::ignore::Ignore;
use moor_build::plan::{self, ImageInfo, Request};
use moor_build::resolve::{Base, BuildArgs, Op};
use moor_spec::NetworkMode;
use moor_store::ImageRecord;

use crate::container::EngineConfig;
use crate::image::pull::{PullOptions, pull};
use crate::image::{ImageError, Images};

/// The network of `RUN` steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunNetwork {
    /// Only a loopback interface (the default).
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile; `CONTEXT/Dockerfile` when `None`.
    pub dockerfile: Option<PathBuf>,
    /// `--build-arg`.
    pub build_args: BuildArgs,
    /// `--target`.
    pub target: Option<String>,
    /// `-t`, normalised or not.
    pub tags: Vec<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--network`.
    pub network: RunNetwork,
    /// Pull settings for base images not in the store.
    pub pull: PullOptions,
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image ID: its config's digest.
    pub id: String,
    /// The image as stored.
    pub image: ImageRecord,
    /// Steps run, steps taken from the cache.
    pub ran: usize,
    /// Steps taken from the cache.
    pub cached: usize,
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn now() -> String {
    crate::container::logs::rfc3339(SystemTime::now())
}

/// Builds the image `opts` describe with the engine `engine` (whose state
/// dir holds the `RUN` containers: a directory of its own, so that they
/// never mix with the host's) into `images`.
pub fn build(
    images: &Images,
    engine: EngineConfig,
    opts: &BuildOptions,
    out: &dyn Progress,
) -> Result<Built, BuildError> {
    let context_dir = &opts.context;
    let dockerfile_path = opts
        .dockerfile
        .clone()
        .unwrap_or_else(|| context_dir.join("Dockerfile"));
    let file_name = dockerfile_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    let text = std::fs::read_to_string(&dockerfile_path)
        .map_err(BuildError::io("read the Dockerfile", &dockerfile_path))?;
    let df = dockerfile::parse(&file_name, &text)?;
    let ignore_path = context_dir.join(".dockerignore");
    let ignore_text = match std::fs::read_to_string(&ignore_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(BuildError::io("read", &ignore_path)(e)),
    };
    let ignore = Ignore::parse(&ignore_text)?;
    let context = Context::walk(context_dir, &ignore)?;
    let tags: Vec<String> = opts
        .tags
        .iter()
        .map(|t| {
            moor_spec::reference::parse(t)
                .map(|r| r.to_string())
                .map_err(|e| BuildError::Invalid(format!("tag {t}: {e}")))
        })
        .collect::<Result<_, _>>()?;

    let req = Request {
        file: &file_name,
        dockerfile: &df,
        build_args: &opts.build_args,
        target: opts.target.as_deref(),
    };
    let graph = plan::graph(req)?;
    // Blobs and snapshots made from here on are not collected under us.
    let _lock = images.store.lock_shared().map_err(ImageError::from)?;
    let mut bases: HashMap<String, State> = HashMap::new();
    let mut infos = BTreeMap::new();
    for r in &graph.images {
        let record = match images.resolve(r)? {
            Some(i) => i,
            None => pull(images, r, &opts.pull, &|_| {})?,
        };
        let state = State::of_image(images, &record)?;
        infos.insert(
            r.clone(),
            ImageInfo {
                digest: record.config.clone(),
                config: config::base_config(&state.config),
            },
        );
        bases.insert(r.clone(), state);
    }
    let plan = plan::plan(req, &graph, &infos, &context)?;
    if !plan.unused_build_args.is_empty() {
        out.line(&format!(
            "[Warning] One or more build-args [{}] were not consumed",
            plan.unused_build_args.join(" ")
        ));
    }

    let engine_state = engine.state_dir.clone();
    let engine = crate::container::Engine::new(engine)?;
    run::remove_leftovers(&engine);
    let cache = cache::Cache::new(images.store.root());
    let total: usize = plan.stages.iter().map(|s| 1 + s.steps.len()).sum();
    let mut n = 0;
    let (mut ran, mut cached) = (0, 0);
    let mut results: HashMap<usize, State> = HashMap::new();
    for stage in &plan.stages {
        n += 1;
        out.line(&format!(
            "Step {n}/{total} : {}",
            df.stages[stage.index].from.text
        ));
        let mut state = match &stage.base {
            Base::Scratch => State {
                layers: Vec::new(),
                config: config::scratch_stage(),
            },
            Base::Image(r) => bases[r].clone(),
            Base::Stage(i) => results[i].clone(),
        };
        state.config = config::from_base(state.config);
        if let Some(k) = &stage.base_key {
            out.line(&format!(" ---> {}", short(k)));
        }
        for planned in &stage.steps {
            n += 1;
            let step = &planned.step;
            out.line(&format!("Step {n}/{total} : {}", step.text));
            let Some(key) = &planned.key else {
                return Err(BuildError::Invalid(format!(
                    "{file_name}:{}: ADD of a URL is not supported yet",
                    step.line
                )));
            };
            if !opts.no_cache
                && let Some(hit) = cache.get(key)
                && hit.complete(images)
            {
                state = hit;
                cached += 1;
                out.line(" ---> Using cache");
                out.line(&format!(" ---> {}", short(key)));
                continue;
            }
            let created = now();
            let (created_by, layer) = match &step.op {
                Op::Run {
                    argv,
                    network,
                    env,
                    user,
                    workdir,
                    ..
                } => {
                    let network = match (network.as_str(), opts.network) {
                        ("host", _) | ("default", RunNetwork::Host) => NetworkMode::Host,
                        _ => NetworkMode::None,
                    };
                    let lowers = state.lowers(images)?;
                    let volumes = config::volumes(&state.config);
                    let tar = run::run(
                        &engine,
                        &engine_state,
                        &lowers,
                        run::RunStep {
                            argv,
                            env,
                            user,
                            workdir,
                            network,
                            volumes: &volumes,
                        },
                        out,
                    )?;
                    state.add_layer(images, &tar)?;
                    (argv.join(" "), true)
                }
                Op::Copy(c) => {
                    let lowers = state.lowers(images)?;
                    let from = match &c.from {
                        None => None,
                        Some(Base::Scratch) => Some(State {
                            layers: Vec::new(),
                            config: config::scratch(),
                        }),
                        Some(Base::Image(r)) => Some(bases[r].clone()),
                        Some(Base::Stage(i)) => Some(results[i].clone()),
                    };
                    let from_lowers = match &from {
                        Some(s) => Some(s.lowers(images)?),
                        None => None,
                    };
                    let tar = copy::copy(
                        copy::CopyInput {
                            op: c,
                            context_dir,
                            context: &context,
                            from: from_lowers.as_deref(),
                            lowers: &lowers,
                            scratch: &engine_state,
                        },
                        &format!("{file_name}:{}", step.line),
                    )?;
                    state.add_layer(images, &tar)?;
                    (format!("/bin/sh -c #(nop) {}", step.text), true)
                }
                Op::Workdir(dir) => {
                    let lowers = state.lowers(images)?;
                    let added = copy::workdir(&lowers, dir, &engine_state)?;
                    if let Some(tar) = &added {
                        state.add_layer(images, tar)?;
                    }
                    config::set_workdir(&mut state.config, dir);
                    (format!("/bin/sh -c #(nop) {}", step.text), added.is_some())
                }
                Op::Config(change) => {
                    config::apply(&mut state.config, change)?;
                    (format!("/bin/sh -c #(nop) {}", step.text), false)
                }
            };
            config::history(&mut state.config, &created, &created_by, !layer);
            cache.put(key, &state)?;
            ran += 1;
            out.line(&format!(" ---> {}", short(key)));
        }
        results.insert(stage.index, state);
    }

    let mut last = results
        .remove(&plan.target)
        .ok_or_else(|| BuildError::Invalid("the target stage was not built".into()))?;
    // The time of the last step: a build all from the cache gives the same ID.
    let created = last.config["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|e| e["created"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(now);
    let diff_ids: Vec<String> = last.layers.iter().map(|l| l.diff_id.clone()).collect();
    config::finish(&mut last.config, &diff_ids, &created);
    let (config_digest, image) = last.store(images, &tags)?;
    out.line(&format!(
        "Successfully built {}",
        short(config_digest.as_str())
    ));
    for t in &opts.tags {
        out.line(&format!("Successfully tagged {t}"));
    }
    Ok(Built {
        id: config_digest.to_string(),
        image,
        ran,
        cached,
    })
}
