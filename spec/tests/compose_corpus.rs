//! The Compose corpus (`tests/compose/*/`): each Compose file is loaded by
//! moor and compared, field by field, with what `docker-compose config`
//! (Debian's 1.29, the reference normaliser) prints for it, kept next to it
//! as `config.expected.yaml` so that this test needs no docker-compose.
//!
//! `fixtures_are_what_docker_compose_prints` runs docker-compose again
//! when it is installed (on CI it must be) and checks the fixtures are
//! still its output; `MOOR_BLESS=1` rewrites them. A case with an override
//! file is given to it as `-f compose.yaml -f compose.override.yaml`. A
//! fixture starting with `# hand-written` (the cases of `include`, which
//! 1.29 refuses) is the Compose Specification's answer written by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use moor_spec::node::{Node, Value};
use moor_spec::{
    ContainerSpec, DependCondition, HealthTest, LoadOptions, MountSource, NetworkMode,
    RestartPolicy,
};

/// The environment both moor and docker-compose read the corpus with.
const ENV: &[(&str, &str)] = &[("DEPLOY_ENV", "staging")];
const FIXTURE: &str = "config.expected.yaml";
/// How a fixture written by hand starts (docker-compose 1.29 does not know
/// `include`): the Compose Specification's answer, not docker-compose's.
const HAND_WRITTEN: &str = "# hand-written";

type Mounts = Vec<(String, MountSource, bool)>;

fn corpus() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compose");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&root).expect("tests/compose") {
        let dir = e.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let file = moor_spec::compose::FILE_NAMES
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{} holds no Compose file", dir.display()));
        out.push((
            dir.file_name().unwrap().to_string_lossy().into_owned(),
            file,
        ));
    }
    out.sort();
    out
}

fn get<'n>(n: &'n Node, key: &str) -> Option<&'n Node> {
    match &n.value {
        Value::Map(e) => e.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
        _ => None,
    }
}

fn entries(n: Option<&Node>) -> Vec<(String, &Node)> {
    match n.map(|n| &n.value) {
        Some(Value::Map(e)) => e.iter().map(|(k, v)| (k.name.to_string(), v)).collect(),
        _ => Vec::new(),
    }
}

fn items(n: Option<&Node>) -> Vec<&Node> {
    match n.map(|n| &n.value) {
        Some(Value::Seq(i)) => i.iter().collect(),
        _ => Vec::new(),
    }
}

fn is_true(n: Option<&Node>) -> bool {
    n.is_some_and(|n| n.value == Value::Bool(true))
}

/// A scalar as docker-compose printed it, `$$` read back as `$`.
fn s(n: &Node) -> String {
    n.scalar_text().expect("a scalar").replace("$$", "$")
}

fn words(n: Option<&Node>) -> Option<Vec<String>> {
    let n = n?;
    Some(match &n.value {
        Value::Seq(i) => i.iter().map(s).collect(),
        _ => moor_spec::words::split(&s(n)).unwrap(),
    })
}

fn duration(n: Option<&Node>, default: Duration) -> Duration {
    n.map_or(default, |n| {
        moor_spec::units::parse_duration(&s(n)).unwrap()
    })
}

fn ports(want: &Node) -> Vec<moor_spec::PortMapping> {
    let mut ports = Vec::new();
    for p in items(get(want, "ports")) {
        match &p.value {
            Value::Map(_) => ports.push(moor_spec::PortMapping {
                host_ip: None,
                host_port: get(p, "published").map(|n| s(n).parse().unwrap()),
                container_port: s(get(p, "target").unwrap()).parse().unwrap(),
                protocol: match get(p, "protocol").map(s).as_deref() {
                    Some("udp") => moor_spec::Protocol::Udp,
                    _ => moor_spec::Protocol::Tcp,
                },
            }),
            _ => ports.extend(moor_spec::ports::parse(&s(p)).unwrap()),
        }
    }
    ports.sort();
    ports
}

/// The mounts docker-compose's form asks for: volumes and tmpfs.
fn mounts(want: &Node, dir: &Path) -> Mounts {
    let real = std::fs::canonicalize(dir).unwrap();
    let bind = |src: &str| MountSource::Bind {
        source: real.join(src.trim_start_matches("./")),
        content_digest: None,
        tree: None,
    };
    let mut out = Vec::new();
    for v in items(get(want, "volumes")) {
        match &v.value {
            Value::Map(_) => {
                let source = match s(get(v, "type").unwrap()).as_str() {
                    "bind" => bind(&s(get(v, "source").unwrap())),
                    "volume" => MountSource::Volume {
                        name: s(get(v, "source").unwrap()),
                    },
                    _ => MountSource::Tmpfs {
                        size: get(v, "tmpfs")
                            .and_then(|t| get(t, "size"))
                            .map(|n| moor_spec::units::parse_size(&s(n)).unwrap()),
                    },
                };
                let ro = is_true(get(v, "read_only"));
                out.push((s(get(v, "target").unwrap()), source, ro));
            }
            _ => {
                let text = s(v);
                let parts: Vec<&str> = text.split(':').collect();
                let source = if parts[0].starts_with(['.', '/']) {
                    bind(parts[0])
                } else {
                    MountSource::Volume {
                        name: parts[0].into(),
                    }
                };
                let ro = parts
                    .get(2)
                    .is_some_and(|o| o.split(',').any(|o| o == "ro"));
                out.push((parts[1].into(), source, ro));
            }
        }
    }
    for t in items(get(want, "tmpfs")) {
        out.push((s(t), MountSource::Tmpfs { size: None }, false));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// moor's mounts, in the form of [`mounts`].
fn got_mounts(got: &ContainerSpec) -> Mounts {
    got.mounts
        .iter()
        .map(|m| {
            let source = match &m.source {
                MountSource::Bind { source, .. } => MountSource::Bind {
                    source: source.clone(),
                    content_digest: None,
                    tree: None,
                },
                other => other.clone(),
            };
            (m.target.clone(), source, m.read_only)
        })
        .collect()
}

/// A secret's or config's file: target, owner, group, mode.
type Files = (String, Option<u32>, Option<u32>, u32);

/// The files of secrets and configs docker-compose's form asks for, as
/// Compose copies them into a container: root's, mode 0444 unless the
/// entry says otherwise (docker-compose prints a mode in decimal).
fn files(want: &Node) -> Vec<Files> {
    let mut out = Vec::new();
    for (table, under) in [("secrets", "/run/secrets/"), ("configs", "/")] {
        for e in items(get(want, table)) {
            let source = get(e, "source").map_or_else(|| s(e), s);
            let target = match get(e, "target").map(s) {
                Some(t) if t.starts_with('/') => t,
                Some(t) => format!("{under}{t}"),
                None => format!("{under}{source}"),
            };
            let id = |k: &str| Some(get(e, k).map_or(0, |n| s(n).parse().unwrap()));
            let mode = get(e, "mode").map_or(0o444, |n| s(n).parse().unwrap());
            out.push((target, id("uid"), id("gid"), mode));
        }
    }
    out.sort();
    out
}

type Attachments = BTreeMap<String, (Vec<String>, Option<String>)>;

fn networks(want: &Node) -> Attachments {
    let mut out = BTreeMap::new();
    match get(want, "networks").map(|n| &n.value) {
        Some(Value::Seq(i)) => {
            for n in i {
                out.insert(s(n), (Vec::new(), None));
            }
        }
        Some(Value::Map(_)) => {
            for (k, v) in entries(get(want, "networks")) {
                let mut aliases: Vec<String> =
                    items(get(v, "aliases")).into_iter().map(s).collect();
                aliases.sort();
                out.insert(k, (aliases, get(v, "ipv4_address").map(s)));
            }
        }
        _ => {}
    }
    out
}

fn depends(want: &Node) -> BTreeMap<String, DependCondition> {
    let mut out = BTreeMap::new();
    if let Some(Value::Seq(i)) = get(want, "depends_on").map(|n| &n.value) {
        for n in i {
            out.insert(s(n), DependCondition::Started);
        }
    }
    for (k, v) in entries(get(want, "depends_on")) {
        let c = match get(v, "condition").map(s).as_deref() {
            Some("service_healthy") => DependCondition::Healthy,
            Some("service_completed_successfully") => DependCondition::Completed,
            _ => DependCondition::Started,
        };
        out.insert(k, c);
    }
    out
}

/// Checks one service against docker-compose's normalised form of it.
fn compare(name: &str, want: &Node, got: &ContainerSpec, dir: &Path) {
    let at = |what: &str| format!("{name}: {what}");
    let image = moor_spec::reference::parse(&s(get(want, "image").unwrap())).unwrap();
    assert_eq!(got.image, image, "{}", at("image"));
    assert_eq!(
        got.command,
        words(get(want, "command")),
        "{}",
        at("command")
    );
    let entrypoint = words(get(want, "entrypoint"));
    assert_eq!(got.entrypoint, entrypoint, "{}", at("entrypoint"));
    let env: BTreeMap<String, String> = entries(get(want, "environment"))
        .into_iter()
        .filter(|(_, v)| v.value != Value::Null)
        .map(|(k, v)| (k, s(v)))
        .collect();
    assert_eq!(got.env, env, "{}", at("environment"));
    assert_eq!(got.ports, ports(want), "{}", at("ports"));
    assert_eq!(got_mounts(got), mounts(want, dir), "{}", at("mounts"));
    let got_files: Vec<Files> = got
        .secrets
        .iter()
        .map(|m| (m.target.clone(), m.uid, m.gid, m.mode))
        .collect();
    assert_eq!(got_files, files(want), "{}", at("secrets and configs"));
    let got_networks: Attachments = got
        .networks
        .iter()
        .map(|a| {
            let ip = a.ipv4_address.map(|i| i.to_string());
            (a.network.clone(), (a.aliases.clone(), ip))
        })
        .collect();
    assert_eq!(got_networks, networks(want), "{}", at("networks"));
    let mode = match get(want, "network_mode").map(s).as_deref() {
        None | Some("bridge") => NetworkMode::Bridge,
        Some("host") => NetworkMode::Host,
        Some("none") => NetworkMode::None,
        Some(other) => NetworkMode::Container(other.split_once(':').unwrap().1.into()),
    };
    assert_eq!(got.network_mode, mode, "{}", at("network_mode"));
    assert_eq!(got.depends_on, depends(want), "{}", at("depends_on"));

    let restart = match get(want, "restart").map(s).as_deref() {
        None | Some("no") => RestartPolicy::No,
        Some("always") => RestartPolicy::Always,
        Some("unless-stopped") => RestartPolicy::UnlessStopped,
        Some("on-failure") => RestartPolicy::OnFailure { max_retries: None },
        Some(other) => panic!("restart {other}"),
    };
    assert_eq!(got.restart, restart, "{}", at("restart"));

    let disabled = |h: &Node| {
        is_true(get(h, "disable"))
            || items(get(h, "test")).first().map(|t| s(t)).as_deref() == Some("NONE")
    };
    match get(want, "healthcheck").filter(|h| !disabled(h)) {
        None => assert_eq!(got.healthcheck, None, "{}", at("healthcheck")),
        Some(h) => {
            let g = got.healthcheck.as_ref();
            let g = g.unwrap_or_else(|| panic!("{}", at("healthcheck")));
            let test = get(h, "test").unwrap();
            let shell = |c: String| vec!["/bin/sh".to_string(), "-c".to_string(), c];
            let cmd = match &test.value {
                Value::Seq(i) if s(&i[0]) == "CMD" => i[1..].iter().map(s).collect(),
                Value::Seq(i) => shell(i[1..].iter().map(s).collect::<Vec<_>>().join(" ")),
                _ => shell(s(test)),
            };
            assert_eq!(g.test, HealthTest::Cmd(cmd), "{}", at("healthcheck.test"));
            let secs = Duration::from_secs;
            assert_eq!(
                g.interval,
                duration(get(h, "interval"), secs(30)),
                "{}",
                at("interval")
            );
            assert_eq!(
                g.timeout,
                duration(get(h, "timeout"), secs(30)),
                "{}",
                at("timeout")
            );
            let start = duration(get(h, "start_period"), Duration::ZERO);
            assert_eq!(g.start_period, start, "{}", at("start_period"));
            let retries = get(h, "retries").map_or(3, |n| s(n).parse().unwrap());
            assert_eq!(g.retries, retries, "{}", at("retries"));
        }
    }

    let deploy = get(want, "deploy");
    let limits = deploy
        .and_then(|d| get(d, "resources"))
        .and_then(|r| get(r, "limits"));
    let memory = limits
        .and_then(|l| get(l, "memory"))
        .or(get(want, "mem_limit"))
        .map(|m| moor_spec::units::parse_size(&s(m)).unwrap());
    assert_eq!(got.resources.memory, memory, "{}", at("memory"));
    let cpus = limits.and_then(|l| get(l, "cpus")).or(get(want, "cpus"));
    let cpus = cpus.map(|c| s(c).parse().unwrap());
    assert_eq!(got.resources.cpus, cpus, "{}", at("cpus"));
    let pids = get(want, "pids_limit").map(|p| s(p).parse().unwrap());
    assert_eq!(got.resources.pids, pids, "{}", at("pids"));
    let replicas = deploy
        .and_then(|d| get(d, "replicas"))
        .map_or(1, |r| s(r).parse().unwrap());
    assert_eq!(got.replicas, replicas, "{}", at("replicas"));

    assert_eq!(got.user, get(want, "user").map(s), "{}", at("user"));
    let workdir = get(want, "working_dir").map(s);
    assert_eq!(got.working_dir, workdir, "{}", at("working_dir"));
    assert_eq!(
        got.read_only,
        is_true(get(want, "read_only")),
        "{}",
        at("read_only")
    );
    assert_eq!(got.init, is_true(get(want, "init")), "{}", at("init"));
    let labels: BTreeMap<String, String> = entries(get(want, "labels"))
        .into_iter()
        .map(|(k, v)| (k, s(v)))
        .collect();
    assert_eq!(got.labels, labels, "{}", at("labels"));
    let caps = |key: &str| -> Vec<String> {
        let set: BTreeSet<String> = items(get(want, key))
            .into_iter()
            .map(|c| {
                let c = s(c);
                if c == "ALL" || c.starts_with("CAP_") {
                    c
                } else {
                    format!("CAP_{c}")
                }
            })
            .collect();
        set.into_iter().collect()
    };
    assert_eq!(got.cap_add, caps("cap_add"), "{}", at("cap_add"));
    assert_eq!(got.cap_drop, caps("cap_drop"), "{}", at("cap_drop"));
}

#[test]
fn the_corpus_reads_as_docker_compose_config_normalises_it() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus has {} files", corpus.len());
    for (name, file) in corpus {
        let dir = file.parent().unwrap();
        let fixture = std::fs::read_to_string(dir.join(FIXTURE))
            .unwrap_or_else(|e| panic!("{name}: {FIXTURE}: {e} (MOOR_BLESS=1 writes it)"));
        let docs = moor_spec::parse::parse(moor_spec::parse::Format::Yaml, &fixture).unwrap();
        let want = &docs[0];
        let services = entries(get(want, "services"));
        let mut options = LoadOptions {
            env: ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..LoadOptions::default()
        };
        // docker-compose 1.29's config prints every service, whatever its profiles.
        for (_, svc) in &services {
            let profiles = items(get(svc, "profiles")).into_iter().map(s);
            options.profiles.extend(profiles);
        }
        let state = moor_spec::load_with(&[&file], None, &options)
            .unwrap_or_else(|d| panic!("{name} should load:\n{d}"));
        // Every key of the corpus is one moor reads: nothing is ignored.
        assert!(state.warnings.is_empty(), "{name}:\n{}", state.warnings);
        let names: Vec<&String> = state.containers.keys().collect();
        let want_names: Vec<&String> = services.iter().map(|(k, _)| k).collect();
        assert_eq!(names, want_names, "{name}: services");
        for (svc, node) in &services {
            let got = &state.containers[svc].spec;
            compare(&format!("{name}/{svc}"), node, got, dir);
        }
        let volumes: Vec<String> = entries(get(want, "volumes"))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let got_volumes: Vec<String> = state.volumes.keys().cloned().collect();
        assert_eq!(got_volumes, volumes, "{name}: volumes");
        for (net, spec) in entries(get(want, "networks")) {
            let got = state.networks.get(&net);
            let got = &got.unwrap_or_else(|| panic!("{name}: network {net}")).spec;
            let internal = is_true(get(spec, "internal"));
            assert_eq!(got.internal, internal, "{name}: {net}.internal");
            let config = get(spec, "ipam")
                .map(|i| items(get(i, "config")))
                .unwrap_or_default();
            let subnet = config.first().and_then(|c| get(c, "subnet")).map(s);
            let got_subnet = got.subnet.map(|n| n.to_string());
            assert_eq!(got_subnet, subnet, "{name}: {net}.subnet");
        }
    }
}

/// The override file beside `file` that moor merges over it, if any.
fn override_file(file: &Path) -> Option<PathBuf> {
    let dir = file.parent().unwrap();
    moor_spec::compose::OVERRIDE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
}

/// docker-compose's `config` output for `file` (and its override file,
/// `-f file -f override`, as moor reads them), its directory written `.`.
fn docker_compose_config(file: &Path) -> Result<String, String> {
    let dir = file.parent().unwrap();
    let mut cmd = Command::new("docker-compose");
    cmd.arg("-f").arg(file.file_name().unwrap());
    if let Some(o) = override_file(file) {
        cmd.arg("-f").arg(o.file_name().unwrap());
    }
    let out = cmd
        .arg("config")
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(ENV.iter().copied())
        .output()
        .map_err(|e| format!("cannot run docker-compose: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let real = std::fs::canonicalize(dir).unwrap();
    Ok(text
        .replace(&format!("{}/", real.display()), "./")
        .replace(&format!("{}/", dir.display()), "./"))
}

#[test]
fn fixtures_are_what_docker_compose_prints() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let bless = std::env::var("MOOR_BLESS").is_ok_and(|v| v == "1");
    let present = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            !ci,
            "docker-compose is not installed: CI must have it (see .ci/run)"
        );
        eprintln!("docker-compose is not installed: the fixtures are not checked against it");
        return;
    }
    for (name, file) in corpus() {
        let fixture = file.parent().unwrap().join(FIXTURE);
        let kept = std::fs::read_to_string(&fixture).unwrap_or_default();
        if kept.starts_with(HAND_WRITTEN) {
            // Written from the Compose Specification, for what
            // docker-compose 1.29 does not know: it must still refuse it.
            let e = docker_compose_config(&file).expect_err(&name);
            assert!(e.contains("'include' does not match"), "{name}: {e}");
            continue;
        }
        let printed = docker_compose_config(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        if bless {
            std::fs::write(&fixture, &printed).unwrap();
            continue;
        }
        assert_eq!(
            kept, printed,
            "{name}: the fixture is not docker-compose's output (MOOR_BLESS=1 rewrites it)"
        );
    }
}
