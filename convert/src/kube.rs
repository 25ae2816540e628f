//! A [`DesiredState`] as Kubernetes objects (`moor export kubernetes`).
//!
//! Start at [`export`]. Each container becomes a Deployment (a StatefulSet
//! with a volumeClaimTemplate when it mounts a named volume only it uses; a
//! Job when another container waits for it to complete) and a Service
//! named after it, so that peers find it by the name they used under moor.
//! moor's network isolation becomes NetworkPolicies: every pod is labelled
//! with its networks, a default-deny policy selects every pod of the
//! project, and one policy per network lets in traffic from the pods on
//! it. What has no faithful mapping (host paths, the host's network,
//! static addresses…) is a [`Note`] naming the resource and field;
//! [`Options::strict`] makes the export fail on any.
//!
//! Output is stable: objects in name order, keys in a fixed order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use moor_spec::{
    ContainerSpec, DependCondition, DesiredState, HealthTest, MountSource, NetworkMode, PullPolicy,
    RestartPolicy,
};
use sha2::{Digest, Sha256};

use crate::{Doc, Note};

/// The label that puts a pod on a moor network: `network.moor.dev/NAME`.
pub const NETWORK_LABEL: &str = "network.moor.dev/";
/// The image of the init containers that wait for a dependency.
pub const WAIT_IMAGE: &str = "docker.io/library/busybox:1.36";
/// The size of a claim for a named volume (moor's volumes have none).
pub const CLAIM_SIZE: &str = "1Gi";
/// The largest ConfigMap or Secret Kubernetes stores.
const MAX_OBJECT_DATA: usize = 1 << 20;

/// How published ports are exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// Only inside the cluster.
    #[default]
    ClusterIp,
    /// On every node's port (the host port when it is in 30000–32767).
    NodePort,
    /// Through the cluster's load balancer, on the host port.
    LoadBalancer,
}

impl ServiceType {
    fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// What [`export`] is asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `metadata.namespace` of every object, if any.
    pub namespace: Option<String>,
    /// The `app.kubernetes.io/part-of` label: the project.
    pub project: String,
    /// How published ports are exposed.
    pub service_type: ServiceType,
    /// The directory of the source: bind sources under it become
    /// ConfigMaps (or Secrets, under `/run/secrets/`), others host paths.
    pub base: PathBuf,
    /// Fail on anything without a faithful mapping.
    pub strict: bool,
}

/// One object: its file name (`deployment-web.yaml`) and its YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `KIND-NAME.yaml`, lower case.
    pub file: String,
    /// The object.
    pub doc: Doc,
}

/// The objects of an export and what they could not say.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// Every object, sorted by file name.
    pub objects: Vec<Object>,
    /// What has no faithful mapping.
    pub warnings: Vec<Note>,
}

impl Export {
    /// Every object as one YAML stream (`---` between documents).
    pub fn stream(&self) -> String {
        let mut out = String::new();
        for o in &self.objects {
            out.push_str("---\n");
            out.push_str(&o.doc.to_yaml());
        }
        out
    }
}

/// Why an export failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportError {
    /// `--strict`, and these have no faithful mapping.
    Strict(Vec<Note>),
    /// A name that cannot be a Kubernetes name.
    BadName(String),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Strict(notes) => {
                write!(
                    f,
                    "{} field(s) have no faithful Kubernetes mapping",
                    notes.len()
                )?;
                for n in notes {
                    write!(f, "\n  {n}")?;
                }
                Ok(())
            }
            ExportError::BadName(n) => write!(f, "\"{n}\" cannot be a Kubernetes name"),
        }
    }
}

impl std::error::Error for ExportError {}

/// Whether `s` is a DNS-1035 label: what Service names must be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `raw` as a DNS-1035 label of at most `max` characters: lower case,
/// other characters as `-`, a leading `x-` when it does not start with a
/// letter, and the first 8 hex digits of its sha256 when it had to change
/// in a way that could collide (or be cut).
pub fn dns_name(raw: &str, max: usize) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.insert_str(0, "x-");
    }
    let lossy = s != raw && s != format!("x-{raw}");
    if lossy || s.len() > max {
        let sum = hex::encode(Sha256::digest(raw.as_bytes()));
        s.truncate(max.saturating_sub(9));
        let s = s.trim_end_matches('-').to_string();
        return format!("{s}-{}", &sum[..8]);
    }
    s.trim_end_matches('-').to_string()
}

fn int(n: impl TryInto<i64>) -> Doc {
    Doc::Int(n.try_into().unwrap_or(i64::MAX))
}

/// Seconds, rounded up, at least `min`.
fn seconds(d: std::time::Duration, min: u64) -> Doc {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    int(s.max(min))
}

struct Ctx<'a> {
    state: &'a DesiredState,
    opts: &'a Options,
    notes: Vec<Note>,
    objects: BTreeMap<String, Doc>,
    /// Containers' Kubernetes names, by moor name.
    names: BTreeMap<String, String>,
    /// Which containers mount each named volume.
    volume_users: BTreeMap<String, BTreeSet<String>>,
    /// ConfigMaps and Secrets made from bind sources, by source.
    files: BTreeMap<PathBuf, FileObject>,
    /// Secrets made (without their values) for `[secrets]` entries.
    secrets: BTreeSet<String>,
}

#[derive(Clone)]
struct FileObject {
    kind: &'static str,
    name: String,
    /// Key of the file when the source is a file.
    key: Option<String>,
}

impl Ctx<'_> {
    fn warn(&mut self, resource: &str, field: &str, message: impl Into<String>) {
        self.notes.push(Note::new(resource, field, message));
    }

    fn metadata(&self, name: &str, labels: Doc) -> Doc {
        let mut m = Doc::map();
        m.set("name", Doc::s(name));
        if let Some(ns) = &self.opts.namespace {
            m.set("namespace", Doc::s(ns));
        }
        m.set("labels", labels);
        m
    }

    fn labels(&self, component: Option<&str>) -> Doc {
        let mut l = Doc::map();
        if let Some(c) = component {
            l.set("app.kubernetes.io/name", Doc::s(c));
        }
        l.set("app.kubernetes.io/part-of", Doc::s(&self.opts.project));
        l.set("app.kubernetes.io/managed-by", Doc::s("moor"));
        l
    }

    /// The selector of one container's pods.
    fn selector(&self, name: &str) -> Doc {
        let mut l = Doc::map();
        l.set("app.kubernetes.io/name", Doc::s(name));
        l.set("app.kubernetes.io/part-of", Doc::s(&self.opts.project));
        l
    }

    fn add(&mut self, kind: &str, name: &str, spec_fields: Vec<(&str, Doc)>, labels: Doc) {
        let api = match kind {
            "Deployment" | "StatefulSet" => "apps/v1",
            "Job" => "batch/v1",
            "NetworkPolicy" => "networking.k8s.io/v1",
            _ => "v1",
        };
        let mut d = Doc::map();
        d.set("apiVersion", Doc::s(api));
        d.set("kind", Doc::s(kind));
        d.set("metadata", self.metadata(name, labels));
        for (k, v) in spec_fields {
            d.set(k, v);
        }
        let file = format!("{}-{name}.yaml", kind.to_ascii_lowercase());
        if self.objects.contains_key(&file) {
            // Two resources whose names differ only where Kubernetes
            // names cannot (`web-published` the container, and the
            // published Service of `web`): the first is kept.
            self.warn(
                &format!("{kind} {name}"),
                "",
                "two objects get this name; the second is not exported (rename one of the resources)",
            );
            return;
        }
        self.objects.insert(file, d);
    }
}

/// The networks a container's pod is labelled with: its own, the implicit
/// `default` when it names none, or those of the container whose network
/// it shares.
fn pod_networks(state: &DesiredState, spec: &ContainerSpec, depth: usize) -> Vec<String> {
    match &spec.network_mode {
        NetworkMode::Bridge if spec.networks.is_empty() => vec!["default".into()],
        NetworkMode::Bridge => spec.networks.iter().map(|a| a.network.clone()).collect(),
        NetworkMode::Container(other) if depth < 8 => state
            .containers
            .get(other)
            .map(|r| pod_networks(state, &r.spec, depth + 1))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Exports `state` as Kubernetes objects.
pub fn export(state: &DesiredState, opts: &Options) -> Result<Export, ExportError> {
    if !is_dns_label(&opts.project) {
        return Err(ExportError::BadName(opts.project.clone()));
    }
    if let Some(ns) = &opts.namespace
        && !is_dns_label(ns)
    {
        return Err(ExportError::BadName(ns.clone()));
    }
    let mut cx = Ctx {
        state,
        opts,
        notes: Vec::new(),
        objects: BTreeMap::new(),
        names: BTreeMap::new(),
        volume_users: BTreeMap::new(),
        files: BTreeMap::new(),
        secrets: BTreeSet::new(),
    };
    for (name, r) in &state.containers {
        cx.names.insert(name.clone(), dns_name(name, 50));
        for m in &r.spec.mounts {
            if let MountSource::Volume { name: v } = &m.source {
                cx.volume_users
                    .entry(v.clone())
                    .or_default()
                    .insert(name.clone());
            }
        }
    }
    for (name, k) in cx.names.clone() {
        if k != name {
            cx.warn(
                &format!("containers.{name}"),
                "",
                format!("is \"{k}\" in Kubernetes (names there are DNS-1035 labels): peers must use that name"),
            );
        }
    }
    for (name, r) in &state.networks {
        let s = &r.spec;
        if s.subnet.is_some() || s.gateway.is_some() {
            cx.warn(
                &format!("networks.{name}"),
                "subnet",
                "the cluster's network assigns addresses; not exported",
            );
        }
    }
    for (name, r) in &state.images {
        if r.spec.verify.is_some() {
            cx.warn(
                &format!("images.{name}"),
                "verify",
                "Kubernetes checks image signatures with an admission policy (Sigstore's policy-controller, Kyverno), not in the workload: not exported, so nothing checks the signature there",
            );
        }
    }
    volumes(&mut cx);
    for (name, r) in &state.containers {
        workload(&mut cx, name, &r.spec);
    }
    policies(&mut cx);
    let mut warnings = cx.notes;
    warnings.sort();
    warnings.dedup();
    if opts.strict && !warnings.is_empty() {
        return Err(ExportError::Strict(warnings));
    }
    let objects = cx
        .objects
        .into_iter()
        .map(|(file, doc)| Object { file, doc })
        .collect();
    Ok(Export { objects, warnings })
}

/// Whether a volume gets a claim of its own (shared by several containers,
/// or by replicas) rather than a StatefulSet's claim template.
fn shared_volume(cx: &Ctx<'_>, volume: &str) -> bool {
    cx.volume_users.get(volume).is_some_and(|users| {
        users.len() > 1
            || users
                .iter()
                .any(|u| cx.state.containers[u].spec.replicas > 1)
    })
}

fn claim_spec(access: &str) -> Doc {
    let mut spec = Doc::map();
    spec.set("accessModes", Doc::strs([access]));
    let mut req = Doc::map();
    req.set("storage", Doc::s(CLAIM_SIZE));
    spec.entry("resources").set("requests", req);
    spec
}

/// A PersistentVolumeClaim for each volume shared between containers.
fn volumes(cx: &mut Ctx<'_>) {
    for name in cx.state.volumes.keys() {
        if !shared_volume(cx, name) {
            continue;
        }
        let users: Vec<String> = cx.volume_users[name].iter().cloned().collect();
        cx.warn(
            &format!("volumes.{name}"),
            "",
            format!(
                "is shared by {} (or their replicas): its claim asks for ReadWriteMany, which the storage class must offer",
                users.join(", ")
            ),
        );
        let k = dns_name(name, 63);
        let mut labels = cx.labels(None);
        labels.set("app.kubernetes.io/component", Doc::s("volume"));
        cx.add(
            "PersistentVolumeClaim",
            &k,
            vec![("spec", claim_spec("ReadWriteMany"))],
            labels,
        );
    }
}

/// A file or directory bind source under the source as a ConfigMap (or a
/// Secret when mounted under `/run/secrets/`).
fn file_object(
    cx: &mut Ctx<'_>,
    resource: &str,
    field: &str,
    source: &Path,
    secret: bool,
) -> Option<FileObject> {
    if let Some(f) = cx.files.get(source) {
        return Some(f.clone());
    }
    let base = moor_spec::tree::normalize(&cx.opts.base);
    let rel = source.strip_prefix(&base).ok()?;
    // The source, with its links resolved, must still be inside the
    // source's tree: a link out of it is a host path, never read.
    let real_base = std::fs::canonicalize(&base).ok()?;
    let real = std::fs::canonicalize(source).ok()?;
    if !real.starts_with(&real_base) {
        return None;
    }
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut total: u64 = 0;
    // Reads one regular file, refusing to read past what an object holds.
    let read = |p: &Path, total: &mut u64| -> Option<Vec<u8>> {
        let len = std::fs::symlink_metadata(p).ok()?.len();
        *total = total.saturating_add(len);
        if *total > MAX_OBJECT_DATA as u64 {
            return None;
        }
        std::fs::read(p).ok()
    };
    let key = if real.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&real)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for p in names {
            let file_name = p.file_name()?.to_string_lossy().into_owned();
            // Not followed: inside a container a link resolves in the
            // container, so its target here means nothing (or a host file).
            let is_file = std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file());
            if is_file {
                match read(&p, &mut total) {
                    Some(data) => entries.push((file_name, data)),
                    None => break,
                }
            } else {
                cx.warn(
                    resource,
                    field,
                    format!(
                        "{} holds {file_name}, which is not a regular file: a ConfigMap holds files only; left out",
                        rel.display()
                    ),
                );
            }
        }
        None
    } else if real.is_file() {
        let file_name = source.file_name()?.to_string_lossy().into_owned();
        if let Some(data) = read(&real, &mut total) {
            entries.push((file_name.clone(), data));
        }
        Some(file_name)
    } else {
        return None;
    };
    if total > MAX_OBJECT_DATA as u64 {
        cx.warn(
            resource,
            field,
            format!(
                "{} holds more than Kubernetes keeps in one object (1 MiB): mounted from the host instead",
                rel.display()
            ),
        );
        return None;
    }
    let kind = if secret { "Secret" } else { "ConfigMap" };
    let prefix = if secret { "secret" } else { "file" };
    let name = dns_name(
        &format!(
            "{prefix}-{}",
            rel.to_string_lossy().replace(['/', '.', '_'], "-")
        ),
        63,
    );
    let mut data = Doc::map();
    let mut binary = Doc::map();
    let mut keys = Vec::new();
    for (k, v) in entries {
        let ok_key = !k.is_empty()
            && k.len() <= 253
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok_key {
            cx.warn(
                resource,
                field,
                format!("\"{k}\" cannot be a {kind} key; left out"),
            );
            continue;
        }
        keys.push(k.clone());
        if secret {
            data.set(&k, Doc::s(base64(&v)));
        } else {
            match String::from_utf8(v) {
                Ok(s) => {
                    data.set(&k, Doc::s(s));
                }
                Err(e) => {
                    binary.set(&k, Doc::s(base64(e.as_bytes())));
                }
            }
        }
    }
    let mut fields = Vec::new();
    if secret {
        fields.push(("type", Doc::s("Opaque")));
    }
    if !data.is_empty() {
        fields.push(("data", data));
    }
    if !binary.is_empty() {
        fields.push(("binaryData", binary));
    }
    let labels = cx.labels(None);
    cx.add(kind, &name, fields, labels);
    let f = FileObject {
        kind,
        name,
        key: key.filter(|k| keys.contains(k)),
    };
    cx.files.insert(source.to_path_buf(), f.clone());
    Some(f)
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A Kubernetes quantity of bytes: `64Mi`, `1Gi`, `1000`.
fn bytes(n: u64) -> String {
    for (shift, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A health check as a readiness probe.
fn probe(cx: &mut Ctx<'_>, resource: &str, h: &moor_spec::Healthcheck) -> Doc {
    let mut p = Doc::map();
    match &h.test {
        HealthTest::Cmd(argv) => {
            let mut e = Doc::map();
            e.set("command", Doc::strs(argv));
            p.set("exec", e);
        }
        HealthTest::Http(url) => {
            let (scheme, rest) = match url.split_once("://") {
                Some((s, r)) => (s.to_ascii_uppercase(), r),
                None => ("HTTP".to_string(), url.as_str()),
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(':') => (h, p.parse::<u16>().ok()),
                _ => (authority, None),
            };
            let port = port.unwrap_or(if scheme == "HTTPS" { 443 } else { 80 });
            let mut g = Doc::map();
            g.set("path", Doc::s(path));
            g.set("port", int(port));
            if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
                cx.warn(
                    resource,
                    "healthcheck.http",
                    format!("the probe asks the pod, not {host}"),
                );
            }
            g.set("scheme", Doc::s(scheme));
            p.set("httpGet", g);
        }
        HealthTest::Tcp(addr) => {
            let port = addr.rsplit(':').next().unwrap_or(addr);
            let mut t = Doc::map();
            t.set("port", int(port.parse::<u16>().unwrap_or(1)));
            if let Some((host, _)) = addr.rsplit_once(':')
                && !matches!(host, "localhost" | "127.0.0.1" | "")
            {
                cx.warn(
                    resource,
                    "healthcheck.tcp",
                    format!("the probe connects to the pod, not {host}"),
                );
            }
            p.set("tcpSocket", t);
        }
    }
    if h.start_period.as_secs() > 0 {
        p.set("initialDelaySeconds", seconds(h.start_period, 0));
    }
    p.set("periodSeconds", seconds(h.interval, 1));
    p.set("timeoutSeconds", seconds(h.timeout, 1));
    p.set("failureThreshold", int(h.retries.max(1)));
    p
}

/// The Job a container becomes when others wait for it to complete.
fn is_job(cx: &Ctx<'_>, name: &str) -> bool {
    cx.state
        .containers
        .values()
        .any(|r| r.spec.depends_on.get(name) == Some(&DependCondition::Completed))
}

fn workload(cx: &mut Ctx<'_>, name: &str, s: &ContainerSpec) {
    let k = cx.names[name].clone();
    let res = format!("containers.{name}");
    let mut c = Doc::map();
    c.set("name", Doc::s(&k));
    c.set("image", Doc::s(s.image.to_string()));
    let pull = s
        .image_entry
        .as_ref()
        .and_then(|e| cx.state.images.get(e))
        .map(|i| i.spec.pull)
        .unwrap_or_default();
    c.set(
        "imagePullPolicy",
        Doc::s(match pull {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }),
    );
    if let Some(e) = &s.entrypoint {
        c.set("command", Doc::strs(e));
    }
    if let Some(cmd) = &s.command {
        c.set("args", Doc::strs(cmd));
    }
    if let Some(w) = &s.working_dir {
        c.set("workingDir", Doc::s(w));
    }
    // The environment: a ConfigMap the pod reads whole, with the names a
    // ConfigMap cannot hold written inline.
    if !s.env.is_empty() {
        let mut data = Doc::map();
        let mut inline = Vec::new();
        for (ek, ev) in &s.env {
            let ok = ek
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if ok {
                data.set(ek, Doc::s(ev));
            } else {
                let mut e = Doc::map();
                e.set("name", Doc::s(ek));
                e.set("value", Doc::s(ev));
                inline.push(e);
            }
        }
        if !inline.is_empty() {
            c.set("env", Doc::List(inline));
        }
        if !data.is_empty() {
            let cm = dns_name(&format!("env-{k}"), 63);
            let labels = cx.labels(Some(&k));
            cx.add("ConfigMap", &cm, vec![("data", data)], labels);
            let mut r = Doc::map();
            r.entry("configMapRef").set("name", Doc::s(cm));
            c.set("envFrom", Doc::List(vec![r]));
        }
    }
    // Ports.
    if !s.ports.is_empty() {
        let mut seen = BTreeSet::new();
        let mut ports = Vec::new();
        for p in &s.ports {
            if seen.insert((p.container_port, p.protocol)) {
                let mut d = Doc::map();
                d.set("containerPort", int(p.container_port));
                d.set(
                    "protocol",
                    Doc::s(p.protocol.to_string().to_ascii_uppercase()),
                );
                ports.push(d);
            }
        }
        c.set("ports", Doc::List(ports));
    }
    // Resources.
    let r = &s.resources;
    if r.memory.is_some() || r.cpus.is_some() {
        let mut l = Doc::map();
        if let Some(cpus) = r.cpus {
            l.set(
                "cpu",
                Doc::s(format!("{}m", (cpus * 1000.0).round() as u64)),
            );
        }
        if let Some(m) = r.memory {
            l.set("memory", Doc::s(bytes(m)));
        }
        c.entry("resources").set("limits", l);
    }
    if r.pids.is_some() {
        cx.warn(
            &res,
            "resources.pids",
            "a pod's process limit is the kubelet's setting, not the pod's; not exported",
        );
    }
    if let Some(h) = &s.healthcheck {
        let p = probe(cx, &res, h);
        c.set("readinessProbe", p);
    }
    // Mounts.
    let mut vol_mounts = Vec::new();
    let mut pod_volumes = Vec::new();
    let mut claims = Vec::new();
    for (i, m) in s.mounts.iter().enumerate() {
        // Mounts are sorted by target: the target names one.
        let field = format!("mounts[{}]", m.target);
        let mut vm = Doc::map();
        let mut vol = Doc::map();
        let vname;
        match &m.source {
            MountSource::Volume { name: v } => {
                vname = dns_name(&format!("vol-{v}"), 63);
                if shared_volume(cx, v) {
                    vol.set("name", Doc::s(&vname));
                    vol.entry("persistentVolumeClaim")
                        .set("claimName", Doc::s(dns_name(v, 63)));
                    pod_volumes.push(vol);
                } else if !claims.iter().any(|(n, _)| n == &vname) {
                    claims.push((vname.clone(), v.clone()));
                }
            }
            MountSource::Bind { source, .. } => {
                vname = format!("bind-{i}");
                let secret = m.target.starts_with("/run/secrets/");
                match file_object(cx, &res, &field, source, secret) {
                    Some(f) => {
                        vol.set("name", Doc::s(&vname));
                        let (key, ref_key) = if f.kind == "Secret" {
                            ("secret", "secretName")
                        } else {
                            ("configMap", "name")
                        };
                        vol.entry(key).set(ref_key, Doc::s(&f.name));
                        if let Some(k) = &f.key {
                            vm.set("subPath", Doc::s(k));
                        }
                        pod_volumes.push(vol);
                        if !m.read_only {
                            cx.warn(
                                &res,
                                &field,
                                format!(
                                    "{} is written to under moor; a {} is read-only",
                                    m.target, f.kind
                                ),
                            );
                        }
                    }
                    None => {
                        cx.warn(
                            &res,
                            &field,
                            format!(
                                "host path {} has no faithful mapping: mounted as a hostPath of whichever node runs the pod",
                                source.display()
                            ),
                        );
                        vol.set("name", Doc::s(&vname));
                        vol.entry("hostPath")
                            .set("path", Doc::s(source.display().to_string()));
                        pod_volumes.push(vol);
                    }
                }
            }
            MountSource::Tmpfs { size } => {
                vname = format!("tmpfs-{i}");
                vol.set("name", Doc::s(&vname));
                let ed = vol.entry("emptyDir");
                ed.set("medium", Doc::s("Memory"));
                if let Some(sz) = size {
                    ed.set("sizeLimit", Doc::s(bytes(*sz)));
                }
                pod_volumes.push(vol);
            }
        }
        vm.set("name", Doc::s(&vname));
        vm.set("mountPath", Doc::s(&m.target));
        if m.read_only {
            vm.set("readOnly", Doc::Bool(true));
        }
        // subPath goes after name for readability.
        if let Doc::Map(e) = &mut vm
            && let Some(i) = e.iter().position(|(k, _)| k == "subPath")
        {
            let sp = e.remove(i);
            e.push(sp);
        }
        vol_mounts.push(vm);
    }
    // moor's secrets: a Secret each, named after it and written without its
    // value (never exported), mounted where moor mounts it with its mode.
    for (i, sm) in s.secrets.iter().enumerate() {
        let field = format!("secrets[{}]", sm.source);
        let name = dns_name(&format!("secret-{}", sm.source), 63);
        if cx.secrets.insert(name.clone()) {
            let labels = cx.labels(None);
            cx.add("Secret", &name, vec![("type", Doc::s("Opaque"))], labels);
        }
        cx.warn(
            &res,
            &field,
            format!(
                "the Secret {name} is written without its value: fill it before the pod can start \
                 (kubectl create secret generic {name} --from-file={}=FILE)",
                sm.source
            ),
        );
        let vname = format!("secret-{i}");
        let file = sm
            .target
            .rsplit('/')
            .next()
            .filter(|f| !f.is_empty())
            .unwrap_or(sm.source.as_str())
            .to_string();
        let mut item = Doc::map();
        item.set("key", Doc::s(&sm.source));
        item.set("path", Doc::s(&file));
        item.set("mode", Doc::Int(i64::from(sm.mode)));
        let mut vol = Doc::map();
        vol.set("name", Doc::s(&vname));
        let sec = vol.entry("secret");
        sec.set("secretName", Doc::s(&name));
        sec.set("items", Doc::List(vec![item]));
        pod_volumes.push(vol);
        let mut vm = Doc::map();
        vm.set("name", Doc::s(&vname));
        vm.set("mountPath", Doc::s(&sm.target));
        vm.set("readOnly", Doc::Bool(true));
        vm.set("subPath", Doc::s(&file));
        vol_mounts.push(vm);
        if sm.uid.is_some() || sm.gid.is_some() {
            cx.warn(
                &res,
                &format!("{field}.uid"),
                "a Secret volume's files belong to the pod's fsGroup, not a uid of their own",
            );
        }
    }
    if !vol_mounts.is_empty() {
        c.set("volumeMounts", Doc::List(vol_mounts));
    }
    // Security.
    let mut sc = Doc::map();
    sc.set("allowPrivilegeEscalation", Doc::Bool(false));
    if let Some(u) = &s.user {
        let (user, group) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        match user.parse::<u32>() {
            Ok(uid) => {
                sc.set("runAsUser", int(uid));
            }
            Err(_) => cx.warn(
                &res,
                "user",
                format!(
                    "Kubernetes takes a numeric user; \"{user}\" is left to the image's /etc/passwd"
                ),
            ),
        }
        if let Some(g) = group {
            match g.parse::<u32>() {
                Ok(gid) => {
                    sc.set("runAsGroup", int(gid));
                }
                Err(_) => cx.warn(
                    &res,
                    "user",
                    format!("Kubernetes takes a numeric group; \"{g}\" is not exported"),
                ),
            }
        }
    }
    if s.read_only {
        sc.set("readOnlyRootFilesystem", Doc::Bool(true));
    }
    if !s.cap_add.is_empty() || !s.cap_drop.is_empty() {
        let strip = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|c| c.strip_prefix("CAP_").unwrap_or(c).to_string())
                .collect()
        };
        let mut caps = Doc::map();
        if !s.cap_add.is_empty() {
            caps.set("add", Doc::strs(strip(&s.cap_add)));
        }
        if !s.cap_drop.is_empty() {
            caps.set("drop", Doc::strs(strip(&s.cap_drop)));
        }
        sc.set("capabilities", caps);
    }
    let mut seccomp = Doc::map();
    seccomp.set(
        "type",
        Doc::s(if s.seccomp.is_default() {
            "RuntimeDefault"
        } else {
            "Unconfined"
        }),
    );
    sc.set("seccompProfile", seccomp);
    c.set("securityContext", sc);
    if s.init {
        cx.warn(
            &res,
            "init",
            "Kubernetes runs no reaping init for a container; the image's entrypoint is PID 1",
        );
    }
    if s.stop_signal != "SIGTERM" && s.stop_signal != "15" {
        cx.warn(
            &res,
            "stop_signal",
            format!("pods are stopped with SIGTERM, not {}", s.stop_signal),
        );
    }
    // The pod.
    let mut pod = Doc::map();
    let init = wait_containers(cx, name, s);
    if !init.is_empty() {
        pod.set("initContainers", Doc::List(init));
    }
    pod.set("containers", Doc::List(vec![c]));
    if !pod_volumes.is_empty() {
        pod.set("volumes", Doc::List(pod_volumes));
    }
    match &s.network_mode {
        NetworkMode::Bridge => {}
        NetworkMode::Host => {
            cx.warn(&res, "network_mode", "the host's network has no faithful mapping: hostNetwork puts the pod on whichever node's network runs it");
            pod.set("hostNetwork", Doc::Bool(true));
        }
        NetworkMode::None => {}
        NetworkMode::Container(other) => {
            cx.warn(&res, "network_mode", format!("containers of two pods cannot share a network namespace: the pod gets its own, on the networks of {other}"));
        }
    }
    for a in &s.networks {
        if a.ipv4_address.is_some() {
            cx.warn(
                &res,
                &format!("networks.{}.ipv4_address", a.network),
                "the cluster's network assigns addresses; not exported",
            );
        }
        if !a.aliases.is_empty() {
            cx.warn(
                &res,
                &format!("networks.{}.aliases", a.network),
                "a pod answers to its Service's name only; aliases are not exported",
            );
        }
    }
    if let Some(h) = &s.hostname {
        match dns_name(h, 63) == *h {
            true => {
                pod.set("hostname", Doc::s(h));
            }
            false => cx.warn(
                &res,
                "hostname",
                format!("\"{h}\" is not a DNS label; not exported"),
            ),
        }
    }
    if !s.extra_hosts.is_empty() {
        let mut by_ip: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (h, ip) in &s.extra_hosts {
            by_ip.entry(ip.to_string()).or_default().push(h.clone());
        }
        let aliases = by_ip
            .into_iter()
            .map(|(ip, hosts)| {
                let mut d = Doc::map();
                d.set("ip", Doc::s(ip));
                d.set("hostnames", Doc::strs(hosts));
                d
            })
            .collect();
        pod.set("hostAliases", Doc::List(aliases));
    }
    pod.set(
        "terminationGracePeriodSeconds",
        seconds(s.stop_grace_period, 0),
    );
    let job = is_job(cx, name);
    let restart = match (job, s.restart) {
        (true, RestartPolicy::OnFailure { .. }) => "OnFailure",
        (true, _) => "Never",
        (false, _) => "Always",
    };
    pod.set("restartPolicy", Doc::s(restart));
    // Pod labels: the selector, the networks.
    let mut pod_labels = cx.selector(&k);
    pod_labels.set("app.kubernetes.io/managed-by", Doc::s("moor"));
    for n in pod_networks(cx.state, s, 0) {
        pod_labels.set(
            &format!("{NETWORK_LABEL}{}", dns_name(&n, 63)),
            Doc::s("true"),
        );
    }
    let mut meta = Doc::map();
    meta.set("labels", pod_labels);
    let annotations = annotations(cx, &res, &s.labels);
    if !annotations.is_empty() {
        meta.set("annotations", annotations);
    }
    let mut template = Doc::map();
    template.set("metadata", meta);
    template.set("spec", pod);
    let labels = cx.labels(Some(&k));
    let mut spec = Doc::map();
    if job {
        if let RestartPolicy::OnFailure {
            max_retries: Some(n),
        } = s.restart
        {
            spec.set("backoffLimit", int(n));
        } else if s.restart == RestartPolicy::No {
            spec.set("backoffLimit", int(0));
        }
        spec.set("template", template);
        if s.replicas != 1 {
            cx.warn(
                &res,
                "replicas",
                "a Job runs once; replicas are not exported",
            );
        }
        cx.add("Job", &k, vec![("spec", spec)], labels);
    } else {
        spec.set("replicas", int(s.replicas));
        let mut sel = Doc::map();
        sel.set("matchLabels", cx.selector(&k));
        spec.set("selector", sel);
        if claims.is_empty() {
            if s.update_order == moor_spec::UpdateOrder::StopFirst {
                spec.entry("strategy").set("type", Doc::s("Recreate"));
            } else {
                let mut ru = Doc::map();
                ru.set("maxSurge", int(1));
                ru.set("maxUnavailable", int(0));
                let st = spec.entry("strategy");
                st.set("type", Doc::s("RollingUpdate"));
                st.set("rollingUpdate", ru);
            }
            spec.set("template", template);
            cx.add("Deployment", &k, vec![("spec", spec)], labels);
        } else {
            spec.set("serviceName", Doc::s(&k));
            spec.set("template", template);
            let mut templates = Vec::new();
            for (vname, _) in &claims {
                let mut t = Doc::map();
                let mut m = Doc::map();
                m.set("name", Doc::s(vname));
                m.set("labels", cx.labels(None));
                t.set("metadata", m);
                t.set("spec", claim_spec("ReadWriteOnce"));
                templates.push(t);
            }
            spec.set("volumeClaimTemplates", Doc::List(templates));
            cx.add("StatefulSet", &k, vec![("spec", spec)], labels);
        }
    }
    services(cx, name, &k, s);
}

/// Container labels as pod annotations (the keys Kubernetes accepts).
fn annotations(cx: &mut Ctx<'_>, res: &str, labels: &BTreeMap<String, String>) -> Doc {
    let mut a = Doc::map();
    for (k, v) in labels {
        if qualified_name(k) {
            a.set(k, Doc::s(v));
        } else {
            cx.warn(
                res,
                &format!("labels.{k}"),
                "is not a Kubernetes annotation key; not exported",
            );
        }
    }
    a
}

/// A Kubernetes qualified name: `[prefix/]name`, the name 1–63 characters
/// of `[A-Za-z0-9-_.]` starting and ending alphanumeric, the prefix a DNS
/// subdomain.
fn qualified_name(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    name_ok && prefix_ok
}

/// Init containers that wait until each dependency's Service answers.
fn wait_containers(cx: &mut Ctx<'_>, name: &str, s: &ContainerSpec) -> Vec<Doc> {
    let mut out = Vec::new();
    for (dep, cond) in &s.depends_on {
        let Some(d) = cx.state.containers.get(dep) else {
            continue;
        };
        let dk = cx.names[dep].clone();
        let script = match cond {
            DependCondition::Completed => {
                cx.warn(
                    &format!("containers.{name}"),
                    &format!("depends_on.{dep}"),
                    format!("waiting for the Job {dk} to complete needs the Kubernetes API; the pod starts without waiting"),
                );
                continue;
            }
            // A Service routes only to ready pods, and the headless one of
            // a container without ports resolves only those.
            _ => match d.spec.ports.first() {
                Some(p) if p.protocol == moor_spec::Protocol::Tcp => format!(
                    "until nc -z -w 2 {dk} {}; do echo waiting for {dk}; sleep 2; done",
                    p.container_port
                ),
                _ => format!("until nslookup {dk}; do echo waiting for {dk}; sleep 2; done"),
            },
        };
        let mut c = Doc::map();
        c.set("name", Doc::s(dns_name(&format!("wait-{dk}"), 63)));
        c.set("image", Doc::s(WAIT_IMAGE));
        c.set("command", Doc::strs(["sh", "-c", script.as_str()]));
        let mut sc = Doc::map();
        sc.set("allowPrivilegeEscalation", Doc::Bool(false));
        sc.set("readOnlyRootFilesystem", Doc::Bool(true));
        c.set("securityContext", sc);
        out.push(c);
    }
    out
}

/// The Service named after the container (its ports, or headless), and
/// one of the chosen type for its published ports.
fn services(cx: &mut Ctx<'_>, name: &str, k: &str, s: &ContainerSpec) {
    let res = format!("containers.{name}");
    let mut internal = Vec::new();
    let mut published = Vec::new();
    let mut seen = BTreeSet::new();
    for p in &s.ports {
        let proto = p.protocol.to_string().to_ascii_uppercase();
        if seen.insert((p.container_port, p.protocol)) {
            let mut d = Doc::map();
            d.set(
                "name",
                Doc::s(format!("{}-{}", p.protocol, p.container_port)),
            );
            d.set("port", int(p.container_port));
            d.set("targetPort", int(p.container_port));
            d.set("protocol", Doc::s(&proto));
            internal.push(d);
        }
        let loopback = p.host_ip.is_some_and(|ip| ip.is_loopback());
        if loopback || cx.opts.service_type == ServiceType::ClusterIp {
            continue;
        }
        let Some(host_port) = p.host_port else {
            continue;
        };
        let mut d = Doc::map();
        d.set("name", Doc::s(format!("{}-{host_port}", p.protocol)));
        d.set("port", int(host_port));
        d.set("targetPort", int(p.container_port));
        d.set("protocol", Doc::s(&proto));
        if cx.opts.service_type == ServiceType::NodePort {
            if (30000..=32767).contains(&host_port) {
                d.set("nodePort", int(host_port));
            } else {
                cx.warn(&res, "ports", format!("host port {host_port} is outside the NodePort range (30000-32767): the cluster picks the node port"));
            }
        }
        if p.host_ip.is_some_and(|ip| !ip.is_unspecified()) {
            cx.warn(
                &res,
                "ports",
                format!("{p} binds one host address; the Service listens on all"),
            );
        }
        published.push(d);
    }
    let mut spec = Doc::map();
    if internal.is_empty() {
        spec.set("clusterIP", Doc::s("None"));
    } else {
        spec.set("type", Doc::s("ClusterIP"));
    }
    spec.set("selector", cx.selector(k));
    if !internal.is_empty() {
        spec.set("ports", Doc::List(internal));
    }
    let labels = cx.labels(Some(k));
    cx.add("Service", k, vec![("spec", spec)], labels);
    if !published.is_empty() {
        let mut spec = Doc::map();
        spec.set("type", Doc::s(cx.opts.service_type.as_str()));
        spec.set("selector", cx.selector(k));
        spec.set("ports", Doc::List(published));
        let labels = cx.labels(Some(k));
        let pk = dns_name(&format!("{k}-published"), 63);
        cx.add("Service", &pk, vec![("spec", spec)], labels);
    }
}

/// moor's isolation: deny by default, allow within each network, let in
/// published ports from anywhere, and keep pods whose networks are all
/// internal from reaching out.
fn policies(cx: &mut Ctx<'_>) {
    let mut all = Doc::map();
    all.set("app.kubernetes.io/part-of", Doc::s(&cx.opts.project));
    all.set("app.kubernetes.io/managed-by", Doc::s("moor"));
    let mut deny = Doc::map();
    deny.entry("podSelector").set("matchLabels", all);
    deny.set("policyTypes", Doc::strs(["Ingress"]));
    let labels = cx.labels(None);
    cx.add(
        "NetworkPolicy",
        "moor-default-deny",
        vec![("spec", deny)],
        labels,
    );
    let mut networks: BTreeSet<String> = BTreeSet::new();
    for r in cx.state.containers.values() {
        networks.extend(pod_networks(cx.state, &r.spec, 0));
    }
    for n in &networks {
        let label = format!("{NETWORK_LABEL}{}", dns_name(n, 63));
        let mut on = Doc::map();
        on.set(&label, Doc::s("true"));
        let mut peer = Doc::map();
        peer.entry("podSelector").set("matchLabels", on.clone());
        let mut rule = Doc::map();
        rule.set("from", Doc::List(vec![peer.clone()]));
        let mut spec = Doc::map();
        spec.entry("podSelector").set("matchLabels", on.clone());
        spec.set("policyTypes", Doc::strs(["Ingress"]));
        spec.set("ingress", Doc::List(vec![rule]));
        let labels = cx.labels(None);
        let pname = dns_name(&format!("moor-network-{n}"), 63);
        cx.add("NetworkPolicy", &pname, vec![("spec", spec)], labels);
    }
    for (name, r) in &cx.state.containers {
        let s = &r.spec;
        let k = cx.names[name].clone();
        let nets = pod_networks(cx.state, s, 0);
        let published: BTreeSet<(u16, String)> = s
            .ports
            .iter()
            .filter(|p| {
                p.host_port.is_some()
                    && !p.host_ip.is_some_and(|ip| ip.is_loopback())
                    && cx.opts.service_type != ServiceType::ClusterIp
            })
            .map(|p| {
                (
                    p.container_port,
                    p.protocol.to_string().to_ascii_uppercase(),
                )
            })
            .collect();
        if !published.is_empty() {
            let ports = published
                .iter()
                .map(|(p, proto)| {
                    let mut d = Doc::map();
                    d.set("protocol", Doc::s(proto));
                    d.set("port", int(*p));
                    d
                })
                .collect();
            let mut rule = Doc::map();
            rule.set("ports", Doc::List(ports));
            let mut spec = Doc::map();
            spec.entry("podSelector")
                .set("matchLabels", cx.selector(&k));
            spec.set("policyTypes", Doc::strs(["Ingress"]));
            spec.set("ingress", Doc::List(vec![rule]));
            let labels = cx.labels(Some(&k));
            let pname = dns_name(&format!("{k}-published"), 63);
            cx.add("NetworkPolicy", &pname, vec![("spec", spec)], labels);
        }
        let all_internal = !nets.is_empty()
            && nets
                .iter()
                .all(|n| cx.state.networks.get(n).is_some_and(|r| r.spec.internal));
        let isolated = matches!(s.network_mode, NetworkMode::None);
        if all_internal || isolated {
            // Out only to pods on its networks, and to the cluster's DNS.
            let mut egress = Vec::new();
            let mut to = Vec::new();
            for n in &nets {
                let mut on = Doc::map();
                on.set(
                    &format!("{NETWORK_LABEL}{}", dns_name(n, 63)),
                    Doc::s("true"),
                );
                let mut peer = Doc::map();
                peer.entry("podSelector").set("matchLabels", on);
                to.push(peer);
            }
            if !to.is_empty() {
                let mut rule = Doc::map();
                rule.set("to", Doc::List(to));
                egress.push(rule);
                let mut dns = Doc::map();
                let ports = ["UDP", "TCP"]
                    .iter()
                    .map(|proto| {
                        let mut d = Doc::map();
                        d.set("protocol", Doc::s(*proto));
                        d.set("port", int(53));
                        d
                    })
                    .collect();
                dns.set("ports", Doc::List(ports));
                egress.push(dns);
            }
            let mut spec = Doc::map();
            spec.entry("podSelector")
                .set("matchLabels", cx.selector(&k));
            spec.set("policyTypes", Doc::strs(["Egress"]));
            spec.set("egress", Doc::List(egress));
            let labels = cx.labels(Some(&k));
            let pname = dns_name(&format!("{k}-egress"), 63);
            cx.add("NetworkPolicy", &pname, vec![("spec", spec)], labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_name("web", 63), "web");
        assert_eq!(dns_name("9lives", 63), "x-9lives");
        let a = dns_name("my_app", 63);
        let b = dns_name("my-app", 63);
        assert_ne!(a, b);
        assert!(a.starts_with("my-app-") && is_dns_label(&a), "{a}");
        let long = dns_name(&"a".repeat(80), 63);
        assert!(long.len() <= 63 && is_dns_label(&long), "{long}");
    }

    #[test]
    fn base64_matches_the_rfc() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn qualified_names() {
        assert!(qualified_name("traefik.http.routers.x.rule"));
        assert!(qualified_name("example.com/tier"));
        assert!(!qualified_name("-bad"));
        assert!(!qualified_name("Example.com/x"));
    }
}
