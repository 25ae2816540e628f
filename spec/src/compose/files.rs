//! The other files of a Compose project: the override file beside the
//! Compose file (`compose.override.yaml`…), merged over it as `docker
//! compose -f compose.yaml -f compose.override.yaml` merges them, and the
//! files it `include`s, each a model of its own (its paths read against its
//! own directory, interpolated with its own env file) whose resources join
//! the project's.
//!
//! Their values keep their own lines and columns: the values of the `k`-th
//! other file are at lines shifted by `k * OTHER_LINES`, which
//! [`Decoder::locate`] turns back into that file and line for diagnostics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{entries, get, map, merge_service};
use crate::decode::{Decoder, OTHER_LINES};
use crate::load::LoadOptions;
use crate::node::{Key, Node, Pos, Value};

/// Override files, in the order `docker compose` prefers them.
pub const OVERRIDE_NAMES: [&str; 4] = [
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// Compose files in the order `docker compose` prefers them: the first one
/// present in a directory is the one its override file goes with.
const PREFERRED: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// How deep `include` may nest.
pub(super) const MAX_INCLUDE_DEPTH: usize = 8;
/// How many other files one Compose file may bring in, in all.
const MAX_OTHERS: usize = 64;

/// The top-level tables an included file adds to the project.
const TABLES: [(&str, &str); 5] = [
    ("services", "service"),
    ("networks", "network"),
    ("volumes", "volume"),
    ("secrets", "secret"),
    ("configs", "config"),
];

/// Whether `path` is named like a Compose override file.
pub fn is_override_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| OVERRIDE_NAMES.contains(&n))
}

/// Moves every line of `node` into the `k`-th other file's range.
fn shift(node: &mut Node, k: u32) {
    node.pos.line += k * OTHER_LINES;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|i| shift(i, k)),
        Value::Map(entries) => {
            for (key, v) in entries {
                key.pos.line += k * OTHER_LINES;
                shift(v, k);
            }
        }
        _ => {}
    }
}

/// `p`, a path relative to `project` (relative to the Compose file), as a
/// path relative to the Compose file, written as a host path (`./x`).
fn under(project: &Path, p: &str) -> String {
    let joined = crate::tree::normalize(&project.join(p));
    let s = joined.to_string_lossy().into_owned();
    if s.is_empty() {
        ".".to_string()
    } else if s.starts_with("..") || s.starts_with('/') {
        s
    } else {
        format!("./{s}")
    }
}

/// Rewrites the relative paths of an included model (its services' bind
/// sources, env files, `extends` files; its secrets' and configs' files),
/// read against `project`, to be read against the including Compose file.
fn rebase(root: &mut Node, project: &Path) {
    if project.as_os_str().is_empty() {
        return;
    }
    let relative = |s: &str| !s.starts_with('/') && !s.starts_with('~');
    let Value::Map(top) = &mut root.value else {
        return;
    };
    for (k, table) in top.iter_mut() {
        let Value::Map(items) = &mut table.value else {
            continue;
        };
        for (_, item) in items.iter_mut() {
            let Value::Map(fields) = &mut item.value else {
                continue;
            };
            for (fk, fv) in fields.iter_mut() {
                match (k.name.as_str(), fk.name.as_str()) {
                    ("secrets" | "configs", "file") => {
                        if let Value::Str(s) = &mut fv.value
                            && relative(s)
                        {
                            *s = under(project, s).into();
                        }
                    }
                    ("services", "env_file") => match &mut fv.value {
                        Value::Str(s) if relative(s) => *s = under(project, s).into(),
                        Value::Seq(list) => {
                            for e in list {
                                let target = match &mut e.value {
                                    Value::Map(m) => {
                                        m.iter_mut().find(|(k, _)| k.name == "path").map(|(_, v)| v)
                                    }
                                    _ => Some(e),
                                };
                                if let Some(Node {
                                    value: Value::Str(s),
                                    ..
                                }) = target
                                    && relative(s)
                                {
                                    *s = under(project, s).into();
                                }
                            }
                        }
                        _ => {}
                    },
                    ("services", "extends") => {
                        if let Value::Map(m) = &mut fv.value
                            && let Some((
                                _,
                                Node {
                                    value: Value::Str(s),
                                    ..
                                },
                            )) = m.iter_mut().find(|(k, _)| k.name == "file")
                            && relative(s)
                        {
                            *s = under(project, s).into();
                        }
                    }
                    ("services", "volumes") => {
                        let Value::Seq(list) = &mut fv.value else {
                            continue;
                        };
                        for v in list {
                            match &mut v.value {
                                Value::Str(s) => {
                                    if let Some((source, rest)) = s.split_once(':')
                                        && crate::mounts::is_host_path(source)
                                        && relative(source)
                                    {
                                        *s = format!("{}:{rest}", under(project, source)).into();
                                    }
                                }
                                Value::Map(m) => {
                                    let bind = m.iter().any(|(k, v)| {
                                        k.name == "type"
                                            && v.scalar_text().as_deref() == Some("bind")
                                    });
                                    if let Some((
                                        _,
                                        Node {
                                            value: Value::Str(s),
                                            ..
                                        },
                                    )) = m.iter_mut().find(|(k, _)| k.name == "source")
                                        && bind
                                        && relative(s)
                                    {
                                        *s = under(project, s).into();
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Gives the `environment` names an included model's services write
/// without a value the value of its own variables (`vars`), as Compose
/// resolves them in the included model; a name without one is left out.
fn bare_environment(root: &mut Node, vars: &BTreeMap<String, String>) {
    let Some((_, services)) = (match &mut root.value {
        Value::Map(top) => top.iter_mut().find(|(k, _)| k.name == "services"),
        _ => None,
    }) else {
        return;
    };
    let Value::Map(services) = &mut services.value else {
        return;
    };
    for (_, svc) in services.iter_mut() {
        let Value::Map(fields) = &mut svc.value else {
            continue;
        };
        let Some((_, env)) = fields.iter_mut().find(|(k, _)| k.name == "environment") else {
            continue;
        };
        match &mut env.value {
            Value::Map(entries) => {
                entries.retain_mut(|(k, v)| {
                    if v.value != Value::Null {
                        return true;
                    }
                    match vars.get(k.name.as_str()) {
                        Some(val) => {
                            v.value = Value::Str(val.clone().into());
                            true
                        }
                        None => false,
                    }
                });
            }
            Value::Seq(items) => {
                items.retain_mut(|i| {
                    let Value::Str(s) = &mut i.value else {
                        return true;
                    };
                    if s.contains('=') {
                        return true;
                    }
                    match vars.get(s.as_str()) {
                        Some(val) => {
                            *s = format!("{s}={val}").into();
                            true
                        }
                        None => false,
                    }
                });
            }
            _ => {}
        }
    }
}

/// `over` merged over `base`, two whole Compose models, as `docker compose`
/// merges the files given with `-f`: services by Compose's merge rules
/// (see [`merge_service`]), the other tables entry by entry, key by key,
/// scalars replaced.
pub(super) fn merge_files(base: Node, over: Node) -> Node {
    let pos = base.pos;
    let (Value::Map(mut out), Value::Map(o)) = (base.value, over.value) else {
        return Node::new(pos, Value::Null);
    };
    for (k, v) in o {
        let Some(i) = out.iter().position(|(bk, _)| bk.name == k.name) else {
            out.push((k, v));
            continue;
        };
        let old = std::mem::replace(&mut out[i].1, Node::new(pos, Value::Null));
        out[i].1 = match k.name.as_str() {
            "services" => merge_tables(old, v, true),
            "networks" | "volumes" | "secrets" | "configs" => merge_tables(old, v, false),
            _ => v,
        };
    }
    map(pos, out)
}

/// Two tables of named entries: an entry in both is merged (a service by
/// [`merge_service`], others key by key), keeping where `base` names it.
fn merge_tables(base: Node, over: Node, services: bool) -> Node {
    let pos = base.pos;
    let (Value::Map(mut out), Value::Map(o)) = (base.value.clone(), over.value.clone()) else {
        return if over.value == Value::Null {
            base
        } else {
            over
        };
    };
    for (k, v) in o {
        let Some(i) = out.iter().position(|(bk, _)| bk.name == k.name) else {
            out.push((k, v));
            continue;
        };
        let old = std::mem::replace(&mut out[i].1, Node::new(pos, Value::Null));
        out[i].1 = match (&old.value, &v.value) {
            (Value::Map(_), Value::Map(_)) if services => merge_service(old, v),
            (Value::Map(_), Value::Map(_)) => super::merge_maps(old, v, true),
            (_, Value::Null) => old,
            _ => v,
        };
    }
    map(pos, out)
}

/// One `include` entry: the files of one model, the directory its paths
/// are read against, its env files.
struct Include {
    paths: Vec<(String, Pos)>,
    project: Option<String>,
    env_files: Option<Vec<String>>,
}

impl Decoder<'_> {
    /// Whether `rel` (relative to the Compose file) exists in the source's tree.
    fn exists(&mut self, rel: &str) -> bool {
        match self.in_tree(Path::new(rel)) {
            Ok((_, real)) => !self.missing(&real),
            Err(_) => false,
        }
    }

    /// The override file beside this Compose file, read and interpolated,
    /// when this is the Compose file `docker compose` would pick here.
    pub(super) fn override_file(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Node> {
        let name = self.file.file_name()?.to_str()?.to_string();
        let winner = PREFERRED.iter().find(|n| self.exists(n))?;
        if *winner != name {
            return None;
        }
        for name in OVERRIDE_NAMES {
            match self.in_tree(Path::new(name)) {
                Ok((_, real)) if self.missing(&real) => {}
                Ok(_) => return self.read_other(Path::new(name), Pos::new(1, 1), "", lookup),
                // There, but not to be read (a link out of the tree).
                Err(e) => {
                    let lexical = crate::bind::resolve(self.dir, Path::new(name));
                    self.others.push(lexical);
                    let at = Pos::new(self.others.len() as u32 * OTHER_LINES + 1, 1);
                    self.fail(at, "", e);
                    return None;
                }
            }
        }
        None
    }

    /// The Compose file `rel` (relative to this one, inside the source's
    /// tree) as one of [`Decoder::others`], interpolated with `lookup`;
    /// problems reading it are reported at `pos`, those in it at its lines.
    fn read_other(
        &mut self,
        rel: &Path,
        pos: Pos,
        field: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Node> {
        let shown = rel.display().to_string();
        if self.others.len() >= MAX_OTHERS {
            let m =
                format!("\"{shown}\": a Compose file brings in at most {MAX_OTHERS} other files");
            self.fail(pos, field, m);
            return None;
        }
        let read = self
            .in_tree(rel)
            .and_then(|(lexical, real)| Ok((lexical, self.text_file(&real)?)));
        let (lexical, text) = match read {
            Ok(r) => r,
            Err(e) => {
                self.fail(pos, field, format!("\"{shown}\": {e}"));
                return None;
            }
        };
        if text.lines().count() >= OTHER_LINES as usize - 1 {
            let m = format!("\"{shown}\" has too many lines to be merged");
            self.fail(pos, field, m);
            return None;
        }
        self.others.push(lexical);
        let k = self.others.len() as u32;
        let docs = match crate::parse::parse(crate::parse::Format::Yaml, &text) {
            Ok(d) => d,
            Err(e) => {
                let at = Pos::new(e.pos.line + k * OTHER_LINES, e.pos.column);
                self.fail(at, "", e.message);
                return None;
            }
        };
        let mut docs = docs.into_iter().filter(|d| d.value != Value::Null);
        // An empty file merges nothing.
        let mut root = docs.next()?;
        shift(&mut root, k);
        if let Some(extra) = docs.next() {
            let at = Pos::new(extra.pos.line + k * OTHER_LINES, extra.pos.column);
            self.fail(at, "", "a Compose file holds one document");
        }
        if !matches!(root.value, Value::Map(_)) {
            let found = root.value.kind();
            self.fail(root.pos, "", format!("a Compose file must be a table of services, networks and volumes, found {found}"));
            return None;
        }
        self.interpolate_tree(&mut root, "", lookup, true);
        Some(root)
    }

    /// Resolves the top-level `include` of `root` (whose paths are read
    /// against `base`, relative to this Compose file): each entry's files
    /// are read, merged, their own includes resolved, and their resources
    /// added to `root`; a name `root` has already is an error.
    pub(super) fn include(
        &mut self,
        root: &mut Node,
        base: &Path,
        options: &LoadOptions,
        chain: &mut Vec<PathBuf>,
    ) {
        let Value::Map(e) = &mut root.value else {
            return;
        };
        let Some(i) = e.iter().position(|(k, _)| k.name == "include") else {
            return;
        };
        let (_, inc) = e.remove(i);
        let items = match inc.value {
            Value::Seq(items) => items,
            Value::Null => return,
            other => {
                let m = format!("expected a list of files, found {}", other.kind());
                self.fail(inc.pos, "include", m);
                return;
            }
        };
        for (i, item) in items.iter().enumerate() {
            let f = format!("include[{i}]");
            let Some(entry) = self.include_entry(item, &f) else {
                continue;
            };
            let Some(first) = entry.paths.first() else {
                self.fail(item.pos, &f, "an include needs a path");
                continue;
            };
            let project = match &entry.project {
                Some(p) => base.join(p),
                None => base.join(Path::new(&first.0).parent().unwrap_or(Path::new(""))),
            };
            let project = crate::tree::normalize(&project);
            let vars = self.include_variables(base, &project, &entry, item.pos, &f, options);
            let lookup = |n: &str| vars.get(n).cloned();
            let mut model: Option<Node> = None;
            for (p, ppos) in &entry.paths {
                let rel = crate::tree::normalize(&base.join(p));
                let whole = crate::tree::normalize(&self.dir.join(&rel));
                if chain.contains(&whole) || chain.len() > MAX_INCLUDE_DEPTH {
                    let m = format!(
                        "include \"{p}\" leads back to a file that includes it, or is more than {MAX_INCLUDE_DEPTH} deep"
                    );
                    self.fail(*ppos, &f, m);
                    continue;
                }
                let Some(mut node) = self.read_other(&rel, *ppos, &f, &lookup) else {
                    continue;
                };
                rebase(&mut node, &project);
                bare_environment(&mut node, &vars);
                chain.push(whole);
                self.include(&mut node, &project, options, chain);
                chain.pop();
                model = Some(match model {
                    None => node,
                    Some(m) => merge_files(m, node),
                });
            }
            if let Some(model) = model {
                self.add_included(root, model);
            }
        }
    }

    /// One `include` entry: a path, or `{ path, project_directory, env_file }`.
    fn include_entry(&mut self, item: &Node, f: &str) -> Option<Include> {
        let list = |n: &Node| -> Option<Vec<(String, Pos)>> {
            match &n.value {
                Value::Str(s) => Some(vec![(s.to_string(), n.pos)]),
                Value::Seq(items) => items
                    .iter()
                    .map(|i| i.scalar_text().map(|s| (s, i.pos)))
                    .collect(),
                _ => None,
            }
        };
        let entry = match &item.value {
            Value::Str(s) => Include {
                paths: vec![(s.to_string(), item.pos)],
                project: None,
                env_files: None,
            },
            Value::Map(_) => {
                self.only(item, f, &["path", "project_directory", "env_file"]);
                let Some(paths) = get(item, "path").and_then(list) else {
                    self.fail(item.pos, f, "an include needs a path or a list of paths");
                    return None;
                };
                let env_files = match get(item, "env_file") {
                    None => None,
                    Some(n) => match list(n) {
                        Some(l) => Some(l.into_iter().map(|(s, _)| s).collect()),
                        None => {
                            let m = "expected a path or a list of paths";
                            self.fail(n.pos, &format!("{f}.env_file"), m);
                            return None;
                        }
                    },
                };
                Include {
                    paths,
                    project: get(item, "project_directory").and_then(Node::scalar_text),
                    env_files,
                }
            }
            other => {
                let m = format!("expected a path or a table, found {}", other.kind());
                self.fail(item.pos, f, m);
                return None;
            }
        };
        let absolute = entry.paths.iter().map(|(p, _)| p.as_str());
        let absolute = absolute
            .chain(entry.project.as_deref())
            .chain(entry.env_files.iter().flatten().map(String::as_str))
            .find(|p| p.starts_with('/'));
        if let Some(p) = absolute {
            let m = format!("\"{p}\" must be a relative path inside the source's tree");
            self.fail(item.pos, f, m);
            return None;
        }
        Some(entry)
    }

    /// The variables an included model is interpolated with: moor's
    /// environment over its env files (relative to the including file), or
    /// else the `.env` of its project directory.
    fn include_variables(
        &mut self,
        base: &Path,
        project: &Path,
        entry: &Include,
        pos: Pos,
        f: &str,
        options: &LoadOptions,
    ) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        let files: Vec<(PathBuf, bool)> = match &entry.env_files {
            Some(files) => files.iter().map(|e| (base.join(e), true)).collect(),
            None => vec![(project.join(".env"), false)],
        };
        for (rel, required) in files {
            let shown = rel.display().to_string();
            let found = match self.in_tree(&rel) {
                Ok((lexical, real)) => {
                    if !required && self.missing(&real) {
                        continue;
                    }
                    self.env_file(real, lexical, &shown)
                }
                Err(_) if !required => continue,
                Err(e) => Err(format!("env file \"{shown}\": {e}")),
            };
            match found {
                Ok(found) => vars.extend(found),
                Err(e) => self.fail(pos, &format!("{f}.env_file"), e),
            }
        }
        vars.extend(options.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars
    }

    /// Adds the resources of an included `model` to `root`.
    fn add_included(&mut self, root: &mut Node, model: Node) {
        let Value::Map(top) = &mut root.value else {
            return;
        };
        for (table, what) in TABLES {
            let Some(items) = get(&model, table).map(entries) else {
                continue;
            };
            let i = match top.iter().position(|(k, _)| k.name == table) {
                Some(i) => i,
                None => {
                    let k = Key {
                        name: table.to_string().into(),
                        pos: model.pos,
                    };
                    top.push((k, Node::new(model.pos, Value::Map(Vec::new()))));
                    top.len() - 1
                }
            };
            if top[i].1.value == Value::Null {
                top[i].1.value = Value::Map(Vec::new());
            }
            let Value::Map(have) = &mut top[i].1.value else {
                continue;
            };
            let mut clashes = Vec::new();
            for (k, v) in items {
                if have.iter().any(|(h, _)| h.name == k.name) {
                    clashes.push(k.clone());
                } else {
                    have.push((k.clone(), v.clone()));
                }
            }
            for k in clashes {
                let m = format!(
                    "{what} \"{}\" is also defined by the file that includes this one",
                    k.name
                );
                self.fail(k.pos, &super::join(table, &k.name), m);
            }
        }
    }
}
