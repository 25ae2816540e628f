use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::model::{DependCondition, HealthTest, NetworkMode, RestartPolicy};
use crate::{DesiredState, Diagnostics, LoadOptions, MountSource, Severity};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn load_opts(root: &Path, options: &LoadOptions) -> Result<DesiredState, Diagnostics> {
    crate::load_with(&[root], None, options)
}

fn load(root: &Path) -> Result<DesiredState, Diagnostics> {
    load_opts(root, &LoadOptions::default())
}

fn ok(r: Result<DesiredState, Diagnostics>) -> DesiredState {
    r.unwrap_or_else(|d| panic!("should load:\n{d}"))
}

fn err(r: Result<DesiredState, Diagnostics>) -> String {
    match r {
        Ok(s) => panic!("should fail; loaded {:?}", s.containers.keys()),
        Err(d) => d.to_string(),
    }
}

const STACK: &str = "\
services:
  web:
    image: nginx:1.25
    command: [\"nginx\", \"-g\", \"daemon off;\"]
    environment:
      MODE: prod
      WORKERS: 4
    ports:
      - \"8080:80\"
      - target: 443
        published: 8443
        host_ip: 127.0.0.1
        protocol: tcp
    volumes:
      - ./site:/usr/share/nginx/html:ro
      - type: volume
        source: cache
        target: /var/cache/nginx
      - type: tmpfs
        target: /tmp
        tmpfs:
          size: 1m
    networks:
      front:
      back:
        aliases: [www]
        ipv4_address: 10.7.0.10
    depends_on:
      db:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
    restart: unless-stopped
    user: \"101:101\"
    working_dir: /srv
    deploy:
      resources:
        limits: {cpus: '0.5', memory: 64M, pids: 100}
      update_config: {order: start-first}
    stop_grace_period: 1m30s
  db:
    image: postgres:16
    environment: [POSTGRES_PASSWORD=secret]
    healthcheck:
      test: [\"CMD-SHELL\", \"pg_isready -U postgres\"]
      interval: 5s
      retries: 10
      start_period: 30s
    volumes: [\"data:/var/lib/postgresql/data\"]
    networks: [back]
    mem_limit: 256m
  migrate:
    image: busybox
    command: echo migrated
    networks: [back]
  worker:
    image: busybox
    deploy: {replicas: 3, restart_policy: {condition: on-failure, max_attempts: 4}}
networks:
  front: {}
  back:
    internal: true
    ipam:
      config:
        - subnet: 10.7.0.0/24
          gateway: 10.7.0.1
volumes:
  data: {}
  cache:
";

#[test]
fn a_web_db_stack_maps_onto_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "compose.yaml", STACK);
    write(tmp.path(), "site/index.html", "hi");
    let s = ok(load(tmp.path()));
    assert!(s.warnings.is_empty(), "{}", s.warnings);
    let web = &s.containers["web"].spec;
    assert_eq!(web.image.to_string(), "docker.io/library/nginx:1.25");
    assert_eq!(
        web.command.as_deref().unwrap(),
        ["nginx", "-g", "daemon off;"]
    );
    assert_eq!(web.env["MODE"], "prod");
    assert_eq!(web.env["WORKERS"], "4");
    let ports: Vec<String> = web.ports.iter().map(|p| p.to_string()).collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(
        ports.iter().any(|p| p.contains("127.0.0.1:8443:443")),
        "{ports:?}"
    );
    assert_eq!(web.mounts.len(), 3);
    assert!(web.mounts.iter().any(|m| m.target == "/usr/share/nginx/html"
        && m.read_only
        && matches!(&m.source, MountSource::Bind { source, .. } if source.ends_with("site"))));
    assert!(web.mounts.iter().any(|m| m.target == "/tmp"
        && m.source
            == MountSource::Tmpfs {
                size: Some(1 << 20)
            }));
    assert_eq!(web.networks.len(), 2);
    let back = web.networks.iter().find(|n| n.network == "back").unwrap();
    assert_eq!(back.aliases, ["www"]);
    assert_eq!(back.ipv4_address, Some("10.7.0.10".parse().unwrap()));
    assert_eq!(web.depends_on["db"], DependCondition::Healthy);
    assert_eq!(web.depends_on["migrate"], DependCondition::Completed);
    assert_eq!(web.restart, RestartPolicy::UnlessStopped);
    assert_eq!(web.user.as_deref(), Some("101:101"));
    assert_eq!(web.working_dir.as_deref(), Some("/srv"));
    assert_eq!(s.containers["worker"].spec.replicas, 3);
    assert_eq!(
        s.containers["worker"].spec.restart,
        RestartPolicy::OnFailure {
            max_retries: Some(4)
        }
    );
    assert_eq!(web.resources.cpus, Some(0.5));
    assert_eq!(web.resources.memory, Some(64 << 20));
    assert_eq!(web.resources.pids, Some(100));
    assert_eq!(web.update_order, crate::UpdateOrder::StartFirst);
    assert_eq!(web.stop_grace_period, Duration::from_secs(90));
    let db = &s.containers["db"].spec;
    assert_eq!(db.env["POSTGRES_PASSWORD"], "secret");
    let h = db.healthcheck.as_ref().unwrap();
    assert_eq!(
        h.test,
        HealthTest::Cmd(vec![
            "/bin/sh".into(),
            "-c".into(),
            "pg_isready -U postgres".into()
        ])
    );
    assert_eq!(
        (h.interval, h.retries, h.start_period),
        (Duration::from_secs(5), 10, Duration::from_secs(30))
    );
    assert_eq!(db.resources.memory, Some(256 << 20));
    assert!(s.networks["back"].spec.internal);
    assert_eq!(
        s.networks["back"].spec.subnet,
        Some("10.7.0.0/24".parse().unwrap())
    );
    assert!(s.volumes.contains_key("data") && s.volumes.contains_key("cache"));
    assert_eq!(
        s.containers["migrate"].spec.command.as_deref().unwrap(),
        ["echo", "migrated"]
    );
}

#[test]
fn unsupported_keys_are_warnings_at_their_place_and_the_load_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "docker-compose.yml",
        "services:\n  web:\n    image: busybox\n    cgroup: host\n    privileged: true\n    ulimits:\n      nofile: 1024\n    imagee: x\n    x-mine: 1\n    volumes: [\"data:/d:nocopy\", \"/anon\"]\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      start_interval: 1s\nvolumes:\n  data:\n    driver: nfs\n",
    );
    let s = ok(load(tmp.path()));
    let shown: Vec<String> = s
        .warnings
        .iter()
        .map(|d| {
            assert_eq!(d.severity, Severity::Warning);
            format!("{}:{}: {}: {}", d.line, d.column, d.field, d.message)
        })
        .collect();
    let expect = [
        "4:5: services.web.cgroup: not supported by moor yet; ignored",
        "5:5: services.web.privileged: not supported by moor yet; ignored",
        "6:5: services.web.ulimits: not supported",
        "8:5: services.web.imagee: unknown key; ignored; did you mean \"image\"?",
        "10:15: services.web.volumes[0]: nocopy is not supported",
        "10:33: services.web.volumes[1]: an anonymous volume",
        "13:7: services.web.healthcheck.start_interval: not supported",
        "16:5: volumes.data.driver: not supported",
    ];
    assert_eq!(shown.len(), expect.len(), "{shown:#?}");
    for (got, want) in shown.iter().zip(expect) {
        assert!(got.starts_with(want), "{got} should start with {want}");
    }
    assert_eq!(s.containers["web"].spec.mounts.len(), 1);
    let line = s.warnings.iter().next().unwrap().to_string();
    assert!(
        line.contains("docker-compose.yml:4:5: warning: services.web.cgroup"),
        "{line}"
    );
}

#[test]
fn a_service_with_neither_image_nor_build_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yml",
        "services:\n  a:\n    command: x\n  b:\n    build: ./b\n",
    );
    let e = err(load(tmp.path()));
    assert!(
        e.contains("compose.yml:2:3: error: services.a: a service needs an image"),
        "{e}"
    );
    // A build whose context is not there is an error at the build.
    assert!(
        e.contains("compose.yml:5:12: error: images.b.build: build context \"./b\" does not exist"),
        "{e}"
    );
}

#[test]
fn errors_of_the_lowered_document_keep_the_compose_position() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  a:\n    image: busybox\n    ports:\n      - target: 80\n        published: 99999\n    restart: sometimes\n",
    );
    let e = err(load(tmp.path()));
    assert!(
        e.contains("compose.yaml:5:9: error: containers.a.ports[0]"),
        "{e}"
    );
    assert!(
        e.contains("compose.yaml:7:14: error: containers.a.restart"),
        "{e}"
    );
}

#[test]
fn profiles_leave_services_out_unless_enabled() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  app:\n    image: busybox\n  debug:\n    image: busybox\n    profiles: [debug]\n  tools:\n    image: busybox\n    profiles: [tools, ops]\n",
    );
    let names = |s: DesiredState| s.containers.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(ok(load(tmp.path()))), ["app"]);
    let mut o = LoadOptions::default();
    o.profiles.insert("ops".into());
    assert_eq!(names(ok(load_opts(tmp.path(), &o))), ["app", "tools"]);
    let mut o = LoadOptions::default();
    o.env
        .insert("COMPOSE_PROFILES".into(), "debug,tools".into());
    assert_eq!(
        names(ok(load_opts(tmp.path(), &o))),
        ["app", "debug", "tools"]
    );
}

#[test]
fn interpolation_reads_the_environment_over_dot_env() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        ".env",
        "TAG=1.36\nPORT=8080\n# comment\nGREETING=from-dotenv\n",
    );
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  web:\n    image: busybox:${TAG}\n    ports: [\"${PORT:-80}:80\"]\n    environment:\n      GREETING: $GREETING\n      PRICE: $$5\n      HOME:\n      ABSENT:\n",
    );
    let mut o = LoadOptions::default();
    o.env.insert("PORT".into(), "9090".into());
    o.env.insert("HOME".into(), "/home/moor".into());
    let s = ok(load_opts(tmp.path(), &o));
    let web = &s.containers["web"].spec;
    assert_eq!(web.image.tag.as_deref(), Some("1.36"));
    assert_eq!(
        web.ports[0].host_port,
        Some(9090),
        "the environment wins over .env"
    );
    assert_eq!(web.env["GREETING"], "from-dotenv");
    assert_eq!(web.env["PRICE"], "$5");
    assert_eq!(
        web.env["HOME"], "/home/moor",
        "a name alone takes the loader's value"
    );
    assert!(
        !web.env.contains_key("ABSENT"),
        "and is left out when there is none"
    );
}

#[test]
fn interpolation_errors_name_the_place() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  web:\n    image: busybox\n    environment:\n      - DB=${DB_URL:?set DB_URL}\n    command: echo $5\n",
    );
    let e = err(load(tmp.path()));
    assert!(e.contains("compose.yaml:5:9: error: services.web.environment[0]: required variable DB_URL is missing a value: set DB_URL"), "{e}");
    assert!(
        e.contains("compose.yaml:6:14: error: services.web.command: invalid interpolation"),
        "{e}"
    );
}

#[test]
fn anchors_merge_keys_and_extension_fields() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yaml",
        "x-defaults: &defaults\n  restart: always\n  environment: &env\n    TZ: UTC\n  labels: {tier: app}\nservices:\n  a:\n    <<: *defaults\n    image: busybox\n  b:\n    <<: *defaults\n    image: busybox\n    restart: \"no\"\n    environment:\n      <<: *env\n      B: \"1\"\n",
    );
    let s = ok(load(tmp.path()));
    let (a, b) = (&s.containers["a"].spec, &s.containers["b"].spec);
    assert_eq!(a.restart, RestartPolicy::Always);
    assert_eq!(a.labels["tier"], "app");
    assert_eq!(b.restart, RestartPolicy::No);
    assert_eq!(
        b.env,
        BTreeMap::from([("TZ".into(), "UTC".into()), ("B".into(), "1".into())])
    );
}

#[test]
fn extends_in_the_same_file_and_another() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "common/base.yml",
        "services:\n  base:\n    image: busybox:1.36\n    environment: [A=base, B=base]\n    ports: [\"80\"]\n    healthcheck: {test: [\"CMD\", \"true\"], interval: 7s}\n",
    );
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  tmpl:\n    extends: {file: common/base.yml, service: base}\n    environment: {B: tmpl}\n  web:\n    extends: tmpl\n    environment: [C=web]\n    ports: [\"81\"]\n    healthcheck: {retries: 5}\n",
    );
    let s = ok(load(tmp.path()));
    assert_eq!(s.containers.keys().collect::<Vec<_>>(), ["tmpl", "web"]);
    assert!(
        !s.containers.contains_key("base"),
        "base.yml is data, not a manifest"
    );
    let web = &s.containers["web"].spec;
    assert_eq!(web.image.tag.as_deref(), Some("1.36"));
    assert_eq!(
        web.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
        ["A=base", "B=tmpl", "C=web"]
    );
    assert_eq!(web.ports.len(), 2, "lists add up");
    let h = web.healthcheck.as_ref().unwrap();
    assert_eq!(
        (h.interval, h.retries),
        (Duration::from_secs(7), 5),
        "tables merge"
    );
}

#[test]
fn extends_that_loops_or_leaves_the_tree_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    write(
        tmp.path(),
        "outside.yml",
        "services:\n  x:\n    image: busybox\n",
    );
    write(
        &root,
        "compose.yaml",
        "services:\n  a:\n    extends: b\n  b:\n    extends: a\n  c:\n    image: busybox\n    extends: {file: ../outside.yml, service: x}\n",
    );
    let e = err(load(&root));
    assert!(
        e.contains(
            "compose.yaml:3:14: error: services.a.extends: extends \"b\" leads back to itself"
        ),
        "{e}"
    );
    assert!(e.contains("extends file \"../outside.yml\""), "{e}");
}

#[test]
fn errors_in_an_extended_service_of_another_file_point_at_the_extends() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "base.yml",
        "services:\n  b:\n    image: busybox\n    ports: [\"99999:80\"]\n",
    );
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  a:\n    extends:\n      file: base.yml\n      service: b\n",
    );
    let e = err(load(tmp.path()));
    assert!(
        e.contains("compose.yaml:4:7: error: containers.a.ports[0]"),
        "{e}"
    );
    assert!(
        !e.contains("compose.yaml:4:13"),
        "a line of base.yml given as one of compose.yaml: {e}"
    );
}

const SECRETS: &str = "\
services:
  app:
    image: busybox
    user: \"1000\"
    secrets:
      - db_password
      - source: token
        target: api/token
        uid: \"103\"
        gid: 104
        mode: 0440
    configs:
      - source: app
        target: /etc/app.ini
      - source: motd
        mode: 0o640
      - source: banner
        target: etc/banner
        mode: \"0400\"
secrets:
  db_password: {file: ./db_password.txt}
  token: {environment: API_TOKEN}
configs:
  app: {file: conf/app.ini}
  motd: {content: \"hello ${WHO}\"}
  banner: {environment: BANNER}
";

/// target, source, uid, gid, mode, value
type SecretFile<'a> = (
    &'a str,
    &'a str,
    Option<u32>,
    Option<u32>,
    u32,
    Option<&'a [u8]>,
);

#[test]
fn secrets_and_configs_are_moors_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "db_password.txt", "pw-from-file");
    write(tmp.path(), "conf/app.ini", "x=1");
    // The environment wins over `.env`, as for interpolation.
    write(
        tmp.path(),
        ".env",
        "API_TOKEN=from-dotenv\nWHO=dotenv\nBANNER=b4nner\n",
    );
    write(tmp.path(), "compose.yaml", SECRETS);
    let mut options = LoadOptions::default();
    options
        .env
        .insert("API_TOKEN".into(), "tok-from-env".into());
    options.secret_key = b"host key".to_vec();
    let s = ok(load_opts(tmp.path(), &options));
    let app = &s.containers["app"].spec;
    // Nothing is bind-mounted from the source: every value is in memory.
    assert!(app.mounts.is_empty(), "{:?}", app.mounts);
    let got: Vec<SecretFile<'_>> = app
        .secrets
        .iter()
        .map(|m| {
            let v = m.value.expose();
            (
                m.target.as_str(),
                m.source.as_str(),
                m.uid,
                m.gid,
                m.mode,
                v,
            )
        })
        .collect();
    let want: Vec<SecretFile<'_>> = vec![
        (
            "/etc/app.ini",
            "config:app",
            Some(0),
            Some(0),
            0o444,
            Some(b"x=1"),
        ),
        (
            "/etc/banner",
            "config:banner",
            Some(0),
            Some(0),
            0o400,
            Some(b"b4nner"),
        ),
        (
            "/motd",
            "config:motd",
            Some(0),
            Some(0),
            0o640,
            Some(b"hello dotenv"),
        ),
        (
            "/run/secrets/api/token",
            "token",
            Some(103),
            Some(104),
            0o440,
            Some(b"tok-from-env"),
        ),
        (
            "/run/secrets/db_password",
            "db_password",
            Some(0),
            Some(0),
            0o444,
            Some(b"pw-from-file"),
        ),
    ];
    assert_eq!(got, want);
    for m in &app.secrets {
        assert!(m.digest.starts_with("hmac-sha256:"), "{}", m.digest);
        assert_ne!(m.digest, "hmac-sha256:unkeyed");
    }
    // The values are in no serialised or printed form of the state.
    let json = serde_json::to_string(&s).unwrap();
    let debug = format!("{s:?}");
    for shown in [&json, &debug] {
        for value in [
            "pw-from-file",
            "tok-from-env",
            "hello dotenv",
            "b4nner",
            "x=1",
        ] {
            assert!(!shown.contains(value), "{value} in {shown}");
        }
    }
    // A new value changes the hash of the container that reads it.
    write(tmp.path(), "db_password.txt", "rotated");
    let rotated = ok(load_opts(tmp.path(), &options));
    assert_ne!(rotated.containers["app"].hash, s.containers["app"].hash);
}

#[test]
fn secret_and_config_errors_name_the_compose_key() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "outside", "not yours");
    let src = tmp.path().join("src");
    write(&src, "pw", "v");
    std::os::unix::fs::symlink("../outside", src.join("link")).unwrap();
    write(
        &src,
        "compose.yaml",
        "services:\n  app:\n    image: busybox\n    secrets:\n      - unsett\n      - {source: pw, mode: \"0999\", uid: abc}\n    configs: [nothere]\n\
         secrets:\n  pw: {file: ./pw}\n  abs: {file: /etc/shadow}\n  up: {file: ../outside}\n  link: {file: link}\n  \
         unset: {environment: NOPE}\n  both: {file: pw, environment: X}\n  none: {}\n  ext: {external: true}\n  \
         cont: {content: x}\n\
         configs:\n  c: {file: pw, driver: x}\n",
    );
    let e = err(load(&src));
    for want in [
        "compose.yaml:5:9: error: services.app.secrets[0]: secret \"unsett\" is not declared under the top-level secrets; did you mean \"unset\"?",
        "compose.yaml:6:28: error: services.app.secrets[1].mode: expected a file mode",
        "compose.yaml:6:41: error: services.app.secrets[1].uid: uid must be a number",
        "compose.yaml:7:15: error: services.app.configs[0]: config \"nothere\" is not declared",
        "compose.yaml:10:15: error: secrets.abs.file: secret file \"/etc/shadow\" must be a relative path inside the source",
        "compose.yaml:11:14: error: secrets.up.file: secret file \"../outside\"",
        "compose.yaml:12:16: error: secrets.link.file: secret file \"link\"",
        "compose.yaml:13:24: error: secrets.unset.environment: the variable \"NOPE\" is not set",
        "compose.yaml:14:33: error: secrets.both: give only one of file, environment",
        "compose.yaml:15:9: error: secrets.none: needs one of file, environment",
        "compose.yaml:16:9: warning: secrets.ext.external: moor has no store of secrets",
        "compose.yaml:17:10: warning: secrets.cont.content: not supported by moor yet",
        "compose.yaml:17:9: error: secrets.cont: needs one of file, environment",
        "compose.yaml:19:17: warning: configs.c.driver: not supported by moor yet",
    ] {
        assert!(e.contains(want), "{want:?} not in:\n{e}");
    }
    assert!(!e.contains("not yours"), "{e}");
}

#[test]
fn names_collide_with_moors_own_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  web:\n    image: busybox\n",
    );
    write(
        tmp.path(),
        "web.toml",
        "[containers.web]\nimage = \"busybox\"\n",
    );
    let e = err(load(tmp.path()));
    assert!(
        e.contains("defined") || e.contains("twice") || e.contains("duplicate"),
        "{e}"
    );
    assert!(e.contains("compose.yaml") && e.contains("web.toml"), "{e}");
}

#[test]
fn network_mode_and_the_default_network() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  a:\n    image: busybox\n  b:\n    image: busybox\n    network_mode: \"service:a\"\n  c:\n    image: busybox\n    network_mode: host\nnetworks:\n  default:\n    ipam: {config: [{subnet: 10.9.0.0/24}]}\n",
    );
    let s = ok(load(tmp.path()));
    assert_eq!(s.containers["a"].spec.networks[0].network, "default");
    assert_eq!(
        s.containers["b"].spec.network_mode,
        NetworkMode::Container("a".into())
    );
    assert_eq!(s.containers["c"].spec.network_mode, NetworkMode::Host);
    assert_eq!(
        s.networks["default"].spec.subnet,
        Some("10.9.0.0/24".parse().unwrap())
    );
}

#[test]
fn a_loader_decodes_again_when_dot_env_or_an_extends_file_changes() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), ".env", "TAG=1\n");
    write(
        tmp.path(),
        "base.yml",
        "services:\n  b:\n    image: busybox\n    environment: [X=1]\n",
    );
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  a:\n    image: busybox:${TAG}\n    extends: {file: base.yml, service: b}\n",
    );
    // base.yml is not a Compose file name: moor would read it as its own
    // manifest too; here it is given the compose file only.
    let file = tmp.path().join("compose.yaml");
    let mut loader = crate::Loader::default();
    let s = loader.load(&[&file], None).unwrap();
    assert_eq!(s.containers["a"].spec.image.tag.as_deref(), Some("1"));
    loader.load(&[&file], None).unwrap();
    assert_eq!(loader.last_load().reused, 1);
    write(tmp.path(), ".env", "TAG=2\n");
    let s = loader.load(&[&file], None).unwrap();
    assert_eq!(loader.last_load().reused, 0);
    assert_eq!(s.containers["a"].spec.image.tag.as_deref(), Some("2"));
    write(
        tmp.path(),
        "base.yml",
        "services:\n  b:\n    image: busybox\n    environment: [X=2]\n",
    );
    let s = loader.load(&[&file], None).unwrap();
    assert_eq!(loader.last_load().reused, 0);
    assert_eq!(s.containers["a"].spec.env["X"], "2");
}

#[test]
fn many_services_extending_a_large_service_are_refused_quickly() {
    // Hostile: a thousand services extend a service of a 1 MiB file: a
    // gigabyte of copies, and a thousand reads and parses of the file.
    let tmp = tempfile::tempdir().unwrap();
    let mut base = String::from("services:\n  b:\n    image: busybox\n    labels:\n");
    while base.len() < 1 << 20 {
        base.push_str(&format!("      k{}: v\n", base.len()));
    }
    write(tmp.path(), "base.yml", &base);
    let mut text = String::from("services:\n");
    for i in 0..1000 {
        text.push_str(&format!(
            "  s{i}:\n    extends: {{file: base.yml, service: b}}\n"
        ));
    }
    write(tmp.path(), "compose.yaml", &text);
    let started = std::time::Instant::now();
    let e = err(load(tmp.path()));
    assert!(
        e.contains("extends copies more than 100000 values"),
        "{}",
        &e[..e.len().min(2000)]
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn env_files_replace_dot_env_later_ones_win_and_the_environment_wins_over_all() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let src = tmp.path();
    write(
        src,
        "compose.yaml",
        "services:\n  app:\n    image: busybox\n    environment:\n      A: ${A:-unset}\n      B: ${B:-unset}\n      C: ${C:-unset}\n      D: ${D:-unset}\n",
    );
    write(src, ".env", "A=dotenv\nD=dotenv\n");
    write(src, "env/base.env", "A=base\nB=base\nC=base\n");
    write(outside.path(), "prod.env", "B=prod\n");
    let env_of = |files: Option<Vec<std::path::PathBuf>>| {
        let mut options = LoadOptions {
            env_files: files,
            ..LoadOptions::default()
        };
        options.env.insert("C".into(), "process".into());
        let s = ok(load_opts(src, &options));
        let env = &s.containers["app"].spec.env;
        ["A", "B", "C", "D"].map(|k| env[k].clone())
    };
    // Without env files: `.env`, under the environment.
    assert_eq!(env_of(None), ["dotenv", "unset", "process", "dotenv"]);
    // With them, `.env` is not read; later files win; the environment wins.
    let prod = outside.path().join("prod.env");
    assert_eq!(
        env_of(Some(vec!["env/base.env".into(), prod.clone()])),
        ["base", "prod", "process", "unset"]
    );
    assert_eq!(
        env_of(Some(vec![prod, "env/base.env".into()])),
        ["base", "base", "process", "unset"]
    );
}

#[test]
fn env_files_are_confined_and_must_exist() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "outside.env", "A=not-yours\n");
    let src = tmp.path().join("src");
    write(
        &src,
        "compose.yaml",
        "services:\n  app:\n    image: busybox:${A}\n",
    );
    std::os::unix::fs::symlink("../outside.env", src.join("link.env")).unwrap();
    for (file, want) in [
        ("missing.env", "env_file \"missing.env\" does not exist"),
        (
            "../outside.env",
            "env file \"../outside.env\": `..` leads outside",
        ),
        (
            "link.env",
            "env file \"link.env\": \"link.env\" is a symbolic link",
        ),
    ] {
        let options = LoadOptions {
            env_files: Some(vec![file.into()]),
            ..LoadOptions::default()
        };
        let e = err(load_opts(&src, &options));
        assert!(
            e.contains("compose.yaml:1:1: error: ") && e.contains(want),
            "{file}: {e}"
        );
        assert!(!e.contains("not-yours"), "{e}");
    }
}

#[test]
fn an_override_file_merges_as_docker_compose_merges_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    write(src, "site/index.html", "hi");
    write(src, "dev/index.html", "dev");
    write(
        src,
        "compose.yaml",
        "services:\n  web:\n    image: nginx:1.25\n    command: [nginx, -g, daemon off;]\n    ports: [\"8080:80\"]\n    \
         expose: [\"80\"]\n    environment: {A: \"1\", B: \"2\"}\n    volumes: [\"./site:/usr/share/nginx/html:ro\"]\n    \
         healthcheck: {test: [CMD, \"true\"], interval: 5s}\n  db:\n    image: postgres:16\nnetworks:\n  back: {internal: true}\n",
    );
    write(
        src,
        "compose.override.yaml",
        "services:\n  web:\n    image: nginx:1.27\n    command: [nginx-debug, -g, daemon off;]\n    ports: [\"8080:80\", \"9090:90\"]\n    \
         environment: [B=3, C=4]\n    volumes: [\"./dev:/usr/share/nginx/html:ro\"]\n    healthcheck: {retries: 9}\n  \
         cache:\n    image: redis:7\nnetworks:\n  back: {labels: {tier: back}}\n",
    );
    // Read as a manifest on its own it would be refused: it is not.
    let s = ok(load(src));
    assert_eq!(
        s.containers.keys().collect::<Vec<_>>(),
        ["cache", "db", "web"]
    );
    let web = &s.containers["web"].spec;
    assert_eq!(web.image.to_string(), "docker.io/library/nginx:1.27");
    assert_eq!(
        web.command.as_deref(),
        Some(&["nginx-debug".to_string(), "-g".into(), "daemon off;".into()][..])
    );
    let ports: Vec<String> = web
        .ports
        .iter()
        .map(|p| format!("{}", p.container_port))
        .collect();
    assert_eq!(ports, ["80", "90"], "appended, each once");
    let env: Vec<(&str, &str)> = web
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "1"), ("B", "3"), ("C", "4")]);
    assert_eq!(
        web.mounts.len(),
        1,
        "a mount of the same target is replaced"
    );
    assert!(
        matches!(&web.mounts[0].source, MountSource::Bind { source, .. } if source.ends_with("dev"))
    );
    let h = web.healthcheck.as_ref().unwrap();
    assert_eq!((h.interval, h.retries), (Duration::from_secs(5), 9));
    let back = &s.networks["back"].spec;
    assert!(back.internal);
    assert_eq!(back.labels["tier"], "back");
    // An override's own values are reported at its own lines.
    write(
        src,
        "compose.override.yaml",
        "services:\n  web:\n    ports: [\"80:abc\"]\n    restart: sometimes\n",
    );
    let e = err(load(src));
    assert!(
        e.contains("compose.override.yaml:3:13: error: containers.web.ports[1]"),
        "{e}"
    );
    assert!(
        e.contains("compose.override.yaml:4:14: error: containers.web.restart"),
        "{e}"
    );
    // So are those the checks across resources find.
    write(
        src,
        "compose.override.yaml",
        "services:\n  web:\n    ports: [\"8080:81\"]\n",
    );
    let e = err(load(src));
    assert!(e.contains("compose.override.yaml:3:13: error: containers.web.ports[1]: host port 0.0.0.0:8080/tcp is already published"), "{e}");
    write(
        src,
        "compose.override.yaml",
        "services:\n  web:\n    image: ${NOPE:?set NOPE}\n",
    );
    let e = err(load(src));
    assert!(
        e.contains("compose.override.yaml:3:12: error: services.web.image: required variable NOPE"),
        "{e}"
    );
    write(src, "compose.override.yaml", "services:\n  web: [\n");
    let e = err(load(src));
    assert!(e.contains("compose.override.yaml:"), "{e}");
}

#[test]
fn an_override_file_goes_with_the_compose_file_docker_compose_picks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    write(
        src,
        "docker-compose.yml",
        "services:\n  web:\n    image: nginx:1.25\n",
    );
    write(
        src,
        "docker-compose.override.yml",
        "services:\n  web:\n    image: nginx:1.27\n",
    );
    let s = ok(load(src));
    assert_eq!(
        s.containers["web"].spec.image.to_string(),
        "docker.io/library/nginx:1.27"
    );
    // An override file with no Compose file beside it is a warning, not read.
    let lone = tempfile::tempdir().unwrap();
    write(
        lone.path(),
        "compose.override.yaml",
        "services:\n  web:\n    image: nginx\n",
    );
    write(
        lone.path(),
        "app.toml",
        "[containers.app]\nimage = \"busybox\"\n",
    );
    let s = ok(load(lone.path()));
    assert_eq!(s.containers.keys().collect::<Vec<_>>(), ["app"]);
    let w = s.warnings.to_string();
    assert!(
        w.contains("compose.override.yaml:1:1: warning: an override file is merged"),
        "{w}"
    );
}

#[test]
fn include_adds_the_models_of_other_files_with_their_own_paths_and_env() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    write(
        src,
        "compose.yaml",
        "include:\n  - db/compose.yaml\n  - path: [cache/base.yaml, cache/extra.yaml]\n    env_file: cache/cache.env\n\
         services:\n  web:\n    image: nginx:1.25\n    depends_on: [db, cache]\n",
    );
    write(
        src,
        "db/compose.yaml",
        "include: [../monitor/compose.yaml]\nservices:\n  db:\n    image: postgres:${PG:-15}\n    env_file: db.env\n    \
         volumes: [\"./init:/docker-entrypoint-initdb.d:ro\", \"data:/var/lib/postgresql/data\"]\n    secrets: [pw]\n\
         volumes:\n  data: {}\nsecrets:\n  pw: {file: ./pw.txt}\n",
    );
    write(src, "db/.env", "PG=16\n");
    write(src, "db/db.env", "POSTGRES_DB=app\n");
    write(src, "db/init/schema.sql", "create table t ();\n");
    // YAML data of an included file is not a manifest either.
    write(src, "db/init/conf.yml", "not: [a, manifest\n");
    write(src, "db/pw.txt", "pw");
    write(
        src,
        "monitor/compose.yaml",
        "services:\n  exporter:\n    image: prom/postgres-exporter\n",
    );
    write(
        src,
        "cache/base.yaml",
        "services:\n  cache:\n    image: redis:${REDIS}\n",
    );
    write(
        src,
        "cache/extra.yaml",
        "services:\n  cache:\n    command: [redis-server, --save, \"\"]\n",
    );
    write(src, "cache/cache.env", "REDIS=7\nMAXMEM=64mb\n");
    write(
        src,
        "cache/extra.yaml",
        "services:\n  cache:\n    command: [redis-server, --save, \"\"]\n    environment: [MAXMEM, UNSET_HERE]\n",
    );
    let s = ok(load(src));
    assert_eq!(
        s.containers.keys().collect::<Vec<_>>(),
        ["cache", "db", "exporter", "web"]
    );
    let db = &s.containers["db"].spec;
    assert_eq!(
        db.image.to_string(),
        "docker.io/library/postgres:16",
        "its own .env"
    );
    assert_eq!(db.env["POSTGRES_DB"], "app");
    assert!(
        matches!(&db.mounts[0].source, MountSource::Bind { source, .. } if source.ends_with("db/init"))
    );
    assert_eq!(db.secrets[0].value.expose(), Some(&b"pw"[..]));
    let cache = &s.containers["cache"].spec;
    assert_eq!(cache.image.to_string(), "docker.io/library/redis:7");
    assert_eq!(cache.command.as_ref().unwrap()[0], "redis-server");
    // A name without a value takes the included model's own variable.
    let env: Vec<(&str, &str)> = cache
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("MAXMEM", "64mb")]);
    assert!(s.volumes.contains_key("data"));
    // Errors are reported in the included file, at its line.
    write(
        src,
        "monitor/compose.yaml",
        "services:\n  exporter:\n    image: prom/postgres-exporter\n    ports: [\"x:1\"]\n",
    );
    let e = err(load(src));
    assert!(
        e.contains("monitor/compose.yaml:4:13: error: containers.exporter.ports[0]"),
        "{e}"
    );
}

#[test]
fn include_errors_loops_clashes_and_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "outside.yaml",
        "services:\n  x:\n    image: busybox\n",
    );
    let src = tmp.path().join("src");
    write(
        &src,
        "compose.yaml",
        "include: [a/compose.yaml, ../outside.yaml, /etc/compose.yaml, missing.yaml, clash.yaml]\nservices:\n  web:\n    image: busybox\n",
    );
    write(
        &src,
        "a/compose.yaml",
        "include: [../b/compose.yaml]\nservices:\n  a:\n    image: busybox\n",
    );
    write(
        &src,
        "b/compose.yaml",
        "include: [../a/compose.yaml]\nservices:\n  b:\n    image: busybox\n",
    );
    write(&src, "clash.yaml", "services:\n  web:\n    image: nginx\n");
    let e = err(load(&src));
    for want in [
        "b/compose.yaml:1:11: error: include[0]: include \"../a/compose.yaml\" leads back to a file that includes it",
        "compose.yaml:1:27: error: include[1]: \"../outside.yaml\": `..` leads outside",
        "compose.yaml:1:44: error: include[2]: \"/etc/compose.yaml\" must be a relative path",
        "compose.yaml:1:63: error: include[3]: \"missing.yaml\"",
        "clash.yaml:2:3: error: services.web: service \"web\" is also defined by the file that includes this one",
    ] {
        assert!(e.contains(want), "{want:?} not in:\n{e}");
    }
    assert!(!e.contains("src/compose.yaml:1:1"), "{e}");
    assert!(
        !e.contains(".env"),
        "a missing default .env is not an error: {e}"
    );
}

#[test]
fn a_service_without_networks_joins_the_default_another_names() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "compose.yaml",
        "services:\n  a:\n    image: busybox\n    networks: [default, back]\n  b:\n    image: busybox\n  \
         h:\n    image: busybox\n    network_mode: host\nnetworks:\n  back: {}\n",
    );
    let s = ok(load(tmp.path()));
    let nets = |c: &str| -> Vec<String> {
        s.containers[c]
            .spec
            .networks
            .iter()
            .map(|n| n.network.clone())
            .collect()
    };
    assert_eq!(nets("a"), ["default", "back"]);
    assert_eq!(
        nets("b"),
        ["default"],
        "on the network a shares, as in Compose"
    );
    assert!(nets("h").is_empty());
}

#[test]
fn includes_that_fan_out_are_bounded() {
    // Each file includes the next one twice: 2^20 reads if nothing stopped
    // it. At most 64 other files are read, and the load says so, quickly.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    write(
        src,
        "compose.yaml",
        "include: [f0.yaml, f0.yaml]\nservices:\n  web:\n    image: busybox\n",
    );
    for i in 0..20 {
        let next = format!("f{}.yaml", i + 1);
        write(
            src,
            &format!("f{i}.yaml"),
            &format!("include: [{next}, {next}]\n"),
        );
    }
    write(src, "f20.yaml", "services: {}\n");
    let started = std::time::Instant::now();
    let e = err(load(src));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(e.contains("more than 8 deep"), "{e}");
    // A file that includes itself.
    write(
        src,
        "compose.yaml",
        "include: [compose.yaml]\nservices:\n  web:\n    image: busybox\n",
    );
    let e = err(load(src));
    assert!(
        e.contains("compose.yaml:1:11: error: include[0]: include \"compose.yaml\" leads back"),
        "{e}"
    );
    // Many files side by side.
    let many: Vec<String> = (0..70).map(|i| format!("m{i}.yaml")).collect();
    for m in &many {
        write(src, m, "services: {}\n");
    }
    write(
        src,
        "compose.yaml",
        &format!(
            "include: [{}]\nservices:\n  web:\n    image: busybox\n",
            many.join(", ")
        ),
    );
    let e = err(load(src));
    assert!(
        e.contains("a Compose file brings in at most 64 other files"),
        "{e}"
    );
}

#[test]
fn a_kept_load_notices_override_and_included_files_change() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    write(
        src,
        "compose.yaml",
        "include: [db/compose.yaml]\nservices:\n  web:\n    image: nginx:1.25\n",
    );
    write(
        src,
        "db/compose.yaml",
        "services:\n  db:\n    image: postgres:15\n",
    );
    let mut loader = crate::Loader::new(LoadOptions::default());
    let image = |s: &DesiredState, c: &str| s.containers[c].spec.image.to_string();
    let s = ok(loader.load(&[src], None));
    assert_eq!(image(&s, "web"), "docker.io/library/nginx:1.25");
    // An override file appears; an included file changes.
    write(
        src,
        "compose.override.yaml",
        "services:\n  web:\n    image: nginx:1.27\n",
    );
    write(
        src,
        "db/compose.yaml",
        "services:\n  db:\n    image: postgres:16\n",
    );
    let s = ok(loader.load(&[src], None));
    assert_eq!(image(&s, "web"), "docker.io/library/nginx:1.27");
    assert_eq!(image(&s, "db"), "docker.io/library/postgres:16");
    // It goes again.
    std::fs::remove_file(src.join("compose.override.yaml")).unwrap();
    let s = ok(loader.load(&[src], None));
    assert_eq!(image(&s, "web"), "docker.io/library/nginx:1.25");
}

#[test]
fn an_override_file_linked_out_of_the_tree_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "outside.yaml",
        "services:\n  web:\n    image: not-yours\n",
    );
    let src = tmp.path().join("src");
    write(
        &src,
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n",
    );
    std::os::unix::fs::symlink("../outside.yaml", src.join("compose.override.yaml")).unwrap();
    // Whether the source is read as a directory or the Compose file alone.
    for path in [src.clone(), src.join("compose.yaml")] {
        let e = err(load(&path));
        assert!(e.contains("compose.override.yaml:1:1: error:"), "{e}");
        assert!(e.contains("leads outside the source's tree"), "{e}");
        assert!(!e.contains("not-yours"), "{e}");
    }
}

#[test]
fn a_service_build_is_an_image_moor_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("Shop");
    write(&root, "api/Dockerfile", "FROM scratch\n");
    write(&root, "web/docker/Dockerfile.prod", "FROM scratch\n");
    write(
        &root,
        "compose.yaml",
        "services:\n  api:\n    build: ./api\n  web:\n    image: shop/web:2\n    build:\n      context: ./web\n      dockerfile: docker/Dockerfile.prod\n      args:\n        - VERSION=2\n        - FROM_ENV\n      target: runtime\n      cache_from: [shop/web:1]\n",
    );
    let r = crate::load_with(&[&root], None, &LoadOptions::default());
    let state = ok(r);
    let api = &state.containers["api"].spec;
    // Named as Compose names it: PROJECT-SERVICE, the project being the
    // directory's name in lower case.
    assert_eq!(api.image.repository, "library/shop-api", "{:?}", api.image);
    let built = state
        .images
        .values()
        .find(|i| i.spec.reference == api.image)
        .and_then(|i| i.spec.build.clone())
        .expect("api's image is built");
    assert_eq!(built.context, root.join("api"));
    let web = state
        .images
        .values()
        .find(|i| i.spec.reference.repository == "shop/web")
        .and_then(|i| i.spec.build.clone())
        .expect("web's image is built");
    assert_eq!(web.dockerfile, Path::new("docker/Dockerfile.prod"));
    assert_eq!(web.args.get("VERSION").map(String::as_str), Some("2"));
    assert_eq!(web.target.as_deref(), Some("runtime"));
    // What moor does not do is a warning at its line, not a silent drop.
    let warnings = crate::load_with(&[&root], None, &LoadOptions::default())
        .map(|s| s.warnings.to_string())
        .unwrap_or_default();
    assert!(warnings.contains("build.cache_from"), "{warnings}");
    assert!(
        warnings.contains("FROM_ENV") || warnings.contains("without a value"),
        "{warnings}"
    );

    write(
        &root,
        "compose.yaml",
        "services:\n  api:\n    build:\n      dockerfile_inline: FROM scratch\n",
    );
    let e = err(load(&root));
    assert!(e.contains("inline Dockerfile"), "{e}");
    write(
        &root,
        "compose.yaml",
        "services:\n  api:\n    build: ../../etc\n",
    );
    let e = err(load(&root));
    assert!(
        e.contains("services.api.build") || e.contains("images.api.build"),
        "{e}"
    );
}
