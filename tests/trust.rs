//! Trust boundaries of the agent's HTTP endpoint, end to end: `/status`
//! behind a bearer token (and `moor status --token-file`), the git webhooks
//! on their own address, and a body over the cap.

use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{self, free_port, git, http_get, http_get_with, http_post, wait_for};

const TOKEN: &str = "status-t0ken-do-not-log";
const HOOK_SECRET: &str = "hook-s3cret-do-not-log";

/// `GET path` with an `Authorization` header: the status code.
fn get_with(port: u16, path: &str, authorization: &str) -> Option<u16> {
    http_get_with(port, path, &[("Authorization", authorization)]).map(|(code, _)| code)
}

#[test]
fn status_token_and_webhooks_on_their_own_address() {
    if !common::require(&["nft", "ip", "git"], true) {
        return;
    }
    let mut host = Instance::new();
    host.owns("trust");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (bare, work) = (tmp.path().join("r.git"), tmp.path().join("work"));
    git(tmp.path(), &["init", "-q", "--bare", "-b", "main", "r.git"]);
    git(tmp.path(), &["init", "-q", "-b", "main", "work"]);
    std::fs::write(work.join("stack.toml"), "[volumes.data]\n").expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "HEAD:main"]);
    let token_file = tmp.path().join("status.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write");
    let hook_file = tmp.path().join("hook.secret");
    std::fs::write(&hook_file, HOOK_SECRET).expect("write");
    let hook_port = free_port();
    let url = format!("git+file://{}", bare.display());
    host.start_agent(&[
        "--source",
        &url,
        "-p",
        "trust",
        "--interval",
        "1h",
        "--webhook-secret-file",
        hook_file.to_str().unwrap(),
        "--webhook-addr",
        &format!("127.0.0.1:{hook_port}"),
        "--status-token-file",
        token_file.to_str().unwrap(),
    ]);
    let port = host.port;
    wait_for("the agent's endpoint", Duration::from_secs(60), || {
        http_get(port, "/healthz").is_some_and(|(c, _)| c == 200)
    });

    // /status: 401 without or with a wrong token, 200 with the right one;
    // /metrics, /healthz and /readyz stay open.
    assert_eq!(http_get(port, "/status").map(|r| r.0), Some(401));
    assert_eq!(get_with(port, "/status", "Bearer wrong"), Some(401));
    assert_eq!(
        get_with(port, "/status", &format!("Bearer {TOKEN}")),
        Some(200)
    );
    for open in ["/metrics", "/healthz"] {
        assert_eq!(http_get(port, open).map(|r| r.0), Some(200), "{open}");
    }
    wait_for("ready", Duration::from_secs(60), || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    });

    // `moor status` sends the token from --token-file (or the environment).
    let addr = format!("127.0.0.1:{port}");
    let without = host.moor(&["status", "--addr", &addr]);
    assert!(!without.status.success());
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(err.contains("asks for a token: give --token-file"), "{err}");
    let with = host.moor(&[
        "status",
        "--addr",
        &addr,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(out.contains("trust"), "{out}");
    let by_env = host
        .command()
        .args(["status", "--addr", &addr, "--json"])
        .env("MOOR_STATUS_TOKEN_FILE", &token_file)
        .output()
        .expect("run moor status");
    assert!(by_env.status.success());

    // The webhook answers on its own address only; the status page is not there.
    let hook = |port: u16, secret: &str| {
        http_post(
            port,
            "/hooks/git/trust",
            &[("X-Gitlab-Token", secret)],
            b"{}",
        )
        .map(|r| r.0)
    };
    assert_eq!(hook(hook_port, HOOK_SECRET), Some(202));
    assert_eq!(hook(hook_port, "wrong"), Some(401));
    assert_eq!(
        hook(port, HOOK_SECRET),
        Some(404),
        "a webhook on the main address"
    );
    for path in ["/status", "/metrics"] {
        assert_eq!(
            get_with(hook_port, path, &format!("Bearer {TOKEN}")),
            Some(404),
            "{path} on the webhook address"
        );
    }
    // A body over the cap is refused before anything reads it.
    let big = vec![b'{'; (1 << 20) + 1];
    let over = http_post(
        hook_port,
        "/hooks/git/trust",
        &[("X-Gitlab-Token", HOOK_SECRET)],
        &big,
    );
    assert_eq!(over.map(|r| r.0), Some(413));

    let log = host.agent_log();
    assert!(!log.contains(TOKEN), "the status token was logged:\n{log}");
    assert!(!log.contains(HOOK_SECRET), "the webhook secret was logged");
}

/// An env file with a secret on a line that is not KEY=VALUE: the agent
/// refuses the manifests, and neither `/status` nor its log quotes the line.
#[test]
fn a_bad_env_file_line_reaches_neither_status_nor_the_log() {
    if !common::require(&["nft", "ip"], true) {
        return;
    }
    let mut host = Instance::new();
    host.owns("envs");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("envs");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(
        dir.join("app.toml"),
        "[containers.app]\nimage = \"busybox\"\nenv_file = \"db.env\"\n",
    )
    .expect("write");
    let secret = "postgres://admin:hunter2-s3cr3t@db/prod";
    std::fs::write(dir.join("db.env"), format!("USER=app\n{secret}\n")).expect("write");
    host.start_agent(&["--source", dir.to_str().unwrap()]);
    let port = host.port;
    wait_for(
        "the manifest error in /status",
        Duration::from_secs(60),
        || host.status()["sources"][0]["error"].is_string(),
    );
    let (_, body) = http_get(port, "/status").expect("/status");
    assert!(
        body.contains("db.env line 2: not KEY=VALUE"),
        "the error names the file and line: {body}"
    );
    assert!(!body.contains("s3cr3t"), "/status quotes the line: {body}");
    let log = host.agent_log();
    assert!(log.contains("db.env line 2"), "{log}");
    assert!(!log.contains("s3cr3t"), "the log quotes the line:\n{log}");
    assert!(
        host.containers().is_empty(),
        "an invalid manifest changed the host"
    );
}
