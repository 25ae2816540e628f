//! The build plan: which stages the target needs, in which order, each step
//! substituted and with its cache key.
//!
//! Two calls, because the base images must be known (pulled or found in
//! the store) before steps can be substituted (their `Env`, `WorkingDir`,
//! `OnBuild`) and keyed (their config digest):
//!
//! 1. [`graph`]: stages, their bases and `COPY --from` sources (with the
//!    meta arguments), the stages the target needs, and the images to get.
//! 2. [`plan`]: with those images' digests and configs and the build
//!    context, every needed stage resolved into [`PlannedStep`]s.
//!
//! A step's cache key chains: `key = H(parent key, step digest)`, where the
//! first parent is the base (`scratch`, the image's config digest, or the
//! base stage's last key) and the step digest covers the instruction after
//! substitution, the build arguments in effect for `RUN`, and for
//! `COPY`/`ADD` the digest of what it reads (context content and metadata,
//! or the `--from` stage's key or image digest). Times never enter a key.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::context::{Context, ContextError};
use crate::dockerfile::{Dockerfile, DockerfileError, Kind};
use crate::resolve::{
    self, Base, BaseConfig, BuildArgs, ConfigChange, CopySource, Op, PREDEFINED_ARGS, StageInput,
    Step,
};

/// What a build asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The Dockerfile's name, for errors (`Dockerfile`, `app/Dockerfile.prod`).
    pub file: &'a str,
    /// The parsed Dockerfile.
    pub dockerfile: &'a Dockerfile,
    /// `--build-arg`.
    pub build_args: &'a BuildArgs,
    /// `--target`: a stage's name; the last stage when `None`.
    pub target: Option<&'a str>,
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An instruction that cannot be resolved.
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// `--target` names no stage.
    #[error("target stage {target:?} could not be found")]
    NoTarget {
        /// The name given.
        target: String,
    },
    /// A `FROM` that substitutes to nothing.
    #[error("{file}:{line}: base name ({image}) should not be blank")]
    BlankBase {
        /// The Dockerfile.
        file: String,
        /// The line of the `FROM`.
        line: usize,
        /// As written.
        image: String,
    },
    /// [`plan`] was not given an image [`graph`] asked for.
    #[error("image {reference} is needed by the build but was not provided")]
    MissingImage {
        /// The reference.
        reference: String,
    },
    /// A `COPY` source not in the context.
    #[error("{file}:{line}: {instruction}: {source}")]
    Source {
        /// The Dockerfile.
        file: String,
        /// The line of the instruction.
        line: usize,
        /// The instruction.
        instruction: String,
        /// What is wrong.
        source: ContextError,
    },
}

/// The stages and what depends on what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Every stage of the Dockerfile, by index.
    pub stages: Vec<StageNode>,
    /// The index of the target stage.
    pub target: usize,
    /// The stages the target needs (itself included), dependencies first.
    pub order: Vec<usize>,
    /// The images the needed stages start from or copy from, each once.
    pub images: Vec<String>,
    /// The meta arguments' values.
    pub meta: BTreeMap<String, String>,
    /// Names of meta arguments declared.
    pub meta_declared: Vec<String>,
}

/// One stage in the [`Graph`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageNode {
    /// Its name (`AS name`), lower-case.
    pub name: Option<String>,
    /// Where it starts.
    pub base: Base,
    /// `--platform` of its `FROM`, substituted.
    pub platform: Option<String>,
    /// Stages and images its `COPY --from` read.
    pub copies_from: Vec<Base>,
}

impl StageNode {
    /// The stages it needs built first.
    pub fn depends_on(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(&self.base)
            .chain(&self.copies_from)
            .filter_map(|b| match b {
                Base::Stage(i) => Some(*i),
                _ => None,
            })
    }
}

/// Step 1: the stages, what the target needs, and the images to get.
pub fn graph(req: Request<'_>) -> Result<Graph, PlanError> {
    let df = req.dockerfile;
    let (meta, meta_declared) = resolve::meta_args(req.file, df, req.build_args)?;
    let mut stages: Vec<StageNode> = Vec::new();
    let mut names: Vec<Option<String>> = Vec::new();
    for stage in &df.stages {
        let Kind::From {
            image, platform, ..
        } = &stage.from.kind
        else {
            unreachable!("a stage starts with FROM");
        };
        let located = |message: String| DockerfileError {
            file: req.file.to_owned(),
            line: stage.from.line,
            column: stage.from.column,
            instruction: Some(stage.from.text.clone()),
            message,
        };
        let expanded = resolve::expand_meta(image, df.escape, &meta, req.build_args)
            .map_err(|e| located(e.to_string()))?;
        if expanded.is_empty() {
            return Err(PlanError::BlankBase {
                file: req.file.to_owned(),
                line: stage.from.line,
                image: image.clone(),
            });
        }
        let platform = match platform {
            Some(p) => Some(
                resolve::expand_meta(p, df.escape, &meta, req.build_args)
                    .map_err(|e| located(e.to_string()))?,
            ),
            None => None,
        };
        let mut copies_from = Vec::new();
        for inst in &stage.instructions {
            let Kind::Copy(args) = &inst.kind else {
                continue;
            };
            let Some(from) = &args.from else { continue };
            let located = |message: String| DockerfileError {
                file: req.file.to_owned(),
                line: inst.line,
                column: inst.column,
                instruction: Some(inst.text.clone()),
                message,
            };
            let from = resolve::expand_meta(from, df.escape, &meta, req.build_args)
                .map_err(|e| located(e.to_string()))?;
            let base = resolve::copy_from_base(&from, &names).map_err(located)?;
            if !copies_from.contains(&base) {
                copies_from.push(base);
            }
        }
        stages.push(StageNode {
            name: stage.name().map(str::to_owned),
            base: resolve::from_base(&expanded, &names),
            platform,
            copies_from,
        });
        names.push(stage.name().map(str::to_owned));
    }
    let target = match req.target {
        None => stages.len() - 1,
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            names
                .iter()
                .position(|n| n.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| PlanError::NoTarget {
                    target: t.to_owned(),
                })?
        }
    };
    // Dependencies are always earlier stages, so index order is a
    // dependency order.
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if needed.insert(i) {
            todo.extend(stages[i].depends_on());
        }
    }
    let order: Vec<usize> = needed.into_iter().collect();
    let mut images = Vec::new();
    for &i in &order {
        for b in std::iter::once(&stages[i].base).chain(&stages[i].copies_from) {
            if let Base::Image(r) = b
                && !images.contains(r)
            {
                images.push(r.clone());
            }
        }
    }
    Ok(Graph {
        stages,
        target,
        order,
        images,
        meta,
        meta_declared,
    })
}

/// An image the build starts from or copies from, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The digest of its config (the image ID): the first parent key.
    pub digest: String,
    /// What a stage inherits from it.
    pub config: BaseConfig,
}

/// The plan: the needed stages in build order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The stages to build, dependencies first.
    pub stages: Vec<PlannedStage>,
    /// The index (in the Dockerfile) of the stage whose result is the image.
    pub target: usize,
    /// `--build-arg`s no needed stage (nor a meta `ARG`) declared: Docker
    /// warns about them.
    pub unused_build_args: Vec<String>,
}

impl Plan {
    /// The planned stage with Dockerfile index `index`.
    pub fn stage(&self, index: usize) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.index == index)
    }
}

/// One stage to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    /// Its index in the Dockerfile (what `--from=N` names).
    pub index: usize,
    /// Its name.
    pub name: Option<String>,
    /// Where it starts.
    pub base: Base,
    /// The key the first step chains on: `scratch`'s, the image's config
    /// digest, or the base stage's last key.
    pub base_key: Option<String>,
    /// Its steps.
    pub steps: Vec<PlannedStep>,
    /// The stages it needs built first.
    pub depends_on: Vec<usize>,
    /// The config at its end.
    pub config: BaseConfig,
}

impl PlannedStage {
    /// The key of the stage's result: its last step's, or its base's.
    pub fn key(&self) -> Option<&str> {
        match self.steps.last() {
            Some(s) => s.key.as_deref(),
            None => self.base_key.as_deref(),
        }
    }
}

/// One step, with its cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    /// The step.
    pub step: Step,
    /// What the step does and reads, hashed (`sha256:…`).
    pub digest: String,
    /// `H(parent key, digest)`; `None` when something it depends on is only
    /// known once fetched (an `ADD` of a URL without `--checksum`, or a step
    /// after one): the engine chains [`chain`] itself with the content's
    /// digest ([`with_content`]).
    pub key: Option<String>,
    /// For `COPY`/`ADD` from the context: the digest of what it reads.
    pub reads: Option<String>,
    /// It adds a layer (`RUN`, `COPY`, `ADD`, `WORKDIR`); otherwise it
    /// changes the config only.
    pub layer: bool,
}

/// The key of the empty base.
pub fn scratch_key() -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(b"moor-build/v1 scratch"))
    )
}

/// Chains a step's digest onto its parent's key.
pub fn chain(parent: &str, digest: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"moor-build/v1 chain\0");
    h.update(parent.as_bytes());
    h.update(b"\0");
    h.update(digest.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A step digest completed with the digest of content fetched at build time.
pub fn with_content(digest: &str, content: &str) -> String {
    chain(digest, content)
}

/// Step 2: every needed stage resolved and keyed. `images` must hold every
/// reference of [`Graph::images`].
pub fn plan(
    req: Request<'_>,
    graph: &Graph,
    images: &BTreeMap<String, ImageInfo>,
    context: &Context,
) -> Result<Plan, PlanError> {
    let df = req.dockerfile;
    let names: Vec<Option<String>> = graph.stages.iter().map(|s| s.name.clone()).collect();
    let image = |r: &str| {
        images.get(r).ok_or_else(|| PlanError::MissingImage {
            reference: r.to_owned(),
        })
    };
    let mut planned: Vec<PlannedStage> = Vec::new();
    let mut declared: BTreeSet<String> = graph.meta_declared.iter().cloned().collect();
    for &index in &graph.order {
        let node = &graph.stages[index];
        let done = |i: usize| {
            planned
                .iter()
                .find(|p| p.index == i)
                .expect("dependencies are planned first")
        };
        let (base_config, base_key) = match &node.base {
            Base::Scratch => (BaseConfig::default(), Some(scratch_key())),
            Base::Image(r) => {
                let info = image(r)?;
                (info.config.clone(), Some(info.digest.clone()))
            }
            Base::Stage(i) => {
                let s = done(*i);
                (s.config.clone(), s.key().map(str::to_owned))
            }
        };
        let stage = &df.stages[index];
        let input = StageInput {
            file: req.file,
            escape: df.escape,
            build_args: req.build_args,
            meta: &graph.meta,
            earlier: &names[..index],
            base: &base_config,
        };
        let resolved = resolve::stage(input, &stage.from, &stage.instructions)?;
        declared.extend(resolved.declared.iter().cloned());
        let mut parent = base_key.clone();
        let mut steps = Vec::new();
        for step in resolved.steps {
            let mut remote = false;
            let mut reads = None;
            let mut from_key: Option<Option<String>> = None;
            if let Op::Copy(c) = &step.op {
                match &c.from {
                    None => {
                        let paths: Vec<String> = c
                            .sources
                            .iter()
                            .filter_map(|s| match s {
                                CopySource::Path(p) => Some(p.clone()),
                                _ => None,
                            })
                            .collect();
                        if !paths.is_empty() {
                            reads = Some(context.digest(&paths).map_err(|source| {
                                PlanError::Source {
                                    file: req.file.to_owned(),
                                    line: step.line,
                                    instruction: step.text.clone(),
                                    source,
                                }
                            })?);
                        }
                    }
                    Some(Base::Stage(i)) => from_key = Some(done(*i).key().map(str::to_owned)),
                    Some(Base::Image(r)) => from_key = Some(Some(image(r)?.digest.clone())),
                    Some(Base::Scratch) => from_key = Some(Some(scratch_key())),
                }
                remote = c.checksum.is_none()
                    && c.sources.iter().any(|s| matches!(s, CopySource::Url(_)));
            }
            let digest = step_digest(&step.op, reads.as_deref(), from_key.as_ref());
            let known = !remote && from_key.as_ref().is_none_or(Option::is_some);
            let key = match (&parent, known) {
                (Some(p), true) => Some(chain(p, &digest)),
                _ => None,
            };
            parent = key.clone();
            steps.push(PlannedStep {
                layer: !matches!(step.op, Op::Config(_)),
                step,
                digest,
                key,
                reads,
            });
        }
        planned.push(PlannedStage {
            index,
            name: node.name.clone(),
            base: node.base.clone(),
            base_key,
            steps,
            depends_on: node.depends_on().collect(),
            config: resolved.config,
        });
    }
    let unused_build_args = req
        .build_args
        .keys()
        .filter(|k| !declared.contains(*k) && !PREDEFINED_ARGS.contains(&k.as_str()))
        .cloned()
        .collect();
    Ok(Plan {
        stages: planned,
        target: graph.target,
        unused_build_args,
    })
}

/// A canonical encoding of what a step does, hashed. Strings are written
/// with their length, so no two different steps encode alike.
fn step_digest(op: &Op, reads: Option<&str>, from_key: Option<&Option<String>>) -> String {
    let mut e = Enc(Sha256::new());
    e.str("moor-build/v1 step");
    match op {
        Op::Run {
            argv,
            network,
            env: _,
            cache_args,
            user,
            workdir,
        } => {
            // The environment from ENV is in the parent's key; of the rest
            // only the declared build arguments count.
            e.str("RUN");
            e.list(argv);
            e.str(network);
            e.pairs(cache_args);
            e.str(user);
            e.str(workdir);
        }
        Op::Copy(c) => {
            e.str(if c.add { "ADD" } else { "COPY" });
            match &c.from {
                None => e.str("context"),
                Some(Base::Scratch) => e.str("scratch"),
                Some(Base::Image(r)) => {
                    e.str("image");
                    e.str(r);
                }
                Some(Base::Stage(i)) => {
                    e.str("stage");
                    e.str(&i.to_string());
                }
            }
            e.str(&c.sources.len().to_string());
            for s in &c.sources {
                match s {
                    CopySource::Path(p) => {
                        e.str("path");
                        e.str(p);
                    }
                    CopySource::Url(u) => {
                        e.str("url");
                        e.str(u);
                    }
                    CopySource::Inline { name, content } => {
                        e.str("inline");
                        e.str(name);
                        e.str(content);
                    }
                }
            }
            e.str(&c.dest);
            e.opt(c.chown.as_deref());
            e.opt(c.chmod.map(|m| format!("{m:o}")).as_deref());
            e.str(if c.link { "link" } else { "" });
            e.opt(c.checksum.as_deref());
        }
        Op::Workdir(w) => {
            e.str("WORKDIR");
            e.str(w);
        }
        Op::Config(change) => config_digest(&mut e, change),
    }
    e.opt(reads);
    e.opt(from_key.and_then(|k| k.as_deref()));
    format!("sha256:{}", hex::encode(e.0.finalize()))
}

fn config_digest(e: &mut Enc, change: &ConfigChange) {
    match change {
        ConfigChange::Arg(args) => {
            e.str("ARG");
            for (k, v) in args {
                e.str(k);
                e.opt(v.as_deref());
            }
        }
        ConfigChange::Env(p) => {
            e.str("ENV");
            e.pairs(p);
        }
        ConfigChange::Label(p) => {
            e.str("LABEL");
            e.pairs(p);
        }
        ConfigChange::Cmd(v) => {
            e.str("CMD");
            e.list(v);
        }
        ConfigChange::Entrypoint { argv, .. } => {
            e.str("ENTRYPOINT");
            e.list(argv);
        }
        ConfigChange::Shell(v) => {
            e.str("SHELL");
            e.list(v);
        }
        ConfigChange::Expose(v) => {
            e.str("EXPOSE");
            e.list(v);
        }
        ConfigChange::Volume(v) => {
            e.str("VOLUME");
            e.list(v);
        }
        ConfigChange::User(u) => {
            e.str("USER");
            e.str(u);
        }
        ConfigChange::Stopsignal(s) => {
            e.str("STOPSIGNAL");
            e.str(s);
        }
        ConfigChange::Healthcheck { test, options } => {
            e.str("HEALTHCHECK");
            e.list(test);
            e.pairs(options);
        }
        ConfigChange::Onbuild(t) => {
            e.str("ONBUILD");
            e.str(t);
        }
        ConfigChange::Maintainer(m) => {
            e.str("MAINTAINER");
            e.str(m);
        }
    }
}

struct Enc(Sha256);

impl Enc {
    fn str(&mut self, s: &str) {
        self.0.update((s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.str("some");
                self.str(s);
            }
            None => self.str("none"),
        }
    }

    fn list(&mut self, v: &[String]) {
        self.str(&v.len().to_string());
        for s in v {
            self.str(s);
        }
    }

    fn pairs(&mut self, v: &[(String, String)]) {
        self.str(&v.len().to_string());
        for (k, val) in v {
            self.str(k);
            self.str(val);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Entry, EntryKind};
    use crate::dockerfile::parse;

    const MULTI: &str = "\
ARG BASE=debian:12
FROM $BASE AS deps
RUN apt-get update
FROM deps AS build
WORKDIR /src
COPY src/ ./src/
RUN make
FROM golang:1 AS unused
RUN echo never
FROM scratch AS runtime
COPY --from=build /src/app /app
COPY config.toml /etc/app/
ENV MODE=prod
CMD [\"/app\"]
FROM runtime AS debug
COPY --from=busybox:1 /bin/busybox /bin/
";

    fn file(content: &str) -> Entry {
        Entry {
            kind: EntryKind::File {
                size: content.len() as u64,
                digest: format!("sha256:{}", hex::encode(Sha256::digest(content))),
            },
            mode: 0o644,
        }
    }

    fn context(files: &[(&str, &str)]) -> Context {
        Context::from_entries(files.iter().map(|(p, c)| (p.to_string(), file(c))))
    }

    fn default_context() -> Context {
        context(&[
            ("src/main.c", "int main"),
            ("config.toml", "a = 1"),
            ("README.md", "hi"),
        ])
    }

    fn images(digest_suffix: &str) -> BTreeMap<String, ImageInfo> {
        ["debian:12", "busybox:1", "golang:1", "alpine:3"]
            .into_iter()
            .map(|r| {
                (
                    r.to_string(),
                    ImageInfo {
                        digest: format!("sha256:{r}{digest_suffix}"),
                        config: BaseConfig {
                            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
                            ..BaseConfig::default()
                        },
                    },
                )
            })
            .collect()
    }

    struct Build<'a> {
        text: &'a str,
        args: Vec<(&'a str, &'a str)>,
        target: Option<&'a str>,
        context: Context,
        images: BTreeMap<String, ImageInfo>,
    }

    impl<'a> Build<'a> {
        fn new(text: &'a str) -> Build<'a> {
            Build {
                text,
                args: vec![],
                target: None,
                context: default_context(),
                images: images(""),
            }
        }

        fn run(&self) -> Result<(Graph, Plan), PlanError> {
            let df = parse("Dockerfile", self.text).unwrap_or_else(|e| panic!("{e}"));
            let args: BuildArgs = self
                .args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let req = Request {
                file: "Dockerfile",
                dockerfile: &df,
                build_args: &args,
                target: self.target,
            };
            let g = graph(req)?;
            let p = plan(req, &g, &self.images, &self.context)?;
            Ok((g, p))
        }

        fn plan(&self) -> Plan {
            self.run().unwrap_or_else(|e| panic!("{e}")).1
        }

        /// Every step's key, by (stage index, step number).
        fn keys(&self) -> Vec<((usize, usize), Option<String>)> {
            self.plan()
                .stages
                .iter()
                .flat_map(|s| {
                    s.steps
                        .iter()
                        .enumerate()
                        .map(move |(i, st)| ((s.index, i), st.key.clone()))
                })
                .collect()
        }
    }

    /// Which steps' keys differ between two runs.
    fn changed(a: &Build<'_>, b: &Build<'_>) -> Vec<(usize, usize)> {
        let (ka, kb) = (a.keys(), b.keys());
        assert_eq!(ka.len(), kb.len());
        ka.iter()
            .zip(&kb)
            .filter(|(x, y)| x.1 != y.1)
            .map(|(x, _)| x.0)
            .collect()
    }

    #[test]
    fn the_target_needs_only_its_stages_in_dependency_order() {
        let b = Build::new(MULTI);
        let (g, p) = b.run().unwrap();
        assert_eq!(g.target, 4);
        assert_eq!(g.order, vec![0, 1, 3, 4], "the unused stage is not built");
        assert_eq!(
            g.images,
            vec!["debian:12".to_string(), "busybox:1".to_string()]
        );
        assert_eq!(g.stages[0].base, Base::Image("debian:12".into()));
        assert_eq!(g.stages[1].base, Base::Stage(0));
        assert_eq!(g.stages[3].base, Base::Scratch);
        assert_eq!(g.stages[3].copies_from, vec![Base::Stage(1)]);
        assert_eq!(
            p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![0, 1, 3, 4]
        );
        assert_eq!(p.stage(3).unwrap().depends_on, vec![1]);
        assert_eq!(p.stage(4).unwrap().depends_on, vec![3]);
        assert!(
            p.stages
                .iter()
                .all(|s| s.steps.iter().all(|st| st.key.is_some()))
        );

        let mut t = Build::new(MULTI);
        t.target = Some("Build");
        let (g, _) = t.run().unwrap();
        assert_eq!((g.target, g.order), (1, vec![0, 1]));
        assert_eq!(g.images, vec!["debian:12".to_string()]);

        t.target = Some("nope");
        assert_eq!(
            t.run().unwrap_err().to_string(),
            "target stage \"nope\" could not be found"
        );
    }

    #[test]
    fn meta_args_choose_the_base_and_its_images() {
        let mut b = Build::new(MULTI);
        b.args = vec![("BASE", "alpine:3")];
        let (g, p) = b.run().unwrap();
        assert_eq!(g.images[0], "alpine:3");
        assert_eq!(
            p.stage(0).unwrap().base_key.as_deref(),
            Some("sha256:alpine:3")
        );
        assert!(p.unused_build_args.is_empty(), "a meta ARG is used");
    }

    #[test]
    fn keys_are_deterministic_and_chained() {
        let b = Build::new(MULTI);
        assert_eq!(b.keys(), b.keys());
        let p = b.plan();
        let s = p.stage(1).unwrap();
        assert_eq!(s.base_key.as_deref(), p.stage(0).unwrap().key());
        assert_eq!(
            s.steps[0].key.as_deref(),
            Some(chain(s.base_key.as_ref().unwrap(), &s.steps[0].digest).as_str())
        );
        assert_eq!(p.stage(3).unwrap().base_key, Some(scratch_key()));
        // Layers only for what changes the file system.
        let layers: Vec<bool> = p.stage(3).unwrap().steps.iter().map(|s| s.layer).collect();
        assert_eq!(layers, vec![true, true, false, false]);
    }

    #[test]
    fn a_file_read_by_the_last_copy_reruns_only_that_step_and_later() {
        let a = Build::new(MULTI);
        let mut b = Build::new(MULTI);
        b.context = context(&[
            ("src/main.c", "int main"),
            ("config.toml", "a = 2"),
            ("README.md", "hi"),
        ]);
        // runtime's COPY config.toml (step 1) and what follows: ENV, CMD,
        // then the debug stage built on it.
        assert_eq!(changed(&a, &b), vec![(3, 1), (3, 2), (3, 3), (4, 0)]);
    }

    #[test]
    fn a_file_nothing_reads_changes_no_key() {
        let a = Build::new(MULTI);
        let mut b = Build::new(MULTI);
        b.context = context(&[
            ("src/main.c", "int main"),
            ("config.toml", "a = 1"),
            ("README.md", "changed"),
        ]);
        assert_eq!(changed(&a, &b), vec![]);
    }

    #[test]
    fn a_dockerignored_change_reruns_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let w = |p: &str, c: &str| {
            let p = tmp.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        };
        w("app/main.py", "print(1)");
        w("app/notes.log", "one");
        let ignore = crate::ignore::Ignore::parse("**/*.log\n").unwrap();
        let text = "FROM scratch\nCOPY . /app/\nCOPY app /app2/\n";
        let mut a = Build::new(text);
        a.context = Context::walk(tmp.path(), &ignore).unwrap();
        w("app/notes.log", "two");
        let mut b = Build::new(text);
        b.context = Context::walk(tmp.path(), &ignore).unwrap();
        assert_eq!(changed(&a, &b), vec![]);
        w("app/main.py", "print(2)");
        let mut c = Build::new(text);
        c.context = Context::walk(tmp.path(), &ignore).unwrap();
        assert_eq!(changed(&a, &c), vec![(0, 0), (0, 1)]);
    }

    #[test]
    fn build_args_key_the_first_run_that_sees_them_not_the_arg() {
        let text = "FROM debian:12\nRUN one\nARG V=1\nRUN two\nENV X=y\n";
        let a = Build::new(text);
        let mut b = Build::new(text);
        b.args = vec![("V", "2")];
        assert_eq!(changed(&a, &b), vec![(0, 2), (0, 3)]);

        // Undeclared arguments key nothing and are reported; proxies are silent.
        let mut c = Build::new(text);
        c.args = vec![("NOPE", "1"), ("HTTP_PROXY", "http://proxy:3128")];
        assert_eq!(changed(&a, &c), vec![]);
        assert_eq!(c.plan().unused_build_args, vec!["NOPE".to_string()]);
    }

    #[test]
    fn the_base_image_digest_keys_everything_after_it() {
        let a = Build::new(MULTI);
        let mut b = Build::new(MULTI);
        b.images = images("-new");
        // Every step of stages on debian or busybox; runtime's first COPY
        // reads the build stage, which changed.
        let all: Vec<(usize, usize)> = a.keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(changed(&a, &b), all);
    }

    #[test]
    fn an_unneeded_stage_changes_nothing() {
        let a = Build::new(MULTI);
        let text = MULTI.replace("RUN echo never", "RUN echo changed");
        let b = Build::new(&text);
        assert_eq!(changed(&a, &b), vec![]);
    }

    #[test]
    fn a_change_in_a_stage_reaches_copies_from_it() {
        let a = Build::new(MULTI);
        let text = MULTI.replace("RUN make", "RUN make -j2");
        let b = Build::new(&text);
        assert_eq!(
            changed(&a, &b),
            vec![(1, 2), (3, 0), (3, 1), (3, 2), (3, 3), (4, 0)]
        );
    }

    #[test]
    fn what_a_step_says_is_its_key() {
        let base = "FROM scratch\nCOPY src /s/\nENV A=1\n";
        let a = Build::new(base);
        for other in [
            "FROM scratch\nCOPY src /t/\nENV A=1\n",
            "FROM scratch\nCOPY --chmod=600 src /s/\nENV A=1\n",
            "FROM scratch\nCOPY --chown=1 src /s/\nENV A=1\n",
            "FROM scratch\nADD src /s/\nENV A=1\n",
        ] {
            assert_eq!(
                changed(&a, &Build::new(other)),
                vec![(0, 0), (0, 1)],
                "{other:?}"
            );
        }
        assert_eq!(
            changed(&a, &Build::new("FROM scratch\nCOPY src /s/\nENV A=2\n")),
            vec![(0, 1)]
        );
        // Substitution happens before keying: same result, same key.
        assert_eq!(
            changed(
                &a,
                &Build::new("FROM scratch\nCOPY src /s/\nENV A=${UNSET:-1}\n")
            ),
            vec![]
        );
    }

    #[test]
    fn remote_content_leaves_keys_to_the_engine() {
        let p =
            Build::new("FROM scratch\nCOPY src /s/\nADD https://example.com/x.tgz /x\nENV A=1\n")
                .plan();
        let keys: Vec<bool> = p.stages[0].steps.iter().map(|s| s.key.is_some()).collect();
        assert_eq!(keys, vec![true, false, false]);
        let p =
            Build::new("FROM scratch\nADD --checksum=sha256:abc https://example.com/x.tgz /x\n")
                .plan();
        assert!(
            p.stages[0].steps[0].key.is_some(),
            "a checksum pins the content"
        );
        let d = &p.stages[0].steps[0].digest;
        assert_ne!(with_content(d, "sha256:1"), with_content(d, "sha256:2"));
    }

    #[test]
    fn errors() {
        let mut b = Build::new("FROM scratch\nCOPY missing /m\n");
        assert_eq!(
            b.run().unwrap_err().to_string(),
            "Dockerfile:2: COPY missing /m: file not found in build context or excluded by .dockerignore: missing"
        );
        b.text = "FROM unknown:1\n";
        assert_eq!(
            b.run().unwrap_err().to_string(),
            "image unknown:1 is needed by the build but was not provided"
        );
        b.text = "ARG B\nFROM $B\n";
        assert_eq!(
            b.run().unwrap_err().to_string(),
            "Dockerfile:2: base name ($B) should not be blank"
        );
        b.text = "FROM scratch\nCOPY --from=1 /a /b\nFROM scratch\n";
        assert_eq!(
            b.run().unwrap_err().to_string(),
            "Dockerfile:2:1: COPY --from=1 /a /b: invalid from flag value 1: refers to current build stage or a later one"
        );
    }

    #[test]
    fn a_stage_inherits_its_base_stage_s_config() {
        let p = Build::new("FROM scratch AS a\nENV A=1\nWORKDIR /w\nONBUILD RUN hi\nFROM a\nENV B=$A\nCOPY src .\n").plan();
        let s = p.stage(1).unwrap();
        assert!(
            matches!(&s.steps[0].step.op, Op::Run { .. }),
            "the base stage's ONBUILD trigger runs first"
        );
        assert_eq!(
            s.steps[1].step.op,
            Op::Config(ConfigChange::Env(vec![("B".into(), "1".into())]))
        );
        let Op::Copy(c) = &s.steps[2].step.op else {
            panic!()
        };
        assert_eq!(c.dest, "/w/");
    }
}
