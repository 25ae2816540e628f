//! Trust boundaries of the sources, end to end: a git push or a container
//! must not become root on the host.
//!
//! - a git source is restricted until its `[source.policy]` allows more
//!   (capabilities, the host's network, no seccomp filter, host paths);
//! - a directory source keeps every permission unless given a policy, and
//!   `moor validate/apply --policy FILE` show and enforce one;
//! - a container cannot write its own desired state: a read-write bind into
//!   a git checkout is refused, and what a container writes into a
//!   directory source is never read;
//! - a checkout edited on disk is not trusted at start, an older signed
//!   commit is a rollback, and plain transports need verification.
//!
//! Each refusal is checked for what it says and for what did not change.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{self, fleet_repo, git, wait_for};

/// An instance that owns `project`, with busybox, when git is there.
fn instance(project: &str) -> Option<Instance> {
    Instance::with_busybox(project, &["git"])
}

const IMAGE: &str = "localhost/moor-example/busybox:1";

/// A container that sleeps, with `GREETING` and `extra` fields.
fn sleeper(name: &str, greeting: &str, extra: &str) -> String {
    format!(
        "[containers.{name}]\nimage = \"{IMAGE}\"\ncommand = [\"sleep\", \"3600\"]\n\
         env = {{ GREETING = \"{greeting}\" }}\ninit = true\n{extra}\n"
    )
}

/// What a push (or a container) asks for that reaches past the container.
fn hostile() -> String {
    let none = "network_mode = \"none\"";
    [
        sleeper("admin", "x", &format!("{none}\ncap_add = [\"SYS_ADMIN\"]")),
        sleeper("everything", "x", &format!("{none}\ncap_add = [\"ALL\"]")),
        sleeper("hostnet", "x", "network_mode = \"host\""),
        sleeper(
            "nofilter",
            "x",
            &format!("{none}\nseccomp = \"unconfined\""),
        ),
        sleeper(
            "hostfs",
            "x",
            &format!("{none}\nmounts = [\"/etc:/host-etc:ro\"]"),
        ),
    ]
    .concat()
}

const HOSTILE_NAMES: [&str; 5] = ["admin", "everything", "hostnet", "nofilter", "hostfs"];

/// A bare repository and a work clone that pushes to it.
struct Repo {
    _tmp: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
    /// `git -c …` arguments that sign commits, once a key is made.
    signing: Vec<String>,
}

impl Repo {
    fn new() -> Self {
        let (tmp, bare, work) = fleet_repo();
        Self {
            _tmp: tmp,
            bare,
            work,
            signing: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("git+file://{}", self.bare.display())
    }

    /// Makes an SSH key that signs every later commit; returns an
    /// `allowed_signers` file that lists it.
    fn sign_with_new_key(&mut self) -> PathBuf {
        let key = self._tmp.path().join("signer");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "deploy@moor", "-f"])
            .arg(&key)
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success());
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
        let allowed = self._tmp.path().join("allowed_signers");
        std::fs::write(&allowed, format!("deploy@moor {public}")).expect("allowed_signers");
        self.signing = [
            "gpg.format=ssh".to_string(),
            format!("user.signingkey={}", key.display()),
            "commit.gpgsign=true".to_string(),
        ]
        .into_iter()
        .flat_map(|c| ["-c".to_string(), c])
        .collect();
        allowed
    }

    /// Writes `files` (replacing what was there), commits and pushes;
    /// returns the commit id.
    fn commit(&self, files: &[(&str, &str)], subject: &str) -> String {
        for entry in std::fs::read_dir(&self.work).expect("work") {
            let path = entry.expect("entry").path();
            if path.file_name().is_some_and(|n| n != ".git") {
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).expect("rm");
                } else {
                    std::fs::remove_file(&path).expect("rm");
                }
            }
        }
        for (name, text) in files {
            let path = self.work.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        git(&self.work, &["add", "-A"]);
        let mut args: Vec<&str> = self.signing.iter().map(String::as_str).collect();
        args.extend(["commit", "-q", "--allow-empty", "-m", subject]);
        git(&self.work, &args);
        self.push();
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Force-pushes main to `commit`.
    fn force_push(&self, commit: &str) {
        git(&self.work, &["reset", "-q", "--hard", commit]);
        self.push();
    }

    fn push(&self) {
        git(&self.work, &["push", "-q", "-f", "origin", "HEAD:main"]);
    }
}

fn source(host: &Instance) -> serde_json::Value {
    host.status()["sources"][0].clone()
}

fn names(host: &Instance) -> Vec<String> {
    let mut v: Vec<String> = host
        .containers()
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

fn wait_greeting(host: &Instance, name: &str, want: &str) {
    wait_for(
        &format!("{name}: GREETING={want}"),
        Duration::from_secs(90),
        || host.container_env(name, "GREETING").as_deref() == Some(want),
    );
}

/// Waits for the source's error to hold every one of `needles`; returns it.
fn wait_error(host: &Instance, needles: &[&str]) -> String {
    let mut last = String::new();
    wait_for(
        &format!("a source error saying {needles:?}"),
        Duration::from_secs(90),
        || {
            last = source(host)["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            needles.iter().all(|n| last.contains(n))
        },
    );
    last
}

/// Polls `f` until it is true or `timeout` passes; returns whether it was.
fn poll(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_git_source_is_restricted_until_its_policy_allows_more() {
    let Some(mut host) = instance("fleet") else {
        return;
    };
    let repo = Repo::new();
    let gweb = |g: &str| sleeper("gweb", g, "network_mode = \"none\"");
    let first = repo.commit(&[("stack.toml", &gweb("one"))], "one");
    let url = repo.url();
    host.start_agent(&["--source", &url, "-p", "fleet", "--interval", "1s"]);
    wait_greeting(&host, "gweb", "one");

    // A push asks for what reaches the host: refused whole, with every
    // diagnostic naming the policy key; the revision in force stays.
    let evil = hostile();
    let second = repo.commit(
        &[("stack.toml", &gweb("two")), ("evil.toml", &evil)],
        "take the host",
    );
    let error = wait_error(
        &host,
        &[
            &second[..12],
            "evil.toml:7:12: error: containers.admin.cap_add[0]: capability SYS_ADMIN is not allowed by the source's policy (allow it with capabilities = [\"SYS_ADMIN\"] in [source.policy])",
            "containers.everything.cap_add[0]: capability ALL is not allowed",
            "containers.hostnet.network_mode: network_mode = \"host\" is not allowed by the source's policy",
            "(allow it with host_network = true in [source.policy])",
            "containers.nofilter.seccomp: seccomp = \"unconfined\" is not allowed",
            "(allow it with unconfined = true in [source.policy])",
            "containers.hostfs.mounts[0]: bind source \"/etc\" is a host path outside those the source's policy allows (allow it with host_paths = [\"/etc\"] in [source.policy])",
        ],
    );
    assert!(
        error.contains("the last good state stays in force"),
        "{error}"
    );
    assert_eq!(
        host.container_env("gweb", "GREETING").as_deref(),
        Some("one")
    );
    assert_eq!(names(&host), ["gweb"], "nothing of the refused push runs");
    assert_eq!(source(&host)["applied_revision"], first.as_str());
    let log = host.agent_log();
    assert!(log.contains("capability SYS_ADMIN is not allowed"), "{log}");

    // The operator allows each of them in the source's policy.
    host.stop_agent();
    let config = host.dir().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[source]]\nname = \"fleet\"\nurl = \"{url}\"\ninterval = \"1s\"\n\
             [source.policy]\nhost_paths = [\"/etc\"]\ncapabilities = [\"SYS_ADMIN\", \"ALL\"]\n\
             host_network = true\nunconfined = true\n"
        ),
    )
    .expect("write config");
    host.start_agent(&["--config", config.to_str().expect("utf-8")]);
    wait_greeting(&host, "gweb", "two");
    for name in HOSTILE_NAMES {
        let mut last = None;
        let running = poll(Duration::from_secs(60), || {
            last = host.container(name);
            last.as_ref().is_some_and(|c| c["state"] == "running")
        });
        assert!(
            running,
            "{name} is not running: {last:#?}\n{}\n{}",
            source(&host),
            host.agent_log()
        );
    }
    assert_eq!(source(&host)["applied_revision"], second.as_str());
    assert!(source(&host)["error"].is_null(), "{}", source(&host));
}

#[test]
fn a_directory_source_keeps_its_permissions_unless_given_a_policy() {
    let Some(mut host) = instance("site") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let site = tmp.path().join("site");
    std::fs::create_dir(&site).expect("mkdir");
    let app = |g: &str| {
        sleeper("hostnet", g, "network_mode = \"host\"")
            + &sleeper(
                "admin",
                g,
                "network_mode = \"none\"\ncap_add = [\"SYS_ADMIN\"]",
            )
    };
    std::fs::write(site.join("app.toml"), app("one")).expect("write");
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, "# nothing beyond Docker's defaults\n").expect("write");
    let (site_arg, policy_arg) = (
        site.to_str().expect("utf-8"),
        policy.to_str().expect("utf-8"),
    );

    // Today's behaviour: the operator's own directory may ask for it all.
    let out = host.moor(&["validate", site_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // What a policy would refuse, and where to allow it.
    let out = host.moor(&["validate", "--policy", policy_arg, site_arg]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let file = site.join("app.toml").display().to_string();
    let place = format!("in the policy file {policy_arg})");
    assert!(
        err.contains(&format!(
            "{file}:6:16: error: containers.hostnet.network_mode: network_mode = \"host\" is not allowed by the source's policy"
        )) && err.contains(&format!(
            "{file}:13:12: error: containers.admin.cap_add[0]: capability SYS_ADMIN is not allowed by the source's policy (allow it with capabilities = [\"SYS_ADMIN\"] {place}"
        )) && err.ends_with("2 errors\n"),
        "{err}"
    );

    let out = host.moor(&["apply", "-p", "site", site_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(names(&host), ["admin", "hostnet"]);
    let created = host.container("admin").expect("admin")["created"].clone();

    // Under the policy, a change is refused and nothing on the host moves.
    std::fs::write(site.join("app.toml"), app("two")).expect("write");
    for verb in ["plan", "apply"] {
        let out = host.moor(&[verb, "-p", "site", "--policy", policy_arg, site_arg]);
        assert_eq!(out.status.code(), Some(1), "{verb}");
        let err = text(&out.stderr);
        assert!(
            err.contains("capability SYS_ADMIN is not allowed"),
            "{verb}: {err}"
        );
    }
    assert_eq!(
        host.container_env("admin", "GREETING").as_deref(),
        Some("one")
    );
    assert_eq!(host.container("admin").expect("admin")["created"], created);

    // A directory source of the agent with a policy refuses it too.
    let config = host.dir().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[source]]\nname = \"site\"\nurl = \"{site_arg}\"\n[source.policy]\nhost_network = true\n"
        ),
    )
    .expect("write config");
    host.start_agent(&["--config", config.to_str().expect("utf-8")]);
    wait_error(
        &host,
        &[
            "containers.admin.cap_add[0]: capability SYS_ADMIN is not allowed by the source's policy (allow it with capabilities = [\"SYS_ADMIN\"] in [source.policy])",
        ],
    );
    assert!(
        !source(&host)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("network_mode")
    );
    assert_eq!(
        host.container_env("admin", "GREETING").as_deref(),
        Some("one")
    );
    assert_eq!(
        host.container_env("hostnet", "GREETING").as_deref(),
        Some("one")
    );
}

#[test]
fn a_container_cannot_write_its_own_desired_state() {
    let Some(mut host) = instance("site") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let site = tmp.path().join("site");
    std::fs::create_dir_all(site.join("data")).expect("mkdir");
    std::fs::create_dir_all(site.join("payload")).expect("mkdir");
    // The container writes a manifest declaring a privileged container into
    // its bind, then keeps writing.
    std::fs::write(
        site.join("payload/x.txt"),
        sleeper(
            "evil",
            "x",
            "network_mode = \"host\"\ncap_add = [\"ALL\"]\nmounts = [\"/:/host\"]",
        ),
    )
    .expect("write");
    let writer = |g: &str| {
        format!(
            "[containers.writer]\nimage = \"{IMAGE}\"\n\
             command = [\"sh\", \"-c\", \"cp /payload/x.txt /data/x.toml; i=0; while true; do echo $i > /data/log; i=$((i+1)); sleep 0.05; done\"]\n\
             env = {{ GREETING = \"{g}\" }}\nnetwork_mode = \"none\"\ninit = true\n\
             mounts = [\"./data:/data\", \"./payload:/payload:ro\"]\n"
        )
    };
    std::fs::write(site.join("app.toml"), writer("one")).expect("write");
    let site_arg = site.to_str().expect("utf-8");
    host.start_agent(&["--source", site_arg, "-p", "site", "--resync", "1s"]);
    wait_greeting(&host, "writer", "one");
    wait_for("x.toml written", Duration::from_secs(30), || {
        std::fs::read_to_string(site.join("data/x.toml")).is_ok_and(|t| t.contains("evil"))
    });
    let created = host.container("writer").expect("writer")["created"].clone();
    let no_evil = |host: &Instance, what: &str| {
        // Several passes of the agent (a 1 s resync) while the container writes.
        for _ in 0..4 {
            std::thread::sleep(Duration::from_secs(1));
            assert!(host.container("evil").is_none(), "{what}: evil was created");
            let s = source(host);
            assert!(s["error"].is_null(), "{what}: {s}");
        }
    };
    no_evil(&host, "while the writer runs");
    // A reload (another file edited) reads the manifests again while the
    // bind's content keeps changing: the writer is not replaced.
    std::fs::write(
        site.join("other.toml"),
        sleeper("bystander", "x", "network_mode = \"none\""),
    )
    .expect("write");
    wait_greeting(&host, "bystander", "x");
    no_evil(&host, "after a reload");
    assert_eq!(
        host.container("writer").expect("writer")["created"],
        created,
        "its own writes do not replace it"
    );

    // The operator's edits apply while the container writes without pause.
    std::fs::write(site.join("app.toml"), writer("two")).expect("write");
    wait_greeting(&host, "writer", "two");
    let written =
        std::fs::read_to_string(host.dir().join("sources/site/written.json")).expect("the record");
    assert!(written.contains("data"), "{written}");

    // The container goes; what it wrote stays on disk, and still unread,
    // across a restart too.
    std::fs::remove_file(site.join("other.toml")).expect("rm");
    std::fs::write(
        site.join("app.toml"),
        sleeper("idle", "x", "network_mode = \"none\""),
    )
    .expect("write");
    wait_for("writer removed", Duration::from_secs(60), || {
        names(&host) == ["idle"]
    });
    assert!(site.join("data/x.toml").is_file());
    no_evil(&host, "after the writer is gone");
    host.stop_agent();
    host.start_agent(&["--source", site_arg, "-p", "site", "--resync", "1s"]);
    wait_for("ready", Duration::from_secs(60), || {
        host.status()["ready"] == true
    });
    no_evil(&host, "after a restart");
    assert_eq!(names(&host), ["idle"]);
}

#[test]
fn a_git_source_refuses_writes_into_its_tree_tampering_and_rollbacks() {
    let Some(mut host) = instance("fleet") else {
        return;
    };
    if !common::require(&["ssh-keygen"], false) {
        return;
    }
    let mut repo = Repo::new();
    let allowed = repo.sign_with_new_key();
    let gweb =
        |g: &str, extra: &str| sleeper("gweb", g, &format!("network_mode = \"none\"\n{extra}"));
    let one = repo.commit(&[("stack.toml", &gweb("one", ""))], "one");
    // Over git://, which authenticates nothing: verified commits make it
    // acceptable without --insecure, and what is left to an attacker on
    // the path is replaying an older signed commit.
    let port = common::free_port();
    let _daemon = crate::git_agent::GitDaemon::start(
        repo.bare.parent().expect("the repositories' directory"),
        port,
    );
    let url = format!("git+git://127.0.0.1:{port}/fleet.git");
    let allowed_arg = allowed.to_str().expect("utf-8");
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--source",
            &url,
            "-p",
            "fleet",
            "--interval",
            "1s",
            "--verify-allowed-signers",
            allowed_arg,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let start = |host: &mut Instance, extra: &[&'static str]| {
        let a = args(extra);
        host.start_agent(&a.iter().map(String::as_str).collect::<Vec<_>>());
    };
    start(&mut host, &[]);
    wait_greeting(&host, "gweb", "one");

    // A read-write bind into the checkout: refused.
    let rw = repo.commit(
        &[
            ("stack.toml", &gweb("two", "mounts = [\"./data:/data\"]")),
            ("data/.keep", ""),
        ],
        "write into the checkout",
    );
    wait_error(
        &host,
        &[
            &rw[..12],
            "containers.gweb.mounts[0]: a read-write bind of \"./data\" into the source's tree is refused",
            "use a named volume",
        ],
    );
    assert_eq!(
        host.container_env("gweb", "GREETING").as_deref(),
        Some("one")
    );
    let three = repo.commit(&[("stack.toml", &gweb("three", ""))], "three");
    wait_greeting(&host, "gweb", "three");

    // The remote is put back on an older signed commit: a rollback.
    repo.force_push(&one);
    wait_error(
        &host,
        &[&one, "refusing to roll back", "allow_rollback = true"],
    );
    assert_eq!(
        host.container_env("gweb", "GREETING").as_deref(),
        Some("three")
    );
    assert_eq!(source(&host)["applied_revision"], three.as_str());
    repo.force_push(&three);
    wait_for("the error to clear", Duration::from_secs(60), || {
        source(&host)["error"].is_null()
    });

    // While the agent is stopped, the checkout in force is edited, and the
    // remote is away: the agent starts from the commit, not from the disk.
    host.stop_agent();
    let current = host.dir().join("sources/fleet/current");
    std::fs::write(current.join("stack.toml"), gweb("tampered", "")).expect("tamper");
    // (What the policy allows: the loader alone would take it.)
    std::fs::write(
        current.join("x.toml"),
        sleeper("evil", "x", "network_mode = \"none\""),
    )
    .expect("tamper");
    let away = repo.bare.with_extension("away");
    std::fs::rename(&repo.bare, &away).expect("hide the remote");
    start(&mut host, &[]);
    wait_for("the repair logged", Duration::from_secs(60), || {
        host.agent_log()
            .contains("did not match its commit and was written anew")
    });
    wait_for("the revision in force", Duration::from_secs(60), || {
        source(&host)["revision"] == three.as_str()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        host.container_env("gweb", "GREETING").as_deref(),
        Some("three")
    );
    assert!(host.container("evil").is_none());
    assert!(!current.join("x.toml").exists());
    assert_eq!(
        std::fs::read_to_string(current.join("stack.toml")).expect("read"),
        gweb("three", "")
    );

    // The operator allows the rollback.
    std::fs::rename(&away, &repo.bare).expect("restore the remote");
    host.stop_agent();
    start(&mut host, &["--allow-rollback"]);
    repo.force_push(&one);
    wait_greeting(&host, "gweb", "one");
}

#[test]
fn plain_transports_need_verification_or_insecure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    for url in [
        "git+git://127.0.0.1:9/r.git",
        "git+http://127.0.0.1:9/r.git",
    ] {
        // An agent that accepted the source would run on: it is stopped,
        // and the test fails, after a generous deadline.
        let (out, err) = (tmp.path().join("out"), tmp.path().join("err"));
        let mut child = common::moor_command()
            .args(["--state-dir", state.to_str().expect("utf-8")])
            .args(["agent", "--source", url, "--metrics-addr", "127.0.0.1:0"])
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::fs::File::create(&err).expect("err"))
            .spawn()
            .expect("run moor");
        let mut status = None;
        poll(Duration::from_secs(30), || {
            status = child.try_wait().expect("wait");
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let err = std::fs::read_to_string(&err).unwrap_or_default();
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{url}: {err}");
        assert!(
            err.contains("authenticate") || err.contains("not authenticated"),
            "{url}: {err}"
        );
        assert!(err.contains("insecure = true (--insecure)"), "{url}: {err}");
        assert!(!state.exists(), "{url}: the agent touched its state");
    }
}
