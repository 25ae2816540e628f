//! SOPS-encrypted files end to end: `moor validate`, `plan` and `apply` decrypt with
//! `--age-key-file` (or `MOOR_AGE_KEY_FILE`) and refuse without it; the
//! agent applies an encrypted env file from a git source, and an
//! undecryptable revision leaves the last good one running.
//!
//! The encrypted files are `tests/fixtures/sops/`, written by the real sops
//! 3.11.0 for the test identity getsops/sops publishes (`age.key`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{commit_and_push, fleet_repo, moor_command, repo_root, wait_for};

/// What the fixtures decrypt to: never to be shown by moor.
const PLAINTEXTS: [&str; 3] = ["s3cr3t-env", "r0tated-env", "s3cr3t-yaml"];

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/sops").join(name)
}

fn copy(name: &str, to: &Path) {
    std::fs::copy(fixture(name), to).unwrap_or_else(|e| panic!("copy {name}: {e}"));
}

fn assert_no_plaintext(what: &str, text: &str) {
    for p in PLAINTEXTS {
        assert!(
            !text.contains(p),
            "{what} shows the plaintext {p:?}:\n{text}"
        );
    }
}

/// `text` with the first base64 character after `marker` changed.
fn flip_after(text: &str, marker: &str) -> String {
    let at = text.find(marker).expect("marker") + marker.len();
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("text")
}

#[test]
fn validate_decrypts_with_the_age_key_file_and_refuses_without() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The same container in YAML (sops's YAML store) and in TOML (what sops
    // makes of a .toml file: a binary file), each in a directory of its own.
    let (dir, toml_dir) = (tmp.path().join("site"), tmp.path().join("toml"));
    for d in [&dir, &toml_dir] {
        std::fs::create_dir(d).expect("mkdir");
    }
    copy("app.sops.yaml", &dir.join("app.sops.yaml"));
    copy("app.sops.toml", &toml_dir.join("app.sops.toml"));
    let dir_s = dir.to_str().expect("utf-8");
    let toml_s = toml_dir.to_str().expect("utf-8");
    let key = fixture("age.key");
    let key_s = key.to_str().expect("utf-8");
    let run = |args: &[&str], env: Option<&str>| {
        let mut c = moor_command();
        c.env_remove("MOOR_AGE_KEY_FILE");
        if let Some(k) = env {
            c.env("MOOR_AGE_KEY_FILE", k);
        }
        let out = c.args(args).output().expect("run moor");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };

    for (d, name) in [(dir_s, "app.sops.yaml"), (toml_s, "app.sops.toml")] {
        let (ok, text) = run(&["validate", d], None);
        assert!(!ok, "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains(name) && l.contains(":1:1: error") && l.contains("no age key")),
            "{name}: {text}"
        );
        assert_no_plaintext("validate without a key", &text);
        let (ok, text) = run(&["validate", "--age-key-file", key_s, d], None);
        assert!(ok, "{text}");
        let (ok, text) = run(&["validate", d], Some(key_s));
        assert!(ok, "MOOR_AGE_KEY_FILE: {text}");
        let other = fixture("other.key");
        let (ok, text) = run(
            &[
                "validate",
                "--age-key-file",
                other.to_str().expect("utf-8"),
                d,
            ],
            None,
        );
        assert!(!ok && text.contains("no age identity"), "{text}");
        assert_no_plaintext("validate with another key", &text);
    }

    // A tampered file names itself, and nothing of its plaintext.
    let text = std::fs::read_to_string(fixture("app.sops.yaml")).expect("read");
    let tampered = text.replace("team_unencrypted: platform", "team_unencrypted: intruder");
    std::fs::write(dir.join("app.sops.yaml"), tampered).expect("write");
    let (ok, text) = run(&["validate", "--age-key-file", key_s, dir_s], None);
    assert!(!ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("app.sops.yaml:1:1: error") && l.contains("MAC mismatch")),
        "{text}"
    );
    assert_no_plaintext("validate of a tampered file", &text);

    // A key file that is not one is an error naming it, not quoting it.
    let bad = tmp.path().join("bad.key");
    std::fs::write(&bad, "hunter2-not-a-key\n").expect("write");
    let (ok, text) = run(
        &[
            "validate",
            "--age-key-file",
            bad.to_str().expect("utf-8"),
            dir_s,
        ],
        None,
    );
    assert!(
        !ok && text.contains("bad.key") && !text.contains("hunter2"),
        "{text}"
    );
}

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

    /// Writes the manifest and `env` (the encrypted env file's text),
    /// commits and pushes; returns the commit id.
    fn commit(&self, env: &str, subject: &str) -> String {
        let manifest = "[images.busybox]\nref  = \"localhost/moor-example/busybox:1\"\npull = \"never\"\n\n\
             [containers.gweb]\nimage        = \"busybox\"\ncommand      = [\"sleep\", \"3600\"]\n\
             env_file     = \"./app.sops.env\"\nnetwork_mode = \"none\"\ninit         = true\n";
        std::fs::write(self.work.join("stack.toml"), manifest).expect("write");
        std::fs::write(self.work.join("app.sops.env"), env).expect("write");
        commit_and_push(&self.work, subject, &[])
    }
}

#[test]
fn the_agent_applies_an_encrypted_env_file_and_keeps_the_last_good_revision() {
    let Some(mut host) = Instance::with_busybox("fleet", &["git"]) else {
        return;
    };
    let repo = Repo::new();
    let read = |name: &str| std::fs::read_to_string(fixture(name)).expect("fixture");
    let first = repo.commit(&read("app.sops.env"), "encrypted env");
    let config = host.dir().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[source]]\nname = \"fleet\"\nurl = \"git+file://{}\"\ninterval = \"1s\"\n\
             [source.decryption]\nage_key_file = \"{}\"\n",
            repo.bare.display(),
            fixture("age.key").display()
        ),
    )
    .expect("write config");
    host.start_agent(&["--config", config.to_str().expect("utf-8")]);
    let source = |host: &Instance| host.status()["sources"][0].clone();
    let env = |host: &Instance, var: &str| host.container_env("gweb", var);
    wait_for("the decrypted password", Duration::from_secs(90), || {
        env(&host, "DB_PASSWORD").as_deref() == Some("s3cr3t-env")
    });
    assert_eq!(env(&host, "GREETING").as_deref(), Some("hello world"));
    assert_eq!(source(&host)["applied_revision"], first.as_str());

    // A push the key cannot vouch for: refused, naming the file; the
    // container keeps its value.
    let tampered = flip_after(
        &read("rotated.sops.env"),
        "DB_PASSWORD=ENC[AES256_GCM,data:",
    );
    let second = repo.commit(&tampered, "tampered");
    let mut last = String::new();
    wait_for("the refusal in /status", Duration::from_secs(60), || {
        last = source(&host)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        last.contains(&second[..12]) && last.contains("app.sops.env")
    });
    assert!(
        last.contains("DB_PASSWORD") && last.contains("does not decrypt"),
        "{last}"
    );
    assert!(
        last.contains("the last good state stays in force"),
        "{last}"
    );
    assert_eq!(env(&host, "DB_PASSWORD").as_deref(), Some("s3cr3t-env"));
    assert_eq!(source(&host)["applied_revision"], first.as_str());

    // Encrypted for someone else: refused the same way.
    let mut foreign = read("rotated.sops.env");
    foreign = foreign.replace(
        "sops_age__list_0__map_recipient=age1lzd",
        "sops_age__list_0__map_recipient=age1xxx",
    );
    let foreign = flip_after(
        &foreign,
        "sops_age__list_0__map_enc=-----BEGIN AGE ENCRYPTED FILE-----\\nYWdl",
    );
    let third = repo.commit(&foreign, "not ours");
    wait_for("the second refusal", Duration::from_secs(60), || {
        last = source(&host)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        last.contains(&third[..12])
    });
    assert!(last.contains("app.sops.env"), "{last}");
    assert_eq!(env(&host, "DB_PASSWORD").as_deref(), Some("s3cr3t-env"));

    // The rotated file: applied, the container replaced.
    let fourth = repo.commit(&read("rotated.sops.env"), "rotate");
    wait_for("the rotated password", Duration::from_secs(90), || {
        env(&host, "DB_PASSWORD").as_deref() == Some("r0tated-env")
    });
    assert_eq!(env(&host, "GREETING").as_deref(), Some("hello again"));
    wait_for("the error to clear", Duration::from_secs(30), || {
        source(&host)["error"].is_null()
    });
    assert_eq!(source(&host)["applied_revision"], fourth.as_str());
    assert_no_plaintext("/status", &host.status().to_string());

    host.stop_agent();
    assert_no_plaintext("the agent's log", &host.agent_log());
}

#[test]
fn apply_mounts_an_encrypted_secret_file_and_plan_needs_the_key() {
    const PROJECT: &str = "sopsapply";
    let Some(host) = Instance::with_busybox(PROJECT, &[]) else {
        return;
    };
    let src = tempfile::tempdir().expect("tempdir");
    let dir = src.path().to_str().expect("utf-8").to_string();
    copy("token.sops.txt", &src.path().join("token.sops.txt"));
    copy("app.sops.env", &src.path().join("app.sops.env"));
    std::fs::write(
        src.path().join("app.toml"),
        "[secrets.token]\nfile = \"./token.sops.txt\"\n\n\
         [containers.api]\nimage = \"localhost/moor-example/busybox:1\"\ncommand = [\"sleep\", \"3600\"]\n\
         init = true\nnetwork_mode = \"none\"\nenv_file = \"./app.sops.env\"\nsecrets = [\"token\"]\n",
    )
    .expect("write");

    // Without the key: refused, each encrypted file named at the line that reads it.
    let plan = host.moor(&["plan", "-p", PROJECT, &dir]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(!plan.status.success(), "{text}");
    assert!(
        text.contains("app.toml:2:8: error: secrets.token.file: secret file \"./token.sops.txt\": cannot decrypt this SOPS file: no age key is configured"),
        "{text}"
    );
    assert!(
        text.contains("env_file \"./app.sops.env\": cannot decrypt this SOPS file: no age key"),
        "{text}"
    );

    let key = fixture("age.key");
    let key = key.to_str().expect("utf-8");
    // Exit 2: changes to make.
    let plan = host.moor(&["plan", "-p", PROJECT, "--age-key-file", key, &dir]);
    let text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert_eq!(plan.status.code(), Some(2), "{text}");
    assert!(text.contains("+ container api"), "{text}");
    assert_no_plaintext("plan", &text);
    host.moor_ok(&["apply", "-p", PROJECT, "--age-key-file", key, &dir]);
    wait_for("api running", Duration::from_secs(60), || {
        host.running("api")
    });
    let out = host.moor_ok(&["exec", "api", "--", "cat", "/run/secrets/token"]);
    assert_eq!(out, "s3cr3t-binary\n");
    assert_eq!(
        host.container_env("api", "DB_PASSWORD").as_deref(),
        Some("s3cr3t-env")
    );
}
