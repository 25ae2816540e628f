//! Real workloads end to end: PostgreSQL, Redis, a Python app and nginx,
//! built from Debian packages (see `images.rs`), run by the real `moor` as
//! a three-tier stack — proxy → app → database and cache — through
//! `moor apply` and through `moor agent`.
//!
//! What they prove, each on its own [`Instance`]: the images build, import
//! and run as their own users (`images_build_import_and_run_as_their_users`);
//! the stack comes up with a one-shot migration gating the app, the app
//! runs as nobody and finds its database by name, its data survives
//! replacing the app, `down` and `apply`, and a state dir removed and made
//! anew (`stack_through_apply`); the agent brings back a database killed
//! with SIGKILL, data intact (`stack_through_the_agent`); a failed migration
//! keeps the app from starting (`a_failed_migration_keeps_the_app_down`);
//! `moor exec` runs as the image's user in its working directory
//! (`exec_runs_as_the_containers_user_in_its_working_directory`); every
//! file moor writes into a container is readable by a non-root user
//! (`files_moor_writes_are_readable_by_a_non_root_user`); a container
//! without a network has a loopback interface
//! (`loopback_is_up_without_a_network`).
//!
//! The images are built once per test process and cached across runs
//! (`MOOR_TEST_CACHE`, see `tests/common/debimage.rs`); each test imports
//! the ones it needs into its own state dir.

mod images;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::instance::Instance;
use crate::common::{self, free_port, http_get, wait_for};

use images::images;

const PASSWORD: &str = "s3cret-Pa55";

/// What every real-image test needs: root, mmdebstrap, nftables, iproute2.
fn prerequisites() -> bool {
    common::require(&["mmdebstrap", "nft", "ip"], true)
}

/// An instance that owns the project `real` and has the named images, and
/// a directory (in the work dir returned first) for the manifests; `None`
/// (after saying why) without the prerequisites.
fn setup(names: &[&str]) -> Option<(Instance, tempfile::TempDir, PathBuf)> {
    if !prerequisites() {
        return None;
    }
    let mut host = Instance::new();
    host.owns("real");
    import(&host, names);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("real");
    Some((host, work, dir))
}

/// Imports the named images into `host`.
fn import(host: &Instance, names: &[&str]) {
    let started = Instant::now();
    for name in names {
        images::import(host, images().get(name));
    }
    eprintln!(
        "imported {names:?} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// `[images]` entries for the named images (only those imported: an
/// entry for a missing image with pull = "never" blocks `apply`).
fn images_toml(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "\n[images.{n}]\nref  = \"{}\"\npull = \"never\"\n",
                images().get(n).reference()
            )
        })
        .collect()
}

const ALL: &[&str] = &["postgres", "redis", "app", "nginx"];

/// The database on network `back`, its data on the named volume `pgdata`.
/// The subnet is pinned (from the instance's pool): the database lets its
/// own subnets in (pg_hba.conf, written once into the volume), and
/// subnets allocated by `apply`, which creates networks side by side, may
/// come out in another order after `down`.
fn database(host: &Instance) -> String {
    let subnet = host.slot().subnet(1);
    format!(
        r#"
[networks.back]
subnet = "{subnet}"

[volumes.pgdata]

[containers.db]
image       = "postgres"
env         = {{ POSTGRES_PASSWORD = "{PASSWORD}" }}
networks    = ["back"]
mounts      = ["pgdata:/var/lib/postgresql/data"]
restart     = "always"
stop_signal = "SIGINT"
healthcheck = {{ cmd = ["pg_isready", "-q", "-U", "postgres"], interval = "1s", retries = 3, start_period = "90s" }}
"#
    )
}

/// The migration job: `migrate.py`, or with `--fail` a migration that
/// exits 3.
fn migration(fail: bool) -> String {
    let command = if fail {
        r#"["python3", "/app/migrate.py", "--fail"]"#
    } else {
        r#"["python3", "/app/migrate.py"]"#
    };
    format!(
        r#"
[containers.migrate]
image      = "app"
command    = {command}
env        = {{ DB_PASSWORD = "{PASSWORD}" }}
networks   = ["back"]
depends_on = {{ db = "healthy" }}
"#
    )
}

/// The whole stack: db and cache on `back`, the migration job, the app on
/// `back` and `front` once the migration completed, nginx on `front`
/// published on 127.0.0.1:`port`.
fn stack(host: &Instance, port: u16, app_version: &str) -> String {
    format!(
        r#"{images}{database}{migration}
[networks.front]
subnet = "{front}"

[containers.cache]
image       = "redis"
networks    = ["back"]
restart     = "always"
healthcheck = {{ tcp = "6379", interval = "1s", retries = 3, start_period = "60s" }}

[containers.app]
image       = "app"
env         = {{ DB_PASSWORD = "{PASSWORD}", APP_VERSION = "{app_version}" }}
networks    = ["back", "front"]
restart     = "always"
depends_on  = {{ migrate = "completed", cache = "healthy" }}
healthcheck = {{ http = "http://localhost:8000/health", interval = "1s", retries = 3, start_period = "60s" }}

[containers.proxy]
image       = "nginx"
networks    = ["front"]
ports       = ["127.0.0.1:{port}:80"]
restart     = "always"
depends_on  = {{ app = "healthy" }}
healthcheck = {{ http = "http://localhost:80/nginx-health", interval = "1s", retries = 3, start_period = "60s" }}
"#,
        images = images_toml(ALL),
        database = database(host),
        migration = migration(false),
        front = host.slot().subnet(2),
    )
}

/// Writes `text` as the project's only manifest.
fn write_manifest(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir).expect("manifest dir");
    let tmp = dir.join(".stack.toml.tmp");
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, dir.join("stack.toml")).expect("rename manifest");
}

/// `moor apply DIR`, asserted to succeed; shows what moor said otherwise.
#[track_caller]
fn apply(host: &Instance, dir: &Path) {
    let started = Instant::now();
    let out = host.moor(&[
        "apply",
        dir.to_str().expect("utf-8"),
        "-p",
        "real",
        "--timeout",
        "180s",
    ]);
    assert!(
        out.status.success(),
        "moor apply failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        diagnose(host)
    );
    eprintln!("apply took {:.1}s", started.elapsed().as_secs_f64());
}

/// `moor ps` and the last log lines of every container, for failure messages.
fn diagnose(host: &Instance) -> String {
    let mut s = String::from_utf8_lossy(&host.moor(&["ps", "--all"]).stdout).into_owned();
    for c in host.containers() {
        let name = c["name"].as_str().unwrap_or_default();
        let logs = host.moor(&["logs", "-n", "15", name]);
        s.push_str(&format!(
            "\n--- logs {name} ({}):\n{}{}",
            c["state"],
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        ));
    }
    s
}

/// `GET /` through the proxy: the app's JSON, or what went wrong.
fn visit(port: u16) -> Result<serde_json::Value, String> {
    match http_get(port, "/") {
        Some((200, body)) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
        Some((code, body)) => Err(format!("{code}: {body}")),
        None => Err("no answer".into()),
    }
}

/// Waits (generously) for `GET /` through the proxy to succeed.
#[track_caller]
fn visit_when_ready(host: &Instance, port: u16, what: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match visit(port) {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => {
                panic!(
                    "{what}: GET / never succeeded, last: {e}\n{}",
                    diagnose(host)
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// `moor exec NAME -- ARGS…`: (success, stdout, stderr).
fn exec(host: &Instance, name: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["exec", name, "--"];
    all.extend_from_slice(args);
    let out = host.moor(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// The PID of a running container's first process, seen from the host.
fn pid(host: &Instance, name: &str) -> Option<u32> {
    host.container(name)?["pid"].as_u64().map(|p| p as u32)
}

/// Host PID `pid` and its descendants: (pid, uid, name). Processes that
/// `moor exec` or a health check started are not among them.
fn process_tree(pid: u32) -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .map(str::to_string)
        };
        if let (Some(name), Some(uid)) = (field("Name:"), field("Uid:")) {
            out.push((p, uid.parse().unwrap_or(u32::MAX), name));
        }
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The uid a user has in an image's /etc/passwd.
fn uid_in(image: &str, user: &str) -> u32 {
    let tar = &images().get(image).built.path;
    let out = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg("./etc/passwd")
        .output()
        .expect("tar");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&user)).then(|| f[2].parse().expect("uid"))
        })
        .unwrap_or_else(|| panic!("no user {user} in image {image}"))
}

/// The images build (or come from the cache), import with their
/// `--change`s, and run what they hold as the users they name: PostgreSQL
/// initialises and serves as postgres, Redis as redis, the app as nobody,
/// nginx's workers as www-data. No network is needed for any of this.
#[test]
fn images_build_import_and_run_as_their_users() {
    if !prerequisites() {
        return;
    }
    let mut host = Instance::new();
    host.owns("real");
    let imported = images().import_into(&host);
    eprintln!("imported every image in {imported:.1}s");

    // The config the changes made.
    let list: serde_json::Value =
        serde_json::from_slice(&host.moor(&["images", "--json"]).stdout).expect("images json");
    assert_eq!(list.as_array().map(Vec::len), Some(4), "{list:#}");

    let work = tempfile::tempdir().expect("tempdir");
    let manifest = format!(
        r#"{images}
[containers.db]
image        = "postgres"
env          = {{ POSTGRES_PASSWORD = "{PASSWORD}" }}
network_mode = "none"
healthcheck  = {{ cmd = ["pg_isready", "-q", "-U", "postgres"], interval = "1s", retries = 3, start_period = "90s" }}

# Without a network there is no loopback either (see
# loopback_is_up_without_a_network): Redis also listens on a socket.
[containers.cache]
image        = "redis"
command      = ["redis-server", "--protected-mode", "no", "--unixsocket", "/tmp/redis.sock"]
network_mode = "none"
healthcheck  = {{ cmd = ["redis-cli", "-s", "/tmp/redis.sock", "ping"], interval = "1s", retries = 3, start_period = "60s" }}

[containers.app]
image        = "app"
env          = {{ DB_PASSWORD = "unused" }}
network_mode = "none"

[containers.proxy]
image        = "nginx"
network_mode = "none"
extra_hosts  = ["app:127.0.0.1"]
"#,
        images = images_toml(ALL),
    );
    write_manifest(work.path(), &manifest);
    apply(&host, work.path());

    // Each container's processes run as the user its image names.
    let expect = [
        ("db", "postgres", "postgres", "postgres"),
        ("cache", "redis", "redis", "redis-server"),
        ("app", "app", "nobody", "python3"),
    ];
    for (container, image, user, process) in expect {
        let uid = uid_in(image, user);
        let pid = pid(&host, container).unwrap_or_else(|| panic!("{container} not running"));
        let procs = process_tree(pid);
        assert_eq!(
            procs.first().map(|(_, u, n)| (*u, n.as_str())),
            Some((uid, process)),
            "{container}: its first process is not {process} as {user} ({uid}): {procs:?}"
        );
        assert!(
            procs.iter().all(|(_, u, _)| *u == uid),
            "{container}: a process not running as {user} ({uid}): {procs:?}"
        );
    }
    let nginx = process_tree(pid(&host, "proxy").expect("proxy running"));
    let www = uid_in("nginx", "www-data");
    assert!(
        nginx.iter().any(|(_, u, n)| n == "nginx" && *u == 0)
            && nginx.iter().any(|(_, u, n)| n == "nginx" && *u == www),
        "nginx: a root master and www-data workers expected: {nginx:?}"
    );

    // PostgreSQL initialised its cluster as postgres and answers queries.
    let (ok, out, err) = exec(
        &host,
        "db",
        &[
            "psql",
            "-U",
            "postgres",
            "-tAc",
            "select current_user, version()",
        ],
    );
    assert!(
        ok && out.starts_with("postgres|PostgreSQL 15"),
        "{out} {err}"
    );
    let (ok, out, err) = exec(&host, "db", &["postgres", "--version"]);
    assert!(ok && out.contains("(PostgreSQL) 15"), "{out} {err}");
    let (ok, out, err) = exec(
        &host,
        "cache",
        &["redis-cli", "-s", "/tmp/redis.sock", "set", "k", "v"],
    );
    assert!(ok && out == "OK", "{out} {err}");
    // The app runs in its image's working directory, with its environment.
    use std::os::unix::fs::MetadataExt;
    let app = pid(&host, "app").expect("app running");
    let (cwd, workdir) = (
        std::fs::metadata(format!("/proc/{app}/cwd")).expect("app cwd"),
        std::fs::metadata(format!("/proc/{app}/root/app")).expect("/app in the app"),
    );
    assert_eq!(
        (cwd.dev(), cwd.ino()),
        (workdir.dev(), workdir.ino()),
        "not in /app"
    );
    let environ = std::fs::read(format!("/proc/{app}/environ")).expect("app environ");
    let environ = String::from_utf8_lossy(&environ);
    for var in ["PORT=8000", "PYTHONUNBUFFERED=1", "DB_PASSWORD=unused"] {
        assert!(
            environ.split('\0').any(|v| v == var),
            "{var} not in {environ:?}"
        );
    }
    let (ok, out, err) = exec(
        &host,
        "app",
        &["python3", "-c", "import psycopg2, redis; print('modules')"],
    );
    assert!(ok && out == "modules", "{out} {err}");
}

/// `moor exec` runs as Docker's `exec` does: as the container's user, in
/// its working directory, with its environment.
#[test]
fn exec_runs_as_the_containers_user_in_its_working_directory() {
    let Some((host, _work, dir)) = setup(&["app"]) else {
        return;
    };
    let manifest = format!(
        r#"{images}
[containers.app]
image        = "app"
env          = {{ DB_PASSWORD = "unused" }}
network_mode = "none"
"#,
        images = images_toml(&["app"]),
    );
    write_manifest(&dir, &manifest);
    apply(&host, &dir);
    let (ok, out, err) = exec(&host, "app", &["id", "-un"]);
    assert!(ok && out == "nobody", "moor exec app id -un: {out:?} {err}");
    let (ok, out, err) = exec(&host, "app", &["sh", "-c", "pwd; echo $PORT $DB_PASSWORD"]);
    assert!(
        ok && out == "/app\n8000 unused",
        "moor exec app pwd: {out:?} {err}"
    );
}

/// The stack through `moor apply`: the migration gates the app, whose
/// first request finds the table; the app runs as nobody and reaches the
/// database and the cache by name; the database's named volume is filled
/// from the image (owned by postgres, 0700); the data survives replacing
/// the app, `moor down` and `moor apply`; and after `moor down`, a state
/// dir removed and a new one (same bridge prefix, table and pool) brings
/// the stack up again.
#[test]
fn stack_through_apply() {
    let Some((mut host, _work, dir)) = setup(ALL) else {
        return;
    };
    let port = free_port();
    write_manifest(&dir, &stack(&host, port, "1"));
    apply(&host, &dir);

    // The migration ran to completion before the app started, and the
    // app's first request found its table.
    let first = visit_when_ready(&host, port, "the stack after apply");
    assert_eq!(first["visits"], 1, "{first}");
    assert_eq!(first["hits"], 1, "{first}");
    assert_eq!(first["user"], "nobody", "{first}");
    assert_eq!(first["version"], "1", "{first}");
    let migrate = host.container("migrate").expect("migrate in ps");
    assert_eq!(migrate["state"], "exited", "{migrate}");
    assert_eq!(migrate["exit_code"], 0, "{migrate}");
    let app = host.container("app").expect("app in ps");
    assert!(
        migrate["finished"].as_str() <= app["started"].as_str(),
        "the app started before the migration finished: {migrate} {app}"
    );

    // The named volume was filled from the image: owned by postgres, 0700.
    let volumes: serde_json::Value =
        serde_json::from_slice(&host.moor(&["volumes", "--json"]).stdout).expect("volumes");
    let path = volumes
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "pgdata"))
        .and_then(|v| v["path"].as_str())
        .unwrap_or_else(|| panic!("no pgdata volume: {volumes:#}"))
        .to_string();
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).expect("volume dir");
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (uid_in("postgres", "postgres"), 0o700),
        "{path}"
    );
    assert!(Path::new(&path).join("PG_VERSION").is_file(), "{path}");

    // Replacing the app (a new environment) keeps the data; nginx, which
    // resolved `app` once, still reaches it.
    let second = visit(port).expect("second visit");
    assert_eq!(second["visits"], 2, "{second}");
    write_manifest(&dir, &stack(&host, port, "2"));
    apply(&host, &dir);
    let third = visit_when_ready(&host, port, "after replacing the app");
    assert_eq!(third["version"], "2", "the app was not replaced: {third}");
    assert_eq!(third["visits"], 3, "{third}");

    // `down` keeps the volume; `apply` again finds the data.
    let out = host.moor(&["down", "-p", "real"]);
    assert!(
        out.status.success(),
        "moor down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(host.containers().is_empty(), "{:?}", host.containers());
    apply(&host, &dir);
    let fourth = visit_when_ready(&host, port, "after down and apply");
    assert_eq!(
        fourth["visits"], 4,
        "the data did not survive down: {fourth}"
    );

    // The state dir removed after `down`, and a new one with the same
    // bridge prefix, nftables table and pool: the stack comes up again.
    let out = host.moor(&["down", "-p", "real"]);
    assert!(
        out.status.success(),
        "moor down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.replace_state_dir();
    import(&host, ALL);
    apply(&host, &dir);
    let again = visit_when_ready(&host, port, "with a new state dir");
    assert_eq!(again["visits"], 1, "a new state dir starts afresh: {again}");
}

/// The stack through `moor agent`: it comes up from a directory source;
/// a database killed with SIGKILL from the host comes back (restart =
/// "always") with its data; an edited manifest replaces the app and the
/// data stays.
#[test]
fn stack_through_the_agent() {
    let Some((mut host, _work, dir)) = setup(ALL) else {
        return;
    };
    let port = free_port();
    write_manifest(&dir, &stack(&host, port, "1"));
    host.start_agent(&[
        "--source",
        dir.to_str().expect("utf-8"),
        "-p",
        "real",
        "--resync",
        "2s",
    ]);
    let check_agent = |host: &mut Instance| {
        assert!(host.agent_alive(), "the agent died:\n{}", host.agent_log());
    };

    let first = {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            check_agent(&mut host);
            let log = host.agent_log();
            assert!(
                !log.contains("invalid manifests"),
                "the agent refused the manifests:\n{log}"
            );
            match visit(port) {
                Ok(v) => break v,
                Err(e) if Instant::now() > deadline => panic!(
                    "the agent never brought the stack up: {e}\n{}\nagent log:\n{}",
                    diagnose(&host),
                    host.agent_log()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    };
    assert_eq!(first["visits"], 1, "{first}");
    assert_eq!(first["user"], "nobody", "{first}");

    // kill -9 of the database's first process, from the host.
    let db = pid(&host, "db").expect("db running");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &db.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_for("the database restarted", Duration::from_secs(120), || {
        pid(&host, "db").is_some_and(|p| p != db)
            && host
                .container("db")
                .is_some_and(|c| c["health"] == "healthy")
    });
    let second = visit_when_ready(&host, port, "after the database was killed");
    assert_eq!(second["visits"], 2, "data lost with the database: {second}");

    // An edited manifest replaces the app; the data stays.
    write_manifest(&dir, &stack(&host, port, "2"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let third = loop {
        check_agent(&mut host);
        if let Ok(v) = visit(port)
            && v["version"] == "2"
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the app was not replaced:\n{}\nagent log:\n{}",
            diagnose(&host),
            host.agent_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        third["visits"].as_u64() > Some(2),
        "data lost replacing the app: {third}"
    );

    // `moor exec` beside the running agent, as the container's user.
    let (ok, out, err) = exec(&host, "app", &["id", "-un"]);
    assert!(ok && out == "nobody", "moor exec app id -un: {out:?} {err}");
    check_agent(&mut host);
}

/// A migration that exits non-zero keeps what depends on it from starting:
/// `moor apply` fails naming it, and the app never runs.
#[test]
fn a_failed_migration_keeps_the_app_down() {
    let Some((host, _work, dir)) = setup(&["postgres", "app"]) else {
        return;
    };
    let manifest = format!(
        r#"{images}{database}{migration}
[containers.app]
image      = "app"
env        = {{ DB_PASSWORD = "{PASSWORD}" }}
networks   = ["back"]
depends_on = {{ migrate = "completed" }}
"#,
        images = images_toml(&["postgres", "app"]),
        database = database(&host),
        migration = migration(true),
    );
    write_manifest(&dir, &manifest);
    let out = host.moor(&[
        "apply",
        dir.to_str().expect("utf-8"),
        "-p",
        "real",
        "--timeout",
        "120s",
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "apply succeeded:\n{said}");
    assert!(
        said.contains("migrate"),
        "apply does not name the job:\n{said}"
    );
    let migrate = host
        .container("migrate")
        .unwrap_or_else(|| panic!("migrate never ran:\n{said}\n{}", diagnose(&host)));
    assert_eq!(migrate["exit_code"], 3, "{migrate}\n{said}");
    let logs = host.moor(&["logs", "migrate"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("migration failed on purpose"),
        "the job did not reach the database:\n{}",
        diagnose(&host)
    );
    let app = host.container("app");
    assert!(
        app.as_ref().is_none_or(|a| a["started"].is_null()),
        "the app started although its migration failed: {app:?}"
    );
}

/// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, which moor writes
/// for each container, are readable by the container's non-root user:
/// read by the container's own process (so no `exec` is involved), then
/// by name resolution as that user.
#[test]
fn files_moor_writes_are_readable_by_a_non_root_user() {
    let Some((host, _work, dir)) = setup(&["app"]) else {
        return;
    };
    let script = "id -un; for f in /etc/hosts /etc/hostname /etc/resolv.conf; do \
                  if cat $f >/dev/null; then echo readable $f; else echo unreadable $f; fi; done; \
                  python3 -c 'import socket; print(\"resolved\", socket.gethostbyname(\"peer\"))'; \
                  exec sleep 3600";
    let manifest = format!(
        r#"{images}
[networks.net]

[containers.reader]
image    = "app"
command  = ["sh", "-c", '''{script}''']
networks = ["net"]

[containers.peer]
image    = "app"
command  = ["sleep", "3600"]
networks = ["net"]
"#,
        images = images_toml(&["app"]),
    );
    write_manifest(&dir, &manifest);
    apply(&host, &dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    let logs = loop {
        let out = host.moor(&["logs", "reader"]);
        let logs = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if logs.contains("resolved") || logs.contains("Traceback") {
            break logs;
        }
        assert!(
            Instant::now() < deadline,
            "the reader never finished:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(logs.starts_with("nobody\n"), "{logs}");
    for f in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
        assert!(
            logs.contains(&format!("\nreadable {f}\n")),
            "{f} is not readable by nobody:\n{logs}"
        );
    }
    let resolved = logs
        .lines()
        .find_map(|l| l.strip_prefix("resolved "))
        .unwrap_or_default();
    assert!(
        host.slot().in_pool(resolved),
        "nobody could not resolve a peer by name:\n{logs}"
    );
}

/// A container without a network still has a loopback interface, up, as
/// with Docker's `--network none`: Redis's own health check
/// (`redis-cli ping`, to 127.0.0.1) answers.
#[test]
fn loopback_is_up_without_a_network() {
    let Some((host, _work, dir)) = setup(&["redis"]) else {
        return;
    };
    let manifest = format!(
        r#"{images}
[containers.cache]
image        = "redis"
network_mode = "none"
"#,
        images = images_toml(&["redis"]),
    );
    write_manifest(&dir, &manifest);
    apply(&host, &dir);
    let mut answer = (false, String::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        answer = exec(&host, "cache", &["redis-cli", "ping"]);
        if answer.1 == "PONG" {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("redis-cli ping on 127.0.0.1 in a container without a network: {answer:?}");
}
