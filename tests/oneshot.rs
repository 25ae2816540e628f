//! One-shot containers end to end: jobs that exit at once, on a network,
//! with either executor; `depends_on = { migrate = "completed" }` gating an
//! app on a migration; a failed job blocking its dependant; a second
//! `moor apply` of a stack whose job has exited returning at once.
//!
//! The engine-level test drives `Engine::start_with` directly over a
//! busybox layer; the stack tests drive the real `moor` binary with the
//! example's busybox image. Each test runs on an [`Instance`] of its own
//! (state dir, cgroup parent, nftables table, bridge prefix), all removed
//! on drop.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use moor_runtime::container::{ContainerError, Engine, EngineConfig, Executor, Status};

use crate::common::instance::Instance;
use crate::common::{moor_bin, require_executor, shim_bin, text};

/// An engine over an instance's state dir and cgroup parent, and a busybox
/// layer; on drop every container is removed (and the instance cleans up
/// after them).
struct Bare {
    engine: Engine,
    host: Instance,
    dir: tempfile::TempDir,
}

impl Bare {
    fn new(executor: &str) -> Option<Self> {
        if !require_executor(executor) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("moor-oneshot-")
            .tempdir()
            .expect("temp dir");
        let layer = dir.path().join("layer");
        for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
            fs::create_dir_all(layer.join(d)).expect("layer dir");
        }
        let busybox = crate::common::which("busybox").expect("busybox");
        fs::copy(&busybox, layer.join("bin/busybox")).expect("copy busybox");
        for a in ["sh", "touch", "sleep"] {
            symlink("busybox", layer.join("bin").join(a)).expect("applet");
        }
        let host = Instance::new();
        let mut config = EngineConfig::new(host.dir());
        config.executor = Executor::parse(executor).expect("executor");
        config.cgroup_parent = host.slot().cgroup_parent();
        config.shim_exe = shim_bin();
        config.moor_exe = moor_bin();
        let engine = Engine::new(config).expect("engine");
        Some(Self { engine, dir, host })
    }

    fn layer(&self) -> PathBuf {
        self.dir.path().join("layer")
    }

    /// Creates container `name` running `sh -c script`.
    fn create(&self, name: &str, script: &str) {
        let text = format!(
            "[containers.{name}]\nimage = \"moor.invalid/test/rootfs\"\nnetwork_mode = \"none\"\ncommand = [\"sh\", \"-c\", {script:?}]\n"
        );
        let mut state = moor_spec::load_texts(&[(PathBuf::from("t.toml"), text)])
            .unwrap_or_else(|d| panic!("test manifest invalid:\n{d}"));
        let spec =
            std::sync::Arc::unwrap_or_clone(state.containers.remove(name).expect("container").spec);
        self.engine
            .create(name, spec, None, vec![self.layer()])
            .expect("create");
    }

    /// The container cgroups left under this test's parent, in every hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        crate::common::host::cgroup_children(&self.host.slot().cgroup_parent())
    }

    /// Mounts under this test's directories.
    fn mounts(&self) -> Vec<String> {
        let mut v = crate::common::host::mounts_under(self.dir.path());
        v.extend(crate::common::host::mounts_under(self.host.dir()));
        v
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        if let Ok(list) = self.engine.list() {
            for c in list {
                let _ = self.engine.remove(&c.record.name, true);
            }
        }
    }
}

fn process_exists(pid: i32) -> bool {
    crate::common::alive(pid)
}

fn netns(pid: &str) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// What runs between create and start finds the container's namespaces in
/// place and its process not yet run; when it fails, the container is
/// removed unstarted (nothing left: no process, cgroup or mount) and can be
/// started again; when it passes, the process runs, and its exit is recorded
/// even when it exits at once.
fn prepare_runs_between_create_and_start(executor: &str) {
    let Some(t) = Bare::new(executor) else {
        return;
    };
    t.create("job", "touch /ran; exit 7");
    let ran = t.engine.paths("job").upper().join("ran");

    let mut seen = None;
    let err = t
        .engine
        .start_with("job", |pid| {
            seen = Some((
                pid,
                process_exists(pid),
                netns(&pid.to_string()),
                ran.exists(),
            ));
            Err("no network for you".to_string())
        })
        .expect_err("a failed prepare fails the start");
    let (pid, alive, ns, ran_early) = seen.expect("prepare was called");
    assert!(alive, "PID 1 exists during prepare");
    assert!(
        ns.is_some() && ns != netns("self"),
        "PID 1 has its own network namespace during prepare: {ns:?}"
    );
    assert!(!ran_early, "the process ran before prepare returned");
    assert!(
        matches!(&err, ContainerError::Prepare { message, .. } if message == "no network for you"),
        "{err}"
    );
    assert!(!process_exists(pid), "PID 1 of the aborted start is gone");
    assert!(!ran.exists(), "the aborted container never ran");
    assert_eq!(
        t.engine.inspect("job").expect("inspect").status,
        Status::Created
    );
    assert_eq!(t.cgroups(), Vec::<PathBuf>::new(), "cgroups left behind");
    assert_eq!(t.mounts(), Vec::<String>::new(), "mounts left behind");

    let mut ran_before = None;
    t.engine
        .start_with("job", |_| {
            ran_before = Some(ran.exists());
            Ok(())
        })
        .expect("start");
    assert_eq!(ran_before, Some(false), "prepare ran before the process");
    let exit = t
        .engine
        .wait_exit("job", Duration::from_secs(30))
        .expect("wait")
        .expect("the job exits");
    assert_eq!(exit.exit_code, 7);
    assert!(ran.exists(), "the job ran");
    assert_eq!(t.cgroups(), Vec::<PathBuf>::new(), "cgroups left behind");
}

const PROJECT: &str = "jobs";

/// A stack whose `migrate` job runs `job` (a shell line) on network `jnet`
/// with volume `data` at /data, and whose `app` starts only once the job
/// has exited 0, then runs for good if the job left /data/done.
fn stack(job: &str) -> String {
    format!(
        r#"
[images.busybox]
ref  = "localhost/moor-example/busybox:1"
pull = "never"

[networks.jnet]

[volumes.data]

[containers.migrate]
image    = "busybox"
command  = ["sh", "-c", {job:?}]
networks = ["jnet"]
mounts   = ["data:/data"]

[containers.app]
image      = "busybox"
command    = ["sh", "-c", "cat /data/done && exec sleep 3600"]
networks   = ["jnet"]
mounts     = ["data:/data"]
init       = true
depends_on = {{ migrate = "completed" }}
"#
    )
}

/// A host for the stack tests, with the busybox image and the stack in a
/// manifest directory; `None` (after saying why) off CI without the tools.
fn host(executor: &str, job: &str) -> Option<(Instance, tempfile::TempDir)> {
    let tools: &[&str] = if executor == "runc" { &["runc"] } else { &[] };
    let mut host = Instance::with_busybox(PROJECT, tools)?;
    host.env.push(("MOOR_EXECUTOR".into(), executor.into()));
    let dir = tempfile::tempdir().expect("manifest dir");
    write_stack(dir.path(), job);
    Some((host, dir))
}

fn write_stack(dir: &Path, job: &str) {
    fs::write(dir.join("stack.toml"), stack(job)).expect("write manifest");
}

/// `moor apply` (or `plan`) of the stack.
fn moor_on(host: &Instance, verb: &str, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![verb, "-p", PROJECT];
    args.extend_from_slice(extra);
    args.push(dir.to_str().expect("utf-8"));
    host.moor(&args)
}

/// (state, exit code) of a container in `moor ps --all --json`.
fn state(host: &Instance, name: &str) -> Option<(String, Option<i64>)> {
    host.container(name).map(|c| {
        (
            c["state"].as_str().unwrap_or_default().to_string(),
            c["exit_code"].as_i64(),
        )
    })
}

/// A job on a network that exits the moment it starts still gets its
/// interfaces (it records its address), its exit is recorded, the app it
/// gates starts only after it (it finds what the job wrote), and a second
/// `moor apply` of the converged stack has nothing to do or to wait for.
fn a_job_that_exits_at_once_on_a_network_gates_the_app(executor: &str) {
    let job = "ip -o -4 addr show eth0 > /data/addr; echo migrated > /data/done";
    let Some((host, dir)) = host(executor, job) else {
        return;
    };
    let out = moor_on(&host, "apply", dir.path(), &["--timeout", "60s"]);
    assert!(out.status.success(), "first apply: {}", text(&out));
    assert_eq!(
        state(&host, "migrate"),
        Some(("exited".into(), Some(0))),
        "{:?}",
        host.containers()
    );
    assert_eq!(state(&host, "app").map(|s| s.0).as_deref(), Some("running"));
    let logs = host.moor(&["logs", "app"]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout).trim(), "migrated");
    let addr = host.moor(&["exec", "app", "--", "cat", "/data/addr"]);
    let addr = String::from_utf8_lossy(&addr.stdout).to_string();
    let inet = addr.split_whitespace().skip_while(|w| *w != "inet").nth(1);
    assert!(
        inet.is_some_and(|a| host.slot().in_pool(a)),
        "the job had its address on jnet, in {}: {addr:?}",
        host.slot().pool()
    );

    // Converged: the exited job is not waited for, nor run again.
    let again = moor_on(&host, "apply", dir.path(), &["--timeout", "30s"]);
    assert!(again.status.success(), "second apply: {}", text(&again));
    let said = text(&again);
    assert!(
        said.contains("up to date") && !said.contains("container migrate"),
        "{said}"
    );
    let plan = moor_on(&host, "plan", dir.path(), &[]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert!(text(&plan).contains("No changes"), "{}", text(&plan));
    assert_eq!(state(&host, "migrate"), Some(("exited".into(), Some(0))));
}

/// A job that fails (exit 3) blocks its dependant: `moor apply` fails naming
/// the job and its code, `moor plan` and a second `moor apply` say so at
/// once, and fixing the job runs it again and starts the app.
#[test]
fn a_failed_job_blocks_its_dependant_until_it_is_fixed() {
    let Some((host, dir)) = host("builtin", "exit 3") else {
        return;
    };
    let out = moor_on(&host, "apply", dir.path(), &["--timeout", "60s"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("migrate exited 3"), "{said}");
    assert_eq!(state(&host, "migrate"), Some(("exited".into(), Some(3))));
    assert_eq!(state(&host, "app"), None, "{:?}", host.containers());

    let plan = moor_on(&host, "plan", dir.path(), &[]);
    let shown = text(&plan);
    assert!(
        shown.contains("! container app (blocked: migrate exited 3)"),
        "{shown}"
    );
    assert!(
        shown.contains("! container migrate (blocked: exited 3; restart = \"no\")"),
        "{shown}"
    );

    let again = moor_on(&host, "apply", dir.path(), &["--timeout", "30s"]);
    let said = text(&again);
    assert!(!again.status.success(), "{said}");
    assert!(
        said.contains("blocked: container app: migrate exited 3")
            && said.contains("blocked: container migrate: exited 3")
            && !said.contains("not converged"),
        "{said}"
    );

    write_stack(dir.path(), "echo fixed > /data/done");
    let fixed = moor_on(&host, "apply", dir.path(), &["--timeout", "60s"]);
    assert!(fixed.status.success(), "{}", text(&fixed));
    assert_eq!(state(&host, "migrate"), Some(("exited".into(), Some(0))));
    assert_eq!(state(&host, "app").map(|s| s.0).as_deref(), Some("running"));
}

crate::common::on_every_executor!(
    prepare_runs_between_create_and_start,
    a_job_that_exits_at_once_on_a_network_gates_the_app,
);
