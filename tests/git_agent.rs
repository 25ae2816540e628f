//! The agent following a real git repository: polling, the push webhook
//! (good and bad signatures), signed-commit verification, a remote that goes
//! away and comes back, and a force-push to an older commit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{self, KillOnDrop, commit_and_push, fleet_repo, git, http_post, wait_for};

const SECRET: &str = "hook-s3cret-do-not-log";

/// A bare repository and a work clone that pushes to it.
struct Repo {
    _tmp: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new() -> Self {
        let (tmp, bare, work) = fleet_repo();
        Self {
            _tmp: tmp,
            bare,
            work,
        }
    }

    fn url(&self) -> String {
        format!("git+file://{}", self.bare.display())
    }

    /// Writes the manifest, commits (with `extra` args, e.g. signing) and pushes; returns the commit id.
    fn commit(&self, greeting: &str, subject: &str, extra: &[&str]) -> String {
        std::fs::write(self.work.join("stack.toml"), manifest(greeting)).expect("write");
        commit_and_push(&self.work, subject, extra)
    }
}

fn manifest(greeting: &str) -> String {
    format!(
        r#"[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[containers.gweb]
image        = "busybox"
command      = ["sleep", "3600"]
env          = {{ GREETING = "{greeting}" }}
network_mode = "none"
init         = true
"#
    )
}

fn setup() -> Option<(Instance, Repo)> {
    let host = Instance::with_busybox("fleet", &["git", "ssh-keygen"])?;
    Some((host, Repo::new()))
}

fn greeting(host: &Instance) -> Option<String> {
    host.container_env("gweb", "GREETING")
}

fn source(host: &Instance) -> serde_json::Value {
    host.status()["sources"][0].clone()
}

fn wait_greeting(host: &Instance, want: &str) {
    wait_for(&format!("GREETING={want}"), Duration::from_secs(60), || {
        greeting(host).as_deref() == Some(want)
    });
}

fn sign(body: &[u8]) -> String {
    // HMAC-SHA256 by hand (RFC 2104) with sha2, to check the agent against an
    // independent implementation.
    use sha2::{Digest, Sha256};
    let mut key = [0u8; 64];
    key[..SECRET.len()].copy_from_slice(SECRET.as_bytes());
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for i in 0..64 {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

#[test]
fn agent_follows_pushes_by_polling_and_by_webhook() {
    let Some((mut host, repo)) = setup() else {
        return;
    };
    let secret = host.dir().join("hook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("write secret");
    let first = repo.commit("hello", "first", &[]);
    let url = repo.url();
    let args = |interval: &'static str| {
        vec![
            "--source".to_string(),
            url.clone(),
            "--interval".into(),
            interval.into(),
            "--webhook-secret-file".into(),
            secret.display().to_string(),
        ]
    };
    let a = args("1s");
    host.start_agent(&a.iter().map(String::as_str).collect::<Vec<_>>());
    wait_greeting(&host, "hello");
    let s = source(&host);
    assert_eq!(s["kind"], "git");
    assert_eq!(s["revision"], first.as_str());
    assert_eq!(s["subject"], "first");
    assert_eq!(s["webhook"], true);

    // Polling: a push applies within the interval.
    let second = repo.commit("bonjour", "say bonjour", &[]);
    wait_greeting(&host, "bonjour");
    wait_for("applied revision", Duration::from_secs(30), || {
        source(&host)["applied_revision"] == second.as_str()
    });

    // Webhook: with an hour between polls, only the webhook explains a sync.
    host.stop_agent();
    let a = args("1h");
    host.start_agent(&a.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for("agent ready", Duration::from_secs(60), || {
        host.status()["ready"] == true
    });
    let third = repo.commit("hola", "say hola", &[]);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let path = "/hooks/git/fleet";
    let bad = http_post(
        host.port,
        path,
        &[("X-Hub-Signature-256", "sha256=00ff")],
        body,
    );
    assert_eq!(bad.map(|r| r.0), Some(401), "a bad signature is refused");
    let none = http_post(host.port, path, &[], body);
    assert_eq!(
        none.map(|r| r.0),
        Some(401),
        "a missing signature is refused"
    );
    let gitlab_bad = http_post(host.port, path, &[("X-Gitlab-Token", "guess")], body);
    assert_eq!(gitlab_bad.map(|r| r.0), Some(401));
    let unknown = http_post(host.port, "/hooks/git/nosuch", &[], body);
    assert_eq!(unknown.map(|r| r.0), Some(404));
    // Refused calls triggered nothing: the source still has the old revision.
    assert_eq!(source(&host)["revision"], second.as_str());
    assert_eq!(greeting(&host).as_deref(), Some("bonjour"));

    let sig = format!("sha256={}", sign(body));
    let good = http_post(host.port, path, &[("X-Hub-Signature-256", &sig)], body);
    assert_eq!(good.map(|r| r.0), Some(202));
    wait_greeting(&host, "hola");
    assert_eq!(source(&host)["revision"], third.as_str());

    // GitLab's token and Gitea's signature work too.
    repo.commit("ciao", "say ciao", &[]);
    let good = http_post(host.port, path, &[("X-Gitlab-Token", SECRET)], body);
    assert_eq!(good.map(|r| r.0), Some(202));
    wait_greeting(&host, "ciao");
    repo.commit("hej", "say hej", &[]);
    let good = http_post(host.port, path, &[("X-Gitea-Signature", &sign(body))], body);
    assert_eq!(good.map(|r| r.0), Some(202));
    wait_greeting(&host, "hej");

    host.stop_agent();
    let log = host.agent_log();
    assert!(
        !log.contains(SECRET),
        "the webhook secret was logged:\n{log}"
    );
    assert!(log.contains("webhook refused"), "{log}");
}

#[test]
fn remote_down_keeps_the_revision_and_force_push_is_followed() {
    let Some((mut host, repo)) = setup() else {
        return;
    };
    let first = repo.commit("one", "one", &[]);
    host.start_agent(&["--source", &repo.url(), "--interval", "1s"]);
    wait_greeting(&host, "one");
    let second = repo.commit("two", "two", &[]);
    wait_greeting(&host, "two");

    // The remote goes away: the error shows, the revision stays.
    let away = repo.bare.with_extension("away");
    std::fs::rename(&repo.bare, &away).expect("hide the remote");
    wait_for(
        "the fetch error in /status",
        Duration::from_secs(60),
        || source(&host)["error"].as_str().is_some(),
    );
    let s = source(&host);
    assert_eq!(s["revision"], second.as_str(), "{s:#}");
    assert!(s["failures"].as_u64().is_some_and(|n| n >= 1), "{s:#}");
    assert_eq!(greeting(&host).as_deref(), Some("two"));
    let out = host.moor(&["status", "--addr", &format!("127.0.0.1:{}", host.port)]);
    assert_eq!(out.status.code(), Some(2), "moor status reports the error");
    assert!(String::from_utf8_lossy(&out.stdout).contains("error:"));

    // Back: syncing resumes (the backoff is short with a 1 s interval).
    std::fs::rename(&away, &repo.bare).expect("restore the remote");
    wait_for("the error to clear", Duration::from_secs(60), || {
        source(&host)["error"].is_null()
    });

    // A force-push to the first commit: the host follows it.
    git(&repo.work, &["reset", "-q", "--hard", &first]);
    git(&repo.work, &["push", "-q", "-f", "origin", "HEAD:main"]);
    wait_greeting(&host, "one");
    assert_eq!(source(&host)["revision"], first.as_str());
}

#[test]
fn only_commits_signed_by_an_allowed_key_apply() {
    let Some((mut host, repo)) = setup() else {
        return;
    };
    let key = host.dir().join("signer");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "deploy@moor", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    let allowed = host.dir().join("allowed_signers");
    std::fs::write(&allowed, format!("deploy@moor {public}")).expect("allowed_signers");
    let key_arg = key.display().to_string();
    let signed = [
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={key_arg}"),
    ];
    let mut signed_args: Vec<&str> = signed.to_vec();
    signed_args.push("-c");
    signed_args.push("commit.gpgsign=true");

    let good = repo.commit("signed", "signed", &signed_args);
    host.start_agent(&[
        "--source",
        &repo.url(),
        "--interval",
        "1s",
        "--verify-allowed-signers",
        allowed.to_str().expect("utf-8"),
    ]);
    wait_greeting(&host, "signed");

    // An unsigned commit on top is refused; the host keeps the signed one.
    let unsigned = repo.commit("unsigned", "not signed", &[]);
    wait_for("the refusal in /status", Duration::from_secs(60), || {
        source(&host)["error"]
            .as_str()
            .is_some_and(|e| e.contains(&unsigned) && e.contains("not signed"))
    });
    let s = source(&host);
    assert_eq!(s["revision"], good.as_str(), "{s:#}");
    assert_eq!(s["applied_revision"], good.as_str(), "{s:#}");
    assert_eq!(greeting(&host).as_deref(), Some("signed"));

    // Signed again: applies.
    repo.commit("signed again", "signed again", &signed_args);
    wait_greeting(&host, "signed again");
}

/// `git daemon` serving `base` on 127.0.0.1:port; killed on drop.
pub(crate) struct GitDaemon {
    child: KillOnDrop,
    port: u16,
}

impl GitDaemon {
    pub(crate) fn start(base: &Path, port: u16) -> Self {
        // The daemon binary itself: `git daemon` runs it as a child that
        // would outlive a kill of the `git` wrapper.
        let exec_path = git(base, &["--exec-path"]);
        let child = KillOnDrop::spawn(
            Command::new(Path::new(&exec_path).join("git-daemon"))
                .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
                .arg(format!("--base-path={}", base.display()))
                .arg(format!("--port={port}"))
                .stderr(std::process::Stdio::null()),
        );
        let d = Self { child, port };
        wait_for("git daemon listening", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        d
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        // Its per-connection children hold the listening socket until they end.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn agent_polls_a_git_daemon_and_rides_out_its_outage() {
    let Some((mut host, repo)) = setup() else {
        return;
    };
    let first = repo.commit("uno", "uno", &[]);
    let port = common::free_port();
    let base = repo.bare.parent().expect("parent").to_path_buf();
    let daemon = GitDaemon::start(&base, port);
    let url = format!("git+git://127.0.0.1:{port}/fleet.git");
    // git:// authenticates nothing: accepted only when said so.
    host.start_agent(&["--source", &url, "--interval", "1s", "--insecure"]);
    wait_greeting(&host, "uno");
    let s = source(&host);
    assert_eq!(s["revision"], first.as_str(), "{s:#}");
    assert!(
        host.dir().join("sources/fleet/repo.git/shallow").is_file(),
        "fetches over git:// are shallow"
    );

    // Polling over git://: a push applies within the interval.
    let second = repo.commit("dos", "dos", &[]);
    wait_greeting(&host, "dos");
    assert_eq!(source(&host)["revision"], second.as_str());

    // The server stops: the error shows, the host keeps its revision.
    drop(daemon);
    repo.commit("tres", "tres", &[]);
    wait_for(
        "the fetch error in /status",
        Duration::from_secs(60),
        || source(&host)["error"].as_str().is_some(),
    );
    let s = source(&host);
    assert_eq!(s["revision"], second.as_str(), "{s:#}");
    assert!(
        s["error"].as_str().is_some_and(|e| e.contains("127.0.0.1")),
        "{s:#}"
    );
    assert_eq!(greeting(&host).as_deref(), Some("dos"));

    // The server is back: the agent catches up.
    let _daemon = GitDaemon::start(&base, port);
    wait_greeting(&host, "tres");
}
