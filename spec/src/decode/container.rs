//! `[containers.NAME]`: the richest kind.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::resources::Draft;
use super::{Decoder, Field, check_name};
use crate::model::{
    ContainerSpec, DependCondition, HealthTest, Healthcheck, Kind, NetworkAttachment, NetworkMode,
    Origin, Resource, Resources, RestartPolicy, Seccomp, UpdateOrder,
};
use crate::mounts::{Mount, MountSource};
use crate::node::{Node, Pos, Value};
use crate::reference::ImageRef;

const FIELDS: &[&str] = &[
    "image",
    "entrypoint",
    "command",
    "env",
    "env_file",
    "working_dir",
    "user",
    "hostname",
    "labels",
    "network_mode",
    "networks",
    "ports",
    "mounts",
    "restart",
    "init",
    "resources",
    "healthcheck",
    "depends_on",
    "stop_signal",
    "stop_grace_period",
    "read_only",
    "cap_add",
    "cap_drop",
    "seccomp",
    "extra_hosts",
    "replicas",
    "update_order",
    "secrets",
    "target",
];

/// Compose spellings users carry over, and what moor calls them.
const COMPOSE_ALIASES: &[(&str, &str)] = &[
    ("environment", "env"),
    ("volumes", "mounts"),
    ("tmpfs", "mounts"),
    ("workdir", "working_dir"),
    ("mem_limit", "resources"),
    ("memory", "resources"),
    ("pids", "resources"),
    ("cpus", "resources"),
    ("pids_limit", "resources"),
    ("deploy", "replicas"),
    ("links", "networks"),
    ("expose", "ports"),
    ("read_only_rootfs", "read_only"),
    ("security_opt", "seccomp"),
];

/// Docker's defaults.
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HEALTH_RETRIES: u32 = 3;
/// Docker refuses memory limits below 6 MiB; so do we, before anything runs.
const MIN_MEMORY: u64 = 6 << 20;
/// An upper bound on `replicas` that catches typos.
const MAX_REPLICAS: i64 = 1000;

/// Where the entries of one of a container's list fields were written:
/// most list two or fewer, kept without an allocation.
pub(crate) type Locs<T> = smallvec::SmallVec<[T; 2]>;

/// Where one entry of a list or table field was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) pos: Pos,
    /// How the entry's field path ends after the field's own.
    pub(crate) at: At,
}

/// The end of an entry's field path (see [`ContainerDraft::entry_field`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// The field itself: one string standing for a list of one.
    Whole,
    /// `[i]`: an item of a list.
    Index(usize),
    /// `.NAME`: an entry of a table, named by what it declares.
    Named,
}

/// A decoded container before cross-checks, with the places of the fields
/// those checks report on.
#[derive(Debug, Clone)]
pub(crate) struct ContainerDraft {
    pub(crate) d: Draft<ContainerSpec>,
    /// The `image` text as written (a name under `[images]` or a reference).
    pub(crate) image_raw: Option<(String, Pos)>,
    /// Why `image_raw` is not an image reference, when it is not (then
    /// `d.spec.image` is a placeholder, unless `[images]` names it).
    pub(crate) image_error: Option<String>,
    /// Where each entry of `spec.ports` was written.
    pub(crate) port_locs: Locs<Entry>,
    /// Where each entry of `spec.mounts` was written.
    pub(crate) mount_locs: Locs<Entry>,
    /// Where each entry of `spec.networks` was written, and its
    /// `ipv4_address`, if given.
    pub(crate) network_locs: Locs<(Entry, Option<Pos>)>,
    /// Where each entry of `spec.depends_on` was written, in its order.
    pub(crate) depends_locs: Locs<Entry>,
    /// Where each bind mount really leads.
    pub(crate) binds: Vec<crate::writes::BindSeen>,
    /// The container this draft last became (see [`Built`]).
    pub(crate) built: Built,
}

/// The resource a [`ContainerDraft`] last became, kept with the draft.
///
/// A [`crate::Loader`] keeps a file's drafts while the file is unchanged,
/// so a later load that resolves the draft's image the same way hands out
/// this resource again (its spec shared, not copied) instead of building
/// it afresh.
#[derive(Debug, Default)]
pub(crate) struct Built(std::sync::Mutex<Option<Resource<ContainerSpec>>>);

impl Built {
    /// The resource kept, if `fits` it.
    pub(crate) fn get(
        &self,
        fits: impl FnOnce(&Resource<ContainerSpec>) -> bool,
    ) -> Option<Resource<ContainerSpec>> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.as_ref().filter(|r| fits(r)).cloned()
    }

    /// Keeps `resource` in place of what was kept.
    pub(crate) fn keep(&self, resource: &Resource<ContainerSpec>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(resource.clone());
    }
}

impl Clone for Built {
    /// A copy of a draft starts with nothing kept.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl ContainerDraft {
    /// The path of an entry of the container's list or table `field`
    /// (`containers.web.ports[1]`); `name` is what a table entry declares.
    pub(crate) fn entry_field(&self, field: &str, entry: &Entry, name: &str) -> String {
        let base = self.d.field(field);
        match entry.at {
            At::Whole => base,
            At::Index(i) => format!("{base}[{i}]"),
            At::Named => super::join(&base, name),
        }
    }

    /// Where the `depends_on` entry for `name` was written, and its path.
    pub(crate) fn depends_loc(&self, name: &str) -> Option<(String, Pos)> {
        let i = self.d.spec.depends_on.keys().position(|k| k == name)?;
        let e = self.depends_locs.get(i)?;
        Some((self.entry_field("depends_on", e, name), e.pos))
    }
}

/// How an entry's path ends: `None` is the one string given for a list.
fn index(i: Option<usize>) -> At {
    i.map_or(At::Whole, At::Index)
}

/// A container spec with nothing decoded yet: Docker's defaults, and a
/// placeholder image.
fn defaults() -> ContainerSpec {
    let placeholder = ImageRef {
        registry: String::new(),
        repository: String::new(),
        tag: None,
        digest: None,
    };
    ContainerSpec {
        image: placeholder,
        image_entry: None,
        entrypoint: None,
        command: None,
        env: BTreeMap::new(),
        working_dir: None,
        user: None,
        hostname: None,
        labels: BTreeMap::new(),
        network_mode: NetworkMode::Bridge,
        networks: Vec::new(),
        ports: Vec::new(),
        mounts: Vec::new(),
        restart: RestartPolicy::No,
        init: false,
        resources: Resources::default(),
        healthcheck: None,
        depends_on: BTreeMap::new(),
        stop_signal: "SIGTERM".to_string(),
        stop_grace_period: DEFAULT_STOP_GRACE,
        read_only: false,
        cap_add: Vec::new(),
        cap_drop: Vec::new(),
        seccomp: Seccomp::Default,
        extra_hosts: Vec::new(),
        replicas: 1,
        update_order: UpdateOrder::StopFirst,
        secrets: Vec::new(),
    }
}

/// What a draft holds until its spec is decoded: one [`defaults`] shared
/// by every draft, so that starting one allocates nothing.
fn unfinished() -> Arc<ContainerSpec> {
    static SPEC: std::sync::OnceLock<Arc<ContainerSpec>> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| Arc::new(defaults())).clone()
}

/// Puts `spec`'s ports and mounts in the canonical order (the order the
/// spec hash and the engine use), with where each was written and which
/// bind is which, so that the resource made of the draft shares its spec
/// instead of sorting a copy.
fn canonical_order(spec: &mut ContainerSpec, draft: &mut ContainerDraft) {
    if !spec.ports.is_sorted() {
        let mut ports: Vec<_> = std::mem::take(&mut spec.ports)
            .into_iter()
            .zip(std::mem::take(&mut draft.port_locs))
            .collect();
        // Stable: mappings of one string stay in the order they expand to.
        ports.sort_by(|a, b| a.0.cmp(&b.0));
        (spec.ports, draft.port_locs) = ports.into_iter().unzip();
    }
    if !spec.mounts.is_sorted() {
        // Targets are unique (a repeat is refused), so the order is total.
        let mut mounts: Vec<_> = std::mem::take(&mut spec.mounts)
            .into_iter()
            .zip(std::mem::take(&mut draft.mount_locs))
            .enumerate()
            .collect();
        mounts.sort_by(|a, b| (a.1).0.cmp(&(b.1).0));
        let mut moved_to = vec![0; mounts.len()];
        for (new, (old, _)) in mounts.iter().enumerate() {
            moved_to[*old] = new;
        }
        for b in &mut draft.binds {
            b.mount = moved_to[b.mount];
        }
        (spec.mounts, draft.mount_locs) = mounts.into_iter().map(|(_, m)| m).unzip();
    }
}

impl Decoder<'_> {
    pub(crate) fn container(
        &mut self,
        node: &Node,
        field: &Field<'_>,
        name: &str,
        origin: Origin,
    ) -> Option<ContainerDraft> {
        let f = self.fields(node, field, FIELDS, COMPOSE_ALIASES)?;
        let mut spec = defaults();
        let mut draft = ContainerDraft {
            d: Draft::shared(Kind::Container, name, origin, unfinished()),
            image_raw: None,
            image_error: None,
            port_locs: Locs::new(),
            mount_locs: Locs::new(),
            network_locs: Locs::new(),
            depends_locs: Locs::new(),
            binds: Vec::new(),
            built: Built::default(),
        };

        match f.get("image") {
            Some(n) => {
                if let Some(s) = self.string(n, &field.key("image")) {
                    match crate::reference::parse(&s) {
                        Ok(r) => spec.image = r,
                        Err(e) => draft.image_error = Some(e),
                    }
                    draft.image_raw = Some((s, n.pos));
                    draft.d.locs.push(("image", n.pos));
                }
            }
            None => self.error(f.pos, field, "missing required field \"image\""),
        }
        if let Some(n) = f.get("entrypoint") {
            spec.entrypoint = self.command(n, &field.key("entrypoint"));
        }
        if let Some(n) = f.get("command") {
            spec.command = self.command(n, &field.key("command"));
        }
        if let Some(n) = f.get("env_file") {
            let ef = field.key("env_file");
            for (path, pos, i) in self.strings(n, &ef) {
                // Checked before anything is read from the host.
                if let Some(p) = self.policy
                    && Path::new(&path).is_absolute()
                    && let Err(e) = self.host_path(p, "env_file", Path::new(&path))
                {
                    self.error(pos, &ef.item(i), e);
                    continue;
                }
                let r = self
                    .in_tree(Path::new(&path))
                    .map_err(|e| format!("env_file \"{path}\": {e}"))
                    .and_then(|(lexical, real)| self.env_file(real, lexical, &path));
                if let Some(vars) = self.check(pos, &ef.item(i), r) {
                    spec.env.extend(vars);
                }
            }
        }
        if let Some(n) = f.get("env") {
            let env = field.key("env");
            for (k, v, pos) in self.string_map(n, &env, "an environment variable") {
                if let Err(e) = crate::envfile::check_key(&k) {
                    self.error(pos, &env.key(&k), e);
                    continue;
                }
                spec.env.insert(k, v);
            }
        }
        if let Some(n) = f.get("working_dir") {
            let wf = field.key("working_dir");
            spec.working_dir = self.string(n, &wf).and_then(|s| {
                let r = if s.starts_with('/') {
                    Ok(s)
                } else {
                    Err(format!("working_dir \"{s}\" must be an absolute path"))
                };
                self.check(n.pos, &wf, r)
            });
        }
        if let Some(n) = f.get("user") {
            let uf = field.key("user");
            spec.user = self
                .scalar_string(n, &uf)
                .and_then(|s| self.check(n.pos, &uf, check_user(&s).map(|_| s)));
        }
        if let Some(n) = f.get("hostname") {
            let hf = field.key("hostname");
            spec.hostname = self
                .string(n, &hf)
                .and_then(|s| self.check(n.pos, &hf, check_hostname(&s).map(|_| s)));
        }
        if let Some(n) = f.get("labels") {
            spec.labels = self.labels(n, &field.key("labels"));
        }
        if let Some(n) = f.get("network_mode") {
            let nf = field.key("network_mode");
            draft.d.locs.push(("network_mode", n.pos));
            if let Some(s) = self.string(n, &nf) {
                let mode = match s.as_str() {
                    "bridge" | "default" => Ok(NetworkMode::Bridge),
                    "host" => Ok(NetworkMode::Host),
                    "none" => Ok(NetworkMode::None),
                    other => match other
                        .strip_prefix("container:")
                        .or_else(|| other.strip_prefix("service:"))
                    {
                        Some(target) => {
                            check_name(target).map(|_| NetworkMode::Container(target.to_string()))
                        }
                        None => Err(format!(
                            "\"{other}\" is not one of bridge, host, none, container:NAME"
                        )),
                    },
                };
                let allowed = |m: NetworkMode| match self.policy {
                    Some(p) => p.allows_network_mode(&m).map(|()| m),
                    None => Ok(m),
                };
                if let Some(m) = self.check(n.pos, &nf, mode.and_then(allowed)) {
                    spec.network_mode = m;
                }
            }
        }
        if let Some(n) = f.get("networks") {
            draft.d.locs.push(("networks", n.pos));
            self.networks(n, &field.key("networks"), &mut spec, &mut draft);
        }
        if let Some(n) = f.get("ports") {
            draft.d.locs.push(("ports", n.pos));
            let pf = field.key("ports");
            for (s, pos, i) in self.strings(n, &pf) {
                if let Some(mappings) = self.check(pos, &pf.item(i), crate::ports::parse(&s)) {
                    for m in mappings {
                        draft.port_locs.push(Entry { pos, at: index(i) });
                        spec.ports.push(m);
                    }
                }
            }
        }
        if let Some(n) = f.get("mounts") {
            self.mounts(n, &field.key("mounts"), &mut spec, &mut draft);
        }
        if let Some(n) = f.get("secrets") {
            let sf = field.key("secrets");
            spec.secrets = self.container_secrets(n, &sf);
            // A secret never hides behind a mount, nor a mount behind it.
            let clash = spec
                .secrets
                .iter()
                .find(|s| spec.mounts.iter().any(|m| m.target == s.target));
            if let Some(s) = clash {
                let message = format!(
                    "secret {} and a mount share the target {}",
                    s.source, s.target
                );
                self.error(n.pos, &sf, message);
            }
        }
        if let Some(n) = f.get("restart") {
            let rf = field.key("restart");
            if let Some(s) = self.str(n, &rf)
                && let Some(p) = self.check(n.pos, &rf, parse_restart(s))
            {
                spec.restart = p;
            }
        }
        if let Some(n) = f.get("init") {
            spec.init = self.boolean(n, &field.key("init")).unwrap_or(false);
        }
        if let Some(n) = f.get("resources") {
            spec.resources = self.resources(n, &field.key("resources"));
        }
        if let Some(n) = f.get("healthcheck") {
            spec.healthcheck = self.healthcheck(n, &field.key("healthcheck"));
        }
        if let Some(n) = f.get("depends_on") {
            self.depends_on(n, &field.key("depends_on"), &mut spec, &mut draft);
        }
        if let Some(n) = f.get("stop_signal") {
            let sf = field.key("stop_signal");
            if let Some(s) = self.scalar_string(n, &sf)
                && let Some(sig) = self.check(n.pos, &sf, crate::linux::normalize_signal(&s))
            {
                spec.stop_signal = sig;
            }
        }
        if let Some(n) = f.get("stop_grace_period")
            && let Some(d) = self.duration(n, &field.key("stop_grace_period"))
        {
            spec.stop_grace_period = d;
        }
        if let Some(n) = f.get("read_only") {
            spec.read_only = self.boolean(n, &field.key("read_only")).unwrap_or(false);
        }
        for (key, out) in [
            ("cap_add", &mut spec.cap_add),
            ("cap_drop", &mut spec.cap_drop),
        ] {
            if let Some(n) = f.get(key) {
                let cf = field.key(key);
                let set: BTreeSet<String> = self
                    .strings(n, &cf)
                    .into_iter()
                    .filter_map(|(s, pos, i)| {
                        let cap = crate::linux::normalize_capability(&s);
                        let cap = match self.policy {
                            Some(p) if key == "cap_add" => {
                                cap.and_then(|c| p.allows_capability(&c).map(|()| c))
                            }
                            _ => cap,
                        };
                        self.check(pos, &cf.item(i), cap)
                    })
                    .collect();
                *out = set.into_iter().collect();
            }
        }
        if let Some(n) = f.get("extra_hosts") {
            spec.extra_hosts = self.extra_hosts(n, &field.key("extra_hosts"));
        }
        if let Some(n) = f.get("replicas")
            && let Some(r) = self.integer(n, &field.key("replicas"), 0, MAX_REPLICAS)
        {
            spec.replicas = r as u32;
        }
        if let Some(n) = f.get("seccomp") {
            let sf = field.key("seccomp");
            match self.str(n, &sf) {
                Some("default") => spec.seccomp = Seccomp::Default,
                Some("unconfined") => {
                    let allowed = self
                        .policy
                        .map_or(Ok(()), |p| p.allows_seccomp(Seccomp::Unconfined));
                    if self.check(n.pos, &sf, allowed).is_some() {
                        spec.seccomp = Seccomp::Unconfined;
                    }
                }
                Some(other) => self.error(
                    n.pos,
                    &sf,
                    format!("\"{other}\" is not one of default, unconfined"),
                ),
                None => {}
            }
        }
        if let Some(n) = f.get("update_order") {
            let of = field.key("update_order");
            match self.str(n, &of) {
                Some("stop-first") => spec.update_order = UpdateOrder::StopFirst,
                Some("start-first") => spec.update_order = UpdateOrder::StartFirst,
                Some(other) => self.error(
                    n.pos,
                    &of,
                    format!("\"{other}\" is not one of stop-first, start-first"),
                ),
                None => {}
            }
        }
        canonical_order(&mut spec, &mut draft);
        draft.d.spec = Arc::new(spec);
        Some(draft)
    }

    fn networks(
        &mut self,
        node: &Node,
        field: &Field<'_>,
        spec: &mut ContainerSpec,
        draft: &mut ContainerDraft,
    ) {
        let mut add = |this: &mut Self,
                       name: &str,
                       f: &Field<'_>,
                       entry: Entry,
                       ipv4_pos: Option<Pos>,
                       attachment: NetworkAttachment| {
            if this.check(entry.pos, f, check_name(name)).is_none() {
                return;
            }
            if spec.networks.iter().any(|a| a.network == name) {
                this.error(entry.pos, f, format!("network \"{name}\" is listed twice"));
                return;
            }
            spec.networks.push(attachment);
            draft.network_locs.push((entry, ipv4_pos));
        };
        match &node.value {
            Value::Seq(_) | Value::Str(_) => {
                for (name, pos, i) in self.strings(node, field) {
                    let a = NetworkAttachment {
                        network: name.clone(),
                        aliases: Vec::new(),
                        ipv4_address: None,
                    };
                    let entry = Entry { pos, at: index(i) };
                    add(self, &name, &field.item(i), entry, None, a);
                }
            }
            Value::Map(_) => {
                for (k, v) in self.entries(node, field).unwrap_or_default() {
                    let nf = field.key(&k.name);
                    let Some(opts) = self.fields(
                        v,
                        &nf,
                        &["aliases", "ipv4_address"],
                        &[("ip", "ipv4_address")],
                    ) else {
                        continue;
                    };
                    let mut a = NetworkAttachment {
                        network: k.name.to_string(),
                        aliases: Vec::new(),
                        ipv4_address: None,
                    };
                    if let Some(n) = opts.get("aliases") {
                        let mut aliases = BTreeSet::new();
                        let af = nf.key("aliases");
                        for (alias, pos, i) in self.strings(n, &af) {
                            if self
                                .check(pos, &af.item(i), check_hostname(&alias))
                                .is_some()
                            {
                                aliases.insert(alias);
                            }
                        }
                        a.aliases = aliases.into_iter().collect();
                    }
                    let mut ipv4_pos = None;
                    if let Some(n) = opts.get("ipv4_address") {
                        let af = nf.key("ipv4_address");
                        a.ipv4_address = self.string(n, &af).and_then(|s| {
                            let r = s
                                .parse::<Ipv4Addr>()
                                .map_err(|_| format!("\"{s}\" is not an IPv4 address"));
                            self.check(n.pos, &af, r)
                        });
                        ipv4_pos = Some(n.pos);
                    }
                    let entry = Entry {
                        pos: k.pos,
                        at: At::Named,
                    };
                    add(self, &k.name, &nf, entry, ipv4_pos, a);
                }
            }
            _ => {
                let m = format!(
                    "expected a list of network names or a table, found {}",
                    node.value.kind()
                );
                self.error(node.pos, field, m);
            }
        }
    }

    fn mounts(
        &mut self,
        node: &Node,
        field: &Field<'_>,
        spec: &mut ContainerSpec,
        draft: &mut ContainerDraft,
    ) {
        let items: Vec<(usize, &Node)> = match &node.value {
            Value::Seq(items) => items.iter().enumerate().collect(),
            _ => {
                self.error(
                    node.pos,
                    field,
                    format!("expected a list of mounts, found {}", node.value.kind()),
                );
                return;
            }
        };
        for (i, item) in items {
            let mf = field.item(Some(i));
            let mount = match &item.value {
                Value::Str(s) => self.check(item.pos, &mf, crate::mounts::parse(s)),
                Value::Map(_) => self.long_mount(item, &mf),
                _ => {
                    self.error(
                        item.pos,
                        &mf,
                        format!(
                            "expected a mount string or table, found {}",
                            item.value.kind()
                        ),
                    );
                    None
                }
            };
            let Some(mut mount) = mount else { continue };
            let read_only = mount.read_only;
            let mut bind = None;
            match &mut mount.source {
                MountSource::Volume { name } => {
                    if let Err(e) = check_name(name) {
                        let hint = if name.contains('/') {
                            format!("; write \"./{name}\" for a path next to the manifest")
                        } else {
                            String::new()
                        };
                        self.error(item.pos, &mf, format!("volume {e}{hint}"));
                        continue;
                    }
                }
                MountSource::Bind {
                    source,
                    content_digest,
                    tree,
                } => {
                    let written = source.clone();
                    let real = if source.is_relative() {
                        let (resolved, real) = match self.in_tree(source) {
                            Ok(paths) => paths,
                            Err(e) => {
                                let m = format!("bind source \"{}\": {e}", source.display());
                                self.error(item.pos, &mf, m);
                                continue;
                            }
                        };
                        if self.missing(&real) {
                            let m = format!(
                                "bind source \"{}\" does not exist (looked for {}; relative sources are read from the manifest's directory)",
                                source.display(),
                                resolved.display()
                            );
                            self.error(item.pos, &mf, m);
                            continue;
                        }
                        // What the mount will show: the file or directory
                        // the links lead to, inside the tree. A read-write
                        // bind is the container's own data: by path alone
                        // (see `writes`).
                        if read_only {
                            match self.digest(&real) {
                                Ok(d) => *content_digest = Some(d),
                                Err(e) => {
                                    self.error(item.pos, &mf, e);
                                    continue;
                                }
                            }
                        }
                        // How many components the source has beneath the
                        // tree's root (`in_tree` checked that it is beneath).
                        let depth = resolved
                            .strip_prefix(self.tree.root())
                            .map(|rest| rest.components().count());
                        // Absolute, so that the spec (and its hash) does not
                        // depend on the directory moor was started in.
                        let absolute = self.absolute(resolved);
                        // The tree's root, made absolute the same way.
                        *tree = depth
                            .ok()
                            .and_then(|d| absolute.ancestors().nth(d))
                            .map(Path::to_path_buf);
                        *source = absolute;
                        real
                    } else {
                        if let Some(p) = self.policy
                            && let Err(e) = self.host_path(p, "bind source", source)
                        {
                            self.error(item.pos, &mf, e);
                            continue;
                        }
                        self.real(source)
                    };
                    if !read_only
                        && let Err(e) = crate::writes::check_writable(
                            self.writes,
                            &written,
                            &real,
                            self.file,
                            self.tree.real_root(),
                        )
                    {
                        self.error(item.pos, &mf, e);
                        continue;
                    }
                    bind = Some(real);
                }
                MountSource::Tmpfs { .. } => {}
            }
            if let Some(i) = spec.mounts.iter().position(|m| m.target == mount.target) {
                let first = match draft.mount_locs[i].at {
                    At::Index(j) => field.item(Some(j)).to_string(),
                    _ => field.to_string(),
                };
                self.error(
                    item.pos,
                    &mf,
                    format!("target \"{}\" is already mounted by {first}", mount.target),
                );
                continue;
            }
            if let Some(real) = bind {
                draft.binds.push(crate::writes::BindSeen {
                    mount: spec.mounts.len(),
                    real,
                    read_only,
                });
            }
            spec.mounts.push(mount);
            draft.mount_locs.push(Entry {
                pos: item.pos,
                at: At::Index(i),
            });
        }
    }

    /// `{ type = "volume", source = "site", target = "/www", read_only = true }`
    fn long_mount(&mut self, node: &Node, field: &Field<'_>) -> Option<Mount> {
        let f = self.fields(
            node,
            field,
            &["type", "source", "target", "read_only", "size"],
            &[
                ("destination", "target"),
                ("src", "source"),
                ("dst", "target"),
            ],
        )?;
        let get_str = |this: &mut Self, key: &str| -> Option<String> {
            let n = f.get(key)?;
            this.string(n, &field.key(key))
        };
        let kind = get_str(self, "type");
        let target = get_str(self, "target");
        let source = get_str(self, "source");
        let read_only = match f.get("read_only") {
            Some(n) => self.boolean(n, &field.key("read_only"))?,
            None => false,
        };
        let Some(target) = target else {
            self.error(f.pos, field, "missing required field \"target\"");
            return None;
        };
        self.check(
            f.pos,
            &field.key("target"),
            crate::mounts::check_target(&target),
        )?;
        let size = match f.get("size") {
            Some(n) => Some(self.size(n, &field.key("size"))?),
            None => None,
        };
        let source = match (kind.as_deref(), source) {
            (Some("tmpfs"), None) => MountSource::Tmpfs { size },
            (Some("volume"), Some(name)) => MountSource::Volume { name },
            (Some("bind"), Some(path)) => MountSource::Bind {
                source: path.into(),
                content_digest: None,
                tree: None,
            },
            (Some("tmpfs"), Some(_)) => {
                self.error(f.pos, &field.key("source"), "a tmpfs mount has no source");
                return None;
            }
            (Some(k @ ("volume" | "bind")), None) => {
                self.error(f.pos, field, format!("a {k} mount needs a \"source\""));
                return None;
            }
            (Some(other), _) => {
                let pos = f.get("type").map_or(f.pos, |n| n.pos);
                self.error(
                    pos,
                    &field.key("type"),
                    format!("\"{other}\" is not one of volume, bind, tmpfs"),
                );
                return None;
            }
            (None, _) => {
                self.error(f.pos, field, "missing required field \"type\"");
                return None;
            }
        };
        if size.is_some() && !matches!(source, MountSource::Tmpfs { .. }) {
            let pos = f.get("size").map_or(f.pos, |n| n.pos);
            self.error(pos, &field.key("size"), "only tmpfs mounts have a size");
            return None;
        }
        Some(Mount {
            target,
            source,
            read_only,
        })
    }

    fn resources(&mut self, node: &Node, field: &Field<'_>) -> Resources {
        let mut r = Resources::default();
        let Some(f) = self.fields(
            node,
            field,
            &["memory", "cpus", "pids"],
            &[("mem", "memory"), ("cpu", "cpus"), ("pids_limit", "pids")],
        ) else {
            return r;
        };
        if let Some(n) = f.get("memory") {
            let mf = field.key("memory");
            r.memory = self.size(n, &mf).and_then(|m| {
                let check = if m < MIN_MEMORY {
                    Err(format!("memory limit {m} bytes is below the minimum of 6m"))
                } else {
                    Ok(m)
                };
                self.check(n.pos, &mf, check)
            });
        }
        if let Some(n) = f.get("cpus") {
            let cf = field.key("cpus");
            r.cpus = self.number(n, &cf).and_then(|c| {
                let check = if c.is_finite() && (0.01..=1024.0).contains(&c) {
                    Ok(c)
                } else {
                    Err(format!("cpus {c} must be between 0.01 and 1024"))
                };
                self.check(n.pos, &cf, check)
            });
        }
        if let Some(n) = f.get("pids") {
            r.pids = self
                .integer(n, &field.key("pids"), 1, i64::MAX)
                .map(|p| p as u64);
        }
        r
    }

    fn healthcheck(&mut self, node: &Node, field: &Field<'_>) -> Option<Healthcheck> {
        let f = self.fields(
            node,
            field,
            &[
                "cmd",
                "http",
                "tcp",
                "interval",
                "timeout",
                "retries",
                "start_period",
            ],
            &[("test", "cmd"), ("command", "cmd"), ("url", "http")],
        )?;
        let mut tests = Vec::new();
        let given: Vec<&str> = ["cmd", "http", "tcp"]
            .into_iter()
            .filter(|k| f.get(k).is_some())
            .collect();
        if let Some(n) = f.get("cmd")
            && let Some(cmd) = self.command(n, &field.key("cmd"))
        {
            if cmd.is_empty() {
                self.error(n.pos, &field.key("cmd"), "command is empty");
            } else {
                tests.push(HealthTest::Cmd(cmd));
            }
        }
        if let Some(n) = f.get("http") {
            let hf = field.key("http");
            if let Some(url) = self.string(n, &hf) {
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
                if ok {
                    tests.push(HealthTest::Http(url));
                } else {
                    self.error(
                        n.pos,
                        &hf,
                        format!("\"{url}\" is not an http:// or https:// URL"),
                    );
                }
            }
        }
        if let Some(n) = f.get("tcp") {
            let tf = field.key("tcp");
            let target = match &n.value {
                Value::Int(p) if (1..=65535).contains(p) => Some(format!("localhost:{p}")),
                Value::Str(s) => match s.rsplit_once(':') {
                    Some((host, port))
                        if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) =>
                    {
                        Some(s.to_string())
                    }
                    None if s.parse::<u16>().is_ok_and(|p| p > 0) => Some(format!("localhost:{s}")),
                    _ => {
                        self.error(n.pos, &tf, format!("\"{s}\" must be host:port or a port"));
                        None
                    }
                },
                _ => {
                    self.type_error(n, &tf, "host:port or a port number");
                    None
                }
            };
            tests.extend(target.map(HealthTest::Tcp));
        }
        let interval = match f.get("interval") {
            Some(n) => self.duration(n, &field.key("interval")),
            None => Some(DEFAULT_HEALTH_INTERVAL),
        };
        let timeout = match f.get("timeout") {
            Some(n) => self.duration(n, &field.key("timeout")),
            None => Some(DEFAULT_HEALTH_TIMEOUT),
        };
        let start_period = match f.get("start_period") {
            Some(n) => self.duration(n, &field.key("start_period")),
            None => Some(Duration::ZERO),
        };
        let retries = match f.get("retries") {
            Some(n) => self
                .integer(n, &field.key("retries"), 1, 1000)
                .map(|r| r as u32),
            None => Some(DEFAULT_HEALTH_RETRIES),
        };
        if let Some(i) = interval
            && i < Duration::from_millis(100)
        {
            let pos = f.get("interval").map_or(f.pos, |n| n.pos);
            self.error(
                pos,
                &field.key("interval"),
                "interval must be at least 100ms",
            );
        }
        let test = match tests.len() {
            1 => tests.pop(),
            0 => {
                // A test that was given but is wrong has been reported already.
                if given.is_empty() {
                    self.error(f.pos, field, "needs one of cmd, http or tcp");
                }
                None
            }
            _ => {
                self.error(
                    f.pos,
                    field,
                    format!(
                        "give only one of cmd, http or tcp, not {}",
                        given.join(" and ")
                    ),
                );
                None
            }
        };
        Some(Healthcheck {
            test: test?,
            interval: interval?,
            timeout: timeout?,
            retries: retries?,
            start_period: start_period?,
        })
    }

    fn depends_on(
        &mut self,
        node: &Node,
        field: &Field<'_>,
        spec: &mut ContainerSpec,
        draft: &mut ContainerDraft,
    ) {
        let mut entries: Vec<(String, Entry, DependCondition)> = Vec::new();
        match &node.value {
            Value::Seq(_) | Value::Str(_) => {
                for (name, pos, i) in self.strings(node, field) {
                    let entry = Entry { pos, at: index(i) };
                    entries.push((name, entry, DependCondition::Started));
                }
            }
            Value::Map(_) => {
                for (k, v) in self.entries(node, field).unwrap_or_default() {
                    let df = field.key(&k.name);
                    let cond_node = match &v.value {
                        Value::Map(_) => {
                            let Some(opts) = self.fields(v, &df, &["condition"], &[]) else {
                                continue;
                            };
                            opts.get("condition")
                        }
                        _ => Some(v),
                    };
                    let condition = match cond_node {
                        None => Some(DependCondition::Started),
                        Some(c) => match self.str(c, &df) {
                            Some("started" | "service_started") => Some(DependCondition::Started),
                            Some("healthy" | "service_healthy") => Some(DependCondition::Healthy),
                            Some("completed" | "service_completed_successfully") => {
                                Some(DependCondition::Completed)
                            }
                            Some(other) => {
                                self.error(
                                    c.pos,
                                    &df,
                                    format!("condition \"{other}\" is not one of started, healthy, completed"),
                                );
                                None
                            }
                            None => None,
                        },
                    };
                    if let Some(c) = condition {
                        let entry = Entry {
                            pos: k.pos,
                            at: At::Named,
                        };
                        entries.push((k.name.to_string(), entry, c));
                    }
                }
            }
            _ => {
                let m = format!(
                    "expected a list of container names or a table, found {}",
                    node.value.kind()
                );
                self.error(node.pos, field, m);
            }
        }
        // In the order of `depends_on` (by name; a stable sort keeps the
        // entries of one name in the order they were written, so a repeat
        // is reported at the later), with where each kept was written.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut last: Option<&str> = None;
        let mut kept: Locs<bool> = Locs::with_capacity(entries.len());
        for (name, entry, _) in &entries {
            let f = match entry.at {
                At::Named => field.key(name),
                At::Index(i) => field.item(Some(i)),
                At::Whole => *field,
            };
            let keep = if self.check(entry.pos, &f, check_name(name)).is_none() {
                false
            } else if last == Some(name.as_str()) {
                self.error(entry.pos, &f, format!("\"{name}\" is listed twice"));
                false
            } else {
                last = Some(name);
                true
            };
            kept.push(keep);
        }
        for ((name, entry, condition), keep) in entries.into_iter().zip(kept) {
            if keep {
                draft.depends_locs.push(entry);
                spec.depends_on.insert(name, condition);
            }
        }
    }

    fn extra_hosts(&mut self, node: &Node, field: &Field<'_>) -> Vec<(String, IpAddr)> {
        let pairs: Vec<(String, String, Pos, At)> = match &node.value {
            Value::Map(_) => self
                .entries(node, field)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| {
                    let f = field.key(&k.name);
                    self.string(v, &f)
                        .map(|ip| (k.name.to_string(), ip, v.pos, At::Named))
                })
                .collect(),
            _ => self
                .strings(node, field)
                .into_iter()
                .filter_map(|(s, pos, i)| {
                    // host:ip, or host=ip (IPv6 addresses contain ':').
                    let split = s.split_once('=').or_else(|| s.split_once(':'));
                    match split {
                        Some((h, ip)) => Some((
                            h.to_string(),
                            ip.trim_matches(['[', ']']).to_string(),
                            pos,
                            index(i),
                        )),
                        None => {
                            let f = field.item(i);
                            self.error(pos, &f, format!("\"{s}\" must look like host:ip"));
                            None
                        }
                    }
                })
                .collect(),
        };
        let mut out = Vec::new();
        for (host, ip, pos, at) in pairs {
            let f = match at {
                At::Named => field.key(&host),
                At::Index(i) => field.item(Some(i)),
                At::Whole => *field,
            };
            let checked = check_hostname(&host).and_then(|_| {
                ip.parse::<IpAddr>()
                    .map_err(|_| format!("\"{ip}\" is not an IP address"))
            });
            if let Some(ip) = self.check(pos, &f, checked) {
                out.push((host, ip));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    match s {
        "no" | "never" => Ok(RestartPolicy::No),
        "always" => Ok(RestartPolicy::Always),
        "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
        "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: None }),
        other => match other.strip_prefix("on-failure:") {
            Some(n) => n
                .parse::<u32>()
                .map(|n| RestartPolicy::OnFailure {
                    max_retries: Some(n),
                })
                .map_err(|_| {
                    format!("retry count \"{n}\" in \"{s}\" must be a whole number, 0 or more")
                }),
            None => Err(format!(
                "\"{s}\" is not one of no, on-failure[:N], always, unless-stopped"
            )),
        },
    }
}

/// `user`, `user:group`, `uid`, `uid:gid`.
fn check_user(s: &str) -> Result<(), String> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    };
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    if ok_part(user) && group.is_none_or(ok_part) {
        Ok(())
    } else {
        Err(format!(
            "user \"{s}\" must look like name, uid, name:group or uid:gid"
        ))
    }
}

/// RFC 1123 host names: dot-separated labels of letters, digits and '-'.
fn check_hostname(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("\"{s}\" is not a valid host name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert_eq!(parse_restart("no"), Ok(RestartPolicy::No));
        assert_eq!(parse_restart("always"), Ok(RestartPolicy::Always));
        assert_eq!(
            parse_restart("unless-stopped"),
            Ok(RestartPolicy::UnlessStopped)
        );
        assert_eq!(
            parse_restart("on-failure"),
            Ok(RestartPolicy::OnFailure { max_retries: None })
        );
        assert_eq!(
            parse_restart("on-failure:3"),
            Ok(RestartPolicy::OnFailure {
                max_retries: Some(3)
            })
        );
        assert!(parse_restart("on-failure:x").is_err());
        assert!(parse_restart("sometimes").is_err());
        // Which exits are final: what `moor apply` and the controller count
        // as a job that is done rather than one waiting for its restart.
        let after = |p: &str, code| parse_restart(p).expect(p).restarts_after(code);
        assert!(!after("no", 0) && !after("no", 3));
        assert!(!after("on-failure:3", 0) && after("on-failure:3", 3));
        assert!(after("always", 0) && after("unless-stopped", 0));
    }

    #[test]
    fn depends_on_completed_in_moor_and_compose_spelling() {
        let toml = "[containers.migrate]\nimage = \"busybox\"\n\n[containers.app]\nimage = \"busybox\"\ndepends_on = { migrate = \"completed\" }\n";
        let yaml = "containers:\n  migrate: {image: busybox, restart: on-failure}\n  app:\n    image: busybox\n    depends_on: {migrate: {condition: service_completed_successfully}}\n";
        for (file, text) in [("/m/a.toml", toml), ("/m/a.yaml", yaml)] {
            let state = crate::load_texts(&[(file.into(), text.to_string())])
                .unwrap_or_else(|d| panic!("{file}:\n{d}"));
            assert_eq!(
                state.containers["app"].spec.depends_on["migrate"],
                DependCondition::Completed,
                "{file}"
            );
        }
        // A job that is started again after it exits never completes.
        for policy in ["always", "unless-stopped"] {
            let text = toml.replace(
                "[containers.migrate]\nimage = \"busybox\"\n",
                &format!("[containers.migrate]\nimage = \"busybox\"\nrestart = \"{policy}\"\n"),
            );
            let diags = crate::load_texts(&[("/m/a.toml".into(), text)])
                .expect_err(policy)
                .to_string();
            assert!(
                diags.contains(
                    "containers.app.depends_on.migrate: waits for \"migrate\" to complete"
                ),
                "{policy}: {diags}"
            );
        }
    }

    #[test]
    fn users_and_hosts() {
        for good in [
            "root",
            "1000",
            "1000:1000",
            "www-data:www-data",
            "nobody:65534",
        ] {
            assert!(check_user(good).is_ok(), "{good}");
        }
        for bad in ["", ":", "a:", "a b", "a:b:c"] {
            assert!(check_user(bad).is_err(), "{bad}");
        }
        assert!(check_hostname("web.internal").is_ok());
        assert!(check_hostname("-web").is_err());
        assert!(check_hostname("we_b").is_err());
    }
}
