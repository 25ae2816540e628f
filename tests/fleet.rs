//! Fleets: one manifest repository, many hosts. `moor validate`, `plan` and
//! `apply` act as the host given by `--host-name` / `--host-label` (this
//! machine by default) and see only what targets it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use crate::common;

/// A fleet repository: edge proxies, a database for hosts labelled
/// role=db, a GPU job for hosts labelled gpu=yes, an exporter everywhere.
fn write_fleet(dir: &Path) {
    let files = [
        (
            "edge.toml",
            r#"
[target]
hosts = ["edge-*"]

[networks.flt-edge]

[containers.proxy]
image    = "busybox:1.36"
command  = ["sleep", "1000"]
networks = ["flt-edge"]

# Its own target replaces the file's: wherever there is a GPU.
[containers.trainer]
image  = "busybox:1.36"
target = { labels = { gpu = "yes" } }
"#,
        ),
        (
            "db/db.yaml",
            r#"
target:
  labels: {role: db}
volumes:
  pgdata: {}
containers:
  pg:
    image: busybox:1.36
    command: [sleep, "1000"]
    mounts: ["pgdata:/data"]
"#,
        ),
        (
            "common.toml",
            r#"
[containers.exporter]
image        = "busybox:1.36"
network_mode = "host"
"#,
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write manifest");
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\nstdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// `moor validate --json` as a host: (containers, networks, volumes) counts.
fn counts(dir: &Path, host: &[&str]) -> (u64, u64, u64) {
    let mut args = vec!["validate", "--json"];
    args.extend_from_slice(host);
    let dir = dir.to_str().expect("utf-8");
    args.push(dir);
    let out = common::moor(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = json(&out);
    let n = |k: &str| v["resources"][k].as_u64().expect("a count");
    (n("containers"), n("networks"), n("volumes"))
}

#[test]
fn validate_counts_only_what_targets_the_host() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_fleet(tmp.path());
    let d = tmp.path();
    assert_eq!(counts(d, &["--host-name", "edge-1"]), (2, 1, 0));
    assert_eq!(
        counts(d, &["--host-name", "edge-2", "--host-label", "gpu=yes"]),
        (3, 1, 0)
    );
    assert_eq!(
        counts(d, &["--host-name", "db-1", "--host-label", "role=db"]),
        (2, 0, 1)
    );
    assert_eq!(counts(d, &["--host-name", "elsewhere"]), (1, 0, 0));
    // The JSON names the host it acted as.
    let out = common::moor(&[
        "validate",
        "--json",
        "--host-name",
        "db-1",
        "--host-label",
        "role=db",
        d.to_str().expect("utf-8"),
    ]);
    let v = json(&out);
    assert_eq!(v["host"]["name"], "db-1");
    assert_eq!(v["host"]["labels"]["role"], "db");
}

#[test]
fn bad_host_flags_are_usage_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_fleet(tmp.path());
    let d = tmp.path().to_str().expect("utf-8");
    for (args, says) in [
        (vec!["--host-label", "role"], "must look like KEY=VALUE"),
        (vec!["--host-label", "ro le=db"], "label key \"ro le\""),
        (
            vec!["--host-name", "edge-*"],
            "host name \"edge-*\" contains '*'",
        ),
        (vec!["--host-name", ""], "must not be empty"),
    ] {
        let mut all = vec!["validate"];
        all.extend(args.iter().copied());
        all.push(d);
        let out = common::moor(&all);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = common::moor(&[
        "validate",
        "--host-label",
        "role=db",
        "--host-label",
        "role=web",
        d,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--host-label role is given twice"),
        "{}",
        text(&out.stderr)
    );
}

/// A private state dir and nftables table for `moor plan`; removed on drop.
struct PlanHost {
    state: tempfile::TempDir,
    table: String,
}

impl PlanHost {
    fn new() -> Self {
        Self {
            state: tempfile::tempdir().expect("state dir"),
            table: format!("moor_test_fleet_plan_{}", std::process::id()),
        }
    }

    fn moor(&self, args: &[&str]) -> Output {
        Command::new(common::moor_bin())
            .args(args)
            .env("MOOR_STATE_DIR", self.state.path())
            .env("MOOR_NFT_TABLE", &self.table)
            .env("MOOR_NET_POOL", "10.87.0.0/16")
            .output()
            .expect("run moor")
    }

    /// The (verb, kind, name) of each action `moor plan --json` shows.
    fn plan(&self, dir: &Path, host: &[&str]) -> BTreeSet<(String, String, String)> {
        let mut args = vec!["plan", "--json", "-p", "fleet"];
        args.extend_from_slice(host);
        args.push(dir.to_str().expect("utf-8"));
        let out = self.moor(&args);
        assert_eq!(out.status.code(), Some(2), "changes: {}", text(&out.stderr));
        json(&out)["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .map(|a| {
                let s = |k: &str| a[k].as_str().expect("a string").to_string();
                (s("verb"), s("kind"), s("name"))
            })
            .collect()
    }
}

impl Drop for PlanHost {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn creates(plan: &BTreeSet<(String, String, String)>) -> Vec<String> {
    plan.iter()
        .filter(|(verb, ..)| verb == "create")
        .map(|(_, kind, name)| format!("{kind} {name}"))
        .collect()
}

#[test]
fn plan_shows_only_the_resources_of_the_host_it_acts_as() {
    if !common::require(&["nft"], true) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    write_fleet(tmp.path());
    let host = PlanHost::new();
    let edge = host.plan(tmp.path(), &["--host-name", "edge-1"]);
    assert_eq!(
        creates(&edge),
        ["container exporter", "container proxy", "network flt-edge"],
        "{edge:?}"
    );
    let db = host.plan(
        tmp.path(),
        &["--host-name", "db-1", "--host-label", "role=db"],
    );
    assert_eq!(
        creates(&db),
        ["container exporter", "container pg", "volume pgdata"],
        "{db:?}"
    );

    // A resource for this host that needs one for other hosts: plan refuses,
    // naming the reference and where the other resource is declared.
    std::fs::write(
        tmp.path().join("app.toml"),
        "[containers.app]\nimage = \"busybox:1.36\"\nnetworks = [\"flt-edge\"]\n",
    )
    .expect("write app.toml");
    let out = host.moor(&[
        "plan",
        "-p",
        "fleet",
        "--host-name",
        "db-1",
        tmp.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let want = format!(
        "{}:3:13: error: containers.app.networks[0]: network \"flt-edge\" does not target this host (it is declared at {}:5:11 for hosts = [\"edge-*\"])",
        tmp.path().join("app.toml").display(),
        tmp.path().join("edge.toml").display()
    );
    assert!(stderr.contains(&want), "want {want}\ngot:\n{stderr}");
}
