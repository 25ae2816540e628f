//! Compose files as manifests.
//!
//! `compose.yaml`, `compose.yml`, `docker-compose.yaml` and
//! `docker-compose.yml` in a source directory are read as Compose files:
//! one project whose services, networks and volumes join the resources of
//! moor's own manifests (names must not collide).
//!
//! Start at [`Decoder::compose`]. A Compose file is parsed into the same
//! position-keeping [`Node`] tree as moor's own YAML, then *lowered*: its
//! variables are interpolated ([`interpolate`]), `extends` is resolved, the
//! services of inactive profiles are left out, and each key is rewritten
//! into moor's spelling on nodes that keep the positions where the user
//! wrote them. The lowered document is decoded and checked like any moor
//! manifest, so every diagnostic, from either step, names the Compose
//! file's line and column. What moor cannot do yet is a warning naming the
//! key, never silently dropped; what cannot run (a service with no image)
//! is an error.

mod files;
mod interpolate;
mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use files::{OVERRIDE_NAMES, is_override_file};
pub use interpolate::interpolate;

use crate::decode::{Decoder, Drafts, did_you_mean};
use crate::diag::Diagnostic;
use crate::load::LoadOptions;
use crate::node::{Key, Node, Pos, Value};

/// The file names read as Compose files.
pub const FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// How deep `extends` may chain.
const MAX_EXTENDS: usize = 16;
/// How many nodes `extends` may copy in one file, in all: like YAML
/// aliases, each `extends` copies a service, and a thousand services
/// extending a large one must not make a load hold gigabytes.
const MAX_EXTENDED_NODES: usize = 100_000;

fn count_nodes(n: &Node) -> usize {
    1 + match &n.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries.iter().map(|(_, v)| count_nodes(v)).sum(),
        _ => 0,
    }
}

/// Whether `path` is named like a Compose file.
pub fn is_compose_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| FILE_NAMES.contains(&n))
}

/// How many Compose files [`skip_used`] reads, included ones among them.
const MAX_SCANNED: usize = 1000;

/// Leaves out of `files` what Compose files among them use as data rather
/// than manifests: the files their services extend, their env files,
/// bind sources (a `prometheus.yml`, a `./conf` directory) and the files of
/// secrets and configs, wherever these are inside the source; their
/// override files; and the files they include (with what those use in
/// turn). A Compose file is left out only when another includes it (and
/// it does not include that one back: a loop is reported when it is read).
pub(crate) fn skip_used<T>(files: &mut Vec<(PathBuf, T)>, max_file_size: u64) {
    let roots: Vec<PathBuf> = files
        .iter()
        .filter(|(f, _)| is_compose_file(f))
        .map(|(f, _)| crate::tree::normalize(f))
        .collect();
    let mut used = Vec::new();
    let mut todo = roots.clone();
    for root in &roots {
        let dir = root.parent().unwrap_or(Path::new(""));
        for name in OVERRIDE_NAMES {
            let o = dir.join(name);
            if files.iter().any(|(f, _)| crate::tree::normalize(f) == o) {
                used.push(o.clone());
                todo.push(o);
            }
        }
    }
    // What each Compose file read includes.
    let mut includes: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    while let Some(file) = todo.pop() {
        if includes.contains_key(&file) || includes.len() >= MAX_SCANNED {
            continue;
        }
        let mut inc = Vec::new();
        let text = crate::load::read_capped(&file, max_file_size).ok();
        let docs = text.and_then(|t| crate::parse::parse(crate::parse::Format::Yaml, &t).ok());
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        for doc in docs.iter().flatten() {
            for rel in used_paths(doc) {
                used.push(crate::tree::normalize(&dir.join(rel)));
            }
            for (rel, is_file) in include_paths(doc) {
                let p = crate::tree::normalize(&dir.join(rel));
                used.push(p.clone());
                if is_file {
                    inc.push(p.clone());
                    todo.push(p);
                }
            }
        }
        includes.insert(file, inc);
    }
    if used.is_empty() {
        return;
    }
    let reach = |from: &PathBuf| -> Vec<PathBuf> {
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut stack = includes.get(from).cloned().unwrap_or_default();
        while let Some(f) = stack.pop() {
            if !seen.contains(&f) {
                stack.extend(includes.get(&f).cloned().unwrap_or_default());
                seen.push(f);
            }
        }
        seen
    };
    let reaches: BTreeMap<&PathBuf, Vec<PathBuf>> = roots.iter().map(|r| (r, reach(r))).collect();
    files.retain(|(f, _)| {
        let f = crate::tree::normalize(f);
        if is_compose_file(&f) {
            let mine = &reaches[&f];
            !roots
                .iter()
                .any(|r| *r != f && reaches[r].contains(&f) && !mine.contains(r))
        } else {
            !used.iter().any(|u| f.starts_with(u))
        }
    });
}

/// The relative paths of a Compose document's `include` entries, each
/// with whether it is a Compose file (rather than an env file).
fn include_paths(root: &Node) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let Some(Value::Seq(items)) = get(root, "include").map(|n| &n.value) else {
        return out;
    };
    let mut add = |n: Option<&Node>, is_file: bool| {
        let texts = match n.map(|n| &n.value) {
            Some(Value::Seq(l)) => l.iter().filter_map(Node::scalar_text).collect(),
            Some(_) => n.and_then(Node::scalar_text).into_iter().collect(),
            None => Vec::new(),
        };
        for t in texts
            .into_iter()
            .filter(|t| !t.starts_with('/') && !t.contains('$'))
        {
            out.push((t, is_file));
        }
    };
    for item in items {
        match &item.value {
            Value::Map(_) => {
                add(get(item, "path"), true);
                add(get(item, "env_file"), false);
            }
            _ => add(Some(item), true),
        }
    }
    out
}

/// The relative paths a Compose document reads as data (see [`skip_used`]).
fn used_paths(root: &Node) -> Vec<String> {
    let mut out = Vec::new();
    let mut relative = |s: Option<String>| {
        if let Some(s) = s.filter(|s| !s.starts_with('/') && !s.contains('$')) {
            out.push(s);
        }
    };
    for table in ["secrets", "configs"] {
        for (_, e) in get(root, table).map(entries).unwrap_or_default() {
            relative(get(e, "file").and_then(Node::scalar_text));
        }
    }
    for (_, svc) in get(root, "services").map(entries).unwrap_or_default() {
        if let Some(ext) = get(svc, "extends") {
            relative(get(ext, "file").and_then(Node::scalar_text));
        }
        match get(svc, "env_file").map(|n| &n.value) {
            Some(Value::Str(s)) => relative(Some(s.to_string())),
            Some(Value::Seq(items)) => {
                for i in items {
                    relative(
                        i.scalar_text()
                            .or_else(|| get(i, "path").and_then(Node::scalar_text)),
                    );
                }
            }
            _ => {}
        }
        if let Some(Value::Seq(items)) = get(svc, "volumes").map(|n| &n.value) {
            for i in items {
                let source = match &i.value {
                    Value::Str(s) => s.split(':').next().map(String::from),
                    _ if get(i, "type").and_then(Node::scalar_text).as_deref() == Some("bind") => {
                        get(i, "source").and_then(Node::scalar_text)
                    }
                    _ => None,
                };
                relative(source.filter(|s| {
                    crate::mounts::is_host_path(s) || matches!(i.value, Value::Map(_))
                }));
            }
        }
    }
    out
}

/// Top-level keys of the Compose Specification moor reads.
const TOP_LEVEL: &[&str] = &[
    "version", "name", "services", "networks", "volumes", "secrets", "configs", "include",
];

fn key(name: &str, pos: Pos) -> Key {
    Key {
        name: name.to_string().into(),
        pos,
    }
}

fn text(pos: Pos, s: impl Into<String>) -> Node {
    Node::new(pos, Value::Str(s.into().into()))
}

fn map(pos: Pos, entries: Vec<(Key, Node)>) -> Node {
    Node::new(pos, Value::Map(entries))
}

fn entries(n: &Node) -> &[(Key, Node)] {
    match &n.value {
        Value::Map(e) => e,
        _ => &[],
    }
}

fn get<'n>(n: &'n Node, name: &str) -> Option<&'n Node> {
    entries(n)
        .iter()
        .find(|(k, _)| k.name == name)
        .map(|(_, v)| v)
}

/// `parent.key`, as fields are named in diagnostics.
fn join(parent: &str, key: &str) -> String {
    crate::decode::join(parent, key)
}

/// A file's `secrets` or `configs` entry: the name of the secret its value
/// is declared as (see [`Decoder::declare_secret`]), unless it has none.
#[derive(Debug, Clone)]
struct FileEntry {
    declared: Option<String>,
}

/// The services of a file another extends, shared by every service that
/// extends one of them.
type Services = std::rc::Rc<Vec<(Key, Node)>>;

/// Where `extends` resolution is: the services being extended (to find
/// loops), and the other files read so far, each parsed once.
#[derive(Default)]
struct Extends {
    seen: Vec<(PathBuf, String)>,
    /// Nodes copied so far (see [`MAX_EXTENDED_NODES`]).
    copied: usize,
    files: BTreeMap<String, Option<Services>>,
}

/// What services refer to at the top level.
#[derive(Debug, Default)]
struct Top {
    /// The project's name (`name:`, else the Compose file's directory), for
    /// the names of images a service builds without naming them.
    project: String,
    secrets: BTreeMap<String, FileEntry>,
    configs: BTreeMap<String, FileEntry>,
    /// Whether the file declares the `default` network itself.
    declares_default: bool,
    /// The variables the file is interpolated with, for `environment`
    /// names given without a value.
    vars: BTreeMap<String, String>,
}

impl Decoder<'_> {
    pub(crate) fn warn(&mut self, pos: Pos, field: &str, message: impl Into<String>) {
        let (file, pos) = self.locate(pos);
        let d = Diagnostic::warning(file, pos, field, message);
        self.diags.push(d);
    }

    pub(crate) fn fail(&mut self, pos: Pos, field: &str, message: impl Into<String>) {
        let (file, pos) = self.locate(pos);
        let d = Diagnostic::error(file, pos, field, message);
        self.diags.push(d);
    }

    /// Decodes the documents of a Compose file into `out`.
    pub(crate) fn compose(&mut self, docs: &[Node], options: &LoadOptions, out: &mut Drafts) {
        let mut docs = docs.iter().filter(|d| d.value != Value::Null);
        let Some(root) = docs.next() else { return };
        if let Some(extra) = docs.next() {
            self.fail(
                extra.pos,
                "",
                "a Compose file holds one document; write the others in files of their own",
            );
        }
        if !matches!(root.value, Value::Map(_)) {
            let found = root.value.kind();
            self.fail(root.pos, "", format!("a Compose file must be a table of services, networks and volumes, found {found}"));
            return;
        }
        let vars = self.variables(options);
        let lookup = |name: &str| vars.get(name).cloned();
        let mut root = root.clone();
        self.interpolate_tree(&mut root, "", &lookup, true);
        // The files it includes, then the override file beside it (with
        // its own includes), merged over it as `docker compose` does.
        let mut chain = vec![crate::tree::normalize(self.file)];
        self.include(&mut root, Path::new(""), options, &mut chain);
        if let Some(mut over) = self.override_file(&lookup) {
            self.include(&mut over, Path::new(""), options, &mut chain);
            root = files::merge_files(root, over);
        }
        let mut profiles = options.profiles.clone();
        if let Some(p) = vars.get("COMPOSE_PROFILES") {
            profiles.extend(
                p.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from),
            );
        }
        let lowered = self.lower(&root, &profiles, &vars);
        self.document(&lowered, out);
    }

    /// The variables a Compose file is interpolated with: the loader's
    /// environment, over the env files it names (later ones over earlier
    /// ones, as `docker compose --env-file a --env-file b`) or else a `.env`
    /// file beside the Compose file.
    fn variables(&mut self, options: &LoadOptions) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        match &options.env_files {
            None => {
                if let Ok((lexical, real)) = self.in_tree(Path::new(".env"))
                    && !self.missing(&real)
                {
                    match self.env_file(real, lexical, ".env") {
                        Ok(found) => vars.extend(found),
                        Err(e) => self.fail(Pos::new(1, 1), "", e),
                    }
                }
            }
            Some(files) => {
                for file in files {
                    let shown = file.display().to_string();
                    // The operator's own file, named outside the source.
                    let found = if file.is_absolute() {
                        Ok((file.clone(), file.clone()))
                    } else {
                        self.in_tree(file)
                    };
                    let read = found
                        .map_err(|e| format!("env file \"{shown}\": {e}"))
                        .and_then(|(lexical, real)| self.env_file(real, lexical, &shown));
                    match read {
                        Ok(found) => vars.extend(found),
                        Err(e) => self.fail(Pos::new(1, 1), "", e),
                    }
                }
            }
        }
        vars.extend(options.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars
    }

    /// Interpolates every string of `node` in place (not keys; not the
    /// top-level `x-` fields, which are only anchors for reuse).
    fn interpolate_tree(
        &mut self,
        node: &mut Node,
        field: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
        top: bool,
    ) {
        match &mut node.value {
            Value::Str(s) => match interpolate(s, lookup) {
                Ok(v) => *s = v.into(),
                Err(e) => self.fail(node.pos, field, e),
            },
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.interpolate_tree(item, &format!("{field}[{i}]"), lookup, false);
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries.iter_mut() {
                    if top && k.name.starts_with("x-") {
                        continue;
                    }
                    self.interpolate_tree(v, &join(field, &k.name), lookup, false);
                }
            }
            _ => {}
        }
    }

    /// The Compose document `root` (interpolated) in moor's spelling.
    fn lower(
        &mut self,
        root: &Node,
        profiles: &BTreeSet<String>,
        vars: &BTreeMap<String, String>,
    ) -> Node {
        let lookup = |name: &str| vars.get(name).cloned();
        let lookup: &dyn Fn(&str) -> Option<String> = &lookup;
        let project = match get(root, "name").map(|n| &n.value) {
            Some(Value::Str(n)) => n.clone(),
            _ => self
                .dir
                .file_name()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default()
                .into(),
        };
        let mut top = Top {
            vars: vars.clone(),
            // As Compose normalises a project name: lower case, letters,
            // digits, `-` and `_`.
            project: project
                .to_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect(),
            ..Top::default()
        };
        let mut services = None;
        let mut networks = Vec::new();
        let mut volumes = Vec::new();
        for (k, v) in entries(root) {
            match k.name.as_str() {
                "version" => {}
                "name" => {
                    if !matches!(v.value, Value::Str(_)) {
                        self.fail(
                            v.pos,
                            "name",
                            format!("expected a string, found {}", v.value.kind()),
                        );
                    }
                }
                "services" => services = Some(v),
                "networks" => networks = self.top_networks(v, &mut top),
                "volumes" => volumes = self.top_volumes(v),
                "secrets" => top.secrets = self.top_files(v, "secrets", vars),
                "configs" => top.configs = self.top_files(v, "configs", vars),
                x if x.starts_with("x-") => {}
                other => {
                    let hint = did_you_mean(other, TOP_LEVEL.iter().copied())
                        .map_or_else(String::new, |h| format!("; did you mean \"{h}\"?"));
                    self.warn(
                        k.pos,
                        other,
                        format!("unknown top-level key; ignored{hint}"),
                    );
                }
            }
        }
        let mut containers = Vec::new();
        let mut images = Vec::new();
        let mut wants_default = false;
        let mut ext = Extends::default();
        if let Some(services) = services {
            let list = match &services.value {
                Value::Map(e) => e.as_slice(),
                Value::Null => &[],
                other => {
                    self.fail(
                        services.pos,
                        "services",
                        format!("expected a table of services, found {}", other.kind()),
                    );
                    &[]
                }
            };
            for (name, svc) in list {
                let field = join("services", &name.name);
                let svc = self.extended(list, svc, &field, lookup, &mut ext);
                if !self.active(&svc, &field, profiles) {
                    continue;
                }
                if let Some((lowered, default, image)) = self.service(name, &svc, &field, &top) {
                    wants_default |= default;
                    containers.push((name.clone(), lowered));
                    images.extend(image.map(|i| (name.clone(), i)));
                }
            }
        }
        if wants_default && !top.declares_default {
            networks.push((key("default", root.pos), map(root.pos, Vec::new())));
            // The services that name no network are on that `default` too,
            // as in Compose (not on moor's own default network).
            for (name, c) in &mut containers {
                let bridged = get(c, "network_mode")
                    .is_none_or(|m| m.scalar_text().as_deref() == Some("bridge"));
                if get(c, "networks").is_none()
                    && bridged
                    && let Value::Map(e) = &mut c.value
                {
                    let list = Node::new(name.pos, Value::Seq(vec![text(name.pos, "default")]));
                    e.push((key("networks", name.pos), list));
                }
            }
        }
        let out = vec![
            (key("images", root.pos), map(root.pos, images)),
            (key("containers", root.pos), map(root.pos, containers)),
            (key("networks", root.pos), map(root.pos, networks)),
            (key("volumes", root.pos), map(root.pos, volumes)),
        ];
        map(root.pos, out)
    }

    /// Whether a service runs: it names no profile, or one that is enabled.
    fn active(&mut self, svc: &Node, field: &str, profiles: &BTreeSet<String>) -> bool {
        let Some(p) = get(svc, "profiles") else {
            return true;
        };
        let pf = join(field, "profiles");
        let names: Vec<String> = match &p.value {
            Value::Seq(items) => items.iter().filter_map(|i| i.scalar_text()).collect(),
            other => {
                self.fail(
                    p.pos,
                    &pf,
                    format!("expected a list of profile names, found {}", other.kind()),
                );
                return false;
            }
        };
        names.is_empty() || names.iter().any(|n| profiles.contains(n))
    }

    /// `svc` with its `extends` resolved (recursively), without `extends`.
    fn extended(
        &mut self,
        services: &[(Key, Node)],
        svc: &Node,
        field: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
        ctx: &mut Extends,
    ) -> Node {
        let Some(ext) = get(svc, "extends") else {
            return svc.clone();
        };
        let ef = join(field, "extends");
        let mut local = svc.clone();
        if let Value::Map(e) = &mut local.value {
            e.retain(|(k, _)| k.name != "extends");
        }
        let (base_name, file) = match &ext.value {
            Value::Str(s) => (s.to_string(), None),
            Value::Map(_) => {
                for (k, _) in entries(ext) {
                    if k.name != "service" && k.name != "file" {
                        self.warn(k.pos, &join(&ef, &k.name), "unknown key; ignored");
                    }
                }
                let service = get(ext, "service").and_then(Node::scalar_text);
                let file = get(ext, "file").and_then(Node::scalar_text);
                match service {
                    Some(s) => (s, file),
                    None => {
                        self.fail(ext.pos, &ef, "extends needs the name of a service");
                        return local;
                    }
                }
            }
            other => {
                self.fail(
                    ext.pos,
                    &ef,
                    format!("expected a service name or a table, found {}", other.kind()),
                );
                return local;
            }
        };
        let here = (
            file.clone().map(PathBuf::from).unwrap_or_default(),
            base_name.clone(),
        );
        if ctx.copied > MAX_EXTENDED_NODES {
            self.fail(ext.pos, &ef, format!("extends copies more than {MAX_EXTENDED_NODES} values in this file; write less shared configuration, or share it with YAML anchors"));
            return local;
        }
        if ctx.seen.contains(&here) || ctx.seen.len() >= MAX_EXTENDS {
            self.fail(ext.pos, &ef, format!("extends \"{base_name}\" leads back to itself or is more than {MAX_EXTENDS} deep"));
            return local;
        }
        ctx.seen.push(here);
        let base = match file {
            None => match services.iter().find(|(k, _)| k.name == base_name) {
                Some((_, base)) => Some(self.extended(services, base, field, lookup, ctx)),
                None => {
                    self.fail(
                        ext.pos,
                        &ef,
                        format!("service \"{base_name}\" to extend is not in this file"),
                    );
                    None
                }
            },
            Some(file) => self.other_file_service(&file, &base_name, ext.pos, &ef, lookup, ctx),
        };
        ctx.seen.pop();
        let Some(base) = base else { return local };
        ctx.copied += count_nodes(&base);
        if ctx.copied > MAX_EXTENDED_NODES {
            self.fail(ext.pos, &ef, format!("extends copies more than {MAX_EXTENDED_NODES} values in this file; write less shared configuration, or share it with YAML anchors"));
            return local;
        }
        merge_service(base, local)
    }

    /// Service `name` of the Compose file `file` (relative to this one's
    /// directory, inside the source's tree), its own `extends` resolved.
    fn other_file_service(
        &mut self,
        file: &str,
        name: &str,
        pos: Pos,
        field: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
        ctx: &mut Extends,
    ) -> Option<Node> {
        if Path::new(file).is_absolute() {
            let m =
                format!("extends file \"{file}\" must be a relative path inside the source's tree");
            self.fail(pos, field, m);
            return None;
        }
        if !ctx.files.contains_key(file) {
            let services = self.read_services(file, pos, field, lookup);
            ctx.files
                .insert(file.to_string(), services.map(std::rc::Rc::new));
        }
        let services = ctx.files.get(file).cloned().flatten()?;
        let Some((_, base)) = services.iter().find(|(k, _)| k.name == name) else {
            self.fail(
                pos,
                field,
                format!("service \"{name}\" to extend is not in \"{file}\""),
            );
            return None;
        };
        // Its values are reported at the `extends` that brought them here:
        // their lines are in another file.
        let mut base = self.extended(&services, base, field, lookup, ctx);
        relocate(&mut base, pos);
        Some(base)
    }

    /// The services of the Compose file `file`, interpolated.
    fn read_services(
        &mut self,
        file: &str,
        pos: Pos,
        field: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Vec<(Key, Node)>> {
        let read = self
            .in_tree(Path::new(file))
            .and_then(|(_, real)| self.text_file(&real));
        let text = match read {
            Ok(t) => t,
            Err(e) => {
                self.fail(pos, field, format!("extends file \"{file}\": {e}"));
                return None;
            }
        };
        let docs = match crate::parse::parse(crate::parse::Format::Yaml, &text) {
            Ok(d) => d,
            Err(e) => {
                let m = format!(
                    "extends file \"{file}\" is not valid YAML: {}: {}",
                    e.pos, e.message
                );
                self.fail(pos, field, m);
                return None;
            }
        };
        let Some(mut root) = docs.into_iter().next() else {
            self.fail(pos, field, format!("extends file \"{file}\" is empty"));
            return None;
        };
        // Its errors are about that file: reported here, with its line.
        let before = self.diags.len();
        self.interpolate_tree(&mut root, "", lookup, true);
        if self.diags.len() > before {
            self.fail(pos, field, format!("extends file \"{file}\" has the interpolation errors above (their lines are in \"{file}\")"));
        }
        Some(
            get(&root, "services")
                .map(|s| entries(s).to_vec())
                .unwrap_or_default(),
        )
    }
}

/// Moves `node` and everything in it to `pos`.
fn relocate(node: &mut Node, pos: Pos) {
    node.pos = pos;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|i| relocate(i, pos)),
        Value::Map(entries) => {
            for (k, v) in entries {
                k.pos = pos;
                relocate(v, pos);
            }
        }
        _ => {}
    }
}

/// Keys whose lists add up, each item once, when a service extends
/// another or an override file names it again (Compose's merge rules);
/// other lists are replaced.
const APPENDED: &[&str] = &[
    "ports",
    "expose",
    "cap_add",
    "cap_drop",
    "dns",
    "dns_search",
    "dns_opt",
    "tmpfs",
    "env_file",
    "security_opt",
    "devices",
    "external_links",
    "links",
    "profiles",
];

/// Keys written as a string or a list: a string is a list of one.
const LIST_OR_STRING: &[&str] = &["dns", "dns_search", "tmpfs", "env_file"];

/// Keys whose lists merge by `source`: an entry for the same secret or
/// config replaces the extended one.
const BY_SOURCE: &[&str] = &["secrets", "configs"];

/// Keys whose `KEY=VALUE` lists are maps when merged.
const MAPS: &[&str] = &["environment", "labels", "sysctls"];

/// Keys whose tables merge, key by key, the extending service's winning.
const DEEP: &[&str] = &[
    "healthcheck",
    "deploy",
    "logging",
    "networks",
    "depends_on",
    "ulimits",
    "build",
];

/// `local` over `base`, by Compose's rules for `extends`.
fn merge_service(base: Node, local: Node) -> Node {
    let pos = local.pos;
    let (Value::Map(base_entries), Value::Map(local_entries)) = (base.value, local.value) else {
        return Node::new(pos, Value::Null);
    };
    let mut base_entries: Vec<(Key, Option<Node>)> = base_entries
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    let mut added = Vec::new();
    for (k, l) in local_entries {
        let b = base_entries
            .iter_mut()
            .find(|(bk, _)| bk.name == k.name)
            .and_then(|(_, v)| v.take());
        let merged = match b {
            Some(b) => merge_value(&k.name, b, l),
            None => l,
        };
        added.push((k, merged));
    }
    let mut out: Vec<(Key, Node)> = base_entries
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    out.extend(added);
    map(pos, out)
}

/// One key both services give.
fn merge_value(name: &str, base: Node, local: Node) -> Node {
    let listed = |n: Node| match n.value {
        Value::Str(_) if LIST_OR_STRING.contains(&name) => Node::new(n.pos, Value::Seq(vec![n])),
        _ => n,
    };
    // A list of networks or dependencies is a table of them when merged.
    let table = |n: Node| match (&n.value, name) {
        (Value::Seq(items), "networks" | "depends_on") => {
            let entries = items
                .iter()
                .filter_map(|i| {
                    let value = match name {
                        "networks" => Node::new(i.pos, Value::Null),
                        _ => map(
                            i.pos,
                            vec![(key("condition", i.pos), text(i.pos, "service_started"))],
                        ),
                    };
                    Some((key(&i.scalar_text()?, i.pos), value))
                })
                .collect();
            map(n.pos, entries)
        }
        _ => n,
    };
    let (base, local) = (listed(base), listed(local));
    let (base, local) = match (&base.value, &local.value) {
        (Value::Seq(_), Value::Seq(_)) => (base, local),
        _ => (table(base), table(local)),
    };
    match (&base.value, &local.value) {
        (Value::Seq(b), Value::Seq(l)) if APPENDED.contains(&name) => {
            let mut items = b.clone();
            for i in l {
                if !items.iter().any(|have| same(have, i)) {
                    items.push(i.clone());
                }
            }
            Node::new(local.pos, Value::Seq(items))
        }
        (Value::Seq(b), Value::Seq(l)) if BY_SOURCE.contains(&name) => {
            let source = |n: &Node| match &n.value {
                Value::Map(_) => get(n, "source").and_then(Node::scalar_text),
                _ => n.scalar_text(),
            };
            let replaced: Vec<Option<String>> = l.iter().map(source).collect();
            let mut items: Vec<Node> = b
                .iter()
                .filter(|i| !replaced.contains(&source(i)))
                .cloned()
                .collect();
            items.extend(l.iter().cloned());
            Node::new(local.pos, Value::Seq(items))
        }
        (Value::Seq(b), Value::Seq(l)) if name == "volumes" => {
            // A mount of the same target is the extending service's.
            let targets: Vec<Option<String>> = l.iter().map(mount_target).collect();
            let mut items: Vec<Node> = b
                .iter()
                .filter(|m| mount_target(m).is_none_or(|t| !targets.contains(&Some(t))))
                .cloned()
                .collect();
            items.extend(l.iter().cloned());
            Node::new(local.pos, Value::Seq(items))
        }
        _ if MAPS.contains(&name) => merge_maps(as_map(base), as_map(local), false),
        (Value::Map(_), Value::Map(_)) if DEEP.contains(&name) => merge_maps(base, local, true),
        _ => local,
    }
}

/// Whether two values are the same, wherever they are written.
fn same(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kp, p), (kq, q))| kp.name == kq.name && same(p, q))
        }
        (Value::Null, Value::Null) => true,
        _ => a.scalar_text().is_some() && a.scalar_text() == b.scalar_text(),
    }
}

/// Two tables, `local`'s keys winning; `deep` merges tables inside them too.
fn merge_maps(base: Node, local: Node, deep: bool) -> Node {
    let pos = local.pos;
    let (Value::Map(b), Value::Map(l)) = (base.value, local.value.clone()) else {
        return local;
    };
    let mut out: Vec<(Key, Node)> = b
        .iter()
        .filter(|(k, _)| !l.iter().any(|(lk, _)| lk.name == k.name))
        .cloned()
        .collect();
    for (k, v) in l {
        let merged = match b.iter().find(|(bk, _)| bk.name == k.name) {
            Some((_, bv))
                if deep && matches!((&bv.value, &v.value), (Value::Map(_), Value::Map(_))) =>
            {
                merge_maps(bv.clone(), v, true)
            }
            // `back:` with nothing under it keeps what the base says of it.
            Some((_, bv)) if deep && v.value == Value::Null => bv.clone(),
            _ => v,
        };
        out.push((k, merged));
    }
    map(pos, out)
}

/// A `KEY=VALUE` list as a table (a table as it is).
fn as_map(n: Node) -> Node {
    let Value::Seq(items) = &n.value else {
        return n;
    };
    let entries = items
        .iter()
        .filter_map(|i| {
            let s = i.scalar_text()?;
            let (k, v) = match s.split_once('=') {
                Some((k, v)) => (k.to_string(), text(i.pos, v)),
                None => (s, Node::new(i.pos, Value::Null)),
            };
            Some((key(&k, i.pos), v))
        })
        .collect();
    map(n.pos, entries)
}

/// The target of a short or long `volumes` entry.
fn mount_target(n: &Node) -> Option<String> {
    match &n.value {
        Value::Str(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Some(
                match parts.len() {
                    1 => parts[0],
                    _ => parts[1],
                }
                .to_string(),
            )
        }
        Value::Map(_) => get(n, "target").and_then(Node::scalar_text),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
