//! Secrets end to end: `[secrets.NAME]` from a file inside the source or
//! the agent's environment, mounted read-only from a tmpfs of the
//! container's own at `/run/secrets/NAME`, owned by the container's user
//! (or the entry's uid/gid) with mode 0400 (or the entry's), never shown by
//! `inspect`, `ps`, `plan`, `logs` nor written under the state dir; a new
//! value replaces exactly the containers that use it.

use std::path::Path;
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{text, wait_for};

const PROJECT: &str = "sec";
const IMAGE: &str = "localhost/moor-example/busybox:1";
const FIRST: &str = "hunter2-Fz8qPw";
const SECOND: &str = "rotated-Lk31Xv";
const TOKEN: &str = "envtok-Qm7Rz0";

fn manifest() -> String {
    let sleeper = |name: &str, extra: &str| {
        format!(
            "[containers.{name}]\nimage = \"{IMAGE}\"\ncommand = [\"sleep\", \"3600\"]\n\
             init = true\nnetwork_mode = \"none\"\n{extra}\n"
        )
    };
    [
        "[secrets.db_password]\nfile = \"./db_password\"\n[secrets.token]\nenv = \"SEC_TEST_TOKEN\"\n"
            .to_string(),
        // A non-root user reads its secret, owned by it.
        sleeper("app", "user = \"65534:65534\"\nsecrets = [\"db_password\"]"),
        // The long form: another path, owner and mode.
        sleeper(
            "tok",
            "secrets = [{ source = \"token\", target = \"/etc/tok\", uid = 1000, gid = 1001, mode = \"0440\" }]",
        ),
        // A user by name: owned by its uid and gid from the image's passwd.
        sleeper("named", "user = \"nobody\"\nsecrets = [\"token\"]"),
        sleeper("plain", ""),
    ]
    .concat()
}

fn exec(host: &Instance, name: &str, cmd: &[&str]) -> (bool, String) {
    let mut args = vec!["exec", name];
    args.extend_from_slice(cmd);
    let out = host.moor(&args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// Every file under `dir` (not following links, not into mounts the
/// containers own: their root filesystems and the secrets' tmpfs) that
/// contains `needle`.
fn files_containing(dir: &Path, needle: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let name = e.file_name();
        if meta.is_dir() {
            if name == "rootfs" || name == "secrets" {
                continue;
            }
            files_containing(&p, needle, out);
        } else if meta.is_file()
            && std::fs::read(&p)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        {
            out.push(p.display().to_string());
        }
    }
}

fn mounted_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = dir.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| mp.starts_with(&want))
        .map(String::from)
        .collect()
}

#[test]
fn secrets_are_private_files_never_shown_and_rotate_their_users() {
    let Some(mut host) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    host.env.push(("SEC_TEST_TOKEN".into(), TOKEN.into()));
    let src = tempfile::tempdir().expect("tempdir");
    let dir = src.path().to_str().expect("utf-8").to_string();
    std::fs::write(src.path().join("db_password"), FIRST).unwrap();
    std::fs::write(src.path().join("app.toml"), manifest()).unwrap();

    // The plan (before anything runs) does not show the values.
    let plan = host.moor(&["plan", "-p", PROJECT, &dir]);
    let plan_text = text(&plan);
    for v in [FIRST, TOKEN] {
        assert!(!plan_text.contains(v), "plan shows a secret:\n{plan_text}");
    }
    host.moor_ok(&["apply", "-p", PROJECT, &dir]);
    wait_for("the three running", Duration::from_secs(60), || {
        ["app", "tok", "named", "plain"]
            .iter()
            .all(|n| host.running(n))
    });

    // The non-root user reads its own 0400 file, and cannot change it.
    assert_eq!(
        exec(&host, "app", &["cat", "/run/secrets/db_password"]),
        (true, FIRST.to_string())
    );
    assert_eq!(
        exec(
            &host,
            "app",
            &["stat", "-c", "%u:%g %a", "/run/secrets/db_password"]
        ),
        (true, "65534:65534 400".to_string())
    );
    let (wrote, _) = exec(
        &host,
        "app",
        &["sh", "-c", "echo x > /run/secrets/db_password"],
    );
    assert!(!wrote, "a secret file was writable");
    // Even root in the container: the bind is read-only.
    let (wrote, _) = exec(&host, "tok", &["sh", "-c", "echo x > /etc/tok"]);
    assert!(!wrote, "a secret file was writable by root");
    assert_eq!(
        exec(&host, "tok", &["stat", "-c", "%u:%g %a", "/etc/tok"]),
        (true, "1000:1001 440".to_string())
    );
    assert_eq!(
        exec(&host, "tok", &["cat", "/etc/tok"]),
        (true, TOKEN.to_string())
    );
    assert_eq!(
        exec(
            &host,
            "named",
            &["stat", "-c", "%u:%g %a", "/run/secrets/token"]
        ),
        (true, "65534:65534 400".to_string())
    );
    assert_eq!(
        exec(&host, "named", &["cat", "/run/secrets/token"]),
        (true, TOKEN.to_string())
    );
    // A container without secrets has none.
    let (has, _) = exec(&host, "plain", &["ls", "/run/secrets"]);
    assert!(!has, "plain has /run/secrets");

    // Not in what moor shows, nor anywhere under the state dir on disk.
    let mut shown = String::new();
    for args in [
        vec!["inspect", "app"],
        vec!["inspect", "tok"],
        vec!["inspect", "named"],
        vec!["ps", "--all", "--json"],
        vec!["logs", "app"],
        vec!["status"],
    ] {
        shown.push_str(&text(&host.moor(&args)));
    }
    shown.push_str(&text(&host.moor(&["plan", "-p", PROJECT, &dir])));
    for v in [FIRST, TOKEN] {
        assert!(!shown.contains(v), "a secret is shown:\n{shown}");
        let mut found = Vec::new();
        files_containing(host.dir(), v, &mut found);
        assert!(found.is_empty(), "{v} written to {found:?}");
    }
    // The values live in tmpfs mounts under <state>/secrets, one per container.
    let mounts = mounted_under(&host.dir().join("secrets"));
    assert_eq!(mounts.len(), 3, "{mounts:?}");

    // Rotation: a new value replaces the user of that secret, and only it.
    let pids: Vec<_> = ["app", "tok", "named", "plain"]
        .iter()
        .map(|n| host.pid(n))
        .collect();
    std::fs::write(src.path().join("db_password"), SECOND).unwrap();
    let plan = host.moor(&["plan", "-p", PROJECT, &dir]);
    let plan_text = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{plan_text}");
    assert!(plan_text.contains("app"), "{plan_text}");
    for v in [FIRST, SECOND] {
        assert!(!plan_text.contains(v), "plan shows a secret:\n{plan_text}");
    }
    host.moor_ok(&["apply", "-p", PROJECT, &dir]);
    wait_for("app running again", Duration::from_secs(60), || {
        host.running("app")
    });
    assert_ne!(host.pid("app"), pids[0], "app was not replaced");
    assert_eq!(host.pid("tok"), pids[1], "tok was replaced");
    assert_eq!(host.pid("named"), pids[2], "named was replaced");
    assert_eq!(host.pid("plain"), pids[3], "plain was replaced");
    assert_eq!(
        exec(&host, "app", &["cat", "/run/secrets/db_password"]),
        (true, SECOND.to_string())
    );
    // The same value again changes nothing.
    let plan = host.moor(&["plan", "-p", PROJECT, &dir]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));

    // Down: the tmpfs mounts go with their containers.
    host.moor_ok(&["down", "-p", PROJECT, &dir]);
    let mounts = mounted_under(&host.dir().join("secrets"));
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
}

#[test]
fn a_secret_outside_the_source_is_refused_and_nothing_runs() {
    let Some(host) = Instance::with_busybox("secx", &[]) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("outside"), "not-yours-9Qe").unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::os::unix::fs::symlink("../outside", src.join("link")).unwrap();
    std::fs::write(
        src.join("app.toml"),
        format!(
            "[secrets.a]\nfile = \"link\"\n[secrets.b]\nfile = \"../outside\"\n\
             [containers.x]\nimage = \"{IMAGE}\"\ncommand = [\"sleep\", \"3600\"]\nsecrets = [\"a\", \"b\"]\n"
        ),
    )
    .unwrap();
    let out = host.moor(&["apply", "-p", "secx", src.to_str().expect("utf-8")]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("app.toml:2:") && said.contains("secrets.a.file"),
        "{said}"
    );
    assert!(
        said.contains("app.toml:4:") && said.contains("secrets.b.file"),
        "{said}"
    );
    assert!(!said.contains("not-yours"), "{said}");
    assert!(host.pid("x").is_none());
}

#[test]
fn the_agent_keys_secrets_and_never_shows_them() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(mut host) = Instance::with_busybox("seca", &[]) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("seca");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("db_password"), FIRST).unwrap();
    std::fs::write(
        src.join("app.toml"),
        format!(
            "[secrets.db_password]\nfile = \"db_password\"\n[secrets.token]\nenv = \"SEC_AGENT_TOKEN\"\n\
             [containers.app]\nimage = \"{IMAGE}\"\ncommand = [\"sleep\", \"3600\"]\ninit = true\n\
             network_mode = \"none\"\nsecrets = [\"db_password\", \"token\"]\n"
        ),
    )
    .unwrap();
    let config = work.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "resync = \"1s\"\n[[source]]\nname = \"seca\"\nurl = \"{}\"\n",
            src.display()
        ),
    )
    .unwrap();
    host.start_agent_env(
        &["--config", config.to_str().expect("utf-8")],
        &[("SEC_AGENT_TOKEN", TOKEN)],
    );
    wait_for("app running", Duration::from_secs(60), || {
        host.running("app")
    });
    assert_eq!(
        exec(&host, "app", &["cat", "/run/secrets/token"]),
        (true, TOKEN.to_string())
    );
    // The host's key: made by the agent, private.
    let key = std::fs::metadata(host.dir().join("secret.key")).expect("secret.key");
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert_eq!(key.len(), 32);
    // The plan from the command line hashes with the same key: no change.
    let mut cli = host.command();
    cli.env("SEC_AGENT_TOKEN", TOKEN);
    let plan = cli
        .args(["plan", "-p", "seca", src.to_str().expect("utf-8")])
        .output()
        .expect("plan");
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));

    // Rotation through the source.
    let pid = host.pid("app");
    std::fs::write(src.join("db_password"), SECOND).unwrap();
    // The file is rewritten in place, so the agent may see it empty on the
    // way (and replace the container twice): wait for the last value.
    wait_for(
        "app replaced with the new secret",
        Duration::from_secs(60),
        || {
            host.running("app")
                && host.pid("app") != pid
                && exec(&host, "app", &["cat", "/run/secrets/db_password"])
                    == (true, SECOND.to_string())
        },
    );
    let (_, status) = crate::common::http_get(host.port, "/status").unwrap_or_default();
    let (_, metrics) = crate::common::http_get(host.port, "/metrics").unwrap_or_default();
    assert!(status.contains("seca"), "{status}");
    host.stop_agent();
    let log = host.agent_log();
    for v in [FIRST, SECOND, TOKEN] {
        for (what, shown) in [("status", &status), ("metrics", &metrics), ("log", &log)] {
            assert!(!shown.contains(v), "{what} shows a secret:\n{shown}");
        }
        let mut found = Vec::new();
        files_containing(host.dir(), v, &mut found);
        assert!(found.is_empty(), "{v} written to {found:?}");
    }
}
