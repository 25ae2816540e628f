//! The top level of a document, and the three simple kinds: images, networks, volumes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use smallvec::SmallVec;

use ipnet::Ipv4Net;

use super::{ContainerDraft, Decoder, Field, ROOT, check_name, join};
use crate::hash::SpecHash;
use crate::model::{ImageSpec, Kind, NetworkSpec, Origin, PullPolicy, VolumeSpec};
use crate::node::{Node, Pos, Value};
use crate::target::Target;
use crate::update::{UpdatePolicy, UpdateSpec};

/// A decoded resource that has not been cross-checked yet.
#[derive(Debug, Clone)]
pub(crate) struct Draft<T> {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    pub(crate) origin: Origin,
    /// Shared with the resource the checks make of it (for a container,
    /// when its image is as written): a load copies no spec.
    pub(crate) spec: Arc<T>,
    /// The hosts it is for: its own `target`, else its document's; `None` is every host.
    pub(crate) target: Option<Target>,
    /// Positions of fields that later checks report on, by field name.
    pub(crate) locs: SmallVec<[(&'static str, Pos); 4]>,
    /// The spec's hash, once computed (see [`Drafts::hash`]).
    pub(crate) hash: Option<SpecHash>,
}

impl<T> Draft<T> {
    pub(crate) fn new(kind: Kind, name: &str, origin: Origin, spec: T) -> Self {
        Self::shared(kind, name, origin, Arc::new(spec))
    }

    /// A draft of a spec already shared.
    pub(crate) fn shared(kind: Kind, name: &str, origin: Origin, spec: Arc<T>) -> Self {
        Self {
            kind,
            name: name.to_string(),
            origin,
            spec,
            target: None,
            locs: SmallVec::new(),
            hash: None,
        }
    }

    /// The resource's field path, e.g. `networks.front`.
    pub(crate) fn path(&self) -> String {
        join(self.kind.table(), &self.name)
    }

    /// The full path of one of the resource's fields; `suffix` is itself a
    /// path of plain names (`networks.front.ipv4_address`), never quoted.
    pub(crate) fn field(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.path())
    }

    /// Where a field was written (the resource's name when not recorded).
    pub(crate) fn loc(&self, name: &str) -> Pos {
        self.locs
            .iter()
            .find(|(f, _)| *f == name)
            .map_or(self.origin.pos, |(_, p)| *p)
    }
}

/// One resource as declared, whether or not its spec decoded.
#[derive(Debug, Clone)]
pub(crate) struct Declared {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    pub(crate) origin: Origin,
    /// Its effective target (see [`Draft::target`]).
    pub(crate) target: Option<Target>,
}

/// Declarations left out of a load because they target other hosts, by kind
/// and name, so that a reference to one can say so.
#[derive(Debug, Default)]
pub(crate) struct Elsewhere<'a>(pub(crate) Vec<&'a Declared>);

impl Elsewhere<'_> {
    /// The first declaration of `kind` `name` that targets other hosts.
    pub(crate) fn get(&self, kind: Kind, name: &str) -> Option<&Declared> {
        self.0
            .iter()
            .find(|d| d.kind == kind && d.name == name)
            .copied()
    }

    /// The error for a reference to `kind` `name`, when it is declared for
    /// other hosts only: where it is declared, and for whom.
    pub(crate) fn explain(&self, kind: Kind, name: &str) -> Option<String> {
        let d = self.get(kind, name)?;
        let target = d
            .target
            .as_ref()
            .map_or_else(String::new, |t| format!(" for {t}"));
        Some(format!(
            "{kind} \"{name}\" does not target this host (it is declared at {}{target})",
            d.origin
        ))
    }
}

/// Every declaration of one file, including ones whose spec had errors
/// (so duplicate names are still caught), and the drafts that decoded.
#[derive(Debug, Default, Clone)]
pub(crate) struct Drafts {
    pub(crate) declared: Vec<Declared>,
    pub(crate) images: Vec<Draft<ImageSpec>>,
    pub(crate) networks: Vec<Draft<NetworkSpec>>,
    pub(crate) volumes: Vec<Draft<VolumeSpec>>,
    pub(crate) containers: Vec<ContainerDraft>,
    /// A Compose file's other files (see `Decoder::others`), and the file
    /// itself: positions in its drafts past `OTHER_LINES` are in them.
    pub(crate) others: Option<(PathBuf, Vec<PathBuf>)>,
}

impl Drafts {
    /// Computes every spec hash. A container's is computed with its image
    /// as written; the checks across files replace it when the image turns
    /// out to be another (an `[images]` entry).
    pub(crate) fn hash(&mut self) {
        for d in &mut self.images {
            d.hash = Some(crate::hash::image(&d.spec));
        }
        for d in &mut self.networks {
            d.hash = Some(crate::hash::network(&d.spec));
        }
        for d in &mut self.volumes {
            d.hash = Some(crate::hash::volume(&d.spec));
        }
        for c in &mut self.containers {
            c.d.hash = Some(crate::hash::container_unsorted(&c.d.spec));
        }
    }
}

const TOP_LEVEL: &[&str] = &[
    "images",
    "networks",
    "volumes",
    "containers",
    "secrets",
    "target",
];
const TOP_LEVEL_ALIASES: &[(&str, &str)] = &[("services", "containers"), ("service", "containers")];

impl Decoder<'_> {
    /// Decodes one document's root into `out`.
    pub(crate) fn document(&mut self, root: &Node, out: &mut Drafts) {
        if root.value == Value::Null {
            return;
        }
        if !matches!(root.value, Value::Map(_)) {
            let found = root.value.kind();
            self.error(root.pos, &Field::Root, format!("a manifest must be a table of images, networks, volumes and containers, found {found}"));
            return;
        }
        let Some(entries) = self.entries(root, &Field::Root) else {
            return;
        };
        // The document's target covers every resource of the document, even
        // ones written above it.
        // Secrets first: the containers written above them use them too.
        if let Some((_, node)) = entries.iter().find(|(k, _)| k.name == "secrets") {
            self.secrets_table(node);
        }
        let doc_target = entries
            .iter()
            .find(|(k, _)| k.name == "target")
            .and_then(|(_, node)| self.target(node, &ROOT.key("target")));
        for (key, node) in entries {
            // Compose-style extension fields hold YAML anchors for reuse.
            if key.name.starts_with("x-") || key.name == "target" || key.name == "secrets" {
                continue;
            }
            let kind = match key.name.as_str() {
                "images" => Kind::Image,
                "networks" => Kind::Network,
                "volumes" => Kind::Volume,
                "containers" => Kind::Container,
                other => {
                    let hint = super::hint(other, TOP_LEVEL, TOP_LEVEL_ALIASES);
                    let message = match hint {
                        Some(h) => format!("unknown top-level table; did you mean \"{h}\"?"),
                        None => "unknown top-level table (expected images, networks, volumes, containers or target; x-* keys are ignored)".to_string(),
                    };
                    self.error(key.pos, &ROOT.key(other), message);
                    continue;
                }
            };
            if node.value == Value::Null {
                continue;
            }
            let table = ROOT.key(kind.table());
            let Some(resources) = self.entries(node, &table) else {
                continue;
            };
            // Grown once, not doubled (and copied) as resources are added.
            out.declared.reserve(resources.len());
            match kind {
                Kind::Image => out.images.reserve(resources.len()),
                Kind::Network => out.networks.reserve(resources.len()),
                Kind::Volume => out.volumes.reserve(resources.len()),
                Kind::Container => out.containers.reserve(resources.len()),
            }
            for (name_key, spec) in resources {
                let field = table.key(&name_key.name);
                self.check(name_key.pos, &field, check_name(&name_key.name));
                let origin = self.origin(name_key.pos);
                // A resource's own target replaces its document's.
                let own_target = match &spec.value {
                    Value::Map(fields) => fields
                        .iter()
                        .find(|(k, _)| k.name == "target")
                        .map(|(_, t)| self.target(t, &field.key("target"))),
                    _ => None,
                };
                let target = own_target.unwrap_or_else(|| doc_target.clone());
                out.declared.push(Declared {
                    kind,
                    name: name_key.name.to_string(),
                    origin: origin.clone(),
                    target: target.clone(),
                });
                let name = &name_key.name;
                match kind {
                    Kind::Image => {
                        if let Some(s) = self.image(spec, &field) {
                            let mut d = Draft::new(kind, name, origin, s);
                            d.target = target;
                            out.images.push(d);
                        }
                    }
                    Kind::Network => {
                        if let Some((s, subnet_pos)) = self.network(spec, &field) {
                            let mut d = Draft::new(kind, name, origin, s);
                            d.locs.push(("subnet", subnet_pos));
                            d.target = target;
                            out.networks.push(d);
                        }
                    }
                    Kind::Volume => {
                        if let Some(s) = self.volume(spec, &field) {
                            let mut d = Draft::new(kind, name, origin, s);
                            d.target = target;
                            out.volumes.push(d);
                        }
                    }
                    Kind::Container => {
                        if let Some(mut c) = self.container(spec, &field, name, origin) {
                            c.d.target = target;
                            out.containers.push(c);
                        }
                    }
                }
            }
        }
    }

    fn image(&mut self, node: &Node, field: &Field<'_>) -> Option<ImageSpec> {
        let f = self.fields(
            node,
            field,
            &["ref", "pull", "build", "update", "verify", "target"],
            &[("image", "ref"), ("reference", "ref")],
        )?;
        // `Some(None)`: not built; `None`: a problem was reported.
        let build = match f.get("build") {
            Some(n) => self.build(n, &field.key("build")).map(Some),
            None => Some(None),
        };
        // `Some(None)`: not verified; `None`: a problem was reported.
        let verify = match f.get("verify") {
            Some(n) => self.image_verify(n, &field.key("verify")).map(Some),
            None => Some(None),
        };
        let mut ok = true;
        if let (Some(_), Some(n)) = (f.get("build"), f.get("verify")) {
            self.error(
                n.pos,
                &field.key("verify"),
                "a built image is never pulled, so there is no signature to verify: remove \"verify\" (or \"build\")",
            );
            ok = false;
        }
        if let (Some(_), Some(n)) = (f.get("build"), f.get("pull")) {
            self.error(
                n.pos,
                &field.key("pull"),
                "a built image is never pulled: remove \"pull\" (or \"build\")",
            );
            ok = false;
        }
        let reference = match f.get("ref") {
            Some(n) => {
                let rf = field.key("ref");
                let s = self.string(n, &rf)?;
                self.check(n.pos, &rf, crate::reference::parse(&s))
            }
            None => {
                self.error(f.pos, field, "missing required field \"ref\"");
                None
            }
        };
        let pull = match f.get("pull") {
            Some(n) => {
                let pf = field.key("pull");
                match self.str(n, &pf) {
                    Some("always") => Some(PullPolicy::Always),
                    Some("if-not-present" | "missing") => Some(PullPolicy::IfNotPresent),
                    Some("never") => Some(PullPolicy::Never),
                    Some(other) => {
                        self.error(
                            n.pos,
                            &pf,
                            format!("\"{other}\" is not one of always, if-not-present, never"),
                        );
                        None
                    }
                    None => None,
                }
            }
            None => Some(PullPolicy::default()),
        };
        let update = match f.get("update") {
            Some(n) => self.update(n, &field.key("update")).map(Some),
            None => Some(None),
        };
        if let (Some(_), Some(n)) = (f.get("build"), f.get("update")) {
            self.error(
                n.pos,
                &field.key("update"),
                "a built image has no registry to update from: remove \"update\" (or \"build\")",
            );
            ok = false;
        }
        if let (Some(Some(_)), Some(PullPolicy::Never), Some(n)) = (&update, &pull, f.get("update"))
        {
            self.error(
                n.pos,
                &field.key("update"),
                "pull = \"never\" forbids the pulls an update makes: remove one of them",
            );
            ok = false;
        }
        if let (Some(Some(_)), Some(r), Some(n)) = (&update, &reference, f.get("update"))
            && r.digest.is_some()
        {
            self.error(
                n.pos,
                &field.key("update"),
                format!(
                    "\"{r}\" is pinned by digest and never moves: name a tag to follow (or remove \"update\")"
                ),
            );
            ok = false;
        }
        let spec = ImageSpec {
            reference: reference?,
            pull: pull?,
            build: build?,
            update: update?,
            verify: verify?,
        };
        ok.then_some(spec)
    }

    /// `update = { interval = "1h", policy = "digest" }`.
    fn update(&mut self, node: &Node, field: &Field<'_>) -> Option<UpdateSpec> {
        let f = self.fields(
            node,
            field,
            &["interval", "policy"],
            &[("every", "interval"), ("schedule", "interval")],
        )?;
        let interval = match f.get("interval") {
            Some(n) => {
                let inf = field.key("interval");
                self.duration(n, &inf)
                    .and_then(|d| self.check(n.pos, &inf, crate::update::check_interval(d)))
            }
            None => Some(crate::update::DEFAULT_INTERVAL),
        };
        let policy = match f.get("policy") {
            Some(n) => {
                let pf = field.key("policy");
                self.string(n, &pf)
                    .and_then(|s| self.check(n.pos, &pf, crate::update::parse_policy(&s)))
            }
            None => Some(UpdatePolicy::Digest),
        };
        Some(UpdateSpec {
            interval: interval?,
            policy: policy?,
        })
    }

    fn network(&mut self, node: &Node, field: &Field<'_>) -> Option<(NetworkSpec, Pos)> {
        let f = self.fields(
            node,
            field,
            &["subnet", "gateway", "internal", "labels", "target"],
            &[("ipam", "subnet")],
        )?;
        let mut spec = NetworkSpec::default();
        let mut ok = true;
        let mut subnet_pos = f.pos;
        if let Some(n) = f.get("subnet") {
            let sf = field.key("subnet");
            subnet_pos = n.pos;
            spec.subnet = self.string(n, &sf).and_then(|s| {
                let r = s
                    .parse::<Ipv4Net>()
                    .map_err(|_| format!("\"{s}\" is not an IPv4 subnet such as 10.89.1.0/24"))
                    .and_then(|net| {
                        if net.prefix_len() > 30 {
                            Err(format!(
                                "subnet \"{s}\" is too small: use a prefix of /30 or shorter"
                            ))
                        } else if net.trunc() != net {
                            Err(format!(
                                "subnet \"{s}\" has host bits set; did you mean \"{}\"?",
                                net.trunc()
                            ))
                        } else {
                            Ok(net)
                        }
                    });
                self.check(n.pos, &sf, r)
            });
            ok &= spec.subnet.is_some();
        }
        if let Some(n) = f.get("gateway") {
            let gf = field.key("gateway");
            let gw = self.string(n, &gf).and_then(|s| {
                let r = s
                    .parse::<Ipv4Addr>()
                    .map_err(|_| format!("\"{s}\" is not an IPv4 address"))
                    .and_then(|gw| match spec.subnet {
                        Some(net)
                            if !net.contains(&gw)
                                || gw == net.network()
                                || gw == net.broadcast() =>
                        {
                            Err(format!(
                                "gateway {gw} is not a host address of subnet {net}"
                            ))
                        }
                        None => Err("a gateway needs a subnet".to_string()),
                        _ => Ok(gw),
                    });
                self.check(n.pos, &gf, r)
            });
            ok &= gw.is_some();
            spec.gateway = gw;
        }
        if let Some(n) = f.get("internal") {
            spec.internal = self.boolean(n, &field.key("internal")).unwrap_or_else(|| {
                ok = false;
                false
            });
        }
        if let Some(n) = f.get("labels") {
            spec.labels = self.labels(n, &field.key("labels"));
        }
        ok.then_some((spec, subnet_pos))
    }

    fn volume(&mut self, node: &Node, field: &Field<'_>) -> Option<VolumeSpec> {
        let f = self.fields(node, field, &["prune", "labels", "target"], &[])?;
        let mut spec = VolumeSpec::default();
        if let Some(n) = f.get("prune") {
            spec.prune = self.boolean(n, &field.key("prune"))?;
        }
        if let Some(n) = f.get("labels") {
            spec.labels = self.labels(n, &field.key("labels"));
        }
        Some(spec)
    }
}
