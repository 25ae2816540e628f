//! Docker's day-one verbs end to end, on the real kernel: `exec` as the
//! container's user and with `-u`/`-w`/`-e` (both executors), the reading
//! commands beside a running agent, named volumes filled from the image on
//! first use, `top`, `stats`, `cp` (hostile paths too), `pause`/`unpause`,
//! and `stop`/`start`/`restart` that the agent respects.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::common::instance::Instance;
use crate::common::{self, wait_for};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `out`'s stdout, trimmed, after checking that it succeeded.
fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// `out` failed; its stderr.
fn failed(what: &str, out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{what} succeeded: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// A busybox root filesystem layer with users and groups for the tests.
fn busybox_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("layer");
    for d in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "home/alice",
    ] {
        fs::create_dir_all(layer.join(d)).expect("mkdir");
    }
    let busybox = common::which("busybox").expect("busybox");
    fs::copy(&busybox, layer.join("bin/busybox")).expect("copy busybox");
    let list = std::process::Command::new(&busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in text(&list.stdout).lines().filter(|a| *a != "busybox") {
        symlink("busybox", layer.join("bin").join(applet)).expect("applet link");
    }
    fs::write(
        layer.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n\
         alice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .expect("passwd");
    fs::write(
        layer.join("etc/group"),
        "root:x:0:\nnogroup:x:65534:\nalice:x:1000:\nstaff:x:50:alice\n",
    )
    .expect("group");
    layer
}

/// Containers made with `moor dev run`, removed on drop.
struct DevContainers<'a> {
    host: &'a Instance,
    names: Vec<String>,
}

impl Drop for DevContainers<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.host.moor(&["dev", "rm", "--force", n]);
        }
    }
}

fn exec_runs_as_the_containers_user(tag: &str, executor: &str) {
    let tools: &[&str] = if executor == "runc" {
        &["busybox", "runc"]
    } else {
        &["busybox"]
    };
    if !common::require(tools, true) {
        return;
    }
    let host = Instance::new(tag, "10.64.0.0/16");
    let work = tempfile::tempdir().expect("tempdir");
    let layer = busybox_layer(work.path());
    let manifest = work.path().join("web.toml");
    fs::write(
        &manifest,
        "[containers.web]\nimage = \"busybox\"\nuser = \"65534\"\nworking_dir = \"/srv\"\n\
         env = { GREETING = \"hello\" }\nnetwork_mode = \"none\"\n",
    )
    .expect("manifest");
    let mut dev = DevContainers {
        host: &host,
        names: Vec::new(),
    };
    dev.names.push("web".into());
    let out = host
        .command()
        .env("MOOR_EXECUTOR", executor)
        .args(["dev", "run", "--name", "web", "--rootfs"])
        .arg(&layer)
        .arg("--manifest")
        .arg(&manifest)
        .args(["--", "sleep", "1000"])
        .output()
        .expect("dev run");
    ok("dev run", &out);
    let exec = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        host.moor(&all)
    };

    // The container's own user, working dir and environment by default.
    assert_eq!(ok("exec id", &exec(&["web", "id", "-u"])), "65534");
    assert_eq!(ok("exec pwd", &exec(&["web", "pwd"])), "/srv");
    assert_eq!(
        ok("exec env", &exec(&["web", "sh", "-c", "echo $GREETING"])),
        "hello"
    );
    // -u by number, by name (groups from /etc/group, HOME from /etc/passwd), uid:gid.
    assert_eq!(ok("exec -u 0", &exec(&["-u", "0", "web", "id", "-u"])), "0");
    assert_eq!(
        ok("exec -u nobody", &exec(&["-u", "nobody", "web", "id"])),
        "uid=65534(nobody) gid=65534(nogroup)"
    );
    assert_eq!(
        ok(
            "exec -u alice",
            &exec(&["-u", "alice", "web", "sh", "-c", "id -u; id -G; echo $HOME"])
        ),
        "1000\n1000 50\n/home/alice"
    );
    assert_eq!(
        ok(
            "exec -u 1000:1000",
            &exec(&["-u", "1000:1000", "web", "id"])
        ),
        "uid=1000(alice) gid=1000(alice)"
    );
    assert_eq!(
        ok(
            "exec -u 4242:4343",
            &exec(&["--user", "4242:4343", "web", "id", "-u"])
        ),
        "4242"
    );
    // -w and -e.
    assert_eq!(ok("exec -w", &exec(&["-w", "/tmp", "web", "pwd"])), "/tmp");
    assert_eq!(
        ok(
            "exec -e",
            &exec(&[
                "-e",
                "A=B",
                "--env",
                "GREETING=bye",
                "web",
                "sh",
                "-c",
                "echo $A $GREETING"
            ])
        ),
        "B bye"
    );
    // Clear errors.
    let err = failed("exec -u unknown", &exec(&["-u", "mallory", "web", "true"]));
    assert!(err.contains("no user \"mallory\""), "{err}");
    let err = failed("exec -u :unknown", &exec(&["-u", "0:wheel", "web", "true"]));
    assert!(err.contains("no group \"wheel\""), "{err}");
    let err = failed("exec -w relative", &exec(&["-w", "tmp", "web", "pwd"]));
    assert!(err.contains("not an absolute path"), "{err}");
}

#[test]
fn exec_runs_as_the_containers_user_builtin() {
    exec_runs_as_the_containers_user("ca", "builtin");
}

#[test]
fn exec_runs_as_the_containers_user_runc() {
    exec_runs_as_the_containers_user("cb", "runc");
}
