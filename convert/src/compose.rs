//! A [`DesiredState`] as a Compose file (`compose.yaml`).
//!
//! Written in the Compose Specification's long forms where they say more
//! (`volumes`, `depends_on`), so that `docker compose config` reads the
//! file and moor reads it back to the same spec hashes. Every string is
//! written with `$` doubled, as Compose would otherwise interpolate it.
//!
//! What Compose cannot say is a [`Note`]: `[images]` entries that are
//! pulled (a built image is the `build` of the services that run it; a service
//! names its reference; the pull policy is lost), a volume's `prune`, and
//! `http`/`tcp` health checks (written as `CMD-SHELL` probes with `wget`
//! and `nc`, which the image must have).

use std::path::Path;

use moor_spec::{
    DependCondition, DesiredState, HealthTest, MountSource, NetworkMode, RestartPolicy, UpdateOrder,
};

use crate::moor::{duration, restart, size};
use crate::{Doc, Note, host_path};

/// Doubles every `$` of every string value (not keys) under `d`.
fn escape(d: &mut Doc) {
    match d {
        Doc::Str(s) if s.contains('$') => *s = s.replace('$', "$$"),
        Doc::List(items) => items.iter_mut().for_each(escape),
        Doc::Map(e) => e.iter_mut().for_each(|(_, v)| escape(v)),
        _ => {}
    }
}

/// The state as a Compose document; `base` is the directory the file will
/// be read from.
pub fn document(state: &DesiredState, base: &Path, notes: &mut Vec<Note>) -> Doc {
    let mut doc = Doc::map();
    for (name, r) in &state.images {
        if r.spec.build.is_some() {
            // Written as the `build` of the services that run it.
            continue;
        }
        notes.push(Note::new(
            &format!("images.{name}"),
            "",
            "Compose has no image entries: services name the reference, and the pull policy is not written",
        ));
        if r.spec.verify.is_some() {
            notes.push(Note::new(
                &format!("images.{name}"),
                "verify",
                "Compose does not check image signatures: not written, so nothing checks the signature there",
            ));
        }
    }
    let mut services = Doc::map();
    for (name, r) in &state.containers {
        let s = &r.spec;
        let mut c = Doc::map();
        c.set("image", Doc::s(s.image.to_string()));
        // An image the manifests build: the service builds it, as Compose
        // does when a service has both `image` and `build`.
        if let Some(b) = state
            .images
            .values()
            .find(|i| i.spec.reference == s.image)
            .and_then(|i| i.spec.build.as_ref())
        {
            if Path::new(&host_path(&b.context, base)).is_absolute() {
                notes.push(Note::new(
                    &format!("containers.{name}"),
                    "build.context",
                    "the build context is outside the output's directory: written as an absolute path, which Compose reads and moor does not (write the output beside the context to read it back)",
                ));
            }
            c.set("build", crate::build_doc(b, base));
        }
        if let Some(e) = &s.entrypoint {
            c.set("entrypoint", Doc::strs(e));
        }
        if let Some(cmd) = &s.command {
            c.set("command", Doc::strs(cmd));
        }
        if !s.env.is_empty() {
            c.set("environment", Doc::str_map(&s.env));
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
                c.set("network_mode", Doc::s(format!("service:{other}")));
            }
        }
        if s.networks.is_empty()
            && s.network_mode == NetworkMode::Bridge
            && state.networks.contains_key("default")
        {
            notes.push(Note::new(
                &format!("containers.{name}"),
                "networks",
                "Compose puts a service without networks on the file's `default` network, which the manifests declare; moor's implicit default network cannot be written",
            ));
        }
        if !s.networks.is_empty() {
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
            if s.networks.len() > 1 {
                notes.push(Note::new(
                    &format!("containers.{name}"),
                    "networks",
                    "Compose does not say which network carries the default route; moor reads the order written",
                ));
            }
        }
        if !s.ports.is_empty() {
            c.set("ports", Doc::strs(s.ports.iter().map(|p| p.to_string())));
        }
        if !s.mounts.is_empty() {
            let mut vols = Vec::new();
            for m in &s.mounts {
                let mut d = Doc::map();
                match &m.source {
                    MountSource::Volume { name } => {
                        d.set("type", Doc::s("volume"));
                        d.set("source", Doc::s(name));
                        d.set("target", Doc::s(&m.target));
                    }
                    MountSource::Bind { source, .. } => {
                        d.set("type", Doc::s("bind"));
                        d.set("source", Doc::s(host_path(source, base)));
                        d.set("target", Doc::s(&m.target));
                    }
                    MountSource::Tmpfs { size: sz } => {
                        d.set("type", Doc::s("tmpfs"));
                        d.set("target", Doc::s(&m.target));
                        if let Some(sz) = sz {
                            let mut t = Doc::map();
                            t.set("size", Doc::Int(*sz as i64));
                            d.set("tmpfs", t);
                        }
                    }
                }
                if m.read_only {
                    d.set("read_only", Doc::Bool(true));
                }
                vols.push(d);
            }
            c.set("volumes", Doc::List(vols));
        }
        if s.restart != RestartPolicy::No {
            c.set("restart", Doc::s(restart(&s.restart)));
        }
        if s.init {
            c.set("init", Doc::Bool(true));
        }
        if let Some(h) = &s.healthcheck {
            let mut d = Doc::map();
            let test = match &h.test {
                HealthTest::Cmd(argv) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(argv.iter().cloned());
                    t
                }
                HealthTest::Http(url) => {
                    notes.push(Note::new(
                        &format!("containers.{name}"),
                        "healthcheck.http",
                        "Compose has no HTTP check: written as a wget command, which the image must have",
                    ));
                    vec![
                        "CMD".into(),
                        "wget".into(),
                        "-q".into(),
                        "-O".into(),
                        "/dev/null".into(),
                        url.clone(),
                    ]
                }
                HealthTest::Tcp(addr) => {
                    notes.push(Note::new(
                        &format!("containers.{name}"),
                        "healthcheck.tcp",
                        "Compose has no TCP check: written as an nc command, which the image must have",
                    ));
                    let (host, port) = match addr.rsplit_once(':') {
                        Some((h, p)) => (h.to_string(), p.to_string()),
                        None => ("localhost".to_string(), addr.clone()),
                    };
                    vec!["CMD".into(), "nc".into(), "-z".into(), host, port]
                }
            };
            d.set("test", Doc::strs(test));
            d.set("interval", Doc::s(duration(h.interval)));
            d.set("timeout", Doc::s(duration(h.timeout)));
            d.set("retries", Doc::Int(h.retries.into()));
            d.set("start_period", Doc::s(duration(h.start_period)));
            c.set("healthcheck", d);
        }
        if !s.depends_on.is_empty() {
            let mut d = Doc::map();
            for (dep, cond) in &s.depends_on {
                let cond = match cond {
                    DependCondition::Started => "service_started",
                    DependCondition::Healthy => "service_healthy",
                    DependCondition::Completed => "service_completed_successfully",
                };
                let mut e = Doc::map();
                e.set("condition", Doc::s(cond));
                d.set(dep, e);
            }
            c.set("depends_on", d);
        }
        if s.stop_signal != "SIGTERM" {
            c.set("stop_signal", Doc::s(&s.stop_signal));
        }
        if s.stop_grace_period != std::time::Duration::from_secs(10) {
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
            c.set("security_opt", Doc::strs(["seccomp:unconfined"]));
        }
        if !s.extra_hosts.is_empty() {
            c.set(
                "extra_hosts",
                Doc::strs(s.extra_hosts.iter().map(|(h, ip)| format!("{h}:{ip}"))),
            );
        }
        if let Some(p) = s.resources.pids {
            c.set("pids_limit", Doc::Int(p as i64));
        }
        let mut deploy = Doc::map();
        if s.replicas != 1 {
            deploy.set("replicas", Doc::Int(s.replicas.into()));
        }
        let mut limits = Doc::map();
        if let Some(cpus) = s.resources.cpus {
            limits.set("cpus", Doc::s(format!("{cpus}")));
        }
        if let Some(m) = s.resources.memory {
            limits.set("memory", Doc::s(size(m)));
        }
        if !limits.is_empty() {
            deploy.entry("resources").set("limits", limits);
        }
        if s.update_order == UpdateOrder::StartFirst {
            deploy
                .entry("update_config")
                .set("order", Doc::s("start-first"));
        }
        if !deploy.is_empty() {
            c.set("deploy", deploy);
        }
        services.set(name, c);
    }
    doc.set("services", services);
    if !state.networks.is_empty() {
        let mut nets = Doc::map();
        for (name, r) in &state.networks {
            let s = &r.spec;
            let mut n = Doc::map();
            if s.internal {
                n.set("internal", Doc::Bool(true));
            }
            if !s.labels.is_empty() {
                n.set("labels", Doc::str_map(&s.labels));
            }
            if s.subnet.is_some() || s.gateway.is_some() {
                let mut cfg = Doc::map();
                if let Some(subnet) = s.subnet {
                    cfg.set("subnet", Doc::s(subnet.to_string()));
                }
                if let Some(gw) = s.gateway {
                    cfg.set("gateway", Doc::s(gw.to_string()));
                }
                n.entry("ipam").set("config", Doc::List(vec![cfg]));
            }
            nets.set(name, n);
        }
        doc.set("networks", nets);
    }
    if !state.volumes.is_empty() {
        let mut vols = Doc::map();
        for (name, r) in &state.volumes {
            let mut v = Doc::map();
            if !r.spec.labels.is_empty() {
                v.set("labels", Doc::str_map(&r.spec.labels));
            }
            if r.spec.prune {
                notes.push(Note::new(
                    &format!("volumes.{name}"),
                    "prune",
                    "Compose has no prune policy; not written",
                ));
            }
            vols.set(name, v);
        }
        doc.set("volumes", vols);
    }
    escape(&mut doc);
    doc
}
