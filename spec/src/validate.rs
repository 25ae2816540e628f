//! Checks across resources and files, then the final, hashed [`DesiredState`].

use std::collections::{BTreeMap, HashMap};

use crate::decode::{ContainerDraft, Declared, Drafts, Elsewhere};
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{
    ContainerSpec, DependCondition, DesiredState, Kind, NetworkMode, Origin, Resource,
};
use crate::mounts::MountSource;
use crate::node::Pos;

struct Checker<'e> {
    diags: Diagnostics,
    /// What the load left out because it targets other hosts.
    elsewhere: &'e Elsewhere,
}

impl Checker<'_> {
    fn error(
        &mut self,
        origin_file: &std::path::Path,
        pos: Pos,
        field: &str,
        message: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::error(origin_file, pos, field, message));
    }
}

/// Cross-checks the drafts of a whole load (already filtered for one host,
/// if the load is for one; `elsewhere` holds what was left out). Returns the
/// desired state, or every problem found (together with `diags` from decoding).
pub(crate) fn finish(
    drafts: Drafts,
    diags: Diagnostics,
    elsewhere: &Elsewhere,
) -> Result<DesiredState, Diagnostics> {
    let mut c = Checker { diags, elsewhere };
    duplicates(&mut c, &drafts.declared);
    overlapping_subnets(&mut c, &drafts);

    let mut state = DesiredState::default();
    for d in drafts.images {
        let hash = crate::hash::image(&d.spec);
        state.images.entry(d.name.clone()).or_insert(Resource {
            name: d.name,
            origin: d.origin,
            spec: d.spec,
            hash,
            target: d.target,
        });
    }
    for d in drafts.networks {
        let hash = crate::hash::network(&d.spec);
        state.networks.entry(d.name.clone()).or_insert(Resource {
            name: d.name,
            origin: d.origin,
            spec: d.spec,
            hash,
            target: d.target,
        });
    }
    for d in drafts.volumes {
        let hash = crate::hash::volume(&d.spec);
        state.volumes.entry(d.name.clone()).or_insert(Resource {
            name: d.name,
            origin: d.origin,
            spec: d.spec,
            hash,
            target: d.target,
        });
    }

    // Every declaration is checked, duplicates too, so that one run reports everything.
    let mut drafts_c = drafts.containers;
    for d in &mut drafts_c {
        resolve_image(&mut c, d, &state);
        references(&mut c, d, &state);
    }
    let mut containers: BTreeMap<String, ContainerDraft> = BTreeMap::new();
    let mut repeated = Vec::new();
    for d in drafts_c {
        if containers.contains_key(&d.d.name) {
            repeated.push(d);
        } else {
            containers.insert(d.d.name.clone(), d);
        }
    }
    let names: Vec<String> = containers.keys().cloned().collect();
    for d in containers.values().chain(&repeated) {
        container_references(&mut c, d, &names, &containers);
    }
    port_conflicts(&mut c, &containers);
    cycles(&mut c, &containers);

    if !c.diags.is_empty() {
        c.diags.sort();
        return Err(c.diags);
    }
    for (name, d) in containers {
        let mut spec = d.d.spec;
        spec.ports.sort();
        spec.mounts.sort();
        let hash = crate::hash::container(&spec);
        state.containers.insert(
            name.clone(),
            Resource {
                name,
                origin: d.d.origin,
                spec,
                hash,
                target: d.d.target,
            },
        );
    }
    Ok(state)
}

fn duplicates(c: &mut Checker, declared: &[Declared]) {
    let mut first: HashMap<(Kind, &str), &Origin> = HashMap::new();
    for Declared {
        kind, name, origin, ..
    } in declared
    {
        match first.get(&(*kind, name.as_str())) {
            Some(prev) => c.error(
                &origin.file,
                origin.pos,
                &format!("{}.{name}", kind.table()),
                format!("{kind} \"{name}\" is defined twice: here and at {prev}"),
            ),
            None => {
                first.insert((*kind, name), origin);
            }
        }
    }
}

fn overlapping_subnets(c: &mut Checker, drafts: &Drafts) {
    let mut nets: Vec<_> = drafts
        .networks
        .iter()
        .filter_map(|d| d.spec.subnet.map(|s| (s, d)))
        .collect();
    nets.sort_by_key(|(s, d)| {
        (
            s.network(),
            s.prefix_len(),
            d.origin.file.clone(),
            d.origin.pos,
        )
    });
    // CIDR blocks are either nested or disjoint: sweeping in address order,
    // a block overlaps an earlier one exactly when it starts before the
    // furthest end seen so far.
    let mut widest: Option<(
        ipnet::Ipv4Net,
        &crate::decode::Draft<crate::model::NetworkSpec>,
    )> = None;
    for (net, d) in nets {
        if let Some((prev, pd)) = widest
            && prev.contains(&net.network())
        {
            c.error(
                &d.origin.file,
                d.loc("subnet"),
                &d.field("subnet"),
                format!(
                    "subnet {net} overlaps subnet {prev} of network \"{}\" ({})",
                    pd.name, pd.origin
                ),
            );
            continue;
        }
        if widest.is_none_or(|(prev, _)| net.broadcast() > prev.broadcast()) {
            widest = Some((net, d));
        }
    }
}

fn resolve_image(c: &mut Checker, d: &mut ContainerDraft, state: &DesiredState) {
    let Some((raw, pos)) = d.image_raw.clone() else {
        return;
    };
    if let Some(entry) = state.images.get(&raw) {
        d.d.spec.image = entry.spec.reference.clone();
        d.d.spec.image_entry = Some(raw);
        return;
    }
    // A name that would have been an [images] entry, had the entry been for
    // this host, must not quietly become a Docker Hub reference instead.
    if let Some(m) = c.elsewhere.explain(Kind::Image, &raw) {
        c.error(&d.d.origin.file, pos, &d.d.field("image"), m);
        return;
    }
    match crate::reference::parse(&raw) {
        Ok(r) => {
            d.d.spec.image_entry = state
                .images
                .values()
                .find(|i| i.spec.reference == r)
                .map(|i| i.name.clone());
            d.d.spec.image = r;
        }
        Err(e) => {
            // Only a bare word could have been meant as an [images] entry.
            let entry_like = !raw.is_empty() && !raw.contains(['/', ':', '@']);
            let message = if state.images.is_empty() || !entry_like {
                e
            } else {
                let hint =
                    crate::decode::did_you_mean(&raw, state.images.keys().map(String::as_str))
                        .map(|h| format!("; did you mean \"{h}\"?"))
                        .unwrap_or_default();
                format!("{e}, and it is not the name of an [images] entry{hint}")
            };
            c.error(&d.d.origin.file, pos, &d.d.field("image"), message);
        }
    }
}

fn references(c: &mut Checker, d: &ContainerDraft, state: &DesiredState) {
    let spec = &d.d.spec;
    let file = &d.d.origin.file;
    for (a, (entry, ipv4_pos)) in spec.networks.iter().zip(&d.network_locs) {
        let ipv4_pos = ipv4_pos.unwrap_or(d.d.origin.pos);
        match state.networks.get(&a.network) {
            None => {
                let field = d.entry_field("networks", entry, &a.network);
                if let Some(m) = c.elsewhere.explain(Kind::Network, &a.network) {
                    c.error(file, entry.pos, &field, m);
                    continue;
                }
                let hint = crate::decode::did_you_mean(
                    &a.network,
                    state.networks.keys().map(String::as_str),
                )
                .map(|h| format!("; did you mean \"{h}\"?"))
                .unwrap_or_default();
                c.error(
                    file,
                    entry.pos,
                    &field,
                    format!(
                        "network \"{}\" is not defined under [networks]{hint}",
                        a.network
                    ),
                );
            }
            Some(net) => {
                if let (Some(ip), Some(subnet)) = (a.ipv4_address, net.spec.subnet) {
                    let key = format!("networks.{}.ipv4_address", a.network);
                    let gateway = net.spec.gateway.or_else(|| subnet.hosts().next());
                    if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
                        c.error(
                            file,
                            ipv4_pos,
                            &d.d.field(&key),
                            format!(
                                "address {ip} is not a host address of network \"{}\" ({subnet})",
                                a.network
                            ),
                        );
                    } else if Some(ip) == gateway {
                        c.error(
                            file,
                            ipv4_pos,
                            &d.d.field(&key),
                            format!("address {ip} is the gateway of network \"{}\"", a.network),
                        );
                    }
                }
            }
        }
    }
    for (m, entry) in spec.mounts.iter().zip(&d.mount_locs) {
        if let MountSource::Volume { name } = &m.source
            && !state.volumes.contains_key(name)
        {
            let field = d.entry_field("mounts", entry, name);
            let pos = entry.pos;
            if let Some(m) = c.elsewhere.explain(Kind::Volume, name) {
                c.error(file, pos, &field, m);
                continue;
            }
            let hint = crate::decode::did_you_mean(name, state.volumes.keys().map(String::as_str))
                .map(|h| format!("; did you mean \"{h}\"?"))
                .unwrap_or_default();
            c.error(
                file,
                pos,
                &field,
                format!("volume \"{name}\" is not defined under [volumes]{hint}"),
            );
        }
    }
    // Ports and networks belong to a network namespace of the container's
    // own; reported at the field that has to go.
    let (mode, ports_hint) = match &spec.network_mode {
        NetworkMode::Bridge => (None, String::new()),
        NetworkMode::Host => (
            Some("host".to_string()),
            "; the container already listens on the host's ports".to_string(),
        ),
        NetworkMode::None => (Some("none".to_string()), String::new()),
        NetworkMode::Container(t) => (
            Some(format!("container:{t}")),
            format!("; publish them on \"{t}\""),
        ),
    };
    if let Some(mode) = mode {
        if !spec.networks.is_empty() {
            let m = format!("cannot be combined with network_mode \"{mode}\"");
            c.error(file, d.d.loc("networks"), &d.d.field("networks"), m);
        }
        if !spec.ports.is_empty() {
            let m = format!("cannot be combined with network_mode \"{mode}\"{ports_hint}");
            c.error(file, d.d.loc("ports"), &d.d.field("ports"), m);
        }
    }
    if spec.replicas > 1 {
        if let Some(entry) = spec
            .ports
            .iter()
            .zip(&d.port_locs)
            .find(|(p, _)| p.host_port.is_some())
            .map(|(_, l)| l)
        {
            c.error(
                file,
                entry.pos,
                &d.entry_field("ports", entry, ""),
                format!(
                    "a fixed host port cannot be published by {} replicas; leave the host port out",
                    spec.replicas
                ),
            );
        }
        for (a, (_, ipv4_pos)) in spec.networks.iter().zip(&d.network_locs) {
            if a.ipv4_address.is_some() {
                let key = format!("networks.{}.ipv4_address", a.network);
                c.error(
                    file,
                    ipv4_pos.unwrap_or(d.d.origin.pos),
                    &d.d.field(&key),
                    format!(
                        "a fixed address cannot be given to {} replicas",
                        spec.replicas
                    ),
                );
            }
        }
    }
}

fn container_references(
    c: &mut Checker,
    d: &ContainerDraft,
    names: &[String],
    all: &BTreeMap<String, ContainerDraft>,
) {
    let spec: &ContainerSpec = &d.d.spec;
    let file = &d.d.origin.file;
    let unknown = |name: &str| {
        let hint = crate::decode::did_you_mean(name, names.iter().map(String::as_str))
            .map(|h| format!("; did you mean \"{h}\"?"))
            .unwrap_or_default();
        format!("container \"{name}\" is not defined under [containers]{hint}")
    };
    for ((dep, cond), entry) in spec.depends_on.iter().zip(&d.depends_locs) {
        let pos = entry.pos;
        let field = || d.entry_field("depends_on", entry, dep);
        if dep == &d.d.name {
            c.error(file, pos, &field(), "a container cannot depend on itself");
            continue;
        }
        match all.get(dep) {
            None => {
                let m = c.elsewhere.explain(Kind::Container, dep);
                c.error(file, pos, &field(), m.unwrap_or_else(|| unknown(dep)));
            }
            Some(target) => {
                if *cond == DependCondition::Healthy && target.d.spec.healthcheck.is_none() {
                    c.error(
                        file,
                        pos,
                        &field(),
                        format!(
                            "waits for \"{dep}\" to be healthy, but \"{dep}\" has no healthcheck"
                        ),
                    );
                }
            }
        }
    }
    if let NetworkMode::Container(target) = &spec.network_mode {
        let pos = d.d.loc("network_mode");
        let field = d.d.field("network_mode");
        if target == &d.d.name {
            c.error(
                file,
                pos,
                &field,
                "a container cannot share its own network namespace",
            );
        } else if !all.contains_key(target) {
            let m = c.elsewhere.explain(Kind::Container, target);
            c.error(file, pos, &field, m.unwrap_or_else(|| unknown(target)));
        }
    }
}

fn port_conflicts(c: &mut Checker, all: &BTreeMap<String, ContainerDraft>) {
    let mut by_port: HashMap<(u16, crate::ports::Protocol), Vec<(&ContainerDraft, usize)>> =
        HashMap::new();
    // Ports of a container without a network namespace of its own are
    // reported as such; they publish nothing.
    for d in all
        .values()
        .filter(|d| d.d.spec.network_mode == NetworkMode::Bridge)
    {
        for (i, p) in d.d.spec.ports.iter().enumerate() {
            if let Some(hp) = p.host_port {
                by_port.entry((hp, p.protocol)).or_default().push((d, i));
            }
        }
    }
    let mut groups: Vec<_> = by_port.into_values().filter(|g| g.len() > 1).collect();
    groups.sort_by_key(|g| (g[0].0.d.name.clone(), g[0].1));
    for group in groups {
        for (j, (d, i)) in group.iter().enumerate() {
            let p = &d.d.spec.ports[*i];
            let earlier = group[..j]
                .iter()
                .find(|(e, k)| e.d.spec.ports[*k].conflicts_with(p));
            if let Some((e, k)) = earlier {
                let entry = &d.port_locs[*i];
                let other = if e.d.name == d.d.name {
                    "another entry of this container".to_string()
                } else {
                    format!(
                        "container \"{}\" ({}:{})",
                        e.d.name,
                        e.d.origin.file.display(),
                        e.port_locs[*k].pos
                    )
                };
                let host_ip = p.host_ip.map_or("0.0.0.0".to_string(), |ip| ip.to_string());
                c.error(
                    &d.d.origin.file,
                    entry.pos,
                    &d.entry_field("ports", entry, ""),
                    format!(
                        "host port {host_ip}:{}/{} is already published by {other}",
                        p.host_port.unwrap_or(0),
                        p.protocol
                    ),
                );
            }
        }
    }
}

/// Finds dependency cycles (through `depends_on` and `network_mode = "container:X"`)
/// and reports each once, at the edge that closes it.
fn cycles(c: &mut Checker, all: &BTreeMap<String, ContainerDraft>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn edges(d: &ContainerDraft) -> Vec<&str> {
        let mut e: Vec<&str> = d.d.spec.depends_on.keys().map(String::as_str).collect();
        if let NetworkMode::Container(t) = &d.d.spec.network_mode {
            e.push(t);
        }
        e
    }
    let mut marks: HashMap<&str, Mark> = all.keys().map(|k| (k.as_str(), Mark::New)).collect();
    for start in all.keys() {
        if marks[start.as_str()] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, index of next edge).
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        marks.insert(start, Mark::Active);
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let d = &all[node];
            let es = edges(d);
            if *next >= es.len() {
                marks.insert(node, Mark::Done);
                stack.pop();
                continue;
            }
            let target = es[*next];
            *next += 1;
            if target == node || !all.contains_key(target) {
                continue; // reported as a reference error
            }
            match marks[target] {
                Mark::New => {
                    marks.insert(target, Mark::Active);
                    stack.push((target, 0));
                }
                Mark::Active => {
                    let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                    let mut path: Vec<&str> = stack[from..].iter().map(|(n, _)| *n).collect();
                    path.push(target);
                    let (field, pos) = d
                        .depends_loc(target)
                        .unwrap_or_else(|| (d.d.field("network_mode"), d.d.loc("network_mode")));
                    c.error(
                        &d.d.origin.file,
                        pos,
                        &field,
                        format!("dependency cycle: {}", path.join(" -> ")),
                    );
                }
                Mark::Done => {}
            }
        }
    }
}
