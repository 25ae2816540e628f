//! A Compose file end to end: `moor apply` of a directory holding only a
//! `compose.yaml` (and its `.env`) brings the stack up on the real kernel,
//! with interpolation from the environment and `.env`, anchors, a profile
//! left out, `depends_on: service_healthy`, a network with a subnet and a
//! published port that serves traffic; a config file bind-mounted beside
//! the Compose file is data, not a manifest.

use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{free_port, http_get, wait_for};

const PROJECT: &str = "compose";

const COMPOSE: &str = r#"
x-common: &common
  image: localhost/moor-example/busybox:1
  restart: always
  init: true
services:
  web:
    <<: *common
    command: ["sh", "-c", "mkdir -p /www && echo \"$${GREETING}\" > /www/index.html && exec httpd -f -p 80 -h /www"]
    environment:
      GREETING: ${GREETING:?GREETING is in .env}
    ports: ["127.0.0.1:${WEB_PORT}:80"]
    volumes:
      - ./conf:/etc/extra:ro
    networks: [front]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "-", "http://127.0.0.1:80/"]
      interval: 1s
      retries: 30
  fetcher:
    <<: *common
    command: ["sh", "-c", "while true; do wget -q -O - http://web/; sleep 1; done"]
    networks: [front]
    depends_on:
      web:
        condition: service_healthy
  debug:
    <<: *common
    profiles: [debug]
    command: ["sleep", "1000"]
networks:
  front:
    ipam:
      config:
        - subnet: SUBNET
"#;

#[test]
fn a_compose_stack_comes_up_and_serves_traffic() {
    let Some(mut s) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let src = tempfile::tempdir().expect("source dir");
    let dir = src.path().join("stack");
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    let compose = COMPOSE.replace("SUBNET", &s.slot().subnet(86));
    std::fs::write(dir.join("compose.yaml"), compose).unwrap();
    std::fs::write(dir.join(".env"), "GREETING=hello from compose\n").unwrap();
    // YAML that is not a manifest: moor would refuse it as one.
    std::fs::write(dir.join("conf/httpd.yml"), "not: [a, manifest\n").unwrap();
    let web_port = free_port();
    s.env.push(("WEB_PORT".into(), web_port.to_string()));

    let out = s.moor(&["apply", "-p", PROJECT, dir.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "apply: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("web on its published port", Duration::from_secs(60), || {
        http_get(web_port, "/").is_some_and(|(c, b)| c == 200 && b.contains("hello from compose"))
    });
    wait_for(
        "fetcher to fetch web by name",
        Duration::from_secs(60),
        || {
            let logs = s.moor(&["logs", "fetcher"]);
            String::from_utf8_lossy(&logs.stdout).contains("hello from compose")
        },
    );
    assert!(
        s.container("debug").is_none(),
        "a service of a profile not enabled"
    );
    let web = s.container("web").expect("web");
    assert_eq!(web["health"], "healthy", "{web}");
    let subnet = s.slot().subnet(86);
    let prefix = subnet.trim_end_matches("0/24");
    let ip = s.container_ipv4("web").to_string();
    assert!(
        ip.starts_with(prefix),
        "web's {ip} is on the Compose file's {subnet}"
    );
}

#[test]
fn validate_shows_warnings_and_enables_profiles() {
    let src = tempfile::tempdir().expect("source dir");
    let dir = src.path();
    std::fs::write(
        dir.join("docker-compose.yml"),
        "services:\n  app:\n    image: busybox\n    privileged: true\n  tools:\n    image: busybox\n    profiles: [tools]\n",
    )
    .unwrap();
    let validate = |extra: &[&str]| {
        let out = std::process::Command::new(crate::common::moor_bin())
            .arg("validate")
            .arg(dir)
            .args(["--host-name", "h"])
            .args(extra)
            .output()
            .expect("moor validate");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, stdout, stderr) = validate(&[]);
    assert!(ok, "a warning does not make the files invalid: {stderr}");
    assert!(
        stderr.contains("docker-compose.yml:4:5: warning: services.app.privileged: not supported by moor yet; ignored"),
        "{stderr}"
    );
    assert!(stdout.contains("1 container"), "{stdout}");
    let (ok, stdout, _) = validate(&["--profile", "tools"]);
    assert!(ok);
    assert!(stdout.contains("2 containers"), "{stdout}");
}

/// `--env-file` (repeatable, as `docker compose --env-file`): in place of
/// the `.env` beside the Compose file, later files over earlier ones, the
/// environment over all; relative to the current directory.
#[test]
fn env_files_replace_dot_env_and_the_environment_wins() {
    let src = tempfile::tempdir().expect("source dir");
    let dir = src.path().join("stack");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  app:\n    image: busybox\n    environment:\n      \
         A: ${A:-none}\n      B: ${B:-none}\n      C: ${C:-none}\n",
    )
    .unwrap();
    std::fs::write(dir.join(".env"), "A=dotenv\n").unwrap();
    std::fs::write(src.path().join("one.env"), "B=one\nC=one\n").unwrap();
    std::fs::write(src.path().join("two.env"), "C=two\n").unwrap();
    let convert = |extra: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(crate::common::moor_bin())
            .current_dir(src.path())
            .args(["convert", "--to", "yaml", "stack", "--host-name", "h"])
            .args(extra)
            .env_remove("A")
            .env_remove("B")
            .env_remove("C")
            .envs(env.iter().copied())
            .output()
            .expect("moor convert");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, stdout, stderr) = convert(&[], &[]);
    assert!(ok, "{stderr}");
    for want in ["A: \"dotenv\"", "B: \"none\"", "C: \"none\""] {
        assert!(stdout.contains(want), "{want}: {stdout}");
    }
    let (ok, stdout, stderr) = convert(
        &["--env-file", "one.env", "--env-file", "two.env"],
        &[("B", "process")],
    );
    assert!(ok, "{stderr}");
    for want in ["A: \"none\"", "B: \"process\"", "C: \"two\""] {
        assert!(stdout.contains(want), "{want}: {stdout}");
    }
    let (ok, _, stderr) = convert(&["--env-file", "missing.env"], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("compose.yaml:1:1: error") && stderr.contains("missing.env"),
        "{stderr}"
    );
}

/// A directory with an override file and an `include`: `moor validate`
/// reads one project (the override and the included files, and the YAML
/// files they use, are not manifests of their own), and reports a value of
/// the override file at its own line.
#[test]
fn override_and_included_files_are_one_project() {
    let src = tempfile::tempdir().expect("source dir");
    let dir = src.path();
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "compose.yaml",
        "include: [monitoring/compose.yaml]\nservices:\n  web:\n    image: nginx:1.25\n",
    );
    write(
        "compose.override.yaml",
        "services:\n  web:\n    ports: [\"8080:80\"]\n  debug:\n    image: busybox\n",
    );
    write(
        "monitoring/compose.yaml",
        "services:\n  prometheus:\n    image: prom/prometheus\n    volumes: [\"./prometheus.yml:/etc/prometheus/prometheus.yml:ro\"]\n",
    );
    write("monitoring/prometheus.yml", "scrape_configs: [\n");
    let validate = || {
        let out = std::process::Command::new(crate::common::moor_bin())
            .arg("validate")
            .arg(dir)
            .args(["--host-name", "h"])
            .output()
            .expect("moor validate");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, stdout, stderr) = validate();
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("3 containers"), "{stdout}");
    write(
        "compose.override.yaml",
        "services:\n  web:\n    ports: [\"8080:http\"]\n",
    );
    let (ok, _, stderr) = validate();
    assert!(!ok);
    assert!(
        stderr.contains("compose.override.yaml:3:13: error: containers.web.ports[0]"),
        "{stderr}"
    );
}

/// A source's `env_files` replace the `.env` beside its Compose file in
/// the agent: a relative one inside the source, an absolute one of the
/// operator's, the agent's environment over both.
#[test]
fn the_agent_interpolates_a_source_with_its_env_files() {
    let Some(mut host) = Instance::with_busybox("cenv", &[]) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("cenv");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(
        src.join("compose.yaml"),
        "services:\n  app:\n    image: localhost/moor-example/busybox:1\n    command: [sleep, \"3600\"]\n    \
         init: true\n    network_mode: none\n    environment:\n      \
         A: ${A:-none}\n      B: ${B:-none}\n      C: ${C:-none}\n",
    )
    .unwrap();
    std::fs::write(src.join(".env"), "A=dotenv\nB=dotenv\nC=dotenv\n").unwrap();
    std::fs::write(src.join("prod.env"), "B=prod\nC=prod\n").unwrap();
    let ops = work.path().join("ops.env");
    std::fs::write(&ops, "C=ops\n").unwrap();
    let config = work.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "resync = \"1s\"\n[[source]]\nname = \"cenv\"\nurl = \"{}\"\nenv_files = [\"prod.env\", \"{}\"]\n",
            src.display(),
            ops.display()
        ),
    )
    .unwrap();
    host.start_agent_env(&["--config", config.to_str().expect("utf-8")], &[]);
    wait_for("app running", Duration::from_secs(60), || {
        host.running("app")
    });
    let out = host.moor(&["exec", "app", "sh", "-c", "echo $A $B $C"]);
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        said,
        "none prod ops",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.stop_agent();
}

/// A service with `build:` and no `image` is built by moor, named as
/// Compose names it (`PROJECT-SERVICE`), with its build args, and runs as
/// the user its Dockerfile sets; a second apply builds nothing.
#[test]
fn a_service_with_build_is_built_and_runs() {
    let Some(host) = Instance::with_busybox("cbuild", &[]) else {
        return;
    };
    let src = tempfile::tempdir().expect("source dir");
    let dir = src.path().join("cbuild");
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(
        dir.join("app/Dockerfile"),
        "FROM localhost/moor-example/busybox:1\nARG GREETING=unset\n\
         RUN echo \"$GREETING\" > /greeting\nUSER nobody\n\
         CMD [\"sh\", \"-c\", \"echo greeting=$(cat /greeting) uid=$(id -u); exec sleep 3600\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  app:\n    build:\n      context: ./app\n      args:\n        GREETING: built-by-moor\n    network_mode: none\n",
    )
    .unwrap();
    let path = dir.to_str().expect("utf-8");
    host.moor_ok(&["apply", "-p", "cbuild", path]);
    let mut log = String::new();
    wait_for("app's greeting", Duration::from_secs(60), || {
        log = crate::common::text(&host.moor(&["logs", "app"]));
        log.contains("greeting=")
    });
    assert!(log.contains("greeting=built-by-moor uid=65534"), "{log}");
    let images = host.moor_ok(&["images"]);
    assert!(images.contains("cbuild-app"), "{images}");
    let plan = host.moor_ok(&["plan", "-p", "cbuild", path]);
    assert!(!plan.contains("build"), "nothing to build again: {plan}");
}
