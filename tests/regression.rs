//! One test per fixed bug that no other module's test already pins down.

use std::process::Command;
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{self, moor_bin};

const BUSYBOX: &str = "localhost/moor-example/busybox:1";

/// `moor apply` run under `umask 077` (a hardened root shell) made every
/// container's `/` mode 0700, so no non-root process could run in it.
#[test]
fn a_root_umask_does_not_lock_non_root_containers_out() {
    let Some(host) = Instance::with_busybox("umask", &[]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("stack.toml"),
        format!(
            r#"
[containers.job]
image        = "{BUSYBOX}"
user         = "65534:65534"
network_mode = "none"
command      = ["sh", "-c", "cat /etc/hostname && ls -ld /"]
"#
        ),
    )
    .expect("write manifest");
    let mut apply = Command::new("sh");
    apply
        .args(["-c", "umask 077 && exec \"$@\"", "sh"])
        .arg(moor_bin())
        .args(["apply", "-p", "umask", "--timeout", "60s"])
        .arg(dir.path());
    for (k, v) in &host.env {
        apply.env(k, v);
    }
    let out = apply.output().expect("run moor apply");
    assert!(
        out.status.success(),
        "apply under umask 077 failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    common::wait_for("the job to exit", Duration::from_secs(30), || {
        host.container("job")
            .is_some_and(|j| j["state"] == "exited")
    });
    let job = host.container("job").expect("job is listed");
    assert_eq!(job["exit_code"], 0, "{job}");
    let logs = host.moor(&["logs", "job"]);
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(text.starts_with("job\n"), "{text}");
    assert!(
        text.contains("drwxr-xr-x"),
        "the container's / is not 0755: {text}"
    );
}

/// `cap_add = ["ALL"]` (Docker's `--cap-add ALL`, an admin container an
/// operator's policy allows) was created but never started when the host
/// withholds a capability from moor itself: the runtime failed at exec with
/// "operation not permitted". `ALL` is what moor holds, as in Docker.
#[test]
fn a_container_with_every_capability_runs() {
    let Some(host) = Instance::with_busybox("allcaps", &[]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("stack.toml"),
        format!(
            r#"
[containers.admin]
image        = "{BUSYBOX}"
network_mode = "none"
cap_add      = ["ALL"]
command      = ["sh", "-c", "grep CapEff /proc/self/status"]
"#
        ),
    )
    .expect("write manifest");
    let out = host.moor(&[
        "apply",
        "-p",
        "allcaps",
        "--timeout",
        "60s",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "apply failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    common::wait_for("the container to exit", Duration::from_secs(30), || {
        host.container("admin")
            .is_some_and(|j| j["state"] == "exited")
    });
    let admin = host.container("admin").expect("admin is listed");
    assert_eq!(admin["exit_code"], 0, "{admin}");
    let logs = host.moor(&["logs", "admin"]);
    let text = String::from_utf8_lossy(&logs.stdout);
    // Every capability moor itself may grant (this machine may withhold
    // some from root, SYS_RESOURCE here).
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd")
        .trim();
    let want = format!("CapEff:\t{bounding}");
    assert!(
        text.contains(&want),
        "the container does not hold every capability ({want}): {text}"
    );
}

/// `moor ps | head` panicked with "failed printing to stdout: Broken pipe"
/// once `head` had read enough. A listing ends quietly, as `ls` does.
#[test]
fn a_reader_that_stops_early_ends_a_listing_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/manifests");
    let out = Command::new(moor_bin())
        .args(["convert", "--to", "yaml", examples])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run moor convert");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}
