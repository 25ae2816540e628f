//! Checks across resources and files, then the final, hashed [`DesiredState`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::decode::{ContainerDraft, Declared, Draft, Drafts, Elsewhere, OTHER_LINES};
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{
    ContainerSpec, DependCondition, DesiredState, ImageSpec, Kind, NetworkMode, NetworkSpec,
    Resource, VolumeSpec,
};
use crate::mounts::MountSource;
use crate::node::Pos;
use crate::reference::ImageRef;
use crate::target::{HostIdentity, Target, applies};

/// From this many containers on, the two halves of the checks run on two
/// threads.
pub(crate) const SIDE_BY_SIDE: usize = 256;

struct Checker<'e> {
    diags: Diagnostics,
    /// What the load left out because it targets other hosts.
    elsewhere: &'e Elsewhere<'e>,
    /// The other files of Compose files (override, included), by each of
    /// those files and the Compose file itself (see [`Checker::error`]).
    others: &'e HashMap<&'e Path, &'e [PathBuf]>,
}

impl Checker<'_> {
    fn error(
        &mut self,
        origin_file: &std::path::Path,
        pos: Pos,
        field: &str,
        message: impl Into<String>,
    ) {
        // A value of a Compose file's override or included file is at a
        // shifted line (see `Decoder::locate`).
        let k = (pos.line / OTHER_LINES) as usize;
        let other = k
            .checked_sub(1)
            .and_then(|k| self.others.get(origin_file)?.get(k));
        let (file, pos) = match other {
            Some(f) => (f.as_path(), Pos::new(pos.line % OTHER_LINES, pos.column)),
            None => (origin_file, pos),
        };
        self.diags
            .push(Diagnostic::error(file, pos, field, message));
    }
}

/// The drafts of a load that target its host, from every file, in order.
#[derive(Default)]
struct Here<'a> {
    declared: Vec<&'a Declared>,
    images: Vec<&'a Draft<ImageSpec>>,
    networks: Vec<&'a Draft<NetworkSpec>>,
    volumes: Vec<&'a Draft<VolumeSpec>>,
    containers: Vec<&'a ContainerDraft>,
}

/// Cross-checks the drafts of every file of a load (`files`, in order),
/// keeping only what targets `host` when the load is for one host. Returns
/// the desired state, or every problem found (together with `diags` from
/// reading and decoding).
///
/// The drafts are only read: what the state holds is copied from them, so
/// that drafts kept from an earlier load serve again.
pub(crate) fn finish(
    files: &[&Drafts],
    diags: Diagnostics,
    host: Option<&HostIdentity>,
) -> Result<DesiredState, Diagnostics> {
    let keep = |t: &Option<Target>| host.is_none_or(|h| applies(t.as_ref(), h));
    let mut here = Here::default();
    let mut elsewhere = Vec::new();
    for f in files {
        for d in &f.declared {
            if keep(&d.target) {
                here.declared.push(d);
            } else {
                elsewhere.push(d);
            }
        }
        here.images
            .extend(f.images.iter().filter(|d| keep(&d.target)));
        here.networks
            .extend(f.networks.iter().filter(|d| keep(&d.target)));
        here.volumes
            .extend(f.volumes.iter().filter(|d| keep(&d.target)));
        here.containers
            .extend(f.containers.iter().filter(|c| keep(&c.d.target)));
    }
    let elsewhere = Elsewhere(elsewhere);
    let mut others: HashMap<&Path, &[PathBuf]> = HashMap::new();
    for (main, list) in files.iter().filter_map(|f| f.others.as_ref()) {
        others.insert(main, list);
        for o in list {
            others.insert(o, list);
        }
    }
    let mut state = DesiredState::default();
    for d in &here.images {
        add(&mut state.images, d, crate::hash::image);
    }
    for d in &here.networks {
        add(&mut state.networks, d, crate::hash::network);
    }
    for d in &here.volumes {
        add(&mut state.volumes, d, crate::hash::volume);
    }
    let (images, networks, volumes) = (&state.images, &state.networks, &state.volumes);

    // Two halves of the checks run side by side, each with its own list of
    // diagnostics; the lists are joined in the order the checks have
    // always run in, so what is reported does not depend on the threads.
    let checker = || Checker {
        diags: Diagnostics::default(),
        elsewhere: &elsewhere,
        others: &others,
    };
    let declarations = || {
        let mut c = checker();
        duplicates(&mut c, &here.declared);
        overlapping_subnets(&mut c, &here.networks);
        // Every declaration is checked, duplicates too, so that one run
        // reports everything.
        let mut resolved = Vec::with_capacity(here.containers.len());
        let (networks, volumes) = (Lookup::new(networks), Lookup::new(volumes));
        for d in &here.containers {
            resolved.push(resolve_image(&mut c, d, images));
            references(&mut c, d, &networks, &volumes);
        }
        (c.diags, resolved)
    };
    // The containers, each name once (its first declaration), by name; the
    // indexes of those first declarations; and the later declarations of a
    // name, in load order.
    let order = || {
        // A stable sort by name keeps declarations of one name in load
        // order: the first is the container, later ones are reported as
        // duplicates and checked all the same.
        let mut by_name: Vec<(&str, usize)> = here
            .containers
            .iter()
            .enumerate()
            .map(|(i, d)| (d.d.name.as_str(), i))
            .collect();
        // (The index breaks ties: the same order as a stable sort.)
        by_name.sort_unstable();
        let mut first: Vec<usize> = Vec::with_capacity(by_name.len());
        let mut repeated = Vec::new();
        for run in by_name.chunk_by(|a, b| a.0 == b.0) {
            first.push(run[0].1);
            repeated.extend(run[1..].iter().map(|&(_, i)| i));
        }
        repeated.sort_unstable();
        let containers = Containers::new(
            first
                .iter()
                .map(|&i| (here.containers[i].d.name.as_str(), here.containers[i]))
                .collect(),
        );
        (containers, first, repeated)
    };
    let between_containers = |containers: &Containers, repeated: &[usize]| {
        let mut c = checker();
        let names: Vec<&str> = containers.all.iter().map(|(n, _)| *n).collect();
        for d in containers
            .all
            .iter()
            .map(|(_, d)| *d)
            .chain(repeated.iter().map(|&i| here.containers[i]))
        {
            container_references(&mut c, d, &names, containers);
        }
        port_conflicts(&mut c, containers);
        c.diags
    };
    let dependency_cycles = |containers: &Containers| {
        let mut c = checker();
        cycles(&mut c, containers);
        c.diags
    };
    // A thread costs more than the checks of a small load (and, on a busy
    // machine, a scheduling delay): below SIDE_BY_SIDE containers it all
    // runs here. Otherwise the other thread orders the containers and hands
    // them over, and each thread then takes about half of what is left:
    // this one the declarations and the cycles, the other the references
    // between containers and the ports.
    let ((found, resolved), found_between, found_cycles, first) =
        if here.containers.len() < SIDE_BY_SIDE {
            let declared = declarations();
            let (containers, first, repeated) = order();
            let between = between_containers(&containers, &repeated);
            (declared, between, dependency_cycles(&containers), first)
        } else {
            std::thread::scope(|s| {
                let (send, ordered) = std::sync::mpsc::sync_channel(1);
                let other = s.spawn(move || {
                    let (containers, first, repeated) = order();
                    let containers = Arc::new(containers);
                    // (If this thread's receiver is gone, it panicked.)
                    let _ = send.send(Arc::clone(&containers));
                    (between_containers(&containers, &repeated), first)
                });
                let declared = declarations();
                // Nothing received: the other thread panicked, which the
                // join reports.
                let found_cycles = ordered
                    .recv()
                    .map(|containers| dependency_cycles(&containers));
                let (between, first) = other.join().expect("a check panicked");
                let found_cycles = found_cycles.expect("the order of the containers was sent");
                (declared, between, found_cycles, first)
            })
        };
    let mut c = Checker {
        diags,
        elsewhere: &elsewhere,
        others: &others,
    };
    // In the order the checks have always run in.
    c.diags.extend(found);
    c.diags.extend(found_between);
    c.diags.extend(found_cycles);

    c.diags.sort();
    if c.diags.has_errors() {
        return Err(c.diags);
    }
    // Only warnings: the state is applied, and carries them.
    state.warnings = Box::new(std::mem::take(&mut c.diags));
    let chosen: Vec<(&ContainerDraft, &Image)> = first
        .iter()
        .map(|&i| (here.containers[i], &resolved[i]))
        .collect();
    let built = crate::par::map(&chosen, 64, 512, |(d, image)| {
        let r = container(d, image);
        (r.name.clone(), r)
    });
    // In name order already: the map is built in one pass.
    state.containers = built.into_iter().collect();
    Ok(state)
}

/// The containers of a load, one per name (its first declaration), by name.
/// The resources of a kind by name, for the many lookups of the checks.
struct Lookup<'a, T> {
    map: &'a BTreeMap<String, Resource<T>>,
    fast: FastMap<&'a str, &'a Resource<T>>,
}

impl<'a, T> Lookup<'a, T> {
    fn new(map: &'a BTreeMap<String, Resource<T>>) -> Self {
        let fast = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
        Self { map, fast }
    }

    fn get(&self, name: &str) -> Option<&'a Resource<T>> {
        self.fast.get(name).copied()
    }

    fn contains_key(&self, name: &str) -> bool {
        self.fast.contains_key(name)
    }

    /// The names, in order (for hints).
    fn keys(&self) -> impl Iterator<Item = &'a String> + use<'a, T> {
        self.map.keys()
    }
}

/// A hash map for the names of a load: seeded per process, so that names
/// chosen to collide cannot make the checks slow.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

struct Containers<'a> {
    /// Each container, with its name.
    all: Vec<(&'a str, &'a ContainerDraft)>,
    /// Where each name is in `all`.
    by_name: FastMap<&'a str, usize>,
}

impl<'a> Containers<'a> {
    /// The containers of `all`, sorted by name, each name once.
    fn new(all: Vec<(&'a str, &'a ContainerDraft)>) -> Self {
        let by_name = all.iter().enumerate().map(|(i, (n, _))| (*n, i)).collect();
        Self { all, by_name }
    }

    /// The index of the container named `name`.
    fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The container named `name`.
    fn get(&self, name: &str) -> Option<&'a ContainerDraft> {
        self.index(name).map(|i| self.all[i].1)
    }
}

/// Adds the first declaration of a name to `map`, with its hash.
fn add<T: Clone>(
    map: &mut BTreeMap<String, Resource<T>>,
    d: &Draft<T>,
    hash: fn(&T) -> crate::hash::SpecHash,
) {
    if map.contains_key(&d.name) {
        return;
    }
    let resource = Resource {
        name: d.name.clone(),
        origin: d.origin.clone(),
        spec: d.spec.clone(),
        hash: d.hash.clone().unwrap_or_else(|| hash(&d.spec)),
        target: d.target.clone(),
    };
    map.insert(d.name.clone(), resource);
}

/// The resource of a container that passed every check, in canonical order.
///
/// What the draft became last time is handed out again when the image
/// resolved the same way (see `Built` in `crate::decode`).
fn container(d: &ContainerDraft, image: &Image) -> Resource<ContainerSpec> {
    let (reference, entry) = match image {
        Image::Entry(name, reference) => (*reference, Some(*name)),
        Image::AsWritten { entry } => (&d.d.spec.image, *entry),
        Image::Unchanged => (&d.d.spec.image, d.d.spec.image_entry.as_deref()),
    };
    // (The reference is often the draft's own: no need to compare it.)
    let fits = |spec: &ContainerSpec| {
        (std::ptr::eq(&spec.image, reference) || spec.image == *reference)
            && spec.image_entry.as_deref() == entry
    };
    let resource = |spec, hash| Resource {
        name: d.d.name.clone(),
        origin: d.d.origin.clone(),
        spec,
        hash,
        target: d.d.target.clone(),
    };
    // As decoded (in canonical order since decoding: see
    // `canonical_order`): the draft's spec and hash are the resource's.
    debug_assert!(d.d.spec.ports.is_sorted() && d.d.spec.mounts.is_sorted());
    if fits(&d.d.spec)
        && let Some(hash) = &d.d.hash
    {
        return resource(d.d.spec.clone(), hash.clone());
    }
    if let Some(kept) = d.built.get(|r| fits(&r.spec)) {
        return kept;
    }
    let mut spec = ContainerSpec::clone(&d.d.spec);
    spec.image = reference.clone();
    spec.image_entry = entry.map(str::to_string);
    spec.ports.sort();
    spec.mounts.sort();
    // The hash from decoding holds unless the image turned out to be another.
    let hash = match &d.d.hash {
        Some(h) if spec.image == d.d.spec.image => h.clone(),
        _ => crate::hash::container(&spec),
    };
    let built = resource(Arc::new(spec), hash);
    d.built.keep(&built);
    built
}

fn duplicates(c: &mut Checker, declared: &[&Declared]) {
    // Each repeat of a name, with its first declaration, in load order.
    let mut first: FastMap<(Kind, &str), usize> =
        FastMap::with_capacity_and_hasher(declared.len(), Default::default());
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    for (i, d) in declared.iter().enumerate() {
        match first.entry((d.kind, d.name.as_str())) {
            std::collections::hash_map::Entry::Occupied(f) => repeats.push((i, *f.get())),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
    }
    for (i, first) in repeats {
        let Declared {
            kind, name, origin, ..
        } = declared[i];
        let prev = &declared[first].origin;
        c.error(
            &origin.file,
            origin.pos,
            &format!("{}.{name}", kind.table()),
            format!("{kind} \"{name}\" is defined twice: here and at {prev}"),
        );
    }
}

fn overlapping_subnets(c: &mut Checker, networks: &[&Draft<NetworkSpec>]) {
    let mut nets: Vec<_> = networks
        .iter()
        .filter_map(|d| d.spec.subnet.map(|s| (s, *d)))
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
    let mut widest: Option<(ipnet::Ipv4Net, &Draft<NetworkSpec>)> = None;
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

/// The image a container runs, once the `[images]` entries are known.
enum Image<'a> {
    /// The `[images]` entry its `image` names: its name and reference.
    Entry(&'a str, &'a ImageRef),
    /// The reference as written, and the entry with the same reference, if any.
    AsWritten { entry: Option<&'a str> },
    /// As decoded: nothing could be resolved (and that has been reported).
    Unchanged,
}

fn resolve_image<'a>(
    c: &mut Checker,
    d: &ContainerDraft,
    images: &'a BTreeMap<String, Resource<ImageSpec>>,
) -> Image<'a> {
    let Some((raw, pos)) = &d.image_raw else {
        return Image::Unchanged;
    };
    if let Some((name, entry)) = images.get_key_value(raw) {
        return Image::Entry(name, &entry.spec.reference);
    }
    // A name that would have been an [images] entry, had the entry been for
    // this host, must not quietly become a Docker Hub reference instead.
    if let Some(m) = c.elsewhere.explain(Kind::Image, raw) {
        c.error(&d.d.origin.file, *pos, &d.d.field("image"), m);
        return Image::Unchanged;
    }
    let Some(e) = &d.image_error else {
        // Decoding read `raw` as this reference.
        let r = &d.d.spec.image;
        let entry = images
            .values()
            .find(|i| i.spec.reference == *r)
            .map(|i| i.name.as_str());
        return Image::AsWritten { entry };
    };
    // Only a bare word could have been meant as an [images] entry.
    let entry_like = !raw.is_empty() && !raw.contains(['/', ':', '@']);
    let message = if images.is_empty() || !entry_like {
        e.clone()
    } else {
        let hint = crate::decode::did_you_mean(raw, images.keys().map(String::as_str))
            .map(|h| format!("; did you mean \"{h}\"?"))
            .unwrap_or_default();
        format!("{e}, and it is not the name of an [images] entry{hint}")
    };
    c.error(&d.d.origin.file, *pos, &d.d.field("image"), message);
    Image::Unchanged
}

fn references(
    c: &mut Checker,
    d: &ContainerDraft,
    networks: &Lookup<NetworkSpec>,
    volumes: &Lookup<VolumeSpec>,
) {
    let spec = &d.d.spec;
    let file = &d.d.origin.file;
    for (a, (entry, ipv4_pos)) in spec.networks.iter().zip(&d.network_locs) {
        let ipv4_pos = ipv4_pos.unwrap_or(d.d.origin.pos);
        match networks.get(&a.network) {
            None => {
                let field = d.entry_field("networks", entry, &a.network);
                if let Some(m) = c.elsewhere.explain(Kind::Network, &a.network) {
                    c.error(file, entry.pos, &field, m);
                    continue;
                }
                let hint =
                    crate::decode::did_you_mean(&a.network, networks.keys().map(String::as_str))
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
            && !volumes.contains_key(name)
        {
            let field = d.entry_field("mounts", entry, name);
            let pos = entry.pos;
            if let Some(m) = c.elsewhere.explain(Kind::Volume, name) {
                c.error(file, pos, &field, m);
                continue;
            }
            let hint = crate::decode::did_you_mean(name, volumes.keys().map(String::as_str))
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

fn container_references(c: &mut Checker, d: &ContainerDraft, names: &[&str], all: &Containers) {
    let spec: &ContainerSpec = &d.d.spec;
    let file = &d.d.origin.file;
    let unknown = |name: &str| {
        let hint = crate::decode::did_you_mean(name, names.iter().copied())
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
                if *cond == DependCondition::Completed && target.d.spec.restart.restarts_after(0) {
                    c.error(
                        file,
                        pos,
                        &field(),
                        format!(
                            "waits for \"{dep}\" to complete, but \"{dep}\" is started again whenever it exits (its restart policy); use restart = \"no\" or \"on-failure\""
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
        } else if all.get(target).is_none() {
            let m = c.elsewhere.explain(Kind::Container, target);
            c.error(file, pos, &field, m.unwrap_or_else(|| unknown(target)));
        }
    }
}

fn port_conflicts(c: &mut Checker, all: &Containers) {
    let drafts: Vec<&ContainerDraft> = all.all.iter().map(|(_, d)| *d).collect();
    // (host port, protocol, container, where written, entry), sorted: the
    // publishers of one port come together, containers in name order,
    // entries in the order they were written (a draft's ports are sorted).
    // Ports of a container without a network namespace of its own are
    // reported as such; they publish nothing.
    let mut published = Vec::new();
    for (n, d) in drafts.iter().enumerate() {
        // (Where the ports were written is in the draft itself: a
        // container without any is passed over without reading its spec.)
        if d.port_locs.is_empty() || d.d.spec.network_mode != NetworkMode::Bridge {
            continue;
        }
        for (i, p) in d.d.spec.ports.iter().enumerate() {
            if let Some(hp) = p.host_port {
                published.push((hp, p.protocol, n, d.port_locs[i].pos, i));
            }
        }
    }
    published.sort_unstable();
    let mut groups: Vec<_> = published
        .chunk_by(|a, b| (a.0, a.1) == (b.0, b.1))
        .filter(|g| g.len() > 1)
        .collect();
    groups.sort_by_key(|g| (g[0].2, g[0].3));
    for group in groups {
        for (j, &(_, _, n, _, i)) in group.iter().enumerate() {
            let d = drafts[n];
            let p = &d.d.spec.ports[i];
            let earlier = group[..j]
                .iter()
                .map(|&(_, _, m, _, k)| (drafts[m], k))
                .find(|(e, k)| e.d.spec.ports[*k].conflicts_with(p));
            if let Some((e, k)) = earlier {
                let entry = &d.port_locs[i];
                let other = if e.d.name == d.d.name {
                    "another entry of this container".to_string()
                } else {
                    format!(
                        "container \"{}\" ({}:{})",
                        e.d.name,
                        e.d.origin.file.display(),
                        e.port_locs[k].pos
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
fn cycles(c: &mut Checker, all: &Containers) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let drafts = &all.all;
    // The edges of container `n` are `targets[starts[n]..starts[n + 1]]`:
    // its `depends_on` entries, then the container whose network namespace
    // it shares; an edge to itself or to no container is left out (it is
    // reported as a reference error).
    let mut targets: Vec<usize> = Vec::new();
    let mut starts: Vec<usize> = Vec::with_capacity(drafts.len() + 1);
    for (n, (_, d)) in drafts.iter().enumerate() {
        starts.push(targets.len());
        let shared = match &d.d.spec.network_mode {
            NetworkMode::Container(t) => Some(t.as_str()),
            _ => None,
        };
        let names = d.d.spec.depends_on.keys().map(String::as_str).chain(shared);
        targets.extend(names.filter_map(|t| all.index(t)).filter(|&t| t != n));
    }
    starts.push(targets.len());
    let mut marks = vec![Mark::New; drafts.len()];
    // Iterative DFS: (node, index of next edge); empty between starts.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..drafts.len() {
        if marks[start] != Mark::New {
            continue;
        }
        stack.push((start, starts[start]));
        marks[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if *next >= starts[node + 1] {
                marks[node] = Mark::Done;
                stack.pop();
                continue;
            }
            let target = targets[*next];
            *next += 1;
            match marks[target] {
                Mark::New => {
                    marks[target] = Mark::Active;
                    stack.push((target, starts[target]));
                }
                Mark::Active => {
                    let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                    let mut path: Vec<&str> =
                        stack[from..].iter().map(|(n, _)| drafts[*n].0).collect();
                    let name = drafts[target].0;
                    path.push(name);
                    let d = drafts[node].1;
                    let (field, pos) = d
                        .depends_loc(name)
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
