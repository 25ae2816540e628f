//! One Compose service, and the top-level networks, volumes, secrets and
//! configs, rewritten into moor's spelling (see the module above).

use std::collections::BTreeMap;
use std::path::Path;

use crate::decode::secrets::MAX_SECRET_SIZE;

use super::{FileEntry, Top, entries, get, join, key, map, text};

/// Where key `name` of table `n` is written.
fn key_pos(n: &Node, name: &str) -> Option<Pos> {
    entries(n)
        .iter()
        .find(|(k, _)| k.name == name)
        .map(|(k, _)| k.pos)
}
use crate::decode::{Decoder, did_you_mean};
use crate::node::{Key, Node, Pos, Value};

/// Service keys moor reads (`x-` keys are extensions, ignored).
const SUPPORTED: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "networks",
    "network_mode",
    "depends_on",
    "healthcheck",
    "restart",
    "user",
    "working_dir",
    "hostname",
    "labels",
    "init",
    "stop_signal",
    "stop_grace_period",
    "cap_add",
    "cap_drop",
    "read_only",
    "extra_hosts",
    "deploy",
    "mem_limit",
    "cpus",
    "pids_limit",
    "security_opt",
    "secrets",
    "configs",
    "profiles",
    "container_name",
];

/// Keys moor passes on as they are: Compose and moor spell them alike.
const SAME: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "working_dir",
    "user",
    "hostname",
    "labels",
    "init",
    "stop_signal",
    "stop_grace_period",
    "cap_add",
    "cap_drop",
    "read_only",
    "extra_hosts",
    "network_mode",
    "restart",
];

/// Keys of the Compose Specification moor does not support yet: each is a
/// warning where it is written.
const UNSUPPORTED: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "cgroup",
    "cgroup_parent",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpuset",
    "credential_spec",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "external_links",
    "gpus",
    "group_add",
    "ipc",
    "isolation",
    "links",
    "logging",
    "mac_address",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "platform",
    "post_start",
    "pre_stop",
    "privileged",
    "pull_policy",
    "runtime",
    "scale",
    "shm_size",
    "stdin_open",
    "storage_opt",
    "sysctls",
    "tty",
    "ulimits",
    "userns_mode",
    "uts",
    "volumes_from",
    "extends",
];

impl Decoder<'_> {
    /// `field`'s key is not supported: a warning, and the key is ignored.
    fn unsupported(&mut self, pos: Pos, field: &str, why: &str) {
        self.warn(
            pos,
            field,
            format!("not supported by moor yet; ignored{why}"),
        );
    }

    /// Warns about every key of table `node` not among `known`.
    pub(super) fn only(&mut self, node: &Node, field: &str, known: &[&str]) {
        for (k, _) in entries(node) {
            if !known.contains(&k.name.as_str()) && !k.name.starts_with("x-") {
                self.unsupported(k.pos, &join(field, &k.name), "");
            }
        }
    }

    /// The service `svc` named `name` as a moor container, and whether it
    /// joins the `default` network by name.
    pub(super) fn service(
        &mut self,
        name: &Key,
        svc: &Node,
        field: &str,
        top: &Top,
    ) -> Option<(Node, bool, Option<Node>)> {
        let list = match &svc.value {
            Value::Map(e) => e.as_slice(),
            Value::Null => &[],
            other => {
                self.fail(
                    svc.pos,
                    field,
                    format!("expected a table, found {}", other.kind()),
                );
                return None;
            }
        };
        let mut out: Vec<(Key, Node)> = Vec::new();
        let mut mounts: Vec<Node> = Vec::new();
        let mut files: Vec<Node> = Vec::new();
        let mut resources: Vec<(Key, Node)> = Vec::new();
        let mut joins_default = false;
        for (k, v) in list {
            let f = join(field, &k.name);
            let kn = k.name.as_str();
            match kn {
                _ if SAME.contains(&kn) => out.push((k.clone(), v.clone())),
                "build" | "profiles" | "expose" => {}
                "container_name" => self.warn(
                    k.pos,
                    &f,
                    "moor names the container after the service; ignored",
                ),
                "environment" => {
                    let env = self.environment(v, &f, top);
                    out.push((key("env", k.pos), env));
                }
                "env_file" => {
                    let files = self.env_files(v, &f);
                    out.push((key("env_file", k.pos), files));
                }
                "ports" => {
                    let ports = self.ports(v, &f);
                    out.push((key("ports", k.pos), ports));
                }
                "volumes" => self.volumes(v, &f, &mut mounts),
                "tmpfs" => self.tmpfs(v, &f, &mut mounts),
                "secrets" => self.file_mounts(v, &f, &top.secrets, "secret", &mut files),
                "configs" => self.file_mounts(v, &f, &top.configs, "config", &mut files),
                "networks" => {
                    let (n, default) = self.service_networks(v, &f);
                    joins_default |= default;
                    out.push((key("networks", k.pos), n));
                }
                "depends_on" => {
                    let d = self.depends(v, &f);
                    out.push((key("depends_on", k.pos), d));
                }
                "healthcheck" => {
                    if let Some(h) = self.health(v, &f) {
                        out.push((key("healthcheck", k.pos), h));
                    }
                }
                "deploy" => self.deploy(v, &f, &mut out, &mut resources),
                "mem_limit" => set(&mut resources, key("memory", k.pos), v.clone(), false),
                "cpus" => set(&mut resources, key("cpus", k.pos), v.clone(), false),
                "pids_limit" => set(&mut resources, key("pids", k.pos), v.clone(), false),
                "security_opt" => {
                    if let Some(s) = self.security_opt(v, &f) {
                        out.push((key("seccomp", k.pos), s));
                    }
                }
                _ if kn.starts_with("x-") => {}
                _ if UNSUPPORTED.contains(&kn) => self.unsupported(k.pos, &f, ""),
                other => {
                    let hint = did_you_mean(other, SUPPORTED.iter().copied())
                        .map_or_else(String::new, |h| format!("; did you mean \"{h}\"?"));
                    self.warn(k.pos, &f, format!("unknown key; ignored{hint}"));
                }
            }
        }
        let image = get(svc, "image");
        let build = list.iter().find(|(k, _)| k.name == "build");
        let mut built = None;
        match (image, build) {
            (None, None) => {
                self.fail(name.pos, field, "a service needs an image or a build");
                return None;
            }
            (_, Some((bk, bv))) => {
                // Built as Compose builds it: named by `image`, else
                // `PROJECT-SERVICE`.
                let reference = match image.and_then(Node::scalar_text) {
                    Some(r) => r,
                    None => {
                        let r = format!("{}-{}", top.project, name.name);
                        out.push((key("image", bk.pos), text(bk.pos, r.clone())));
                        r
                    }
                };
                let spec = self.compose_build(bv, &join(field, "build"))?;
                built = Some(map(
                    bk.pos,
                    vec![
                        (key("ref", bk.pos), text(bk.pos, reference)),
                        (key("build", bk.pos), spec),
                    ],
                ));
            }
            _ => {}
        }
        if !mounts.is_empty() {
            let pos = mounts[0].pos;
            out.push((key("mounts", pos), Node::new(pos, Value::Seq(mounts))));
        }
        if !files.is_empty() {
            let pos = files[0].pos;
            out.push((key("secrets", pos), Node::new(pos, Value::Seq(files))));
        }
        if !resources.is_empty() {
            let pos = resources[0].0.pos;
            out.push((key("resources", pos), map(pos, resources)));
        }
        let bridged =
            get(svc, "network_mode").is_none_or(|m| m.scalar_text().as_deref() == Some("bridge"));
        if top.declares_default && get(svc, "networks").is_none() && bridged {
            // Compose attaches a service without networks to the
            // project's `default`, which this file configures.
            out.push((
                key("networks", name.pos),
                Node::new(name.pos, Value::Seq(vec![text(name.pos, "default")])),
            ));
            joins_default = true;
        }
        Some((map(svc.pos, out), joins_default, built))
    }

    /// `environment`: a table or `KEY=VALUE` list; a name without a value
    /// takes the loader's, as Compose takes the shell's, and is left out
    /// when there is none.
    fn environment(&mut self, v: &Node, field: &str, top: &Top) -> Node {
        let mut out: Vec<(Key, Node)> = Vec::new();
        let passed = |name: &str, pos: Pos| top.vars.get(name).map(|v| text(pos, v.clone()));
        let take = |k: Key, val: Option<Node>, out: &mut Vec<(Key, Node)>| {
            if let Some(val) = val {
                out.push((k, val));
            }
        };
        match &v.value {
            Value::Map(e) => {
                for (k, val) in e {
                    let val = match val.value {
                        Value::Null => passed(&k.name, k.pos),
                        _ => Some(val.clone()),
                    };
                    take(k.clone(), val, &mut out);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(s) = item.scalar_text() else {
                        self.fail(
                            item.pos,
                            &format!("{field}[{i}]"),
                            format!("expected KEY=VALUE, found {}", item.value.kind()),
                        );
                        continue;
                    };
                    let (k, val) = match s.split_once('=') {
                        Some((k, val)) => (k.to_string(), Some(text(item.pos, val))),
                        None => (s.clone(), passed(&s, item.pos)),
                    };
                    take(key(&k, item.pos), val, &mut out);
                }
            }
            Value::Null => {}
            other => self.fail(
                v.pos,
                field,
                format!(
                    "expected a table or a list of KEY=VALUE, found {}",
                    other.kind()
                ),
            ),
        }
        map(v.pos, out)
    }

    /// `env_file`: a path, or a list of paths or `{ path, required }`.
    fn env_files(&mut self, v: &Node, field: &str) -> Node {
        let items: Vec<Node> = match &v.value {
            Value::Seq(items) => items.clone(),
            _ => return v.clone(),
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if let Value::Map(_) = item.value {
                let f = format!("{field}[{i}]");
                self.only(&item, &f, &["path", "required", "format"]);
                if let Some(r) = get(&item, "required")
                    && r.value == Value::Bool(false)
                {
                    let pos = key_pos(&item, "required").unwrap_or(r.pos);
                    self.warn(
                        pos,
                        &join(&f, "required"),
                        "an optional env file is not supported yet: the file must exist",
                    );
                }
                if let Some(p) = get(&item, "path") {
                    out.push(p.clone());
                }
            } else {
                out.push(item);
            }
        }
        Node::new(v.pos, Value::Seq(out))
    }

    /// `ports`: short strings pass; numbers become strings; long tables
    /// are written short (`[ip:][published:]target[/protocol]`).
    fn ports(&mut self, v: &Node, field: &str) -> Node {
        let Value::Seq(items) = &v.value else {
            return v.clone();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            match &item.value {
                Value::Map(_) => {
                    self.only(
                        item,
                        &f,
                        &[
                            "target",
                            "published",
                            "host_ip",
                            "protocol",
                            "mode",
                            "name",
                            "app_protocol",
                        ],
                    );
                    for k in ["name", "app_protocol"] {
                        if let Some(pos) = key_pos(item, k) {
                            self.unsupported(pos, &join(&f, k), "");
                        }
                    }
                    if let Some(m) = get(item, "mode")
                        && m.scalar_text().as_deref() == Some("ingress")
                    {
                        // Compose's default; on one host it is `host`.
                    }
                    let Some(target) = get(item, "target").and_then(Node::scalar_text) else {
                        self.fail(item.pos, &f, "a port needs a target");
                        continue;
                    };
                    let mut s = String::new();
                    let published = get(item, "published").and_then(Node::scalar_text);
                    if let Some(ip) = get(item, "host_ip").and_then(Node::scalar_text) {
                        if ip.contains(':') {
                            s.push_str(&format!("[{ip}]:"));
                        } else {
                            s.push_str(&format!("{ip}:"));
                        }
                        s.push_str(&format!("{}:", published.unwrap_or_default()));
                    } else if let Some(p) = published {
                        s.push_str(&format!("{p}:"));
                    }
                    s.push_str(&target);
                    if let Some(p) = get(item, "protocol").and_then(Node::scalar_text) {
                        s.push_str(&format!("/{p}"));
                    }
                    out.push(text(item.pos, s));
                }
                _ => match item.scalar_text() {
                    Some(s) => out.push(text(item.pos, s)),
                    None => out.push(item.clone()),
                },
            }
        }
        Node::new(v.pos, Value::Seq(out))
    }

    /// `volumes` of a service: short `source:target[:options]` and long tables.
    fn volumes(&mut self, v: &Node, field: &str, mounts: &mut Vec<Node>) {
        let Value::Seq(items) = &v.value else {
            self.fail(
                v.pos,
                field,
                format!("expected a list of volumes, found {}", v.value.kind()),
            );
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            match &item.value {
                Value::Str(s) => {
                    let parts: Vec<&str> = s.split(':').collect();
                    let (source, target, options) = match parts.as_slice() {
                        [target] => {
                            let _ = target;
                            self.warn(item.pos, &f, "an anonymous volume is not supported by moor yet; ignored (name it, and declare it under volumes)");
                            continue;
                        }
                        [source, target] => (*source, *target, ""),
                        [source, target, options] => (*source, *target, *options),
                        _ => {
                            mounts.push(item.clone());
                            continue;
                        }
                    };
                    let mut kept = Vec::new();
                    for o in options.split(',').filter(|o| !o.is_empty()) {
                        match o {
                            "ro" | "rw" => kept.push(o),
                            "nocopy" => self.warn(item.pos, &f, "nocopy is not supported by moor yet; ignored (an empty volume is filled from the image)"),
                            other => self.warn(item.pos, &f, format!("mount option \"{other}\" is not supported by moor yet; ignored")),
                        }
                    }
                    let mut s = format!("{source}:{target}");
                    if !kept.is_empty() {
                        s.push(':');
                        s.push_str(&kept.join(","));
                    }
                    mounts.push(text(item.pos, s));
                }
                Value::Map(_) => {
                    if let Some(m) = self.long_volume(item, &f) {
                        mounts.push(m);
                    }
                }
                _ => mounts.push(item.clone()),
            }
        }
    }

    /// A long `volumes` entry: `{ type, source, target, read_only, volume,
    /// tmpfs, bind }`.
    fn long_volume(&mut self, item: &Node, f: &str) -> Option<Node> {
        self.only(
            item,
            f,
            &[
                "type",
                "source",
                "target",
                "read_only",
                "volume",
                "tmpfs",
                "bind",
                "consistency",
            ],
        );
        let mut out: Vec<(Key, Node)> = Vec::new();
        for k in ["type", "source", "target", "read_only"] {
            if let Some((key, v)) = entries(item).iter().find(|(key, _)| key.name == k) {
                out.push((key.clone(), v.clone()));
            }
        }
        let kind = get(item, "type").and_then(Node::scalar_text);
        if kind.as_deref() == Some("volume") && get(item, "source").is_none() {
            self.warn(item.pos, f, "an anonymous volume is not supported by moor yet; ignored (name it, and declare it under volumes)");
            return None;
        }
        if let Some(pos) = key_pos(item, "consistency") {
            self.unsupported(pos, &join(f, "consistency"), "");
        }
        if let Some(vol) = get(item, "volume") {
            let vf = join(f, "volume");
            for (k, _) in entries(vol) {
                let why = if k.name == "nocopy" {
                    " (an empty volume is filled from the image)"
                } else {
                    ""
                };
                self.unsupported(k.pos, &join(&vf, &k.name), why);
            }
        }
        if let Some(b) = get(item, "bind") {
            let bf = join(f, "bind");
            for (k, v) in entries(b) {
                // moor never creates a missing bind source: it is an error.
                if k.name == "create_host_path" && v.value == Value::Bool(false) {
                    continue;
                }
                self.unsupported(k.pos, &join(&bf, &k.name), "");
            }
        }
        if let Some(t) = get(item, "tmpfs") {
            let tf = join(f, "tmpfs");
            for (k, v) in entries(t) {
                if k.name == "size" {
                    let size = v
                        .scalar_text()
                        .map_or_else(|| v.clone(), |s| text(v.pos, s));
                    out.push((key("size", k.pos), size));
                } else {
                    self.unsupported(k.pos, &join(&tf, &k.name), "");
                }
            }
        }
        Some(map(item.pos, out))
    }

    /// `tmpfs`: a path or a list of `path[:options]`.
    fn tmpfs(&mut self, v: &Node, field: &str, mounts: &mut Vec<Node>) {
        let items: Vec<(Node, String)> = match &v.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), format!("{field}[{i}]")))
                .collect(),
            _ => vec![(v.clone(), field.to_string())],
        };
        for (item, f) in items {
            let Some(s) = item.scalar_text() else {
                self.fail(
                    item.pos,
                    &f,
                    format!("expected a path, found {}", item.value.kind()),
                );
                continue;
            };
            let (path, options) = s.split_once(':').unwrap_or((&s, ""));
            let mut kept = Vec::new();
            for o in options.split(',').filter(|o| !o.is_empty()) {
                if o.starts_with("size=") || o == "ro" || o == "rw" {
                    kept.push(o);
                } else {
                    self.warn(
                        item.pos,
                        &f,
                        format!("tmpfs option \"{o}\" is not supported by moor yet; ignored"),
                    );
                }
            }
            let mut m = format!("tmpfs:{path}");
            if !kept.is_empty() {
                m.push(':');
                m.push_str(&kept.join(","));
            }
            mounts.push(text(item.pos, m));
        }
    }

    /// `secrets` or `configs` of a service: each one of moor's secrets
    /// (a file of the container's own tmpfs, bound read-only), at
    /// `/run/secrets/NAME` or `/NAME` unless `target` says where, owned by
    /// root with mode 0444 unless `uid`, `gid` and `mode` say otherwise,
    /// as Compose copies them into a container.
    fn file_mounts(
        &mut self,
        v: &Node,
        field: &str,
        declared: &BTreeMap<String, FileEntry>,
        what: &str,
        out: &mut Vec<Node>,
    ) {
        let under = if what == "secret" {
            "/run/secrets/"
        } else {
            "/"
        };
        let Value::Seq(items) = &v.value else {
            self.fail(
                v.pos,
                field,
                format!("expected a list of {what}s, found {}", v.value.kind()),
            );
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let (source, target) = match &item.value {
                Value::Map(_) => {
                    self.only(item, &f, &["source", "target", "uid", "gid", "mode"]);
                    (
                        get(item, "source").and_then(Node::scalar_text),
                        get(item, "target").and_then(Node::scalar_text),
                    )
                }
                _ => (item.scalar_text(), None),
            };
            let Some(source) = source else {
                self.fail(item.pos, &f, format!("a {what} needs a source"));
                continue;
            };
            let Some(entry) = declared.get(&source) else {
                let hint = did_you_mean(&source, declared.keys().map(String::as_str))
                    .map_or_else(String::new, |h| format!("; did you mean \"{h}\"?"));
                self.fail(
                    item.pos,
                    &f,
                    format!(
                        "{what} \"{source}\" is not declared under the top-level {what}s{hint}"
                    ),
                );
                continue;
            };
            // An entry without a value was reported where it is declared.
            let Some(name) = &entry.declared else {
                continue;
            };
            let target = match target {
                Some(t) if t.starts_with('/') => t,
                Some(t) => format!("{under}{t}"),
                None => format!("{under}{source}"),
            };
            let mut ids = [0u32, 0u32];
            let mut good = true;
            for (slot, k) in ids.iter_mut().zip(["uid", "gid"]) {
                let Some(n) = get(item, k) else { continue };
                match n.scalar_text().and_then(|s| s.parse::<u32>().ok()) {
                    Some(id) if id < u32::MAX => *slot = id,
                    _ => {
                        let m = format!("{k} must be a number from 0 to {}", u32::MAX - 1);
                        self.fail(n.pos, &join(&f, k), m);
                        good = false;
                    }
                }
            }
            let mut mode = 0o444;
            if let Some(n) = get(item, "mode") {
                match file_mode(n) {
                    Ok(m) => mode = m,
                    Err(e) => {
                        self.fail(n.pos, &join(&f, "mode"), e);
                        good = false;
                    }
                }
            }
            if !good {
                continue;
            }
            let p = item.pos;
            let int = |v: u32| Node::new(p, Value::Int(i64::from(v)));
            out.push(map(
                p,
                vec![
                    (key("source", p), text(p, name.clone())),
                    (key("target", p), text(p, target)),
                    (key("uid", p), int(ids[0])),
                    (key("gid", p), int(ids[1])),
                    (key("mode", p), int(mode)),
                ],
            ));
        }
    }

    /// `networks` of a service; whether it names `default`.
    /// A service's `build` (`build: ./dir`, or `context`, `dockerfile`,
    /// `args`, `target`) in moor's spelling of an image's `build`.
    fn compose_build(&mut self, v: &Node, field: &str) -> Option<Node> {
        match &v.value {
            Value::Str(_) => return Some(v.clone()),
            Value::Map(_) => {}
            other => {
                self.fail(
                    v.pos,
                    field,
                    format!("expected a context path or a table, found {}", other.kind()),
                );
                return None;
            }
        }
        let mut out = Vec::new();
        for (k, val) in entries(v) {
            let f = join(field, &k.name);
            match k.name.as_str() {
                "context" | "dockerfile" | "target" => out.push((k.clone(), val.clone())),
                "args" => {
                    let mut args = Vec::new();
                    match &val.value {
                        Value::Map(e) => {
                            for (ak, av) in e {
                                match av.scalar_text() {
                                    Some(t) => args.push((ak.clone(), text(av.pos, t))),
                                    None => self.warn(
                                        ak.pos,
                                        &join(&f, &ak.name),
                                        "a build arg without a value is left out",
                                    ),
                                }
                            }
                        }
                        Value::Seq(items) => {
                            for item in items {
                                match item.scalar_text().as_deref().map(|t| t.split_once('=')) {
                                    Some(Some((ak, av))) => {
                                        args.push((key(ak, item.pos), text(item.pos, av)))
                                    }
                                    _ => self.warn(
                                        item.pos,
                                        &f,
                                        "a build arg without a value is left out",
                                    ),
                                }
                            }
                        }
                        other => {
                            self.fail(
                                val.pos,
                                &f,
                                format!(
                                    "expected a table or a list of KEY=VALUE, found {}",
                                    other.kind()
                                ),
                            );
                            return None;
                        }
                    }
                    out.push((k.clone(), map(val.pos, args)));
                }
                "dockerfile_inline" => {
                    self.fail(
                        k.pos,
                        &f,
                        "an inline Dockerfile is not supported: write it to a file in the context",
                    );
                    return None;
                }
                n if n.starts_with("x-") => {}
                _ => self.unsupported(k.pos, &f, ""),
            }
        }
        if !out.iter().any(|(k, _)| k.name == "context") {
            out.push((key("context", v.pos), text(v.pos, ".")));
        }
        Some(map(v.pos, out))
    }

    fn service_networks(&mut self, v: &Node, field: &str) -> (Node, bool) {
        match &v.value {
            Value::Seq(items) => {
                let default = items
                    .iter()
                    .any(|i| i.scalar_text().as_deref() == Some("default"));
                (v.clone(), default)
            }
            Value::Map(e) => {
                let mut out = Vec::new();
                for (k, opts) in e {
                    let f = join(field, &k.name);
                    let mut kept = Vec::new();
                    for (ok, ov) in entries(opts) {
                        match ok.name.as_str() {
                            "aliases" | "ipv4_address" => kept.push((ok.clone(), ov.clone())),
                            _ => self.unsupported(ok.pos, &join(&f, &ok.name), ""),
                        }
                    }
                    let node = match opts.value {
                        Value::Map(_) | Value::Null => map(opts.pos, kept),
                        _ => opts.clone(),
                    };
                    out.push((k.clone(), node));
                }
                let default = e.iter().any(|(k, _)| k.name == "default");
                (map(v.pos, out), default)
            }
            _ => (v.clone(), false),
        }
    }

    /// `depends_on`: a list, or a table of `{ condition, restart, required }`.
    fn depends(&mut self, v: &Node, field: &str) -> Node {
        let Value::Map(e) = &v.value else {
            return v.clone();
        };
        let mut out = Vec::new();
        for (k, opts) in e {
            let f = join(field, &k.name);
            if let Value::Map(_) = opts.value {
                self.only(opts, &f, &["condition", "restart", "required"]);
                for o in ["restart", "required"] {
                    if let Some(pos) = key_pos(opts, o) {
                        self.unsupported(pos, &join(&f, o), "");
                    }
                }
                let cond = get(opts, "condition")
                    .cloned()
                    .unwrap_or_else(|| text(k.pos, "service_started"));
                out.push((k.clone(), cond));
            } else {
                out.push((k.clone(), opts.clone()));
            }
        }
        map(v.pos, out)
    }

    /// `healthcheck`, or `None` when it is disabled.
    fn health(&mut self, v: &Node, field: &str) -> Option<Node> {
        self.only(
            v,
            field,
            &[
                "test",
                "interval",
                "timeout",
                "retries",
                "start_period",
                "start_interval",
                "disable",
            ],
        );
        if let Some(pos) = key_pos(v, "start_interval") {
            self.unsupported(pos, &join(field, "start_interval"), "");
        }
        if get(v, "disable").is_some_and(|d| d.value == Value::Bool(true)) {
            return None;
        }
        let tf = join(field, "test");
        let Some(test) = get(v, "test") else {
            self.warn(v.pos, field, "a healthcheck without test (the image's own) is not supported by moor yet; ignored");
            return None;
        };
        let shell = |pos: Pos, s: String| {
            Node::new(
                pos,
                Value::Seq(vec![text(pos, "/bin/sh"), text(pos, "-c"), text(pos, s)]),
            )
        };
        let cmd = match &test.value {
            Value::Str(s) => shell(test.pos, s.to_string()),
            Value::Seq(items) => {
                let words: Vec<String> = items.iter().filter_map(Node::scalar_text).collect();
                match words.first().map(String::as_str) {
                    Some("NONE") => return None,
                    Some("CMD") => Node::new(test.pos, Value::Seq(items[1..].to_vec())),
                    Some("CMD-SHELL") => shell(test.pos, words[1..].join(" ")),
                    _ => {
                        self.fail(
                            test.pos,
                            &tf,
                            "a test list must start with \"CMD\", \"CMD-SHELL\" or \"NONE\"",
                        );
                        return None;
                    }
                }
            }
            other => {
                self.fail(
                    test.pos,
                    &tf,
                    format!("expected a string or a list, found {}", other.kind()),
                );
                return None;
            }
        };
        let mut out = vec![(key("cmd", test.pos), cmd)];
        for (k, n) in entries(v) {
            if ["interval", "timeout", "retries", "start_period"].contains(&k.name.as_str()) {
                out.push((k.clone(), n.clone()));
            }
        }
        Some(map(v.pos, out))
    }

    /// `deploy`: replicas, resource limits, update order, restart policy.
    fn deploy(
        &mut self,
        v: &Node,
        field: &str,
        out: &mut Vec<(Key, Node)>,
        resources: &mut Vec<(Key, Node)>,
    ) {
        for (k, n) in entries(v) {
            let f = join(field, &k.name);
            match k.name.as_str() {
                "replicas" => out.push((k.clone(), n.clone())),
                "mode" => {
                    if n.scalar_text().as_deref() != Some("replicated") {
                        self.unsupported(k.pos, &f, " (moor runs replicas on one host)");
                    }
                }
                "resources" => {
                    for (rk, rn) in entries(n) {
                        let rf = join(&f, &rk.name);
                        if rk.name != "limits" {
                            self.unsupported(rk.pos, &rf, "");
                            continue;
                        }
                        for (lk, ln) in entries(rn) {
                            match lk.name.as_str() {
                                "memory" | "cpus" | "pids" => {
                                    set(resources, lk.clone(), ln.clone(), true)
                                }
                                _ => self.unsupported(lk.pos, &join(&rf, &lk.name), ""),
                            }
                        }
                    }
                }
                "update_config" => {
                    for (uk, un) in entries(n) {
                        if uk.name == "order" {
                            out.push((key("update_order", uk.pos), un.clone()));
                        } else {
                            self.unsupported(uk.pos, &join(&f, &uk.name), "");
                        }
                    }
                }
                "restart_policy" => self.restart_policy(n, &f, out),
                _ => self.unsupported(k.pos, &f, ""),
            }
        }
    }

    /// `deploy.restart_policy`, when the service has no `restart` of its own.
    fn restart_policy(&mut self, n: &Node, f: &str, out: &mut Vec<(Key, Node)>) {
        self.only(n, f, &["condition", "max_attempts"]);
        let cond = get(n, "condition")
            .and_then(Node::scalar_text)
            .unwrap_or_else(|| "any".into());
        let max = get(n, "max_attempts").and_then(Node::scalar_text);
        let policy = match (cond.as_str(), max) {
            ("none", _) => "no".to_string(),
            ("on-failure", Some(m)) => format!("on-failure:{m}"),
            ("on-failure", None) => "on-failure".to_string(),
            ("any", Some(_)) => {
                let pos = key_pos(n, "max_attempts").unwrap_or(n.pos);
                self.unsupported(
                    pos,
                    &join(f, "max_attempts"),
                    " (only with condition: on-failure)",
                );
                "always".to_string()
            }
            ("any", None) => "always".to_string(),
            (other, _) => {
                self.fail(
                    n.pos,
                    &join(f, "condition"),
                    format!("\"{other}\" is not one of none, on-failure, any"),
                );
                return;
            }
        };
        if !out.iter().any(|(k, _)| k.name == "restart") {
            out.push((key("restart", n.pos), text(n.pos, policy)));
        }
    }

    /// `security_opt`: `seccomp:unconfined` is moor's `seccomp`;
    /// `no-new-privileges` is always on.
    fn security_opt(&mut self, v: &Node, field: &str) -> Option<Node> {
        let Value::Seq(items) = &v.value else {
            return None;
        };
        let mut seccomp = None;
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let s = item.scalar_text().unwrap_or_default();
            match s.replace('=', ":").as_str() {
                "seccomp:unconfined" => seccomp = Some(text(item.pos, "unconfined")),
                "no-new-privileges" | "no-new-privileges:true" => {}
                _ => self.unsupported(item.pos, &f, ""),
            }
        }
        seccomp
    }

    /// Top-level `networks`, in moor's spelling.
    pub(super) fn top_networks(&mut self, v: &Node, top: &mut Top) -> Vec<(Key, Node)> {
        let mut out = Vec::new();
        for (k, n) in entries(v) {
            let f = join("networks", &k.name);
            top.declares_default |= k.name == "default";
            let mut spec = Vec::new();
            for (nk, nv) in entries(n) {
                let nf = join(&f, &nk.name);
                match nk.name.as_str() {
                    "internal" | "labels" => spec.push((nk.clone(), nv.clone())),
                    "driver" if nv.scalar_text().as_deref() == Some("bridge") => {}
                    "external" if nv.value == Value::Bool(false) => {}
                    "external" => self.warn(
                        nk.pos,
                        &nf,
                        "moor creates and owns every network it runs; external is ignored",
                    ),
                    "ipam" => self.ipam(nv, &nf, &mut spec),
                    _ if nk.name.starts_with("x-") => {}
                    _ => self.unsupported(nk.pos, &nf, ""),
                }
            }
            out.push((k.clone(), map(n.pos, spec)));
        }
        out
    }

    fn ipam(&mut self, v: &Node, field: &str, spec: &mut Vec<(Key, Node)>) {
        for (k, n) in entries(v) {
            let f = join(field, &k.name);
            match k.name.as_str() {
                "driver" if n.scalar_text().as_deref() == Some("default") => {}
                "config" => {
                    let Value::Seq(items) = &n.value else {
                        continue;
                    };
                    for (i, item) in items.iter().enumerate() {
                        let cf = format!("{f}[{i}]");
                        if i > 0 {
                            self.unsupported(item.pos, &cf, " (moor gives a network one subnet)");
                            continue;
                        }
                        for (ck, cv) in entries(item) {
                            match ck.name.as_str() {
                                "subnet" | "gateway" => spec.push((ck.clone(), cv.clone())),
                                _ => self.unsupported(ck.pos, &join(&cf, &ck.name), ""),
                            }
                        }
                    }
                }
                _ => self.unsupported(k.pos, &f, ""),
            }
        }
    }

    /// Top-level `volumes`, in moor's spelling.
    pub(super) fn top_volumes(&mut self, v: &Node) -> Vec<(Key, Node)> {
        let mut out = Vec::new();
        for (k, n) in entries(v) {
            let f = join("volumes", &k.name);
            let mut spec = Vec::new();
            for (vk, vv) in entries(n) {
                let vf = join(&f, &vk.name);
                match vk.name.as_str() {
                    "labels" => spec.push((vk.clone(), vv.clone())),
                    "driver" if vv.scalar_text().as_deref() == Some("local") => {}
                    "external" if vv.value == Value::Bool(false) => {}
                    "external" => self.warn(
                        vk.pos,
                        &vf,
                        "moor creates and owns every volume it mounts; external is ignored",
                    ),
                    _ if vk.name.starts_with("x-") => {}
                    _ => self.unsupported(vk.pos, &vf, ""),
                }
            }
            out.push((k.clone(), map(n.pos, spec)));
        }
        out
    }

    /// Top-level `secrets` or `configs`: each value is read now (a
    /// `file` inside the source's tree, a variable of the `environment`
    /// Compose files are interpolated with, or a config's `content`) and
    /// declared as one of moor's secrets, which services then name.
    pub(super) fn top_files(
        &mut self,
        v: &Node,
        table: &str,
        vars: &BTreeMap<String, String>,
    ) -> BTreeMap<String, FileEntry> {
        let what = if table == "secrets" {
            "secret"
        } else {
            "config"
        };
        let kinds: &[&str] = if table == "secrets" {
            &["file", "environment"]
        } else {
            &["file", "environment", "content"]
        };
        let mut out = BTreeMap::new();
        if v.value == Value::Null {
            return out;
        }
        if !matches!(v.value, Value::Map(_)) {
            let m = format!("expected a table of {table}, found {}", v.value.kind());
            self.fail(v.pos, table, m);
            return out;
        }
        for (k, n) in entries(v) {
            let f = join(table, &k.name);
            out.insert(k.name.to_string(), FileEntry { declared: None });
            if !matches!(n.value, Value::Map(_)) {
                let m = format!(
                    "expected a table with one of {}, found {}",
                    kinds.join(", "),
                    n.value.kind()
                );
                self.fail(n.pos, &f, m);
                continue;
            }
            let mut given = Vec::new();
            let mut external = false;
            for (ek, ev) in entries(n) {
                let ef = join(&f, &ek.name);
                match ek.name.as_str() {
                    x if kinds.contains(&x) => given.push((ek.name.as_str(), ev, ef)),
                    "external" if ev.value == Value::Bool(false) => {}
                    "external" => {
                        external = true;
                        self.warn(ek.pos, &ef, format!("moor has no store of {what}s to take an external one from; ignored, and the services that use it do not get it"));
                    }
                    x if x.starts_with("x-") => {}
                    _ => self.unsupported(ek.pos, &ef, ""),
                }
            }
            let (kind, node, vf) = match given.as_slice() {
                [one] => one.clone(),
                [] if external => continue,
                [] => {
                    let m = format!("needs one of {}", kinds.join(", "));
                    self.fail(n.pos, &f, m);
                    continue;
                }
                [_, (_, second, _), ..] => {
                    let m = format!("give only one of {}", kinds.join(", "));
                    self.fail(second.pos, &f, m);
                    continue;
                }
            };
            let value = match kind {
                "file" => node.scalar_text().ok_or_else(|| "expected a path".to_string()).and_then(|path| {
                    if Path::new(&path).is_absolute() {
                        return Err(format!("{what} file \"{path}\" must be a relative path inside the source"));
                    }
                    self.in_tree(Path::new(&path))
                        .map_err(|e| format!("{what} file \"{path}\": {e}"))
                        .and_then(|(_, real)| self.text_file(&real))
                        .map(String::into_bytes)
                }),
                "environment" => match node.scalar_text() {
                    Some(var) => vars.get(&var).map(|v| v.clone().into_bytes()).ok_or_else(|| {
                        format!("the variable \"{var}\" is not set (in moor's environment or the env file)")
                    }),
                    None => Err("expected the name of a variable".to_string()),
                },
                _ => node
                    .scalar_text()
                    .map(String::into_bytes)
                    .ok_or_else(|| format!("expected the text of the config, found {}", node.value.kind())),
            };
            let value = match value {
                Ok(v) if v.len() > MAX_SECRET_SIZE => {
                    Err(format!("the value is larger than {MAX_SECRET_SIZE} bytes"))
                }
                other => other,
            };
            match value {
                Ok(value) => {
                    // Secrets and configs are two namespaces in Compose.
                    let name = if table == "secrets" {
                        k.name.to_string()
                    } else {
                        format!("config:{}", k.name)
                    };
                    self.declare_secret(&name, value);
                    out.insert(
                        k.name.to_string(),
                        FileEntry {
                            declared: Some(name),
                        },
                    );
                }
                Err(e) => self.fail(node.pos, &vf, e),
            }
        }
        out
    }
}

/// A file mode as Compose reads it: `0440` and `0o440` are octal (YAML 1.1,
/// as docker-compose reads it, and 1.2), as is a string; any other number
/// is taken as it is (`288` is `0o440`).
fn file_mode(n: &Node) -> Result<u32, String> {
    let octal = |s: &str| u32::from_str_radix(s, 8).ok();
    let mode = match &n.value {
        Value::Int(i) => match n.raw.as_deref() {
            Some(r) if r.starts_with("0o") => octal(&r[2..]),
            Some(r)
                if r.len() > 1 && r.starts_with('0') && r.bytes().all(|b| b.is_ascii_digit()) =>
            {
                octal(&r[1..])
            }
            _ => u32::try_from(*i).ok(),
        },
        Value::Str(s) => octal(s.strip_prefix("0o").unwrap_or(s)),
        _ => None,
    };
    mode.filter(|m| *m <= 0o777)
        .ok_or_else(|| "expected a file mode from 0 to 0o777, like 0440".to_string())
}

/// Sets `resources.KEY`; `deploy`'s limits win over `mem_limit`, `cpus`
/// and `pids_limit`, wherever they are written.
fn set(resources: &mut Vec<(Key, Node)>, k: Key, v: Node, from_deploy: bool) {
    match resources.iter().position(|(r, _)| r.name == k.name) {
        Some(i) if from_deploy => resources[i] = (k, v),
        Some(_) => {}
        None => resources.push((k, v)),
    }
}
