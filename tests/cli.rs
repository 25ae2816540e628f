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

fn exec_runs_as_the_containers_user(executor: &str) {
    if !common::require_executor(executor) {
        return;
    }
    let host = Instance::new();
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
    // -u by number, by name (groups from /etc/group, HOME from /etc/passwd), uid:gid;
    // the primary group is a supplementary one too, as in Docker.
    assert_eq!(ok("exec -u 0", &exec(&["-u", "0", "web", "id", "-u"])), "0");
    assert_eq!(
        ok("exec -u nobody", &exec(&["-u", "nobody", "web", "id"])),
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
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
        "uid=1000(alice) gid=1000(alice) groups=1000(alice)"
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
    exec_runs_as_the_containers_user("builtin");
}

#[test]
fn exec_runs_as_the_containers_user_runc() {
    exec_runs_as_the_containers_user("runc");
}

/// Imports `layer` as image `localhost/moor-test/cli-TAG:1`; its reference.
fn import_layer(host: &Instance, layer: &Path) -> String {
    let tarball = layer.with_extension("tar");
    let status = std::process::Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(layer)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar failed");
    let reference = format!("localhost/moor-test/cli-{}:1", host.tag);
    ok(
        "image import",
        &host.moor(&[
            "image",
            "import",
            tarball.to_str().expect("utf-8"),
            "--tag",
            &reference,
        ]),
    );
    reference
}

/// A project directory with `stack.toml`.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("stack.toml"), text).expect("write manifest");
        Project { dir }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("utf-8")
    }

    fn write(&self, text: &str) {
        // Whole, at once: the agent never reads half a manifest.
        let tmp = self.dir.path().join(".stack.toml.tmp");
        fs::write(&tmp, text).expect("write manifest");
        fs::rename(&tmp, self.dir.path().join("stack.toml")).expect("rename manifest");
    }
}

fn json(what: &str, out: &Output) -> Value {
    serde_json::from_str(&ok(what, out)).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

const BUSYBOX: &str = "localhost/moor-example/busybox:1";

#[test]
fn reading_commands_work_beside_a_running_agent() {
    let Some(mut host) = Instance::with_busybox("rd", &[]) else {
        return;
    };
    let manifest = |greeting: &str| {
        format!(
            r#"
[networks.back]

[volumes.data]

[containers.web]
image    = "{BUSYBOX}"
command  = ["sh", "-c", "echo started; exec sleep 3600"]
env      = {{ GREETING = "{greeting}" }}
networks = ["back"]
mounts   = ["data:/data"]
restart  = "always"
init     = true
"#
        )
    };
    let project = Project::new(&manifest("hello"));
    host.start_agent(&["--source", project.path(), "-p", "rd", "--resync", "1s"]);
    wait_for("web running", Duration::from_secs(60), || {
        host.container("web")
            .is_some_and(|c| c["state"] == "running")
    });
    let pid = host.container("web").expect("web")["pid"]
        .as_i64()
        .expect("pid");

    // `plan` beside the agent: what the agent sees, nothing to do.
    let out = host.moor(&["plan", "-p", "rd", project.path()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "plan: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The same project from other manifests: the change is planned, not made.
    let other = Project::new(&manifest("bonjour"));
    let out = host.moor(&["plan", "--json", "-p", "rd", other.path()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let actions = plan["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 1, "{plan:#}");
    assert_eq!(actions[0]["name"], "web");
    assert_eq!(actions[0]["verb"], "replace");
    assert!(
        actions[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("env.GREETING")),
        "{plan:#}"
    );

    // The other reading commands.
    let ps = json("ps", &host.moor(&["ps", "--json"]));
    assert_eq!(ps[0]["name"], "web");
    ok("ps", &host.moor(&["ps"]));
    assert_eq!(ok("logs", &host.moor(&["logs", "web"])), "started");
    let inspect = json("inspect", &host.moor(&["inspect", "web"]));
    assert_eq!(inspect["pid"], pid);
    assert!(ok("images", &host.moor(&["images"])).contains("moor-example/busybox"));
    let nets = json("networks", &host.moor(&["networks", "--json"]));
    assert!(
        nets.as_array()
            .expect("networks")
            .iter()
            .any(|n| n["name"] == "back")
    );
    let vols = json("volumes", &host.moor(&["volumes", "--json"]));
    assert!(
        vols.as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["name"] == "data")
    );

    // `top`: init as PID 1 in the container, sleep under it, host PIDs too.
    let top = json("top", &host.moor(&["top", "web", "--json"]));
    let procs = top.as_array().expect("processes");
    let init = procs
        .iter()
        .find(|p| p["container_pid"] == 1)
        .unwrap_or_else(|| panic!("no PID 1: {top:#}"));
    assert_eq!(init["pid"], pid, "{top:#}");
    let sleep = procs
        .iter()
        .find(|p| p["command"] == "sleep 3600")
        .unwrap_or_else(|| panic!("no sleep: {top:#}"));
    assert_eq!(sleep["ppid"], pid);
    assert!(sleep["container_pid"].as_i64().is_some_and(|p| p > 1));
    assert!(
        Path::new(&format!("/proc/{}", sleep["pid"])).exists(),
        "a host PID"
    );
    assert!(ok("top", &host.moor(&["top", "web"])).contains("sleep 3600"));

    // `stats`: one reading, sensible numbers.
    let stats = json(
        "stats",
        &host.moor(&["stats", "--no-stream", "--json", "web"]),
    );
    let s = &stats[0];
    assert_eq!(s["name"], "web", "{stats:#}");
    assert!(s["memory_bytes"].as_u64().is_some_and(|m| m > 0), "{s:#}");
    assert!(
        s["memory_limit_bytes"].as_u64() >= s["memory_bytes"].as_u64(),
        "{s:#}"
    );
    assert!(s["pids"].as_u64().is_some_and(|p| p >= 2), "{s:#}");
    assert!(s["cpu_percent"].as_f64().is_some_and(|c| c >= 0.0), "{s:#}");
    assert!(ok("stats", &host.moor(&["stats", "--no-stream"])).contains("web"));

    // A mutating command is still refused while the agent holds the lock.
    let err = failed("apply", &host.moor(&["apply", "-p", "rd", project.path()]));
    assert!(err.contains("another moor process is changing"), "{err}");
    // And nothing above disturbed the agent or the container.
    assert!(host.agent_alive());
    assert_eq!(host.container("web").expect("web")["pid"], pid);
}

#[test]
fn named_volumes_are_filled_from_the_image_once() {
    if !common::require(&["busybox", "nft", "ip", "tar"], true) {
        return;
    }
    let mut host = Instance::new();
    host.owns("vol");
    let work = tempfile::tempdir().expect("tempdir");
    let layer = busybox_layer(work.path());
    let data = layer.join("srv/data");
    fs::create_dir_all(data.join("sub")).expect("mkdir");
    fs::write(data.join("sub/seed"), "seed\n").expect("seed");
    for (p, mode) in [("sub/seed", 0o640), ("sub", 0o750), ("", 0o750)] {
        std::os::unix::fs::chown(data.join(p), Some(33), Some(33)).expect("chown");
        fs::set_permissions(data.join(p), fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let image = import_layer(&host, &layer);
    let manifest = |greeting: &str, keep_at: &str| {
        format!(
            r#"
[volumes.site]
[volumes.keep]

[containers.web]
image        = "{image}"
command      = ["sleep", "3600"]
env          = {{ GREETING = "{greeting}" }}
mounts       = ["site:/srv/data"]
network_mode = "none"

[containers.other]
image        = "{image}"
command      = ["sleep", "3600"]
mounts       = ["keep:{keep_at}"]
network_mode = "none"
"#
        )
    };
    let project = Project::new(&manifest("one", "/mnt"));
    ok("apply", &host.moor(&["apply", "-p", "vol", project.path()]));

    // Filled on first start: content, owners and modes, seen from the host.
    let site = host.dir().join("volumes/site/data");
    let meta = |p: &Path| {
        let m = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(
        fs::read_to_string(site.join("sub/seed")).expect("seed in the volume"),
        "seed\n"
    );
    assert_eq!(meta(&site), (33, 33, 0o750));
    assert_eq!(meta(&site.join("sub")), (33, 33, 0o750));
    assert_eq!(meta(&site.join("sub/seed")), (33, 33, 0o640));
    assert_eq!(
        ok(
            "exec",
            &host.moor(&["exec", "web", "cat", "/srv/data/sub/seed"])
        ),
        "seed"
    );

    // Emptied by its user, then the container is replaced: not refilled.
    fs::remove_dir_all(site.join("sub")).expect("empty the volume");
    let before = host.container("web").expect("web")["id"].clone();
    project.write(&manifest("two", "/mnt"));
    ok("apply", &host.moor(&["apply", "-p", "vol", project.path()]));
    assert_ne!(
        host.container("web").expect("web")["id"],
        before,
        "replaced"
    );
    assert_eq!(fs::read_dir(&site).expect("site").count(), 0, "refilled");

    // A volume that holds data is never written, even where the image has files.
    ok(
        "exec",
        &host.moor(&["exec", "other", "sh", "-c", "echo mine > /mnt/mine"]),
    );
    project.write(&manifest("two", "/srv/data"));
    ok("apply", &host.moor(&["apply", "-p", "vol", project.path()]));
    let keep = host.dir().join("volumes/keep/data");
    let names: Vec<_> = fs::read_dir(&keep)
        .expect("keep")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["mine"], "only the user's file");
    assert_eq!(
        ok(
            "exec",
            &host.moor(&["exec", "other", "cat", "/srv/data/mine"])
        ),
        "mine"
    );
}

/// A tar stream with one entry named `name` (written raw: `..` included).
fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, data).expect("append");
    b.into_inner().expect("tar")
}

/// Runs `moor ARGS…` with `input` on its stdin.
fn moor_with_stdin(host: &Instance, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = host
        .command()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run moor");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait for moor")
}

#[test]
fn cp_copies_both_ways_and_stays_inside() {
    let Some(host) = Instance::with_busybox("cp", &[]) else {
        return;
    };
    let project = Project::new(&format!(
        "[containers.web]\nimage = \"{BUSYBOX}\"\ncommand = [\"sleep\", \"3600\"]\n\
         network_mode = \"none\"\nhostname = \"web\"\n"
    ));
    ok("apply", &host.moor(&["apply", "-p", "cp", project.path()]));
    let sh = |script: &str| ok(script, &host.moor(&["exec", "web", "sh", "-c", script]));
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let wp = |p: &str| w.join(p).to_str().expect("utf-8").to_string();

    // Host to container and back: a file, a directory, its contents.
    fs::write(w.join("hello"), "hello\n").expect("write");
    fs::set_permissions(w.join("hello"), fs::Permissions::from_mode(0o604)).expect("chmod");
    ok("cp in", &host.moor(&["cp", &wp("hello"), "web:/tmp/"]));
    assert_eq!(
        sh("cat /tmp/hello; stat -c '%u %a' /tmp/hello"),
        "hello\n0 604"
    );
    fs::create_dir_all(w.join("tree/sub")).expect("mkdir");
    fs::write(w.join("tree/sub/f"), "f").expect("write");
    ok("cp dir in", &host.moor(&["cp", &wp("tree"), "web:/srv"]));
    assert_eq!(sh("cat /srv/sub/f"), "f");
    sh("mkdir -p /data/d && echo deep > /data/d/x && ln -s / /data/root && chmod 4755 /data/d/x");
    ok("cp dir out", &host.moor(&["cp", "web:/data", &wp("out")]));
    assert_eq!(fs::read_to_string(w.join("out/d/x")).expect("x"), "deep\n");
    assert_eq!(
        fs::read_link(w.join("out/root")).expect("a link, copied as one"),
        Path::new("/")
    );
    assert_eq!(
        fs::metadata(w.join("out/d/x")).expect("x").mode() & 0o7777,
        0o755,
        "setuid dropped on the way out"
    );
    ok(
        "cp contents out",
        &host.moor(&["cp", "web:/data/.", &wp("flat")]),
    );
    assert!(w.join("flat/d/x").is_file());
    // A tar stream out.
    let out = host.moor(&["cp", "web:/etc/hostname", "-"]);
    ok("cp to -", &out);
    let mut archive = tar::Archive::new(&out.stdout[..]);
    let names: Vec<String> = archive
        .entries()
        .expect("tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["hostname"]);

    // Hostile: container symlinks pointing at the host's root or /etc.
    sh("ln -s / /etc/evil && ln -s /etc /tmp/hostetc && ln -s ../../../../../ /tmp/up");
    ok(
        "cp through evil",
        &host.moor(&["cp", &wp("hello"), "web:/etc/evil/pwned"]),
    );
    assert_eq!(sh("cat /pwned"), "hello", "landed in the container's root");
    assert!(!Path::new("/pwned").exists(), "written on the host");
    ok(
        "cp through up",
        &host.moor(&["cp", &wp("hello"), "web:/tmp/up/etc/pwned-2"]),
    );
    assert_eq!(sh("cat /etc/pwned-2"), "hello");
    assert!(!Path::new("/etc/pwned-2").exists(), "written on the host");
    ok(
        "cp read through",
        &host.moor(&["cp", "web:/tmp/hostetc/hostname", &wp("name")]),
    );
    assert_eq!(
        fs::read_to_string(w.join("name")).expect("name"),
        "web\n",
        "the container's /etc/hostname, not the host's"
    );
    ok(
        "cp ..",
        &host.moor(&["cp", "web:/../../../etc/passwd", &wp("passwd")]),
    );
    assert!(
        fs::read_to_string(w.join("passwd"))
            .expect("passwd")
            .contains("www-data"),
        "the image's /etc/passwd"
    );
    // Hostile on the host side: a symlink planted where the copy writes.
    let outside = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(w.join("dest")).expect("mkdir");
    symlink(outside.path(), w.join("dest/d")).expect("plant");
    ok(
        "cp over a link",
        &host.moor(&["cp", "web:/data/.", &wp("dest")]),
    );
    assert!(w.join("dest/d").is_dir() && !w.join("dest/d").is_symlink());
    assert_eq!(
        fs::read_dir(outside.path()).expect("outside").count(),
        0,
        "written through the planted link"
    );
    // Hostile tar streams: `..` in a name, a symlink then a file through it.
    let err = failed(
        "cp - with ..",
        &moor_with_stdin(
            &host,
            &["cp", "-", "web:/tmp"],
            &tar_with("../../escape", b"x"),
        ),
    );
    assert!(err.contains(".."), "{err}");
    let err = failed(
        "cp - with a/../..",
        &moor_with_stdin(
            &host,
            &["cp", "-", "web:/tmp"],
            &tar_with("a/../../escape", b"x"),
        ),
    );
    assert!(err.contains(".."), "{err}");
    assert_eq!(
        text(
            &host
                .moor(&[
                    "exec",
                    "web",
                    "sh",
                    "-c",
                    "ls /escape /tmp/escape 2>&1 | wc -l"
                ])
                .stdout
        )
        .trim(),
        "2",
        "two 'no such file' lines"
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "link", "/").expect("link");
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_gnu_mut().expect("gnu").name[..12].copy_from_slice(b"link/escaped");
    h.set_cksum();
    b.append(&h, &b"x"[..]).expect("append");
    let stream = b.into_inner().expect("tar");
    let err = failed(
        "cp - through a link",
        &moor_with_stdin(&host, &["cp", "-", "web:/tmp"], &stream),
    );
    assert!(err.contains("symlink"), "{err}");
    assert!(!Path::new("/escaped").exists());
    assert_eq!(
        text(&host.moor(&["exec", "web", "ls", "/escaped"]).stdout).trim(),
        ""
    );
    // A good tar stream goes in.
    ok(
        "cp - good",
        &moor_with_stdin(
            &host,
            &["cp", "-", "web:/tmp"],
            &tar_with("./good", b"good"),
        ),
    );
    assert_eq!(sh("cat /tmp/good"), "good");
    // The whole root: data only; kernel filesystems (/proc: /proc/kmsg
    // would consume the host's kernel log) and device nodes are skipped.
    let out = host.moor(&["cp", "web:/", &wp("root")]);
    ok("cp /", &out);
    assert!(w.join("root/bin/busybox").is_file());
    assert!(w.join("root/etc/passwd").is_file());
    assert!(!w.join("root/proc").exists() && !w.join("root/sys").exists());
    let warnings = text(&out.stderr);
    assert!(
        warnings.contains("root/proc (a proc filesystem)"),
        "{warnings}"
    );
    assert!(
        warnings.contains("root/dev/null (a character device)"),
        "{warnings}"
    );
    // Clear errors.
    let err = failed("cp missing", &host.moor(&["cp", "web:/nothing", &wp("x")]));
    assert!(err.contains("/nothing"), "{err}");
    let err = failed(
        "cp host to host",
        &host.moor(&["cp", &wp("hello"), &wp("x")]),
    );
    assert!(err.contains("NAME:PATH"), "{err}");
}

/// `ps --json` of web: (state, pid, started, stopped_by_user).
fn web_state(host: &Instance) -> (String, Value, Value, Value) {
    let c = host.container("web").expect("web in ps");
    (
        c["state"].as_str().unwrap_or_default().to_string(),
        c["pid"].clone(),
        c["started"].clone(),
        c["stopped_by_user"].clone(),
    )
}

#[test]
fn pause_stop_start_restart_beside_the_agent() {
    let Some(mut host) = Instance::with_busybox("life", &[]) else {
        return;
    };
    let manifest = |greeting: &str| {
        format!(
            r#"
[containers.web]
image        = "{BUSYBOX}"
command      = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"]
env          = {{ GREETING = "{greeting}" }}
network_mode = "none"
restart      = "always"
healthcheck  = {{ cmd = "true", interval = "1s", retries = 1 }}
"#
        )
    };
    let project = Project::new(&manifest("hello"));
    host.start_agent(&["--source", project.path(), "-p", "life", "--resync", "1s"]);
    wait_for("web healthy", Duration::from_secs(60), || {
        host.container("web")
            .is_some_and(|c| c["state"] == "running" && c["health"] == "healthy")
    });
    // The counter, read with `cp` (which works on a paused container too).
    let count = || -> u64 {
        let out = host.moor(&["cp", "web:/tmp/count", "-"]);
        ok("cp count", &out);
        let mut archive = tar::Archive::new(&out.stdout[..]);
        let mut entry = archive
            .entries()
            .expect("tar")
            .next()
            .expect("one entry")
            .expect("entry");
        let mut s = String::new();
        std::io::Read::read_to_string(&mut entry, &mut s).expect("read");
        s.trim().parse().unwrap_or(0)
    };

    // Paused: the counter stops, the agent leaves it alone; unpaused, it goes on.
    let (_, pid, started, _) = web_state(&host);
    assert_eq!(ok("pause", &host.moor(&["pause", "web"])), "web");
    assert_eq!(web_state(&host).0, "paused");
    let frozen = count();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(), frozen, "a paused container's counter advanced");
    let err = failed("exec while paused", &host.moor(&["exec", "web", "true"]));
    assert!(err.contains("paused"), "{err}");
    let (state, pid2, started2, _) = web_state(&host);
    assert_eq!(
        (state.as_str(), &pid2, &started2),
        ("paused", &pid, &started)
    );
    assert_ne!(
        host.container("web").expect("web")["health"],
        "unhealthy",
        "health-failed while paused"
    );
    assert_eq!(ok("unpause", &host.moor(&["unpause", "web"])), "web");
    wait_for("the counter to go on", Duration::from_secs(20), || {
        count() > frozen
    });
    assert_eq!(web_state(&host).0, "running");
    let err = failed("unpause again", &host.moor(&["unpause", "web"]));
    assert!(err.contains("not paused"), "{err}");

    // Stopped on purpose: restart = "always", yet it stays stopped.
    assert_eq!(ok("stop", &host.moor(&["stop", "-t", "1", "web"])), "web");
    let (state, _, _, by_user) = web_state(&host);
    assert_eq!((state.as_str(), &by_user), ("exited", &Value::Bool(true)));
    std::thread::sleep(Duration::from_secs(6));
    let (state, _, _, by_user) = web_state(&host);
    assert_eq!(
        (state.as_str(), &by_user),
        ("exited", &Value::Bool(true)),
        "the agent restarted a stopped container:\n{}",
        host.agent_log()
    );
    // `moor start` brings it back.
    assert_eq!(ok("start", &host.moor(&["start", "web"])), "web");
    let (state, pid3, _, by_user) = web_state(&host);
    assert_eq!((state.as_str(), &by_user), ("running", &Value::Bool(false)));
    assert_ne!(pid3, pid);
    // `moor restart`: a new process, not held stopped.
    assert_eq!(
        ok("restart", &host.moor(&["restart", "-t", "1", "web"])),
        "web"
    );
    let (state, pid4, _, by_user) = web_state(&host);
    assert_eq!((state.as_str(), &by_user), ("running", &Value::Bool(false)));
    assert_ne!(pid4, pid3);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        web_state(&host).1,
        pid4,
        "the agent touched a restarted container"
    );

    // Stopped again, then its spec changes: replaced, running, the stop forgotten.
    ok("stop", &host.moor(&["stop", "-t", "1", "web"]));
    project.write(&manifest("bonjour"));
    wait_for("web replaced", Duration::from_secs(60), || {
        host.container_env("web", "GREETING").as_deref() == Some("bonjour")
    });
    let (state, _, _, by_user) = web_state(&host);
    assert_eq!((state.as_str(), &by_user), ("running", &Value::Bool(false)));
    // Unknown containers are clear errors; the others are still done.
    let out = host.moor(&["stop", "nosuch", "web"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nosuch"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "web");
}
