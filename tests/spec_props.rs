//! Table and property tests of the manifest model: the normalisers (image
//! references, ports, mounts, sizes, durations) and the canonical spec hash.
//!
//! These use the `moor_spec` API directly, without the `moor` binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use moor_spec::hash::SpecHash;
use moor_spec::{DesiredState, MountSource, Protocol, mounts, ports, reference, units};
use proptest::prelude::*;

/// How many cases a property runs: `n`, or `PROPTEST_CASES` when set (for a
/// longer hunt: `PROPTEST_CASES=100000 cargo test --release --test tests spec_props`).
fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n)
}

/// Loads in-memory manifests; panics with the diagnostics when they are invalid.
fn load(files: &[(&str, &str)]) -> DesiredState {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    moor_spec::load_texts(&sources).unwrap_or_else(|d| panic!("manifests should be valid:\n{d}"))
}

fn container_hash(state: &DesiredState, name: &str) -> SpecHash {
    state.containers[name].hash.clone()
}

/// A container that uses every field, in TOML.
const APP_TOML: &str = r#"
[networks.back]
subnet = "10.90.1.0/24"

[networks.front]

[volumes.data]

[containers.db]
image       = "postgres:16"
healthcheck = { cmd = ["pg_isready"], interval = "5s" }

[containers.app]
image             = "localhost:5000/app:1"
entrypoint        = ["/bin/app"]
command           = ["serve", "--port", "9000"]
env               = { A = "1", B = "two" }
working_dir       = "/srv"
user              = "1000:1000"
hostname          = "app"
labels            = { team = "core", tier = "web" }
networks          = ["back", "front"]
ports             = ["9000:9000", "127.0.0.1:9001:9001/udp"]
mounts            = ["data:/var/lib/app", "tmpfs:/tmp:size=64m"]
init              = true
resources         = { memory = "256m", cpus = 1.5, pids = 200 }
read_only         = true
cap_add           = ["NET_ADMIN", "SYS_TIME"]
cap_drop          = ["MKNOD"]
extra_hosts       = ["db.internal:10.0.0.5"]
restart           = "always"
healthcheck       = { http = "http://localhost:9000/health", interval = "5s" }
depends_on        = ["db"]
stop_signal       = "SIGINT"
stop_grace_period = "20s"
replicas          = 1
update_order      = "stop-first"
"#;

/// The same resources in YAML, with the same values written the same way.
const APP_YAML: &str = r#"
networks:
  back:
    subnet: 10.90.1.0/24
  front:
volumes:
  data:
containers:
  db:
    image: postgres:16
    healthcheck:
      cmd: [pg_isready]
      interval: 5s
  app:
    image: localhost:5000/app:1
    entrypoint: [/bin/app]
    command: [serve, --port, "9000"]
    env:
      A: "1"
      B: two
    working_dir: /srv
    user: "1000:1000"
    hostname: app
    labels:
      team: core
      tier: web
    networks: [back, front]
    ports: ["9000:9000", "127.0.0.1:9001:9001/udp"]
    mounts: ["data:/var/lib/app", "tmpfs:/tmp:size=64m"]
    init: true
    resources:
      memory: 256m
      cpus: 1.5
      pids: 200
    read_only: true
    cap_add: [NET_ADMIN, SYS_TIME]
    cap_drop: [MKNOD]
    extra_hosts: ["db.internal:10.0.0.5"]
    restart: always
    healthcheck:
      http: http://localhost:9000/health
      interval: 5s
    depends_on: [db]
    stop_signal: SIGINT
    stop_grace_period: 20s
    replicas: 1
    update_order: stop-first
"#;

/// The same container again in YAML, written the other ways the model
/// allows: a command as one string, env as a list, numbers unquoted, Docker
/// Hub names short, capabilities in lower case with their prefix, depends_on
/// as a map, the tmpfs mount in long form, sizes in other units.
const APP_YAML_OTHER_SPELLINGS: &str = r#"
containers:
  db:
    image: docker.io/library/postgres:16
    healthcheck: { cmd: pg_isready, interval: 5000ms }
  app:
    update_order: stop-first
    image: localhost:5000/app:1
    entrypoint: /bin/app
    command: serve --port 9000
    env: ["B=two", "A=1"]
    working_dir: /srv
    user: 1000:1000
    hostname: app
    labels: ["tier=web", "team=core"]
    networks: [back, front]
    ports:
      - 127.0.0.1:9001:9001/udp
      - 9000:9000/tcp
    mounts:
      - type: tmpfs
        target: /tmp
        size: 65536k
      - data:/var/lib/app:rw
    init: true
    resources: { pids: 200, cpus: "1.5", memory: 0.25g }
    read_only: true
    cap_add: [cap_sys_time, cap_net_admin, NET_ADMIN]
    cap_drop: [mknod]
    extra_hosts: { db.internal: 10.0.0.5 }
    depends_on:
      db: { condition: service_started }
networks:
  front: {}
  back: { subnet: 10.90.1.0/24 }
volumes:
  data: {}
"#;

/// Acceptance (issue 2): the TOML and YAML spellings of one container give
/// the same spec hash.
#[test]
fn toml_and_yaml_spellings_of_the_same_container_have_the_same_hash() {
    let toml = load(&[("/manifests/app.toml", APP_TOML)]);
    let yaml = load(&[("/manifests/app.yaml", APP_YAML)]);
    assert_eq!(container_hash(&toml, "app"), container_hash(&yaml, "app"));
    assert_eq!(container_hash(&toml, "db"), container_hash(&yaml, "db"));
    // Not only the hash: the whole normalised spec is the same.
    assert_eq!(toml.containers["app"].spec, yaml.containers["app"].spec);
    for name in ["back", "front"] {
        assert_eq!(
            toml.networks[name].hash, yaml.networks[name].hash,
            "network {name}"
        );
    }
    assert_eq!(toml.volumes["data"].hash, yaml.volumes["data"].hash);
}

#[test]
fn other_spellings_of_the_same_values_normalise_to_the_same_hash() {
    let toml = load(&[("/manifests/app.toml", APP_TOML)]);
    let other = load(&[("/manifests/app.yaml", APP_YAML_OTHER_SPELLINGS)]);
    let (a, b) = (&toml.containers["app"].spec, &other.containers["app"].spec);
    assert_eq!(a.image, b.image);
    assert_eq!(a.command, b.command);
    assert_eq!(a.env, b.env);
    assert_eq!(a.ports, b.ports);
    assert_eq!(a.mounts, b.mounts);
    assert_eq!(a.resources, b.resources);
    assert_eq!(a.cap_add, b.cap_add);
    assert_eq!(a.extra_hosts, b.extra_hosts);
    assert_eq!(container_hash(&toml, "app"), container_hash(&other, "app"));
    assert_eq!(container_hash(&toml, "db"), container_hash(&other, "db"));
}

/// The lines of `[containers.app]` in [`APP_TOML`], and what comes before them.
fn app_toml_parts() -> (String, Vec<String>) {
    let (head, body) = APP_TOML
        .split_once("[containers.app]\n")
        .expect("app table");
    (
        format!("{head}[containers.app]\n"),
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn app_hash_with(lines: &[String]) -> SpecHash {
    let (head, _) = app_toml_parts();
    let text = format!("{head}{}\n", lines.join("\n"));
    container_hash(&load(&[("/manifests/app.toml", &text)]), "app")
}

/// `APP_TOML` with the line of `key` replaced by `key = value`.
fn app_hash_with_field(key: &str, value: &str) -> SpecHash {
    let (_, mut lines) = app_toml_parts();
    let line = lines
        .iter_mut()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no field {key} in APP_TOML"));
    *line = format!("{key} = {value}");
    app_hash_with(&lines)
}

#[test]
fn reordered_keys_and_set_like_lists_hash_the_same() {
    let base = app_hash_with_field("image", r#""localhost:5000/app:1""#);
    let (_, mut lines) = app_toml_parts();
    lines.reverse();
    assert_eq!(app_hash_with(&lines), base, "fields in reverse order");
    let same = [
        ("env", r#"{ B = "two", A = "1" }"#),
        ("labels", r#"{ tier = "web", team = "core" }"#),
        ("ports", r#"["127.0.0.1:9001:9001/udp", "9000:9000"]"#),
        ("mounts", r#"["tmpfs:/tmp:size=64m", "data:/var/lib/app"]"#),
        ("cap_add", r#"["SYS_TIME", "NET_ADMIN"]"#),
        (
            "resources",
            r#"{ pids = 200, cpus = 1.5, memory = "256m" }"#,
        ),
    ];
    for (key, value) in same {
        assert_eq!(app_hash_with_field(key, value), base, "{key} = {value}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(32), ..ProptestConfig::default() })]

    /// Any order of the container's fields gives the same hash.
    #[test]
    fn any_order_of_fields_hashes_the_same(lines in Just(app_toml_parts().1).prop_shuffle()) {
        let base = app_hash_with(&app_toml_parts().1);
        prop_assert_eq!(app_hash_with(&lines), base);
    }
}

#[test]
fn changing_a_field_that_matters_changes_the_hash() {
    let base = app_hash_with_field("image", r#""localhost:5000/app:1""#);
    let pinned = format!(r#""localhost:5000/app:1@sha256:{}""#, "a".repeat(64));
    let changes = [
        ("image", r#""localhost:5000/app:2""#),
        ("image", r#""localhost:5001/app:1""#),
        ("image", pinned.as_str()),
        ("entrypoint", r#"["/bin/app2"]"#),
        ("command", r#"["serve", "--port", "9001"]"#),
        ("command", r#"["--port", "9000", "serve"]"#),
        ("env", r#"{ A = "1", B = "three" }"#),
        ("env", r#"{ A = "1", B = "two", C = "" }"#),
        ("working_dir", r#""/srv/app""#),
        ("user", r#""1001:1000""#),
        ("hostname", r#""app2""#),
        ("labels", r#"{ team = "core", tier = "api" }"#),
        ("networks", r#"["front", "back"]"#),
        ("networks", r#"["back"]"#),
        (
            "networks",
            r#"{ back = { ipv4_address = "10.90.1.10" }, front = {} }"#,
        ),
        (
            "networks",
            r#"{ back = { aliases = ["api"] }, front = {} }"#,
        ),
        ("ports", r#"["9000:9000", "127.0.0.1:9002:9001/udp"]"#),
        ("ports", r#"["9000:9000", "127.0.0.1:9001:9001/tcp"]"#),
        ("ports", r#"["9000:9000"]"#),
        (
            "mounts",
            r#"["data:/var/lib/app:ro", "tmpfs:/tmp:size=64m"]"#,
        ),
        ("mounts", r#"["data:/var/lib/app", "tmpfs:/tmp:size=32m"]"#),
        ("mounts", r#"["data:/var/lib/app2", "tmpfs:/tmp:size=64m"]"#),
        (
            "mounts",
            r#"["data:/var/lib/app", "tmpfs:/tmp:size=64m", "/etc/hosts:/etc/hosts:ro"]"#,
        ),
        ("init", "false"),
        (
            "resources",
            r#"{ memory = "512m", cpus = 1.5, pids = 200 }"#,
        ),
        ("resources", r#"{ memory = "256m", cpus = 2, pids = 200 }"#),
        (
            "resources",
            r#"{ memory = "256m", cpus = 1.5, pids = 201 }"#,
        ),
        ("resources", r#"{ memory = "256m", cpus = 1.5 }"#),
        ("read_only", "false"),
        ("cap_add", r#"["NET_ADMIN"]"#),
        ("cap_drop", r#"["MKNOD", "NET_RAW"]"#),
        ("extra_hosts", r#"["db.internal:10.0.0.6"]"#),
    ];
    let mut seen = vec![base.clone()];
    for (key, value) in changes {
        let h = app_hash_with_field(key, value);
        assert_ne!(h, base, "changing {key} to {value} must change the hash");
        assert!(
            !seen.contains(&h),
            "{key} = {value} hashes like an earlier change"
        );
        seen.push(h);
    }
}

/// The hash leaves out what the reconciler applies without recreating the
/// container (see the `moor_spec::hash` module documentation).
#[test]
fn changing_a_field_applied_in_place_keeps_the_hash() {
    let base = app_hash_with_field("image", r#""localhost:5000/app:1""#);
    let in_place = [
        ("replicas", "0"),
        ("restart", r#""on-failure:3""#),
        ("restart", r#""no""#),
        (
            "healthcheck",
            r#"{ cmd = ["true"], interval = "1s", retries = 5 }"#,
        ),
        ("healthcheck", r#"{ tcp = 9000 }"#),
        ("depends_on", r#"{ db = "healthy" }"#),
        ("depends_on", "[]"),
        ("stop_signal", r#""SIGTERM""#),
        ("stop_grace_period", r#""1m""#),
        ("update_order", r#""start-first""#),
    ];
    for (key, value) in in_place {
        assert_eq!(
            app_hash_with_field(key, value),
            base,
            "changing {key} to {value} must keep the hash"
        );
    }
}

/// The hash of a fixed container, pinned. The canonical encoding is a
/// contract with every running host: if this changes, every container of
/// every host is replaced on upgrade. Change it only on purpose (and bump the
/// version field inside the encoding).
#[test]
fn the_canonical_encoding_is_stable() {
    let state = load(&[(
        "/manifests/pinned.toml",
        r#"
[containers.pinned]
image   = "busybox:1.36"
command = ["sleep", "infinity"]
env     = { A = "1" }
ports   = ["8080:80"]
"#,
    )]);
    let hash = container_hash(&state, "pinned");
    assert!(
        hash.as_str().starts_with("sha256:") && hash.as_str().len() == 71,
        "{hash}"
    );
    assert_eq!(
        hash.as_str(),
        PINNED_HASH,
        "the canonical encoding of a container changed"
    );
}

/// `seccomp`: "default" is what an absent field means (same hash, so
/// containers from before the field are not replaced), "unconfined"
/// changes the hash, anything else is an error, and Compose's
/// `security_opt` points to it.
#[test]
fn seccomp_is_default_or_unconfined() {
    let with = |extra: &str| {
        let text = format!("[containers.c]\nimage = \"busybox\"\n{extra}");
        moor_spec::load_texts(&[(PathBuf::from("/m/c.toml"), text)])
    };
    let hash = |extra: &str| {
        let state = with(extra).unwrap_or_else(|d| panic!("{d}"));
        (
            container_hash(&state, "c"),
            state.containers["c"].spec.seccomp,
        )
    };
    let (base, mode) = hash("");
    assert_eq!(mode, moor_spec::Seccomp::Default);
    assert_eq!(hash("seccomp = \"default\"\n"), (base.clone(), mode));
    let (free, mode) = hash("seccomp = \"unconfined\"\n");
    assert_eq!(mode, moor_spec::Seccomp::Unconfined);
    assert_ne!(free, base);
    let bad = with("seccomp = \"strict\"\n").unwrap_err().to_string();
    assert!(
        bad.contains("seccomp") && bad.contains("not one of default, unconfined"),
        "{bad}"
    );
    let compose = with("security_opt = [\"seccomp=unconfined\"]\n")
        .unwrap_err()
        .to_string();
    assert!(compose.contains("did you mean \"seccomp\""), "{compose}");
}

const PINNED_HASH: &str = "sha256:955eda9b0db020e82a35384b5c01f1460eefbd34741ca272be2fa5743267093d";

/// A directory with one container that reads an env_file and a relative bind
/// source next to its manifest.
fn write_stack(dir: &Path, manifest: (&str, &str)) {
    std::fs::create_dir_all(dir.join("conf")).expect("mkdir");
    std::fs::write(dir.join("app.env"), "LOG_LEVEL=info\n").expect("write env");
    std::fs::write(dir.join("conf/app.conf"), "listen 9000\n").expect("write conf");
    std::fs::write(dir.join(manifest.0), manifest.1).expect("write manifest");
}

const FILES_TOML: &str = r#"
[containers.app]
image    = "localhost:5000/app:1"
env_file = "./app.env"
mounts   = ["./conf/app.conf:/etc/app.conf:ro", "./conf:/etc/app.d:ro"]
"#;

const FILES_YAML: &str = r#"
containers:
  app:
    image: localhost:5000/app:1
    env_file: [app.env]
    mounts:
      - ./conf:/etc/app.d:ro
      - type: bind
        source: ./conf/app.conf
        target: /etc/app.conf
        read_only: true
"#;

fn load_dir(dir: &Path) -> DesiredState {
    moor_spec::load(&[dir]).unwrap_or_else(|d| panic!("should be valid:\n{d}"))
}

#[test]
fn env_file_and_bind_file_contents_are_part_of_the_hash() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    write_stack(dir, ("app.toml", FILES_TOML));
    let state = load_dir(dir);
    let base = container_hash(&state, "app");
    assert_eq!(state.containers["app"].spec.env["LOG_LEVEL"], "info");
    let bind = state.containers["app"]
        .spec
        .mounts
        .iter()
        .find(|m| m.target == "/etc/app.conf")
        .expect("bind mount");
    match &bind.source {
        MountSource::Bind {
            source,
            content_digest,
            tree,
        } => {
            assert!(
                source.is_absolute(),
                "bind sources are made absolute: {}",
                source.display()
            );
            assert_eq!(source, &dir.join("conf/app.conf"));
            assert!(
                content_digest.is_some(),
                "a relative bind source has a content digest"
            );
            assert_eq!(
                tree.as_deref(),
                Some(dir),
                "a relative bind source records the tree it must stay in"
            );
        }
        other => panic!("expected a bind mount, got {other:?}"),
    }
    // The same again: nothing changed, so neither did the hash.
    assert_eq!(container_hash(&load_dir(dir), "app"), base);

    std::fs::write(dir.join("app.env"), "LOG_LEVEL=debug\n").expect("write env");
    let after_env = container_hash(&load_dir(dir), "app");
    assert_ne!(after_env, base, "editing the env_file changes the hash");

    std::fs::write(dir.join("conf/app.conf"), "listen 9001\n").expect("write conf");
    let after_conf = container_hash(&load_dir(dir), "app");
    assert_ne!(
        after_conf, after_env,
        "editing a bind-mounted file changes the hash"
    );

    std::fs::write(dir.join("conf/extra.conf"), "x\n").expect("write conf");
    let after_new_file = container_hash(&load_dir(dir), "app");
    assert_ne!(
        after_new_file, after_conf,
        "a new file in a bind-mounted directory changes the hash"
    );

    std::fs::remove_file(dir.join("conf/extra.conf")).expect("rm");
    std::fs::write(dir.join("conf/app.conf"), "listen 9000\n").expect("write conf");
    std::fs::write(dir.join("app.env"), "LOG_LEVEL=info\n").expect("write env");
    assert_eq!(
        container_hash(&load_dir(dir), "app"),
        base,
        "the old content gives the old hash"
    );
}

#[test]
fn env_file_and_bind_sources_hash_the_same_from_toml_and_yaml() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let a = tmp.path();
    write_stack(a, ("app.toml", FILES_TOML));
    std::fs::write(a.join("app.yaml"), FILES_YAML).expect("write");
    // Loaded one file at a time: together they would declare "app" twice.
    let toml = moor_spec::load(&[a.join("app.toml")]).expect("valid");
    let yaml = moor_spec::load(&[a.join("app.yaml")]).expect("valid");
    assert_eq!(container_hash(&toml, "app"), container_hash(&yaml, "app"));
    assert_eq!(toml.containers["app"].spec, yaml.containers["app"].spec);
}

#[test]
fn the_hash_does_not_depend_on_how_the_manifest_path_was_written() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    write_stack(dir, ("app.toml", FILES_TOML));
    let plain = container_hash(&load_dir(dir), "app");
    let dotted = container_hash(&load_dir(&dir.join("conf/..").join(".")), "app");
    assert_eq!(plain, dotted);
}

#[test]
fn image_references_normalise_like_docker() {
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let table = [
        ("busybox", "docker.io/library/busybox:latest".to_string()),
        ("busybox:1.36", "docker.io/library/busybox:1.36".to_string()),
        (
            "library/busybox:1.36",
            "docker.io/library/busybox:1.36".to_string(),
        ),
        (
            "docker.io/busybox",
            "docker.io/library/busybox:latest".to_string(),
        ),
        (
            "index.docker.io/library/busybox",
            "docker.io/library/busybox:latest".to_string(),
        ),
        (
            "registry-1.docker.io/org/app",
            "docker.io/org/app:latest".to_string(),
        ),
        ("org/app:v1", "docker.io/org/app:v1".to_string()),
        ("localhost:5000/x:1", "localhost:5000/x:1".to_string()),
        ("localhost/x", "localhost/x:latest".to_string()),
        (
            "ghcr.io/org/team/app:1.0_rc-1",
            "ghcr.io/org/team/app:1.0_rc-1".to_string(),
        ),
        ("quay.io/a/b", "quay.io/a/b:latest".to_string()),
        ("[::1]:5000/app", "[::1]:5000/app:latest".to_string()),
        (
            "my-registry.example.com:443/a__b/c--d",
            "my-registry.example.com:443/a__b/c--d:latest".to_string(),
        ),
        (
            &format!("busybox@{digest}"),
            format!("docker.io/library/busybox@{digest}"),
        ),
        (
            &format!("busybox:1.36@{digest}"),
            format!("docker.io/library/busybox:1.36@{digest}"),
        ),
        (
            &format!("localhost:5000/x@{digest}"),
            format!("localhost:5000/x@{digest}"),
        ),
    ];
    for (input, want) in &table {
        let r = reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(&r.to_string(), want, "{input}");
    }
    let r = reference::parse("localhost:5000/team/app:2").expect("valid");
    assert_eq!(
        (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
        ("localhost:5000", "team/app", Some("2"))
    );

    for bad in [
        "",
        "Busybox",
        "busybox:",
        "busybox:-1",
        "busybox:.x",
        "busybox@sha256:abc",
        "busybox@sha256:",
        &format!("busybox@sha256:{}", "A".repeat(64)),
        &format!("busybox@md5:{}", "a".repeat(32)),
        "a//b",
        "a/../b",
        "a/./b",
        "-a",
        "a-",
        "a___b",
        "localhost:0/x",
        "localhost:99999/x",
        "bad_host:5000/x",
        "[::1/x",
        "x y",
        "busybox:1.36\n",
        &"a".repeat(256),
        &format!("busybox:{}", "t".repeat(129)),
    ] {
        assert!(reference::parse(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn ports_normalise_and_expand_ranges() {
    let table: &[(&str, &[&str])] = &[
        ("80", &["80/tcp"]),
        ("8080:80", &["8080:80/tcp"]),
        ("8080:80/udp", &["8080:80/udp"]),
        ("127.0.0.1:8080:80", &["127.0.0.1:8080:80/tcp"]),
        ("127.0.0.1::80", &["127.0.0.1::80/tcp"]),
        ("[::1]:8080:80", &["[::1]:8080:80/tcp"]),
        ("[::]::53/udp", &["[::]::53/udp"]),
        (
            "8000-8002:9000-9002",
            &["8000:9000/tcp", "8001:9001/tcp", "8002:9002/tcp"],
        ),
        ("9000-9001", &["9000/tcp", "9001/tcp"]),
        ("65535:1", &["65535:1/tcp"]),
    ];
    for (input, want) in table {
        let got: Vec<String> = ports::parse(input)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(&got, want, "{input}");
    }
    let p = ports::parse("53:53/udp").expect("valid").remove(0);
    assert_eq!(
        (p.host_port, p.container_port, p.protocol),
        (Some(53), 53, Protocol::Udp)
    );
    for bad in [
        "",
        ":",
        "0",
        "0:80",
        "80:0",
        "65536:80",
        "80:65536",
        "-1:80",
        "a:80",
        "80:b",
        "80/sctp",
        "80/",
        "80:80/TCP ",
        "8000-8001:80",
        "8002-8000:80-82",
        "8000-:80",
        "1.2.3:80:80",
        "localhost:80:80",
        "1:2:3:4",
        "[::1:80:80",
        "[::1]80:80",
        "[nope]:80:80",
        "127.0.0.1:80",
    ] {
        assert!(ports::parse(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn mounts_parse_every_form() {
    let m = mounts::parse("data:/var/lib/x:ro").expect("valid");
    assert_eq!(
        m.source,
        MountSource::Volume {
            name: "data".into()
        }
    );
    assert!(m.read_only);
    assert_eq!(m.target, "/var/lib/x");
    let m = mounts::parse("/etc/hosts:/etc/hosts").expect("valid");
    assert!(
        matches!(m.source, MountSource::Bind { ref source, .. } if source == Path::new("/etc/hosts"))
    );
    assert!(!m.read_only);
    for rel in ["./conf:/etc/conf", "../common:/shared", ".:/src"] {
        assert!(
            matches!(
                mounts::parse(rel).expect(rel).source,
                MountSource::Bind { .. }
            ),
            "{rel}"
        );
    }
    assert_eq!(
        mounts::parse("tmpfs:/run").expect("valid").source,
        MountSource::Tmpfs { size: None }
    );
    assert_eq!(
        mounts::parse("tmpfs:/run:size=1g,ro").expect("valid"),
        moor_spec::Mount {
            target: "/run".into(),
            source: MountSource::Tmpfs {
                size: Some(1 << 30)
            },
            read_only: true
        }
    );
    assert_eq!(
        mounts::parse("data:/x:rw").expect("valid").to_string(),
        "data:/x"
    );
    for bad in [
        "",
        "data",
        "data:",
        ":/x",
        "data:x",
        "data:/",
        "data:/a/../b",
        "data:/x:rx",
        "data:/x:ro:extra",
        "/host:/x:size=1m",
        "tmpfs:/x:size=lots",
        "tmpfs:relative",
    ] {
        assert!(mounts::parse(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn sizes_and_durations() {
    let sizes = [
        ("0", 0),
        ("1", 1),
        ("1b", 1),
        ("1k", 1 << 10),
        ("1kb", 1 << 10),
        ("1KiB", 1 << 10),
        ("64m", 64 << 20),
        ("64M", 64 << 20),
        ("1.5g", 3 << 29),
        ("2t", 2 << 40),
        (" 8m ", 8 << 20),
    ];
    for (s, want) in sizes {
        assert_eq!(units::parse_size(s), Ok(want), "{s:?}");
    }
    for bad in [
        "",
        "m",
        "-1",
        "-1m",
        "1x",
        "1.2.3m",
        "1e3",
        "1 000",
        "99999999999999t",
        "NaN",
        "inf",
    ] {
        assert!(
            units::parse_size(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
    let ms = Duration::from_millis;
    let durations = [
        ("0", ms(0)),
        ("0s", ms(0)),
        ("500ms", ms(500)),
        ("2s", ms(2_000)),
        ("1.5s", ms(1_500)),
        ("5m", ms(300_000)),
        ("1h", ms(3_600_000)),
        ("1h30m", ms(5_400_000)),
        ("1m30s", ms(90_000)),
        ("250us", Duration::from_micros(250)),
        ("250µs", Duration::from_micros(250)),
        ("10ns", Duration::from_nanos(10)),
    ];
    for (s, want) in durations {
        assert_eq!(units::parse_duration(s), Ok(want), "{s:?}");
    }
    for bad in [
        "", "5", "s", "-1s", "1d", "1 s", "1s5", ".s", "1e3s", "NaNs", "1000000h",
    ] {
        assert!(
            units::parse_duration(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
}

fn arb_port_mapping() -> impl Strategy<Value = ports::PortMapping> {
    let ip = prop_oneof![
        Just(None),
        any::<[u8; 4]>().prop_map(|b| Some(std::net::IpAddr::from(b))),
        any::<[u16; 8]>().prop_map(|s| Some(std::net::IpAddr::from(s))),
    ];
    let port = 1u16..=65535;
    (
        ip,
        proptest::option::of(port.clone()),
        port,
        prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)],
    )
        .prop_map(
            |(host_ip, host_port, container_port, protocol)| ports::PortMapping {
                host_ip,
                host_port,
                container_port,
                protocol,
            },
        )
}

/// Valid image references: optional registry, one to three path components,
/// optional tag, optional digest.
fn arb_image_ref() -> impl Strategy<Value = String> {
    let registry = prop_oneof![
        Just(String::new()),
        Just("docker.io/".to_string()),
        Just("index.docker.io/".to_string()),
        Just("localhost/".to_string()),
        Just("localhost:5000/".to_string()),
        Just("127.0.0.1:5000/".to_string()),
        Just("[::1]:5000/".to_string()),
        "[a-z]([a-z0-9-]{0,6}[a-z0-9])?\\.[a-z]{2,5}(:[1-9][0-9]{0,3})?/",
    ];
    // A first component with a '.' or ':' would name a registry, as in Docker.
    let first = "[a-z0-9]{1,6}((_|__|-+)[a-z0-9]{1,6}){0,2}";
    let component = "[a-z0-9]{1,6}((\\.|_|__|-+)[a-z0-9]{1,6}){0,2}";
    let path = (first, proptest::collection::vec(component, 0..=2))
        .prop_map(|(f, rest)| std::iter::once(f).chain(rest).collect::<Vec<_>>().join("/"));
    let tag = proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}");
    let digest = proptest::option::of("[0-9a-f]{64}");
    (registry, path, tag, digest).prop_map(|(r, p, t, d)| {
        let mut s = format!("{r}{p}");
        if let Some(t) = t {
            s.push(':');
            s.push_str(&t);
        }
        if let Some(d) = d {
            s.push_str("@sha256:");
            s.push_str(&d);
        }
        s
    })
}

/// A valid manifest with one character replaced, inserted or deleted: text
/// close enough to valid to get past the parser into the decoder.
fn arb_mutated_manifest(base: &'static str) -> impl Strategy<Value = String> {
    let len = base.chars().count();
    (0..len, 0u8..3, any::<char>()).prop_map(move |(at, op, c)| {
        let mut chars: Vec<char> = base.chars().collect();
        match op {
            0 => chars[at] = c,
            1 => chars.insert(at, c),
            _ => {
                chars.remove(at);
            }
        }
        chars.into_iter().collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn port_mappings_round_trip_through_display(m in arb_port_mapping()) {
        let text = m.to_string();
        let parsed = ports::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed, vec![m]);
    }

    #[test]
    fn image_references_round_trip_through_display(s in arb_image_ref()) {
        let r = reference::parse(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
        let shown = r.to_string();
        let again = reference::parse(&shown).map_err(|e| TestCaseError::fail(format!("{shown}: {e}")))?;
        prop_assert_eq!(&again, &r);
        prop_assert_eq!(again.to_string(), shown);
        prop_assert!(r.tag.is_some() || r.digest.is_some());
    }

    #[test]
    fn sizes_and_durations_never_panic(s in "\\PC{0,12}") {
        let _ = units::parse_size(&s);
        let _ = units::parse_duration(&s);
    }

    #[test]
    fn sizes_and_durations_of_numbers_with_units_are_exact(n in 0u32..100_000, unit in 0usize..4) {
        let (size_unit, shift) = [("", 0), ("k", 10), ("m", 20), ("g", 30)][unit];
        prop_assert_eq!(units::parse_size(&format!("{n}{size_unit}")), Ok(u64::from(n) << shift));
        let (dur_unit, ms) = [("ms", 1u64), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)][unit];
        prop_assert_eq!(units::parse_duration(&format!("{n}{dur_unit}")), Ok(Duration::from_millis(u64::from(n) * ms)));
    }

    #[test]
    fn normalisers_never_panic(s in "\\PC{0,40}") {
        let _ = reference::parse(&s);
        let _ = ports::parse(&s);
        let _ = mounts::parse(&s);
        let _ = moor_spec::words::split(&s);
    }

    #[test]
    fn the_parsers_never_panic_on_arbitrary_text(s in "\\PC{0,200}", yaml in any::<bool>()) {
        let path = if yaml { "/m/x.yaml" } else { "/m/x.toml" };
        let _ = moor_spec::load_texts(&[(PathBuf::from(path), s)]);
    }

    #[test]
    fn the_parsers_never_panic_on_almost_valid_toml(s in arb_mutated_manifest(APP_TOML)) {
        check_mutated("/m/x.toml", s)?;
    }

    #[test]
    fn the_parsers_never_panic_on_almost_valid_yaml(s in arb_mutated_manifest(APP_YAML)) {
        check_mutated("/m/x.yaml", s)?;
    }
}

/// Loads mutated text: it must not panic, and an invalid result must say
/// where, inside the file.
fn check_mutated(path: &str, text: String) -> Result<(), TestCaseError> {
    // Line breaks as YAML counts them: "\n", "\r\n" and a lone "\r".
    let lines =
        (text.matches('\n').count() + text.replace("\r\n", "\n").matches('\r').count()) as u32 + 1;
    if let Err(diags) = moor_spec::load_texts(&[(PathBuf::from(path), text)]) {
        prop_assert!(!diags.is_empty());
        for d in &diags {
            prop_assert!(d.line >= 1 && d.line <= lines, "{d}");
            prop_assert!(d.column >= 1, "{d}");
            prop_assert!(!d.message.is_empty() && !d.message.ends_with('.'), "{d}");
        }
    }
    Ok(())
}

/// Regression: a number in an environment value or label was turned into
/// Rust's rendering of it, so `VERSION: 1.10` reached the container as `1.1`.
#[test]
fn numbers_in_env_and_labels_keep_their_text() {
    let yaml = load(&[(
        "/m/app.yaml",
        "containers:\n  app:\n    image: app\n    env: {VERSION: 1.10, PIN: 0123, BIG: 1e3, HEX: 0x1F}\n    labels: {release: 2.0}\n",
    )]);
    let spec = &yaml.containers["app"].spec;
    let env: Vec<(&str, &str)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("BIG", "1e3"),
            ("HEX", "0x1F"),
            ("PIN", "0123"),
            ("VERSION", "1.10")
        ]
    );
    assert_eq!(spec.labels["release"], "2.0");

    let toml = load(&[(
        "/m/app.toml",
        "[containers.app]\nimage = \"app\"\nenv = { VERSION = 1.10, BIG = 1e3, HEX = 0x1F, PIN = \"0123\" }\nlabels = { release = 2.0 }\n",
    )]);
    assert_eq!(toml.containers["app"].spec.env, spec.env);
    assert_eq!(toml.containers["app"].hash, yaml.containers["app"].hash);
}
