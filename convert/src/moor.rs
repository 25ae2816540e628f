//! A [`DesiredState`] in moor's own manifest format (TOML or YAML).
//!
//! Every field is written from the normalised model, so loading the output
//! gives the same resources with the same spec hashes. Two things have no
//! spelling once normalised: `env_file` (its values are written into `env`)
//! and secrets, a Compose file's secrets and configs among them (a note
//! each: their values are never written out).

use std::path::Path;
use std::time::Duration;

use moor_spec::{
    ContainerSpec, DependCondition, DesiredState, HealthTest, MountSource, NetworkMode,
    RestartPolicy, UpdateOrder,
};

use crate::{Doc, Note, host_path};

/// `d` Go-style, as moor and Compose read it: `30s`, `500ms`.
pub fn duration(d: Duration) -> String {
    let n = d.as_nanos();
    if n.is_multiple_of(1_000_000_000) {
        format!("{}s", n / 1_000_000_000)
    } else if n.is_multiple_of(1_000_000) {
        format!("{}ms", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}us", n / 1_000)
    } else {
        format!("{n}ns")
    }
}

/// A size in bytes with the largest exact binary unit: `64m`, `1g`, `1000`.
pub fn size(bytes: u64) -> String {
    for (shift, unit) in [(40, "t"), (30, "g"), (20, "m"), (10, "k")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// `restart = …`
pub fn restart(r: &RestartPolicy) -> String {
    match r {
        RestartPolicy::No => "no".into(),
        RestartPolicy::OnFailure { max_retries: None } => "on-failure".into(),
        RestartPolicy::OnFailure {
            max_retries: Some(n),
        } => format!("on-failure:{n}"),
        RestartPolicy::Always => "always".into(),
        RestartPolicy::UnlessStopped => "unless-stopped".into(),
    }
}

fn condition(c: DependCondition) -> &'static str {
    match c {
        DependCondition::Started => "started",
        DependCondition::Healthy => "healthy",
        DependCondition::Completed => "completed",
    }
}

/// The state as a document of moor's four tables; `base` is the directory
/// the output will be read from (bind sources under it are written
/// relative to it, so their content still counts in the spec hash).
pub fn document(state: &DesiredState, base: &Path, notes: &mut Vec<Note>) -> Doc {
    let mut doc = Doc::map();
    for (name, r) in &state.images {
        let e = doc.entry("images").entry(name);
        e.set("ref", Doc::s(r.spec.reference.to_string()));
        if let Some(b) = &r.spec.build {
            // A built image is never pulled: `pull` beside `build` is refused.
            e.set("build", crate::build_doc(b, base));
            continue;
        }
        let pull = match r.spec.pull {
            moor_spec::PullPolicy::Always => "always",
            moor_spec::PullPolicy::IfNotPresent => "if-not-present",
            moor_spec::PullPolicy::Never => "never",
        };
        e.set("pull", Doc::s(pull));
        if let Some(v) = &r.spec.verify {
            let mut d = Doc::map();
            d.set("key", Doc::s(crate::host_path(&v.key, base)));
            e.set("verify", d);
        }
    }
    for (name, r) in &state.networks {
        let e = doc.entry("networks").entry(name);
        let s = &r.spec;
        if let Some(subnet) = s.subnet {
            e.set("subnet", Doc::s(subnet.to_string()));
        }
        if let Some(gw) = s.gateway {
            e.set("gateway", Doc::s(gw.to_string()));
        }
        if s.internal {
            e.set("internal", Doc::Bool(true));
        }
        if !s.labels.is_empty() {
            e.set("labels", Doc::str_map(&s.labels));
        }
    }
    for (name, r) in &state.volumes {
        let e = doc.entry("volumes").entry(name);
        if r.spec.prune {
            e.set("prune", Doc::Bool(true));
        }
        if !r.spec.labels.is_empty() {
            e.set("labels", Doc::str_map(&r.spec.labels));
        }
    }
    for (name, r) in &state.containers {
        let c = container(&r.spec, base);
        doc.entry("containers").set(name, c);
    }
    for (kind, name, target) in targets(state) {
        if target {
            notes.push(Note::new(
                &format!("{kind}.{name}"),
                "target",
                "the output holds what this host runs; its target is not written",
            ));
        }
    }
    doc
}

fn targets(state: &DesiredState) -> Vec<(&'static str, &String, bool)> {
    let mut out = Vec::new();
    out.extend(
        state
            .images
            .iter()
            .map(|(n, r)| ("images", n, r.target.is_some())),
    );
    out.extend(
        state
            .networks
            .iter()
            .map(|(n, r)| ("networks", n, r.target.is_some())),
    );
    out.extend(
        state
            .volumes
            .iter()
            .map(|(n, r)| ("volumes", n, r.target.is_some())),
    );
    out.extend(
        state
            .containers
            .iter()
            .map(|(n, r)| ("containers", n, r.target.is_some())),
    );
    out
}

/// The health check as moor writes it: `{ cmd | http | tcp, interval, … }`.
pub fn healthcheck(h: &moor_spec::Healthcheck) -> Doc {
    let mut d = Doc::map();
    match &h.test {
        HealthTest::Cmd(argv) => d.set("cmd", Doc::strs(argv)),
        HealthTest::Http(url) => d.set("http", Doc::s(url)),
        HealthTest::Tcp(addr) => d.set("tcp", Doc::s(addr)),
    };
    d.set("interval", Doc::s(duration(h.interval)));
    d.set("timeout", Doc::s(duration(h.timeout)));
    d.set("retries", Doc::Int(h.retries.into()));
    d.set("start_period", Doc::s(duration(h.start_period)));
    d
}

fn container(s: &ContainerSpec, base: &Path) -> Doc {
    let mut c = Doc::map();
    let image = s.image_entry.clone().unwrap_or_else(|| s.image.to_string());
    c.set("image", Doc::s(image));
    if let Some(e) = &s.entrypoint {
        c.set("entrypoint", Doc::strs(e));
    }
    if let Some(cmd) = &s.command {
        c.set("command", Doc::strs(cmd));
    }
    if !s.env.is_empty() {
        c.set("env", Doc::str_map(&s.env));
    }
    if let Some(w) = &s.working_dir {
        c.set("working_dir", Doc::s(w));
    }
    if let Some(u) = &s.user {
        c.set("user", Doc::s(u));
    }
    if let Some(h) = &s.hostname {
        c.set("hostname", Doc::s(h));
    }
    if !s.labels.is_empty() {
        c.set("labels", Doc::str_map(&s.labels));
    }
    match &s.network_mode {
        NetworkMode::Bridge => {}
        NetworkMode::Host => {
            c.set("network_mode", Doc::s("host"));
        }
        NetworkMode::None => {
            c.set("network_mode", Doc::s("none"));
        }
        NetworkMode::Container(other) => {
            c.set("network_mode", Doc::s(format!("container:{other}")));
        }
    }
    if s.networks
        .iter()
        .all(|a| a.aliases.is_empty() && a.ipv4_address.is_none())
    {
        if !s.networks.is_empty() {
            c.set("networks", Doc::strs(s.networks.iter().map(|a| &a.network)));
        }
    } else {
        let mut nets = Doc::map();
        for a in &s.networks {
            let mut n = Doc::map();
            if !a.aliases.is_empty() {
                n.set("aliases", Doc::strs(&a.aliases));
            }
            if let Some(ip) = a.ipv4_address {
                n.set("ipv4_address", Doc::s(ip.to_string()));
            }
            nets.set(&a.network, n);
        }
        c.set("networks", nets);
    }
    if !s.ports.is_empty() {
        c.set("ports", Doc::strs(s.ports.iter().map(|p| p.to_string())));
    }
    if !s.mounts.is_empty() {
        let mut mounts = Vec::new();
        for m in &s.mounts {
            let mut d = Doc::map();
            match &m.source {
                MountSource::Volume { name } => {
                    d.set("type", Doc::s("volume"));
                    d.set("source", Doc::s(name));
                }
                MountSource::Bind { source, .. } => {
                    d.set("type", Doc::s("bind"));
                    d.set("source", Doc::s(host_path(source, base)));
                }
                MountSource::Tmpfs { size: sz } => {
                    d.set("type", Doc::s("tmpfs"));
                    if let Some(sz) = sz {
                        d.set("size", Doc::s(size(*sz)));
                    }
                }
            }
            d.set("target", Doc::s(&m.target));
            if m.read_only {
                d.set("read_only", Doc::Bool(true));
            }
            mounts.push(d);
        }
        c.set("mounts", Doc::List(mounts));
    }
    if s.restart != RestartPolicy::No {
        c.set("restart", Doc::s(restart(&s.restart)));
    }
    if s.init {
        c.set("init", Doc::Bool(true));
    }
    let r = &s.resources;
    if r.memory.is_some() || r.cpus.is_some() || r.pids.is_some() {
        let mut d = Doc::map();
        if let Some(m) = r.memory {
            d.set("memory", Doc::s(size(m)));
        }
        if let Some(cpus) = r.cpus {
            d.set("cpus", Doc::Float(cpus));
        }
        if let Some(p) = r.pids {
            d.set("pids", Doc::Int(p as i64));
        }
        c.set("resources", d);
    }
    if let Some(h) = &s.healthcheck {
        c.set("healthcheck", healthcheck(h));
    }
    if !s.depends_on.is_empty() {
        let mut d = Doc::map();
        for (dep, cond) in &s.depends_on {
            d.set(dep, Doc::s(condition(*cond)));
        }
        c.set("depends_on", d);
    }
    if s.stop_signal != "SIGTERM" {
        c.set("stop_signal", Doc::s(&s.stop_signal));
    }
    if s.stop_grace_period != Duration::from_secs(10) {
        c.set("stop_grace_period", Doc::s(duration(s.stop_grace_period)));
    }
    if s.read_only {
        c.set("read_only", Doc::Bool(true));
    }
    if !s.cap_add.is_empty() {
        c.set("cap_add", Doc::strs(&s.cap_add));
    }
    if !s.cap_drop.is_empty() {
        c.set("cap_drop", Doc::strs(&s.cap_drop));
    }
    if !s.seccomp.is_default() {
        c.set("seccomp", Doc::s("unconfined"));
    }
    if !s.extra_hosts.is_empty() {
        c.set(
            "extra_hosts",
            Doc::strs(s.extra_hosts.iter().map(|(h, ip)| format!("{h}:{ip}"))),
        );
    }
    if s.replicas != 1 {
        c.set("replicas", Doc::Int(s.replicas.into()));
    }
    if s.update_order == UpdateOrder::StartFirst {
        c.set("update_order", Doc::s("start-first"));
    }
    c
}
