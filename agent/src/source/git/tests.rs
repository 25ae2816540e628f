//! The git source against real repositories and real servers on loopback.

use std::path::PathBuf;

use super::testing::{ConnectProxy, Daemon, Fixture, Mode, Server, TestCa, free_port, require};
use super::*;

fn config(url: String, reference: Option<&str>) -> GitConfig {
    // The test timeouts, before any source sets the defaults.
    super::testing::init();
    GitConfig {
        url,
        reference: reference.map(str::to_string),
        // git:// and http:// servers on loopback, unsigned; the refusal
        // without this has its own test.
        insecure: true,
        ..GitConfig::default()
    }
}

fn daemon_url(port: u16) -> String {
    format!("git://127.0.0.1:{port}/remote.git")
}

fn read(s: &Synced, file: &str) -> String {
    std::fs::read_to_string(s.dir.join(file))
        .unwrap_or_else(|e| panic!("read {file} in {}: {e}", s.dir.display()))
}

/// The directories under the cache's `trees/`.
fn trees(cache: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("trees"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn file_branch_is_followed_and_swapped_atomically() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let a = f.commit(&[("app.toml", "one")], "first\n\nbody");
    let cache = f.cache("s");
    let mut src = GitSource::open("s", config(f.file_url(), Some("main")), &cache);
    assert_eq!(src.name(), "s");
    assert_eq!(src.last_checkout(), None);
    let s1 = src.sync().expect("first sync");
    assert_eq!(
        (s1.commit.as_str(), s1.subject.as_str()),
        (a.as_str(), "first")
    );
    assert_eq!(read(&s1, "app.toml"), "one");
    assert_eq!(s1.dir, cache.join("current"));
    assert_eq!(s1.recloned, None);
    assert_eq!(s1.repaired, None);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the cache is private");

    // Nothing new: same answer, no new checkout.
    let before = trees(&cache);
    assert_eq!(src.sync().expect("second sync"), s1);
    // What a restarted agent finds in force.
    let mut again = GitSource::open("s", config(f.file_url(), Some("main")), &cache);
    let last = again.last_checkout().expect("last checkout");
    assert_eq!(
        (last.commit.as_str(), last.subject.as_str()),
        (a.as_str(), "first")
    );
    assert_eq!(trees(&cache), before);

    let b = f.commit(&[("app.toml", "two")], "second");
    let s2 = src.sync().expect("sync after push");
    assert_eq!(s2.commit, b);
    assert_eq!(s2.dir, s1.dir, "the manifest directory keeps its path");
    assert_eq!(read(&s2, "app.toml"), "two");
    // Only the checkout in force is kept.
    let after = trees(&cache);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].starts_with(&b), "{after:?}");
}

#[test]
fn a_refused_tree_never_goes_in_force() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let good = f.commit(&[("app.toml", "good"), ("conf/site", "v1")], "good");
    let cache = f.cache("s");
    let mut src = GitSource::open("s", config(f.file_url(), Some("main")), &cache);
    // The agent refuses a tree whose manifests do not load; here, one whose
    // app.toml says "bad".
    let calls = std::cell::Cell::new(0);
    let mut accept = |dir: &std::path::Path| {
        calls.set(calls.get() + 1);
        match std::fs::read_to_string(dir.join("app.toml")) {
            Ok(t) if t == "bad" => Err("app.toml:1: bad".to_string()),
            _ => Ok(()),
        }
    };
    let s1 = src.sync_checked(&mut accept).expect("first sync");
    assert_eq!(
        (s1.commit.as_str(), s1.refused.as_deref()),
        (good.as_str(), None)
    );

    let bad = f.commit(&[("app.toml", "bad"), ("conf/site", "v2")], "bad");
    let s2 = src
        .sync_checked(&mut accept)
        .expect("sync of the bad commit");
    assert_eq!(s2.commit, bad);
    assert_eq!(s2.refused.as_deref(), Some("app.toml:1: bad"));
    assert_ne!(
        s2.dir,
        cache.join("current"),
        "its own checkout, to report from"
    );
    assert_eq!(read(&s2, "app.toml"), "bad");
    // What is in force still shows the good commit's files, also to a
    // restarted agent.
    assert_eq!(
        std::fs::read_to_string(cache.join("current/conf/site")).unwrap(),
        "v1"
    );
    let mut restarted = GitSource::open("s", config(f.file_url(), Some("main")), &cache);
    assert_eq!(restarted.last_checkout().expect("in force").commit, good);
    // Polling the same bad commit again neither checks it out nor asks again.
    let asked = calls.get();
    let s3 = src.sync_checked(&mut accept).expect("poll again");
    assert_eq!(
        (s3.dir.clone(), s3.refused.clone()),
        (s2.dir.clone(), s2.refused.clone())
    );
    assert_eq!(calls.get(), asked);
    assert_eq!(
        trees(&cache).len(),
        2,
        "the one in force and the refused one"
    );

    // A good commit goes in force and the refused tree goes away.
    let fixed = f.commit(&[("app.toml", "fixed"), ("conf/site", "v3")], "fixed");
    let s4 = src.sync_checked(&mut accept).expect("sync of the fix");
    assert_eq!(
        (s4.commit.as_str(), s4.refused.as_deref()),
        (fixed.as_str(), None)
    );
    assert_eq!(s4.dir, cache.join("current"));
    assert_eq!(read(&s4, "conf/site"), "v3");
    let left = trees(&cache);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(&fixed), "{left:?}");
}

#[test]
fn a_file_over_the_blob_cap_is_refused_before_it_is_inflated() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let good = f.commit(&[("app.toml", "good")], "good");
    let cache = f.cache("s");
    let mut cfg = config(f.file_url(), Some("main"));
    cfg.max_blob_size = 1 << 20;
    let mut src = GitSource::open("s", cfg, &cache);
    assert_eq!(src.sync().expect("first sync").commit, good);

    // 3 MiB of zeros: a few kilobytes in the pack the remote sends.
    let zeros = "\0".repeat(3 << 20);
    f.commit(
        &[("data/big.bin", zeros.as_str()), ("app.toml", "new")],
        "big",
    );
    let e = src.sync().expect_err("a blob over the cap");
    let msg = e.to_string();
    assert!(matches!(e, GitError::Tree { .. }), "{e:?}");
    assert!(
        msg.contains("\"data/big.bin\" is 3145728 bytes, larger than the 1 MiB limit"),
        "{msg}"
    );
    // Nothing changed: the good commit stays in force, files and all.
    assert_eq!(
        std::fs::read_to_string(cache.join("current/app.toml")).unwrap(),
        "good"
    );
    let mut restarted = GitSource::open("s", config(f.file_url(), Some("main")), &cache);
    assert_eq!(restarted.last_checkout().expect("in force").commit, good);
    assert_eq!(trees(&cache).len(), 1, "no half-written checkout is left");
}

#[test]
fn committed_symlinks_out_of_the_tree_are_refused_by_the_loader() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let manifest = "[containers.app]\nimage = \"busybox\"\n";
    let good = f.commit(&[("app.toml", manifest)], "good");
    let cache = f.cache("s");
    let mut src = GitSource::open("s", config(f.file_url(), Some("main")), &cache);
    let loader = crate::source::Loader::default();
    let mut accept = |dir: &std::path::Path| loader.load(dir).map(drop);
    assert_eq!(src.sync_checked(&mut accept).expect("sync").commit, good);

    // `all -> /` and `conf -> /etc` in the repository: the walk must not
    // read the host's files as manifests; a bind source and an env file
    // through links must not leave the checkout either.
    for (link, target) in [
        ("all", "/"),
        ("conf", "/etc"),
        ("up", "../../../../../../.."),
        ("secrets.env", "/proc/self/environ"),
    ] {
        std::os::unix::fs::symlink(target, f.work.join(link)).unwrap();
    }
    let hostile = "[containers.app]\nimage = \"busybox\"\nenv_file = \"secrets.env\"\nmounts = [\"./up/etc/shadow:/x:ro\"]\n";
    let bad = f.commit(&[("app.toml", hostile)], "hostile");
    let s = src
        .sync_checked(&mut accept)
        .expect("sync of the hostile commit");
    assert_eq!(s.commit, bad);
    let why = s.refused.expect("refused");
    for want in [
        "all:1:1: error: not followed: \"all\" is a symbolic link to \"/\"",
        "conf:1:1: error: not followed: \"conf\" is a symbolic link to \"/etc\"",
        "up:1:1: error: not followed: \"up\" is a symbolic link to \"../../../../../../..\"",
        "app.toml:3:12: error: containers.app.env_file: env_file \"secrets.env\": \"secrets.env\" is a symbolic link to \"/proc/self/environ\"",
        "app.toml:4:11: error: containers.app.mounts[0]: bind source \"./up/etc/shadow\": \"up\" is a symbolic link",
    ] {
        assert!(why.contains(want), "missing {want:?} in:\n{why}");
    }
    assert_eq!(why.lines().count(), 5, "nothing else was read:\n{why}");
    // Nothing changed: the good commit stays in force.
    assert_eq!(
        std::fs::read_to_string(cache.join("current/app.toml")).unwrap(),
        manifest
    );
}

#[test]
fn a_new_commit_reparses_only_the_files_it_changed() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let manifest = |name: &str, image: &str| format!("[containers.{name}]\nimage = \"{image}\"\n");
    f.commit(
        &[
            ("a.toml", &manifest("a", "busybox")),
            ("b.toml", &manifest("b", "busybox")),
            ("c.toml", &manifest("c", "busybox")),
        ],
        "three",
    );
    let cache = f.cache("s");
    let mut src = GitSource::open("s", config(f.file_url(), Some("main")), &cache);
    // As the agent does: the check of a commit before it goes in force,
    // then the load of what is in force, through clones of one loader.
    let loader = crate::source::Loader::default();
    let checker = loader.clone();
    let mut accept = |dir: &std::path::Path| checker.load(dir).map(drop);
    let first = src.sync_checked(&mut accept).expect("sync");
    loader.load(&first.dir).expect("valid");

    f.commit(&[("b.toml", &manifest("b", "alpine"))], "one file");
    let second = src.sync_checked(&mut accept).expect("sync");
    assert_eq!(second.dir, first.dir, "what is in force keeps its path");
    let state = loader.load(&second.dir).expect("valid");
    let stats = loader.last_load(&second.dir).expect("loaded");
    assert_eq!(
        (stats.files, stats.reused),
        (3, 2),
        "only b.toml is parsed again"
    );
    assert_eq!(
        state.containers["b"].spec.image.repository,
        "library/alpine"
    );
    assert_eq!(
        state,
        moor_spec::load_for(&[&second.dir], &loader.host).expect("valid")
    );
    // The first commit's checkout is gone, and forgotten: what is kept is
    // `current` and the checkout of the commit in force, where it was checked.
    let kept = loader.kept.lock().expect("kept").len();
    assert_eq!(kept, 2, "directories kept");
}

#[test]
fn default_branch_tag_and_pinned_commit() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let a = f.commit(&[("v", "a")], "a");
    f.git(&["tag", "-a", "-m", "release 1", "v1"]);
    f.git(&["tag", "light", "HEAD"]);
    let b = f.commit(&[("v", "b")], "b");
    // The remote's HEAD names another branch than main.
    f.git(&["push", "-q", "origin", "main:trunk"]);
    f.git_in(&f.bare, &["symbolic-ref", "HEAD", "refs/heads/trunk"]);
    let c = f.commit(&[("v", "c")], "c");
    assert_ne!(b, c);

    let sync = |name: &str, reference: Option<&str>| {
        GitSource::open(name, config(f.file_url(), reference), &f.cache(name)).sync()
    };
    let head = sync("head", None).expect("default branch");
    assert_eq!(
        (head.commit.as_str(), read(&head, "v")),
        (b.as_str(), "b".into())
    );
    assert_eq!(sync("main", Some("main")).unwrap().commit, c);
    assert_eq!(sync("refs", Some("refs/heads/main")).unwrap().commit, c);
    let tag = sync("tag", Some("v1")).expect("annotated tag");
    assert_eq!(
        (tag.commit.as_str(), read(&tag, "v")),
        (a.as_str(), "a".into())
    );
    assert_eq!(sync("light", Some("light")).unwrap().commit, a);
    let pinned = sync("pin", Some(&a)).expect("pinned commit");
    assert_eq!(
        (pinned.commit.as_str(), read(&pinned, "v")),
        (a.as_str(), "a".into())
    );

    let e = sync("nobranch", Some("nope")).unwrap_err();

    eprintln!("{e}");
    assert!(matches!(e, GitError::RefNotFound { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("`nope`") && msg.contains("main") && msg.contains("trunk"),
        "{msg}"
    );
    let e = sync("nocommit", Some(&"0123456789".repeat(4))).unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, GitError::RefNotFound { .. }), "{e}");
    let e = sync("badref", Some("a..b")).unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, GitError::Config { .. }), "{e}");
}

#[test]
fn sub_path() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    f.commit(&[("deploy/prod/app.toml", "prod"), ("README", "x")], "a");
    let with_path = |name: &str, path: &str| {
        let mut c = config(f.file_url(), None);
        c.path = Some(PathBuf::from(path));
        GitSource::open(name, c, &f.cache(name)).sync()
    };
    let s = with_path("ok", "deploy/prod").expect("sub-path");
    assert_eq!(s.dir, f.cache("ok").join("current/deploy/prod"));
    assert_eq!(read(&s, "app.toml"), "prod");

    let e = with_path("missing", "deploy/dev").unwrap_err();

    eprintln!("{e}");
    assert!(matches!(e, GitError::Tree { .. }), "{e}");
    assert!(e.to_string().contains("deploy/dev"), "{e}");
    assert!(!f.cache("missing").join("current").exists());
    for bad in ["../x", "/etc", "deploy/../.."] {
        let e = with_path("bad", bad).unwrap_err();
        eprintln!("{e}");
        assert!(matches!(e, GitError::Config { .. }), "{bad}: {e}");
    }
}

#[test]
fn git_daemon_force_push_and_remote_down() {
    if !require(&["git", "git-daemon"]) {
        return;
    }
    let f = Fixture::new();
    let a = f.commit(&[("v", "a")], "a");
    let b = f.commit(&[("v", "b")], "b");
    let port = free_port();
    let daemon = Daemon::start(&f.root, port);
    let cache = f.cache("d");
    let mut src = GitSource::open("d", config(daemon.url("remote.git"), Some("main")), &cache);
    assert_eq!(src.sync().expect("clone over git://").commit, b);
    assert!(
        cache.join("repo.git/shallow").is_file(),
        "the fetch is shallow"
    );

    // Force-push to the older commit: followed.
    f.git(&["reset", "-q", "--hard", &a]);
    f.push();
    let s = src.sync().expect("after force-push");
    assert_eq!((s.commit.as_str(), read(&s, "v")), (a.as_str(), "a".into()));

    // The remote stops: an error naming the source; the checkout stays.
    drop(daemon);
    let c = f.commit(&[("v", "c")], "c");
    let e = src.sync().expect_err("remote down");
    eprintln!("{e}");
    assert!(matches!(e, GitError::Remote { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("git source d") && msg.contains(&format!("127.0.0.1:{port}")),
        "{msg}"
    );
    assert_eq!(read(&s, "v"), "a", "the last good checkout stays in force");

    // The remote is back: syncing resumes.
    let _daemon = Daemon::start(&f.root, port);
    let s = src.sync().expect("remote back");
    assert_eq!((s.commit.as_str(), read(&s, "v")), (c.as_str(), "c".into()));

    // A commit below the shallow clone's depth, pinned: the history is
    // fetched whole to find it (git daemon refuses a fetch by id).
    let x = f.commit(&[("v", "x")], "x");
    let shallow_cache = f.cache("d2");
    let mut head = GitSource::open("d2", config(daemon_url(port), None), &shallow_cache);
    assert_eq!(head.sync().expect("shallow clone").commit, x);
    let repo = git2::Repository::open_bare(shallow_cache.join("repo.git")).unwrap();
    assert!(repo.find_commit(git2::Oid::from_str(&a).unwrap()).is_err());
    let mut pinned = GitSource::open("d2", config(daemon_url(port), Some(&a)), &shallow_cache);
    let s = pinned.sync().expect("pinned older commit over git://");
    assert_eq!((s.commit.as_str(), read(&s, "v")), (a.as_str(), "a".into()));
}

#[test]
fn http_backend_with_basic_auth() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let a = f.commit(&[("v", "a")], "a");
    let server = Server::start(Mode::Git {
        root: f.root.clone(),
        auth: Some(("alice".into(), "pa55-w0rd".into())),
    });
    let secret_file = f.tmp.path().join("password");
    std::fs::write(&secret_file, "pa55-w0rd\n").unwrap();

    let mut c = config(server.url("remote.git"), Some("main"));
    c.auth.username = Some("alice".into());
    c.auth.password = Some(Secret::File(secret_file));
    let s = GitSource::open("h", c.clone(), &f.cache("h"))
        .sync()
        .expect("fetch over smart http with basic auth");
    assert_eq!(s.commit, a);
    assert!(
        f.cache("h").join("repo.git/shallow").is_file(),
        "the fetch is shallow"
    );
    assert!(server.saw_user("alice"), "the credentials were sent");

    // No credentials, and wrong ones: refused, and the message holds no secret.
    let e = GitSource::open(
        "anon",
        config(server.url("remote.git"), None),
        &f.cache("anon"),
    )
    .sync()
    .expect_err("no credentials");
    eprintln!("{e}");
    assert!(matches!(e, GitError::Remote { .. }), "{e}");
    // A wrong password, from an environment variable (one that is always
    // set: changing the environment of a threaded test process is unsound).
    let mut wrong = c.clone();
    wrong.auth.password = Some(Secret::Env("PATH".into()));
    let e = GitSource::open("wrong", wrong, &f.cache("wrong"))
        .sync()
        .expect_err("wrong password");
    eprintln!("{e}");
    assert!(matches!(e, GitError::Remote { .. }), "{e}");
    let path = std::env::var("PATH").unwrap();
    assert!(!format!("{e} {e:?}").contains(&path), "{e:?}");
    let mut unset = c.clone();
    unset.auth.password = Some(Secret::Env("MOOR_TEST_UNSET_VARIABLE".into()));
    let e = GitSource::open("unset", unset, &f.cache("unset"))
        .sync()
        .expect_err("unset variable");
    eprintln!("{e}");
    assert!(
        matches!(e, GitError::Config { .. })
            && e.to_string()
                .contains("MOOR_TEST_UNSET_VARIABLE is not set"),
        "{e}"
    );

    // Credentials in the URL are used, and redacted from every message.
    let url = format!(
        "http://alice:pa55-w0rd@127.0.0.1:{}/remote.git",
        server.port
    );
    let mut src = GitSource::open("inurl", config(url, Some("nope")), &f.cache("inurl"));
    assert_eq!(
        src.redacted_url(),
        format!("http://***:***@127.0.0.1:{}/remote.git", server.port)
    );
    let e = src.sync().expect_err("unknown branch");
    eprintln!("{e}");
    assert!(matches!(e, GitError::RefNotFound { .. }), "{e}");
    assert!(!format!("{e} {e:?}").contains("pa55"), "{e:?}");
}

/// What the https worker is told: `URL|CACHE|COMMIT|EXPECT`, EXPECT being
/// `ok`, `untrusted` or `timeout`.
const HTTPS_WORKER_ENV: &str = "MOOR_TEST_HTTPS_WORKER";
/// The password the https worker sends (the test server's).
const HTTPS_PASSWORD_ENV: &str = "MOOR_TEST_HTTPS_PASSWORD";

/// Runs [`https_worker`] in a child process of this test binary with `env`:
/// the trust store is the process's (read once, from SSL_CERT_FILE as
/// OpenSSL reads it), and a threaded test process cannot soundly change its
/// own environment.
fn run_https_worker(spec: &str, env: &[(&str, &str)]) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "source::git::tests::https_worker",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(HTTPS_WORKER_ENV, spec)
    .env(HTTPS_PASSWORD_ENV, "s3cret-pa55");
    for v in [
        "https_proxy",
        "HTTPS_PROXY",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run the https worker");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("https worker {spec}:\n{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "https worker {spec}:\n{stdout}\n{stderr}"
    );
}

/// Fetches as [`HTTPS_WORKER_ENV`] says, in a child process of
/// `https_with_the_systems_trust_store`.
#[test]
#[ignore = "run as a child process by https_with_the_systems_trust_store"]
fn https_worker() {
    let spec = std::env::var(HTTPS_WORKER_ENV).expect("run only as a child of the https test");
    let [url, cache, commit, expect]: [&str; 4] = spec
        .split('|')
        .collect::<Vec<_>>()
        .try_into()
        .expect("URL|CACHE|COMMIT|EXPECT");
    let mut c = config(url.to_string(), Some("main"));
    c.insecure = false;
    c.auth.username = Some("alice".into());
    c.auth.password = Some(Secret::Env(HTTPS_PASSWORD_ENV.into()));
    let r = GitSource::open("tls", c, std::path::Path::new(cache)).sync();
    let refused = |what: &str| {
        let e = r.as_ref().expect_err(what);
        eprintln!("{e}");
        match e {
            GitError::Remote { message, .. } => message.clone(),
            e => panic!("{what}: {e}"),
        }
    };
    match expect {
        "ok" => assert_eq!(r.as_ref().expect("fetch over https").commit, commit),
        "untrusted" => assert!(refused("untrusted").contains("is not trusted")),
        "timeout" => assert!(refused("no answer").contains("timed out")),
        other => panic!("unknown expectation {other}"),
    }
    assert!(
        !format!("{r:?}").contains("s3cret"),
        "no message holds the password"
    );
}

#[test]
fn https_with_the_systems_trust_store() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let a = f.commit(&[("v", "a")], "a");
    let (ca, stranger) = (TestCa::new("moor test CA"), TestCa::new("a stranger CA"));
    let pem = |ca: &TestCa, name: &str| {
        let p = f.tmp.path().join(name);
        std::fs::write(&p, &ca.pem).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (ca_file, stranger_file) = (pem(&ca, "ca.pem"), pem(&stranger, "stranger.pem"));
    let trust = |file: &str| ("SSL_CERT_FILE", file.to_string());
    let git = |names: &[&str]| {
        Server::start_https(
            Mode::Git {
                root: f.root.clone(),
                auth: Some(("alice".into(), "s3cret-pa55".into())),
            },
            ca.server(names),
        )
    };
    let spec = |server: &Server, name: &str, expect: &str| {
        format!(
            "{}|{}|{a}|{expect}",
            server.url("remote.git"),
            f.cache(name).display()
        )
    };
    let run = |spec: String, env: &[(&str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_https_worker(&spec, &env);
    };

    // The CA trusted through SSL_CERT_FILE, as OpenSSL honoured it: fetched,
    // with basic auth over TLS.
    let server = git(&["127.0.0.1", "localhost"]);
    run(spec(&server, "ok", "ok"), &[trust(&ca_file)]);
    assert!(server.saw_user("alice"), "the credentials were sent");

    // Through a proxy (HTTP CONNECT): TLS over libgit2's tunnel.
    let proxy = ConnectProxy::start();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    run(
        spec(&server, "proxied", "ok"),
        &[trust(&ca_file), ("https_proxy", proxy_url)],
    );
    let targets = proxy.targets.lock().unwrap().clone();
    assert!(
        !targets.is_empty()
            && targets
                .iter()
                .all(|t| *t == format!("127.0.0.1:{}", server.port)),
        "{targets:?}"
    );

    // A CA the system does not trust, and the trusted CA's certificate for
    // another name: refused before any request, so no credentials are sent.
    drop(server);
    for (server, name, trusted) in [
        (git(&["127.0.0.1"]), "stranger", &stranger_file),
        (git(&["git.example.invalid"]), "name", &ca_file),
    ] {
        run(spec(&server, name, "untrusted"), &[trust(trusted)]);
        assert!(server.users_seen.lock().unwrap().is_empty(), "{name}");
    }

    // A server that accepts and never answers the handshake: the fetch ends
    // (the test's io timeout is 10 s) instead of hanging.
    let silent = Server::start_https(Mode::Silent, ca.server(&["127.0.0.1"]));
    run(spec(&silent, "silent", "timeout"), &[trust(&ca_file)]);
}

#[test]
fn garbage_and_silent_remotes_keep_the_last_checkout() {
    if !require(&["git", "git-daemon"]) {
        return;
    }
    let f = Fixture::new();
    let a = f.commit(&[("v", "a")], "a");
    let port = free_port();
    let cache = f.cache("g");
    let mut src = GitSource::open(
        "g",
        config(format!("git://127.0.0.1:{port}/remote.git"), None),
        &cache,
    );
    {
        let _daemon = Daemon::start(&f.root, port);
        assert_eq!(src.sync().expect("good remote").commit, a);
    }
    f.commit(&[("v", "b")], "b");
    for (what, mode) in [
        (
            "garbage",
            Mode::Garbage(b"\x00\xffthis is not git at all\n".repeat(50)),
        ),
        (
            "pkt-lines of garbage",
            Mode::Garbage(b"0032zzzz not a ref advertisement at all......\n0000".to_vec()),
        ),
        ("nothing (timeout)", Mode::Silent),
    ] {
        let _server = Server::start_on(mode, port);
        let e = src.sync().expect_err(what);
        eprintln!("{e}");
        assert!(matches!(e, GitError::Remote { .. }), "{what}: {e}");
        let s = src.last_checkout().expect("checkout in force");
        assert_eq!(
            (s.commit.as_str(), read(&s, "v")),
            (a.as_str(), "a".into()),
            "{what}"
        );
    }

    // An http server that answers garbage.
    let server = Server::start(Mode::Garbage(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nConnection: close\r\n\r\n\x01\x02garbage".to_vec(),
    ));
    let e = GitSource::open("hg", config(server.url("remote.git"), None), &f.cache("hg"))
        .sync()
        .expect_err("http garbage");
    eprintln!("{e}");
    assert!(matches!(e, GitError::Remote { .. }), "{e}");
}

#[test]
fn damaged_clone_is_cloned_again() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let a = f.commit(&[("v", "a")], "a");
    let cache = f.cache("c");
    let mut src = GitSource::open("c", config(f.file_url(), None), &cache);
    assert_eq!(src.sync().unwrap().commit, a);
    let repo = cache.join("repo.git");

    // Every object deleted.
    let objects = repo.join("objects");
    for entry in std::fs::read_dir(&objects).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().is_some_and(|n| n != "info") && p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        }
    }
    let b = f.commit(&[("v", "b")], "b");
    let s = src.sync().expect("re-clone after objects vanished");
    assert_eq!((s.commit.as_str(), read(&s, "v")), (b.as_str(), "b".into()));
    assert!(s.recloned.is_some(), "the re-clone is reported");

    // HEAD overwritten with garbage.
    std::fs::write(repo.join("HEAD"), "garbage\n").unwrap();
    let s = src.sync().expect("re-clone after HEAD garbage");
    assert_eq!(s.commit, b);
    assert!(s.recloned.is_some(), "the re-clone is reported");
    // And the clone is sound again.
    assert_eq!(src.sync().unwrap().recloned, None);
}

#[test]
fn signed_commits() {
    if !require(&["git", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let (good_key, good_pub) = f.ssh_key("good");
    let (other_key, _) = f.ssh_key("other");
    let signers = f.tmp.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("test@example.com namespaces=\"git\" {good_pub}\n"),
    )
    .unwrap();
    let mut c = config(f.file_url(), None);
    c.verify = Some(VerifyConfig {
        allowed_signers: Some(signers),
        openpgp_keys: Vec::new(),
    });
    let cache = f.cache("v");
    let mut src = GitSource::open("v", c, &cache);

    let a = f.commit_signed(&good_key, &[("v", "a")], "signed a");
    let s = src.sync().expect("signed by an allowed key");
    assert_eq!(s.commit, a);
    assert!(
        s.signer
            .as_deref()
            .is_some_and(|p| p.starts_with("test@example.com")),
        "{s:?}"
    );

    // An unsigned commit on top: refused, the signed revision stays.
    let b = f.commit(&[("v", "b")], "unsigned b");
    let e = src.sync().expect_err("unsigned");
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::Unsigned { commit, .. } if *commit == b),
        "{e}"
    );
    assert!(e.is_verification());
    assert!(
        e.to_string().contains(&format!("commit {b} is not signed")),
        "{e}"
    );
    assert_eq!(read(&s, "v"), "a");

    // Signed by a key that is not allowed: refused.
    let c2 = f.commit_signed(&other_key, &[("v", "c")], "signed by another key");
    let e = src.sync().expect_err("unknown key");
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::UnknownKey { commit, key, .. } if *commit == c2 && key.starts_with("SHA256:")),
        "{e}"
    );
    assert_eq!(read(&s, "v"), "a");

    // A commit whose content was changed after signing: refused.
    let d = f.commit_signed(&good_key, &[("v", "d")], "signed d");
    let raw = f.git(&["cat-file", "commit", &d]);
    let forged = raw.replace("signed d", "forged d") + "\n";
    let forged_path = f.tmp.path().join("forged");
    std::fs::write(&forged_path, forged).unwrap();
    let forged_id = f.git(&[
        "hash-object",
        "-t",
        "commit",
        "-w",
        forged_path.to_str().unwrap(),
    ]);
    f.git(&["reset", "-q", "--hard", &forged_id]);
    f.push();
    let e = src.sync().expect_err("forged");
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::BadSignature { commit, .. } if *commit == forged_id),
        "{e}"
    );
    assert_eq!(read(&s, "v"), "a");

    // A good signed commit again: applied.
    let g = f.commit_signed(&good_key, &[("v", "g")], "signed g");
    let s = src.sync().expect("signed again");
    assert_eq!((s.commit.as_str(), read(&s, "v")), (g.as_str(), "g".into()));
}

#[test]
fn bad_configurations_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let open = |c: GitConfig| GitSource::open("bad", c, dir.path()).sync().unwrap_err();
    let e = open(config("ftp://u:hunter2@example.com/r".into(), None));
    eprintln!("{e}");
    assert!(
        matches!(e, GitError::Config { .. }) && !e.to_string().contains("hunter2"),
        "{e}"
    );
    let mut c = config("http://example.com/r".into(), None);
    c.auth.password = Some(Secret::Env("HOME".into()));
    let e = open(c);
    eprintln!("{e}");
    assert!(e.to_string().contains("plain http"), "{e}");
    let e = open(config("ssh://git@example.com/r".into(), None));
    eprintln!("{e}");
    assert!(e.to_string().contains("ssh key"), "{e}");
    let mut c = config("file:///nonexistent".into(), None);
    c.verify = Some(VerifyConfig::default());
    let e = open(c);
    eprintln!("{e}");
    assert!(
        e.to_string()
            .contains("no allowed_signers file nor OpenPGP keys"),
        "{e}"
    );
    let mut c = config("https://example.com/r".into(), None);
    c.auth.password = Some(Secret::File(dir.path().join("missing")));
    let e = open(c);
    eprintln!("{e}");
    assert!(
        matches!(e, GitError::Config { .. }) && e.to_string().contains("missing"),
        "{e}"
    );
}

#[test]
fn ssh_with_known_hosts() {
    if !require(&["git", "ssh-keygen", "sshd"]) {
        return;
    }
    let f = Fixture::new();
    let a = f.commit(&[("v", "a")], "a");
    let (client_key, client_pub) = f.ssh_key("client");
    let (stranger_key, _) = f.ssh_key("stranger");
    let sshd = super::testing::Sshd::start(&f.tmp.path().join("sshd"), &client_pub);
    let known_hosts = f.tmp.path().join("known_hosts");
    let ssh = |name: &str, key: &std::path::Path, known: &str| {
        std::fs::write(&known_hosts, known).unwrap();
        let mut c = config(sshd.url(&f.bare), Some("main"));
        c.auth.ssh_key = Some(key.to_path_buf());
        c.auth.known_hosts = Some(known_hosts.clone());
        GitSource::open(name, c, &f.cache(name)).sync()
    };

    let s = ssh("ok", &client_key, &format!("{}\n", sshd.known_hosts_line)).expect("ssh fetch");
    assert_eq!((s.commit.as_str(), read(&s, "v")), (a.as_str(), "a".into()));

    // Hashed known_hosts, as ssh-keygen -H writes it.
    std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line)).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&known_hosts)
        .output()
        .unwrap();
    assert!(out.status.success());
    let hashed = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    assert_eq!(
        ssh("hashed", &client_key, &hashed).expect("hashed").commit,
        a
    );

    // Unknown host, another key for the host: refused before any auth.
    let e = ssh("unknown", &client_key, "").unwrap_err();
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::HostKey { problem, .. } if problem.contains("not in known_hosts")),
        "{e}"
    );
    let other_key = "AAAAC3NzaC1lZDI1NTE5AAAAIEsDX3j253FnxU3Ah8DodLqCb8o9ov1AyBGE97EknTpO";
    let e = ssh(
        "mismatch",
        &client_key,
        &format!("[127.0.0.1]:{} ssh-ed25519 {other_key}\n", sshd.port),
    )
    .unwrap_err();
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::HostKey { problem, .. } if problem.contains("does not match")),
        "{e}"
    );

    // A client key the server does not accept.
    let e = ssh(
        "stranger",
        &stranger_key,
        &format!("{}\n", sshd.known_hosts_line),
    )
    .unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, GitError::Remote { .. }), "{e}");
}

/// The ssh work directories left in a source's cache.
fn ssh_work_dirs(cache: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".ssh-work-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes whose command line names `dir` (ssh names its key copy
/// in the source's cache).
fn processes_naming(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&needle)
                .then(|| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        })
        .collect()
}

#[test]
fn ssh_runs_openssh_with_the_sources_settings() {
    if !require(&["git", "ssh", "ssh-keygen", "sshd"]) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let a = f.commit(&[("v", "a")], "a");
    let (client_key, client_pub) = f.ssh_key("client");
    // A key with a passphrase.
    let locked_key = f.tmp.path().join("locked");
    let out = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "correct horse",
            "-C",
            "locked",
            "-f",
        ])
        .arg(&locked_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let locked_pub = std::fs::read_to_string(locked_key.with_extension("pub")).unwrap();
    let sshd = super::testing::Sshd::start(
        &f.tmp.path().join("sshd"),
        &format!("{client_pub}\n{}", locked_pub.trim()),
    );
    let known_hosts = f.tmp.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line)).unwrap();
    let passphrase = f.tmp.path().join("passphrase");
    let source = |name: &str, url: String, key: &std::path::Path| {
        let mut c = config(url, Some("main"));
        c.auth.ssh_key = Some(key.to_path_buf());
        c.auth.known_hosts = Some(known_hosts.clone());
        GitSource::open(name, c, &f.cache(name))
    };

    // The passphrase reaches ssh (through askpass), and only ssh.
    std::fs::write(&passphrase, "correct horse\n").unwrap();
    let mut src = source("locked", sshd.url(&f.bare), &locked_key);
    src.config.auth.ssh_passphrase = Some(Secret::File(passphrase.clone()));
    let s = src.sync().expect("key with a passphrase");
    assert_eq!(s.commit, a);
    assert_eq!(ssh_work_dirs(&f.cache("locked")), Vec::<String>::new());
    assert_eq!(processes_naming(&f.cache("locked")), Vec::<String>::new());
    std::fs::write(&passphrase, "wrong horse\n").unwrap();
    let mut src = source("wrong", sshd.url(&f.bare), &locked_key);
    src.config.auth.ssh_passphrase = Some(Secret::File(passphrase.clone()));
    let e = src.sync().unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, GitError::Remote { .. }), "{e}");
    assert!(!e.to_string().contains("wrong horse"), "{e}");
    assert_eq!(ssh_work_dirs(&f.cache("wrong")), Vec::<String>::new());
    assert_eq!(processes_naming(&f.cache("wrong")), Vec::<String>::new());

    // A key readable by others: ssh refuses to use such a file, moor hands
    // it a private copy (libssh2 took it as it was).
    let open_key = f.tmp.path().join("open_key");
    std::fs::copy(&client_key, &open_key).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A work directory a crashed run left behind goes too.
    let cache = f.cache("open");
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let stale = cache.join(format!(".ssh-work-{}-0", gone.id()));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("key"), "old").unwrap();
    let s = source("open", sshd.url(&f.bare), &open_key)
        .sync()
        .expect("0644 key");
    assert_eq!(s.commit, a);
    assert_eq!(ssh_work_dirs(&cache), Vec::<String>::new());

    // A path with a quote and a `!`, which the remote shell must get whole.
    let odd = f.root.join("it's!.git");
    let out = std::process::Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&f.bare)
        .arg(&odd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = source("quoted", sshd.url(&odd), &client_key)
        .sync()
        .expect("path with a quote");
    assert_eq!((s.commit.as_str(), read(&s, "v")), (a.as_str(), "a".into()));

    // A pinned commit that is not a head: the server refuses it by id, and
    // a second ssh run in the same fetch takes every branch.
    let b = f.commit(&[("v", "b")], "b");
    let mut c = config(sshd.url(&f.bare), Some(&a));
    c.auth.ssh_key = Some(client_key.clone());
    c.auth.known_hosts = Some(known_hosts.clone());
    let s = GitSource::open("pinned", c, &f.cache("pinned"))
        .sync()
        .expect("pinned commit");
    assert_eq!((s.commit.as_str(), read(&s, "v")), (a.as_str(), "a".into()));
    assert_ne!(a, b);
    assert_eq!(ssh_work_dirs(&f.cache("pinned")), Vec::<String>::new());

    // A host key marked @revoked.
    let host_key = sshd.known_hosts_line.split_once(' ').unwrap().1;
    std::fs::write(
        &known_hosts,
        format!(
            "{}\n@revoked [127.0.0.1]:{} {host_key}\n",
            sshd.known_hosts_line, sshd.port
        ),
    )
    .unwrap();
    let e = source("revoked", sshd.url(&f.bare), &client_key)
        .sync()
        .unwrap_err();
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::HostKey { problem, host, .. }
            if problem.contains("revoked") && *host == format!("[127.0.0.1]:{}", sshd.port)),
        "{e}"
    );
    assert_eq!(ssh_work_dirs(&f.cache("revoked")), Vec::<String>::new());
    std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line)).unwrap();

    // A repository that is not there: the server's words come back.
    let e = source("missing", sshd.url(&f.root.join("nope.git")), &client_key)
        .sync()
        .unwrap_err();
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::Remote { message, .. } if message.contains("nope.git")),
        "{e}"
    );

    // Hostile hosts and users never reach a command line.
    let marker = f.tmp.path().join("pwned");
    let hostile = format!("ssh://-oProxyCommand=touch{}/r.git", marker.display());
    let e = source("hostile", hostile, &client_key).sync().unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, GitError::Config { .. }), "{e}");
    let mut src = source("hostile-user", sshd.url(&f.bare), &client_key);
    src.config.auth.username = Some(format!("-oProxyCommand=touch {}", marker.display()));
    let e = src.sync().unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, GitError::Config { .. }), "{e}");
    assert!(!marker.exists(), "a hostile setting ran a command");
    assert_eq!(
        ssh_work_dirs(&f.cache("hostile-user")),
        Vec::<String>::new()
    );
}

#[test]
fn openpgp_signed_commits() {
    if !require(&["git", "gpg", "gpgconf", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let gpg = super::testing::Gpg::new(&f.tmp.path().join("gnupg"));
    let good = gpg.gen_key("Good Signer <good@example.com>");
    let other = gpg.gen_key("Other Signer <other@example.com>");
    let key_file = f.tmp.path().join("good.asc");
    std::fs::write(&key_file, gpg.export(&good)).unwrap();
    let mut c = config(f.file_url(), None);
    c.verify = Some(VerifyConfig {
        allowed_signers: None,
        openpgp_keys: vec![key_file.clone()],
    });
    let mut src = GitSource::open("p", c, &f.cache("p"));

    let a = f.commit_gpg(&gpg, &good, &[("v", "a")], "signed a");
    let s = src.sync().expect("signed by an allowed OpenPGP key");
    assert_eq!(s.commit, a);
    let signer = s.signer.clone().unwrap_or_default();
    assert!(
        signer.contains("good@example.com") && signer.contains(&good),
        "{signer}"
    );

    // A signing subkey (gpg then signs with it), bound to the allowed key.
    gpg.add_signing_subkey(&good);
    std::fs::write(&key_file, gpg.export(&good)).unwrap();
    let a2 = f.commit_gpg(&gpg, &good, &[("v", "a2")], "signed a2 by the subkey");
    let s = src.sync().expect("signed by a subkey of an allowed key");
    assert_eq!(
        (s.commit.as_str(), read(&s, "v")),
        (a2.as_str(), "a2".into())
    );

    let b = f.commit(&[("v", "b")], "unsigned b");
    let e = src.sync().expect_err("unsigned");
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::Unsigned { commit, .. } if *commit == b),
        "{e}"
    );

    let c2 = f.commit_gpg(&gpg, &other, &[("v", "c")], "signed by another key");
    let e = src.sync().expect_err("unknown key");
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::UnknownKey { commit, key, .. } if *commit == c2 && *key == other),
        "{e}"
    );

    let d = f.commit_gpg(&gpg, &good, &[("v", "d")], "signed d");
    let raw = f.git(&["cat-file", "commit", &d]);
    let forged_path = f.tmp.path().join("forged");
    std::fs::write(&forged_path, raw.replace("signed d", "forged d") + "\n").unwrap();
    let forged = f.git(&[
        "hash-object",
        "-t",
        "commit",
        "-w",
        forged_path.to_str().unwrap(),
    ]);
    f.git(&["reset", "-q", "--hard", &forged]);
    f.push();
    let e = src.sync().expect_err("forged");
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::BadSignature { commit, .. } if *commit == forged),
        "{e}"
    );

    // An SSH signature where only OpenPGP keys are allowed.
    let (ssh_key, _) = f.ssh_key("ssh");
    f.commit_signed(&ssh_key, &[("v", "e")], "ssh-signed e");
    let e = src
        .sync()
        .expect_err("ssh signature without allowed_signers");
    eprintln!("{e}");
    assert!(matches!(e, GitError::UnknownKey { .. }), "{e}");
    assert_eq!(read(&s, "v"), "a2", "the verified revision stays in force");
}

#[test]
fn plaintext_transports_need_verification_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: a refusal must come before any connection.
    let port = free_port();
    for url in [
        format!("git://127.0.0.1:{port}/r.git"),
        format!("http://127.0.0.1:{port}/r.git"),
    ] {
        let mut c = config(url.clone(), None);
        c.insecure = false;
        let e = GitSource::open("p", c.clone(), dir.path())
            .sync()
            .unwrap_err();
        eprintln!("{e}");
        assert!(
            matches!(e, GitError::Config { .. })
                && e.to_string().contains("authenticate nothing")
                && e.to_string().contains("insecure = true"),
            "{url}: {e}"
        );
        // With verification, or insecure, the transport is used.
        c.verify = Some(VerifyConfig {
            allowed_signers: Some(dir.path().join("signers")),
            openpgp_keys: Vec::new(),
        });
        let e = GitSource::open("p", c, dir.path()).sync().unwrap_err();
        assert!(matches!(e, GitError::Remote { .. }), "{url}: {e}");
        let e = GitSource::open("p", config(url.clone(), None), dir.path())
            .sync()
            .unwrap_err();
        assert!(matches!(e, GitError::Remote { .. }), "{url}: {e}");
    }
}

#[test]
fn a_replayed_older_signed_commit_is_refused_as_a_rollback() {
    if !require(&["git", "git-daemon", "ssh-keygen"]) {
        return;
    }
    let f = Fixture::new();
    let (key, public) = f.ssh_key("deploy");
    let signers = f.tmp.path().join("allowed_signers");
    std::fs::write(&signers, format!("deploy@moor {public}\n")).unwrap();
    let a = f.commit_signed(&key, &[("v", "a")], "signed a");
    let b = f.commit_signed(&key, &[("v", "b")], "signed b");
    let port = free_port();
    let _daemon = Daemon::start(&f.root, port);
    let verified = |allow_rollback: bool| {
        let mut c = config(daemon_url(port), Some("main"));
        c.insecure = false;
        c.allow_rollback = allow_rollback;
        c.verify = Some(VerifyConfig {
            allowed_signers: Some(signers.clone()),
            openpgp_keys: Vec::new(),
        });
        c
    };
    // A clone made before verification was on is shallow: deepened, so
    // that ancestry can be told.
    let cache = f.cache("r");
    let mut plain = GitSource::open("r", config(daemon_url(port), Some("main")), &cache);
    assert_eq!(plain.sync().expect("unverified").commit, b);
    assert!(cache.join("repo.git/shallow").is_file());

    // Someone on the path (or with the account) puts main back on a.
    f.git(&["reset", "-q", "--hard", &a]);
    f.push();
    let mut src = GitSource::open("r", verified(false), &cache);
    let e = src.sync().expect_err("a rollback");
    eprintln!("{e}");
    assert!(
        matches!(&e, GitError::Rollback { commit, in_force, .. } if *commit == a && *in_force == b),
        "{e}"
    );
    assert!(e.is_verification());
    assert!(e.to_string().contains("allow_rollback = true"), "{e}");
    assert_eq!(
        std::fs::read_to_string(cache.join("current/v")).unwrap(),
        "b",
        "the commit in force stays"
    );
    assert!(!cache.join("repo.git/shallow").exists(), "deepened");

    // A signed commit on top of the newest is no rollback.
    f.git(&["reset", "-q", "--hard", &b]);
    let c = f.commit_signed(&key, &[("v", "c")], "signed c");
    assert_eq!(src.sync().expect("newer").commit, c);
    // Refused again after a restart (the commit in force is on disk)...
    f.git(&["reset", "-q", "--hard", &a]);
    f.push();
    let mut restarted = GitSource::open("r", verified(false), &cache);
    assert!(matches!(restarted.sync(), Err(GitError::Rollback { .. })));
    // ...unless the operator allows it.
    let mut allowed = GitSource::open("r", verified(true), &cache);
    let s = allowed.sync().expect("allowed rollback");
    assert_eq!((s.commit.as_str(), read(&s, "v")), (a.as_str(), "a".into()));
    // A pinned commit is the operator's choice, not the remote's.
    let mut c_pinned = verified(false);
    c_pinned.reference = Some(b.clone());
    let mut pinned = GitSource::open("r", c_pinned, &cache);
    assert_eq!(pinned.sync().expect("pinned").commit, b);
}

#[test]
fn a_tampered_checkout_is_not_trusted_at_start() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let good = f.commit(
        &[("app.toml", "[containers.app]\n"), ("conf/site", "v1")],
        "good",
    );
    let cache = f.cache("t");
    let mut src = GitSource::open("t", config(f.file_url(), Some("main")), &cache);
    src.sync().expect("sync");
    let untouched = GitSource::open("t", config(f.file_url(), Some("main")), &cache)
        .last_checkout()
        .expect("in force");
    assert_eq!(
        (untouched.commit.as_str(), untouched.repaired),
        (good.as_str(), None)
    );

    // While the agent is stopped, someone edits the checkout in force.
    std::fs::write(cache.join("current/app.toml"), "[containers.evil]\n").unwrap();
    std::fs::write(cache.join("current/conf/x.toml"), "[containers.more]\n").unwrap();
    let mut restarted = GitSource::open("t", config(f.file_url(), Some("main")), &cache);
    let s = restarted.last_checkout().expect("in force");
    assert_eq!(s.commit, good);
    assert_eq!(s.repaired.as_deref(), Some("./app.toml was changed"));
    assert_eq!(read(&s, "app.toml"), "[containers.app]\n");
    assert!(!s.dir.join("conf/x.toml").exists());
    assert_eq!(trees(&cache).len(), 1, "{:?}", trees(&cache));
    // Put back as it was, it is trusted again.
    let again = GitSource::open("t", config(f.file_url(), Some("main")), &cache)
        .last_checkout()
        .expect("in force");
    assert_eq!(again.repaired, None);

    // `current` pointed elsewhere: nothing goes in force from disk.
    let elsewhere = f.tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("app.toml"), "[containers.evil]\n").unwrap();
    let link = cache.join("current");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let mut moved = GitSource::open("t", config(f.file_url(), Some("main")), &cache);
    assert_eq!(moved.last_checkout(), None);
    // The next sync checks the commit out again.
    let s = moved.sync().expect("sync");
    assert_eq!(read(&s, "app.toml"), "[containers.app]\n");
}

#[test]
fn a_rolled_back_head_is_held_and_the_good_tree_restored() {
    if !require(&["git"]) {
        return;
    }
    let f = Fixture::new();
    let good = f.commit(&[("app.toml", "good"), ("site/index.txt", "v1")], "good");
    let cache = f.cache("s");
    let mut src = GitSource::open("s", config(f.file_url(), Some("main")), &cache);
    src.sync().expect("first sync");
    let bad = f.commit(&[("app.toml", "bad"), ("site/index.txt", "v2")], "bad");
    let s = src.sync().expect("sync bad");
    assert_eq!(
        (s.commit.as_str(), read(&s, "site/index.txt").as_str()),
        (bad.as_str(), "v2")
    );

    // Rolled back: the good tree is in force again, at the same path.
    src.hold(Some(&bad));
    src.restore(&good).expect("restored");
    assert_eq!(
        std::fs::read_to_string(cache.join("current/site/index.txt")).unwrap(),
        "v1"
    );
    // Polls on the held head keep it so.
    for _ in 0..2 {
        let s = src.sync().expect("sync held");
        assert_eq!(s.commit, bad, "the remote's head is reported");
        assert_eq!(s.dir, cache.join("current"));
        assert_eq!(read(&s, "app.toml"), "good", "the good tree stays in force");
    }
    // Restoring what is in force does nothing; hostile ids are refused.
    src.restore(&good).expect("already in force");
    for bad_id in [
        "",
        "../../etc",
        "zz",
        "0000000000000000000000000000000000000000",
    ] {
        assert!(src.restore(bad_id).is_err(), "{bad_id:?}");
    }
    assert_eq!(
        std::fs::read_to_string(cache.join("current/app.toml")).unwrap(),
        "good"
    );

    // The remote moves on: its new head is checked out, the hold is over.
    let next = f.commit(&[("app.toml", "next"), ("site/index.txt", "v3")], "next");
    let s = src.sync().expect("sync next");
    assert_eq!(
        (s.commit.as_str(), read(&s, "app.toml").as_str()),
        (next.as_str(), "next")
    );
    // A hold held across a restart (the agent passes it from its history).
    let mut again = GitSource::open("s", config(f.file_url(), Some("main")), &cache);
    again.hold(Some(&next));
    again.last_checkout().expect("last checkout");
    again.restore(&good).expect("restored after a restart");
    let s = again.sync().expect("sync held");
    assert_eq!(
        (s.commit.as_str(), read(&s, "app.toml").as_str()),
        (next.as_str(), "good")
    );
}
