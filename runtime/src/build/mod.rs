//! Image builds on moor's own engine: `moor build` runs the plan that
//! `moor_build` makes of a Dockerfile (docs/ARCHITECTURE.md, "Builds").
//!
//! Start at [`build()`]: it reads the Dockerfile, `.dockerignore` and the
//! context, finds (or pulls) the base images, plans, then runs each needed
//! stage step by step on a [`State`] (layers and config JSON):
//!
//! - a step whose cache key is in the [`cache`] (and whose layers are still
//!   in the store) is reused (`CACHED`);
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

pub use error::{BuildError, Progress, StepEnd};
pub use state::{Layer, State};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

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
    /// `SOURCE_DATE_EPOCH` (see [`source_date_epoch`]): a reproducible
    /// build, every time in it clamped to this one.
    pub source_date_epoch: Option<u64>,
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

fn now() -> String {
    crate::container::logs::rfc3339(SystemTime::now())
}

/// The latest `SOURCE_DATE_EPOCH` taken: 9999-12-31T23:59:59Z.
const MAX_EPOCH: u64 = 253_402_300_799;

/// The `SOURCE_DATE_EPOCH` of a build from the variable's value `env` and
/// `--reproducible`: the variable when set (an empty value is unset, as
/// the reproducible-builds.org specification says), else `0` with
/// `--reproducible`, else none (times are the build's, as Docker's).
pub fn source_date_epoch(env: Option<&str>, reproducible: bool) -> Result<Option<u64>, String> {
    match env.map(str::trim) {
        Some(v) if !v.is_empty() => match v.parse::<u64>() {
            Ok(e) if e <= MAX_EPOCH => Ok(Some(e)),
            Ok(_) => Err(format!("SOURCE_DATE_EPOCH={v}: later than the year 9999")),
            Err(_) => Err(format!(
                "SOURCE_DATE_EPOCH={v}: not a whole number of seconds since 1970-01-01"
            )),
        },
        _ => Ok(reproducible.then_some(0)),
    }
}

/// The time a step or image is created: `epoch` when set, else now.
pub(crate) fn created_at(epoch: Option<u64>) -> String {
    match epoch {
        Some(e) => crate::container::logs::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(e),
        ),
        None => now(),
    }
}

/// A step's cache key: the plan's, and the epoch of a reproducible build
/// (whose layers' times differ from those of the same step built without).
fn cache_key(key: &str, epoch: Option<u64>) -> String {
    match epoch {
        None => key.to_owned(),
        Some(e) => {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(format!("{key}\nSOURCE_DATE_EPOCH={e}"));
            format!("sha256:{}", hex::encode(digest))
        }
    }
}

/// What every stage of one build shares.
struct StageCx<'a> {
    images: &'a Images,
    opts: &'a BuildOptions,
    engine: &'a crate::container::Engine,
    engine_state: &'a std::path::Path,
    cache: &'a cache::Cache,
    context: &'a Context,
    context_dir: &'a std::path::Path,
    file_name: &'a str,
    df: &'a dockerfile::Dockerfile,
    bases: &'a HashMap<String, State>,
    epoch: Option<u64>,
    /// Whether titles name the stage (a build of several stages).
    named_stages: bool,
    out: &'a dyn Progress,
}

/// A stage built.
struct StageDone {
    state: State,
    ran: usize,
    cached: usize,
}

/// Builds `stage`, whose `FROM` is step `first` (its steps follow), on the
/// stages in `results` it depends on.
fn build_stage(
    cx: &StageCx<'_>,
    stage: &plan::PlannedStage,
    first: usize,
    results: &HashMap<usize, State>,
) -> Result<StageDone, BuildError> {
    let out = cx.out;
    let images = cx.images;
    let file_name = cx.file_name;
    let epoch = cx.epoch;
    let count = 1 + stage.steps.len();
    let title = |k: usize, text: &str| {
        if cx.named_stages {
            let label = stage
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{}", stage.index));
            format!("[{label} {k}/{count}] {text}")
        } else {
            format!("[{k}/{count}] {text}")
        }
    };
    let started = Instant::now();
    out.start(first, &title(1, &cx.df.stages[stage.index].from.text));
    let mut state = match &stage.base {
        Base::Scratch => State {
            layers: Vec::new(),
            config: config::scratch_stage(),
        },
        Base::Image(r) => cx.bases[r].clone(),
        Base::Stage(i) => results
            .get(i)
            .cloned()
            .ok_or_else(|| BuildError::Invalid(format!("stage {i} was not built first")))?,
    };
    state.config = config::from_base(state.config);
    out.end(first, &StepEnd::Done, started.elapsed());
    let (mut ran, mut cached) = (0, 0);
    for (k, planned) in stage.steps.iter().enumerate() {
        let id = first + 1 + k;
        let step = &planned.step;
        let started = Instant::now();
        out.start(id, &title(k + 2, &step.text));
        let result = (|| -> Result<bool, BuildError> {
            let Some(key) = &planned.key else {
                return Err(BuildError::Invalid(format!(
                    "{file_name}:{}: ADD of a URL is not supported yet",
                    step.line
                )));
            };
            let key = &cache_key(key, epoch);
            if !cx.opts.no_cache
                && let Some(hit) = cx.cache.get(key)
                && hit.complete(images)
            {
                cx.cache.touch(key);
                state = hit;
                return Ok(true);
            }
            let created = created_at(epoch);
            let (created_by, layer) = match &step.op {
                Op::Run {
                    argv,
                    network,
                    env,
                    user,
                    workdir,
                    ..
                } => {
                    let network = match (network.as_str(), cx.opts.network) {
                        ("host", _) | ("default", RunNetwork::Host) => NetworkMode::Host,
                        _ => NetworkMode::None,
                    };
                    let lowers = state.lowers(images)?;
                    let volumes = config::volumes(&state.config);
                    let tar = run::run(
                        cx.engine,
                        cx.engine_state,
                        &lowers,
                        run::RunStep {
                            argv,
                            env,
                            user,
                            workdir,
                            network,
                            epoch,
                            volumes: &volumes,
                        },
                        &|line: &str| out.output(id, line),
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
                        Some(Base::Image(r)) => Some(cx.bases[r].clone()),
                        Some(Base::Stage(i)) => Some(results.get(i).cloned().ok_or_else(|| {
                            BuildError::Invalid(format!("stage {i} was not built first"))
                        })?),
                    };
                    let from_lowers = match &from {
                        Some(s) => Some(s.lowers(images)?),
                        None => None,
                    };
                    let tar = copy::copy(
                        copy::CopyInput {
                            op: c,
                            context_dir: cx.context_dir,
                            context: cx.context,
                            from: from_lowers.as_deref(),
                            lowers: &lowers,
                            scratch: cx.engine_state,
                            epoch,
                        },
                        &format!("{file_name}:{}", step.line),
                    )?;
                    state.add_layer(images, &tar)?;
                    (format!("/bin/sh -c #(nop) {}", step.text), true)
                }
                Op::Workdir(dir) => {
                    let lowers = state.lowers(images)?;
                    let added = copy::workdir(&lowers, dir, cx.engine_state, epoch)?;
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
            cx.cache.put(key, &state)?;
            Ok(false)
        })();
        match result {
            Ok(true) => {
                cached += 1;
                out.end(id, &StepEnd::Cached, started.elapsed());
            }
            Ok(false) => {
                ran += 1;
                out.end(id, &StepEnd::Done, started.elapsed());
            }
            Err(e) => {
                out.end(id, &StepEnd::Failed(e.to_string()), started.elapsed());
                return Err(e);
            }
        }
    }
    Ok(StageDone { state, ran, cached })
}

/// Builds `stages` (dependencies first; `first_ids[i]` is the step ID of
/// `stages[i]`'s `FROM`), each as soon as the stages it depends on are
/// built, up to `limit` at once: the results by Dockerfile index, the steps
/// run and the steps taken from the cache. After a stage fails no other
/// starts; those running finish, and the first error is returned.
fn build_stages(
    cx: &StageCx<'_>,
    stages: &[plan::PlannedStage],
    first_ids: &[usize],
    limit: usize,
) -> Result<(HashMap<usize, State>, usize, usize), BuildError> {
    let limit = limit.max(1);
    let mut results: HashMap<usize, State> = HashMap::new();
    let (mut ran, mut cached) = (0, 0);
    let mut started = vec![false; stages.len()];
    let mut running = 0;
    let mut failed: Option<BuildError> = None;
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<StageDone, BuildError>)>();
    std::thread::scope(|scope| {
        loop {
            if failed.is_none() {
                for (i, stage) in stages.iter().enumerate() {
                    if running >= limit {
                        break;
                    }
                    if started[i] || !stage.depends_on.iter().all(|d| results.contains_key(d)) {
                        continue;
                    }
                    started[i] = true;
                    running += 1;
                    let needed: HashMap<usize, State> = stage
                        .depends_on
                        .iter()
                        .filter_map(|d| results.get(d).map(|s| (*d, s.clone())))
                        .collect();
                    let tx = tx.clone();
                    let first = first_ids[i];
                    scope.spawn(move || {
                        let done = build_stage(cx, stage, first, &needed);
                        let _ = tx.send((i, done));
                    });
                }
            }
            if running == 0 {
                break;
            }
            let Ok((i, done)) = rx.recv() else {
                break;
            };
            running -= 1;
            match done {
                Ok(done) => {
                    ran += done.ran;
                    cached += done.cached;
                    results.insert(stages[i].index, done.state);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(i) = started.iter().position(|s| !s) {
        return Err(BuildError::Invalid(format!(
            "stage {} waits on a stage that is not built",
            stages[i].index
        )));
    }
    Ok((results, ran, cached))
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
    let epoch = opts.source_date_epoch;
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
    // Step IDs, fixed before anything runs: a stage's `FROM`, then its steps.
    let mut first_ids = Vec::with_capacity(plan.stages.len());
    let mut next_id = 1;
    for stage in &plan.stages {
        first_ids.push(next_id);
        next_id += 1 + stage.steps.len();
    }
    let cx = StageCx {
        images,
        opts,
        engine: &engine,
        engine_state: &engine_state,
        cache: &cache,
        context: &context,
        context_dir,
        file_name: &file_name,
        df: &df,
        bases: &bases,
        epoch,
        named_stages: plan.stages.len() > 1,
        out,
    };
    // As many as cores, and two at least: a RUN often waits on the disk or
    // the network rather than a core.
    let limit = std::thread::available_parallelism().map_or(2, |n| usize::from(n).max(2));
    let (mut results, ran, cached) = build_stages(&cx, &plan.stages, &first_ids, limit)?;

    let mut last = results
        .remove(&plan.target)
        .ok_or_else(|| BuildError::Invalid("the target stage was not built".into()))?;
    // The time of the last step: a build all from the cache gives the same ID.
    let created = last.config["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|e| e["created"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| created_at(epoch));
    let diff_ids: Vec<String> = last.layers.iter().map(|l| l.diff_id.clone()).collect();
    config::finish(&mut last.config, &diff_ids, &created);
    let export = Instant::now();
    out.start(next_id, "exporting to image");
    let (config_digest, image) = match last.store(images, &tags) {
        Ok(stored) => stored,
        Err(e) => {
            out.end(next_id, &StepEnd::Failed(e.to_string()), export.elapsed());
            return Err(e);
        }
    };
    out.output(next_id, &format!("writing image {config_digest} done"));
    for t in &tags {
        out.output(next_id, &format!("naming to {t} done"));
    }
    out.end(next_id, &StepEnd::Done, export.elapsed());
    Ok(Built {
        id: config_digest.to_string(),
        image,
        ran,
        cached,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_date_epoch_is_the_variable_then_zero_with_reproducible() {
        assert_eq!(source_date_epoch(None, false), Ok(None));
        assert_eq!(source_date_epoch(None, true), Ok(Some(0)));
        assert_eq!(source_date_epoch(Some(""), false), Ok(None));
        assert_eq!(source_date_epoch(Some(" "), true), Ok(Some(0)));
        assert_eq!(
            source_date_epoch(Some("1700000000"), false),
            Ok(Some(1_700_000_000))
        );
        assert_eq!(source_date_epoch(Some("5"), true), Ok(Some(5)));
        assert_eq!(
            source_date_epoch(Some("253402300799"), false),
            Ok(Some(MAX_EPOCH))
        );
    }

    #[test]
    fn hostile_source_date_epochs_are_refused_by_name() {
        for bad in [
            "-1",
            "1e9",
            "0x10",
            "1.5",
            "12abc",
            "99999999999999999999999",
        ] {
            let e = source_date_epoch(Some(bad), true).unwrap_err();
            assert!(e.contains("SOURCE_DATE_EPOCH"), "{bad}: {e}");
        }
        let e = source_date_epoch(Some("253402300800"), false).unwrap_err();
        assert!(e.contains("9999"), "{e}");
    }

    #[test]
    fn created_is_the_epoch_or_now() {
        assert_eq!(created_at(Some(0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            created_at(Some(1_700_000_000)),
            "2023-11-14T22:13:20.000000000Z"
        );
        let now = created_at(None);
        assert!(now.as_str() > "2024", "{now}");
    }

    #[test]
    fn reproducible_steps_have_cache_keys_of_their_own() {
        let key = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(cache_key(&key, None), key);
        let zero = cache_key(&key, Some(0));
        let one = cache_key(&key, Some(1));
        assert_ne!(zero, key);
        assert_ne!(zero, one);
        assert_eq!(zero, cache_key(&key, Some(0)));
        assert!(zero.starts_with("sha256:") && zero.len() == 71, "{zero}");
    }
}
