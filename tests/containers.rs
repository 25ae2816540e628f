//! Containers end to end: the real `moor` binary, the real kernel,
//! and a busybox root filesystem (Debian's busybox-static), as root.
//!
//! Every test runs twice, once per executor: youki's libcontainer built into
//! the shim (`builtin`) and Debian's `runc`.
//!
//! Each test runs on an [`Instance`] (a state dir and a cgroup parent of
//! its own); its [`Ctx`] guard removes every container, and the instance
//! every cgroup, mount and process left, even when the test fails.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::instance::Instance;
use crate::common::{
    alive as process_exists, host, moor_bin, require, require_executor, shim_bin, wait_for,
};

/// The commands the busybox root filesystem links to busybox.
const APPLETS: &[&str] = &[
    "sh", "sleep", "cat", "ps", "hostname", "mount", "wget", "httpd", "true", "echo", "ls", "grep",
    "head", "tr", "seq", "wc", "test", "touch", "kill", "id", "stat", "tty", "stty", "unshare",
];

/// One test's engine: an instance (state dir, cgroup parent), a work dir
/// with a busybox layer. Dropping it cleans up everything.
struct Ctx {
    host: Instance,
    dir: tempfile::TempDir,
    executor: String,
}

impl Ctx {
    /// `None` (after saying why) when the prerequisites are missing off CI.
    fn new(executor: &str) -> Option<Self> {
        if !require_executor(executor) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("moor-ctr-")
            .tempdir()
            .expect("temp dir");
        let ctx = Ctx {
            host: Instance::new(),
            executor: executor.to_string(),
            dir,
        };
        let layer = ctx.layer("busybox");
        fs::create_dir_all(layer.join("bin")).unwrap();
        for d in ["etc", "tmp", "proc", "sys", "dev", "root", "mnt"] {
            fs::create_dir_all(layer.join(d)).unwrap();
        }
        let busybox = crate::common::which("busybox").expect("busybox");
        fs::copy(&busybox, layer.join("bin/busybox")).unwrap();
        for a in APPLETS {
            symlink("busybox", layer.join("bin").join(a)).unwrap();
        }
        fs::write(
            layer.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(layer.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
        Some(ctx)
    }

    fn state(&self) -> PathBuf {
        self.host.dir().to_path_buf()
    }

    /// A directory for a root filesystem layer.
    fn layer(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("layers").join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// `moor --state-dir STATE ARGS…`.
    fn moor(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run moor")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.host.command();
        c.arg("--state-dir")
            .arg(self.state())
            .args(args)
            .env("MOOR_EXECUTOR", &self.executor)
            .stdin(Stdio::null());
        c
    }

    /// `moor dev run` of container `name` over the given layers, with an
    /// optional manifest (TOML declaring `[containers.NAME]`) and command.
    fn run_with(
        &self,
        name: &str,
        layers: &[&Path],
        manifest: Option<&str>,
        cmd: &[&str],
    ) -> Output {
        let mut args: Vec<String> = vec!["dev".into(), "run".into(), "--name".into(), name.into()];
        for l in layers {
            args.push("--rootfs".into());
            args.push(l.to_string_lossy().into_owned());
        }
        if let Some(text) = manifest {
            let path = self.dir.path().join(format!("{name}.toml"));
            fs::write(&path, text).unwrap();
            args.push("--manifest".into());
            args.push(path.to_string_lossy().into_owned());
        }
        if !cmd.is_empty() {
            args.push("--".into());
            args.extend(cmd.iter().map(|s| s.to_string()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.moor(&args)
    }

    /// Runs a container over the busybox layer; panics unless it started.
    /// Returns its host PID.
    fn run(&self, name: &str, manifest: Option<&str>, cmd: &[&str]) -> i32 {
        let out = self.run_with(name, &[&self.layer("busybox")], manifest, cmd);
        assert!(
            out.status.success(),
            "dev run {name} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("pid in dev run output")
    }

    /// `moor ARGS…` under a pseudo-terminal of its own (util-linux
    /// `script`), after `before` (a shell line run on that terminal) and
    /// followed by `after`; the exit code is moor's.
    fn moor_on_a_terminal(&self, before: &str, args: &[&str], after: &str) -> Output {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut line = format!("{before}; {}", quote(&moor_bin().to_string_lossy()));
        for a in ["--state-dir", &self.state().to_string_lossy()]
            .iter()
            .chain(args)
        {
            line.push(' ');
            line.push_str(&quote(a));
        }
        line.push_str(&format!("; rc=$?; {after}; exit $rc"));
        // Stdin stays open: at its end, script would type an EOF on the
        // terminal.
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .envs(self.host.env.iter().map(|(k, v)| (k, v)))
            .env("MOOR_EXECUTOR", &self.executor)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script");
        let stdin = child.stdin.take();
        let out = child.wait_with_output().expect("wait for script");
        drop(stdin);
        out
    }

    /// Waits for `name` to exit; returns its exit record.
    fn wait(&self, name: &str) -> Value {
        let out = self.moor(&["dev", "wait", "--timeout", "30", name]);
        assert!(
            out.stdout.starts_with(b"{"),
            "dev wait {name} failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("exit record JSON")
    }

    /// The container's log as `STREAM TEXT` lines.
    fn logs(&self, name: &str) -> Vec<String> {
        let out = self.moor(&["logs", "--timestamps", name]);
        assert!(out.status.success(), "logs {name}: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string())
            .collect()
    }

    /// The stdout lines of the container's log.
    fn stdout(&self, name: &str) -> Vec<String> {
        self.logs(name)
            .iter()
            .filter_map(|l| l.strip_prefix("stdout ").map(str::to_string))
            .collect()
    }

    fn inspect(&self, name: &str) -> Value {
        let out = self.moor(&["inspect", name]);
        assert!(
            out.status.success(),
            "inspect {name}: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("inspect JSON")
    }

    fn ps_all(&self) -> Vec<Value> {
        let out = self.moor(&["ps", "--all", "--json"]);
        assert!(out.status.success(), "ps: {}", text(&out.stderr));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("ps JSON")
    }

    fn rm(&self, name: &str) {
        let out = self.moor(&["dev", "rm", "--force", name]);
        assert!(out.status.success(), "rm {name}: {}", text(&out.stderr));
    }

    /// Every cgroup directory under this test's parent, in every hierarchy.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        host::cgroup_children(&self.host.slot().cgroup_parent())
    }

    /// Mounts under this test's directories.
    fn mounts(&self) -> Vec<String> {
        let mut v = host::mounts_under(self.dir.path());
        v.extend(host::mounts_under(self.host.dir()));
        v
    }

    /// Asserts that nothing of the container engine is left: no container
    /// cgroups, no mounts.
    fn assert_no_leaks(&self) {
        assert_eq!(
            self.cgroup_dirs(),
            Vec::<PathBuf>::new(),
            "cgroups left behind"
        );
        assert_eq!(self.mounts(), Vec::<String>::new(), "mounts left behind");
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if self.state().join("containers").is_dir() {
            for entry in fs::read_dir(self.state().join("containers"))
                .unwrap()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                let _ = self.moor(&["dev", "rm", "--force", &name]);
            }
        }
        // The instance kills and removes whatever is left.
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn container_sees_only_itself(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let host_marker = ctx.dir.path().join("host-only-file");
    fs::write(&host_marker, "secret").unwrap();
    let script = format!(
        "echo pid=$$; ps -o pid,args > /tmp/ps.txt; wc -l < /tmp/ps.txt; hostname; \
         test -e {} && echo host-visible || echo host-hidden; \
         test -e /etc/hostname && cat /etc/hostname",
        host_marker.display()
    );
    ctx.run("iso", None, &["sh", "-c", &script]);
    assert_eq!(ctx.wait("iso")["exit_code"], 0);
    let out = ctx.stdout("iso");
    assert_eq!(out[0], "pid=1", "the command is PID 1: {out:?}");
    // Header, sh (PID 1) and ps itself: nothing of the host. (Not through a
    // pipe: `wc` may or may not have started when `ps` reads /proc.)
    assert_eq!(
        out[1].trim(),
        "3",
        "ps shows only the container's processes: {out:?}"
    );
    assert_eq!(out[2], "iso", "the hostname is the container's");
    assert_eq!(out[3], "host-hidden");
    assert_eq!(out[4], "iso");
    ctx.rm("iso");
    ctx.assert_no_leaks();
}

fn security_defaults_follow_docker(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let script = "grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status; \
                  echo kcore=$(wc -c < /proc/kcore 2>/dev/null) keys=$(wc -c < /proc/keys) timer_list=$(wc -c < /proc/timer_list); \
                  (echo 1 > /proc/sys/kernel/sysrq) 2>/dev/null && echo sysctl-written || echo sysctl-denied; \
                  mount -t tmpfs none /mnt 2>/dev/null && echo mounted || echo mount-denied; \
                  ls /dev | tr '\\n' ' '";
    ctx.run("sec", None, &["sh", "-c", script]);
    assert_eq!(ctx.wait("sec")["exit_code"], 0);
    let out = ctx.stdout("sec");
    // Docker's 14 default capabilities.
    assert!(
        out.contains(&"CapBnd:\t00000000a80425fb".to_string()),
        "{out:?}"
    );
    assert!(
        out.contains(&"CapEff:\t00000000a80425fb".to_string()),
        "{out:?}"
    );
    assert!(out.contains(&"NoNewPrivs:\t1".to_string()), "{out:?}");
    // Masked files read as empty; a kernel without /proc/kcore has none to mask.
    let kcore = if Path::new("/proc/kcore").exists() {
        "0"
    } else {
        ""
    };
    let want = format!("kcore={kcore} keys=0 timer_list=0");
    assert!(
        out.contains(&want),
        "masked paths: want {want:?} in {out:?}"
    );
    assert!(out.contains(&"sysctl-denied".to_string()), "{out:?}");
    assert!(out.contains(&"mount-denied".to_string()), "{out:?}");
    let devs: Vec<&str> = out.last().unwrap().split_whitespace().collect();
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
    ] {
        assert!(devs.contains(&d), "/dev/{d} missing: {devs:?}");
    }
    assert!(
        !devs
            .iter()
            .any(|d| d.starts_with("sd") || d.starts_with("nvme") || *d == "mem"),
        "host devices in /dev: {devs:?}"
    );
}

fn exit_codes_and_signals_are_recorded(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    ctx.run("ok", None, &["true"]);
    ctx.run("three", None, &["sh", "-c", "exit 3"]);
    let pid = ctx.run("killed", None, &["sleep", "1000"]);
    let out = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let ok = ctx.wait("ok");
    assert_eq!(
        (ok["exit_code"].as_i64(), ok["oom_killed"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(ctx.wait("three")["exit_code"], 3);
    let killed = ctx.wait("killed");
    assert_eq!(
        (killed["exit_code"].as_i64(), killed["signal"].as_i64()),
        (Some(137), Some(9))
    );
    let ps = ctx.ps_all();
    let states: Vec<(&str, &str, i64)> = ps
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["state"].as_str().unwrap(),
                c["exit_code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("killed", "exited", 137),
            ("ok", "exited", 0),
            ("three", "exited", 3)
        ]
    );
    // An exited container holds no cgroups and no mounts.
    ctx.assert_no_leaks();
}

fn memory_limit_kills_with_137_and_the_oom_flag(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let manifest = "[containers.hog]\nimage = \"busybox\"\nresources = { memory = \"16m\" }\n";
    ctx.run(
        "hog",
        Some(manifest),
        &["sh", "-c", "a=x; while :; do a=$a$a; done"],
    );
    let exit = ctx.wait("hog");
    assert_eq!(exit["exit_code"], 137, "{exit}");
    assert_eq!(exit["oom_killed"], true, "{exit}");
    let ps = ctx.ps_all();
    assert_eq!(ps[0]["oom_killed"], true);
    ctx.assert_no_leaks();
}

fn pids_limit_stops_a_fork_bomb(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let manifest = "[containers.bomb]\nimage = \"busybox\"\nresources = { pids = 20 }\n";
    // The inner shell forks until the limit stops it (busybox sh gives up
    // on the first failed fork); PID 1 survives and reports.
    ctx.run(
        "bomb",
        Some(manifest),
        &[
            "sh",
            "-c",
            "sh -c 'for i in $(seq 100); do sleep 1000 & done'; echo survived; exec sleep 1000",
        ],
    );
    wait_for(
        "the fork bomb to be stopped",
        Duration::from_secs(20),
        || ctx.stdout("bomb").contains(&"survived".to_string()),
    );
    let logs = ctx.logs("bomb").join("\n");
    assert!(
        logs.contains("can't fork") || logs.contains("Resource temporarily unavailable"),
        "{logs}"
    );
    let cgroup = ctx.inspect("bomb")["cgroup"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    let current = host::cgroup_mounts()
        .iter()
        .map(|m| m.join(&cgroup).join("pids.current"))
        .find(|p| p.exists())
        .map(|p| {
            fs::read_to_string(p)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .expect("pids.current of the container's cgroup");
    assert!(current <= 20, "pids.current = {current}");
    ctx.rm("bomb");
    ctx.assert_no_leaks();
}

fn logs_hold_both_streams_in_order_and_follow(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    ctx.run(
        "talk",
        None,
        &[
            "sh",
            "-c",
            "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three; printf partial",
        ],
    );
    ctx.wait("talk");
    assert_eq!(
        ctx.logs("talk"),
        vec!["stdout one", "stderr two", "stdout three", "stdout partial"]
    );
    let plain = ctx.moor(&["logs", "--tail", "2", "talk"]);
    assert_eq!(text(&plain.stdout), "three\npartial");

    ctx.run(
        "slow",
        None,
        &["sh", "-c", "echo first; sleep 1; echo second"],
    );
    let follow = ctx.command(&["logs", "-f", "slow"]).output().unwrap();
    assert!(follow.status.success());
    assert_eq!(
        text(&follow.stdout),
        "first\nsecond\n",
        "logs -f follows until the container exits"
    );
}

fn logs_since_and_until_pick_a_time_window(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    ctx.run(
        "clock",
        None,
        &["sh", "-c", "echo early; sleep 1.2; echo late"],
    );
    ctx.wait("clock");
    // The times the lines were logged at, as `logs --timestamps` shows them.
    let out = ctx.moor(&["logs", "--timestamps", "clock"]);
    let stamped = text(&out.stdout);
    let stamps: Vec<&str> = stamped
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(stamps.len(), 2, "{stamped}");
    let (early, late) = (stamps[0], stamps[1]);
    let logs = |args: &[&str]| {
        let mut all = vec!["logs"];
        all.extend_from_slice(args);
        all.push("clock");
        let out = ctx.moor(&all);
        assert!(out.status.success(), "logs {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(logs(&["--since", late]), "late\n", "since is inclusive");
    assert_eq!(logs(&["--until", early]), "early\n", "until is inclusive");
    assert_eq!(logs(&["--since", early, "--until", late]), "early\nlate\n");
    // A Unix timestamp: the whole second after the first line is still
    // before the second one, 1.2 s later.
    let date = Command::new("date")
        .args(["-u", "-d", early, "+%s"])
        .output()
        .expect("run date");
    let early_secs: u64 = text(&date.stdout).trim().parse().expect("date +%s");
    let between = (early_secs + 1).to_string();
    assert_eq!(logs(&["--since", &between]), "late\n");
    assert_eq!(logs(&["--until", &between]), "early\n");
    // Relative, and tail applied to what since kept.
    assert_eq!(logs(&["--since", "1h"]), "early\nlate\n");
    assert_eq!(logs(&["--since", "1h", "--tail", "1"]), "late\n");
    assert_eq!(logs(&["--since", late, "--tail", "5"]), "late\n");
    assert_eq!(
        logs(&["--since", "1h", "-f"]),
        "early\nlate\n",
        "follow of an exited container"
    );
    for (flag, bad) in [("--since", "yesterday"), ("--until", "2026-11-23")] {
        let out = ctx.moor(&["logs", flag, bad, "clock"]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains(flag) && err.contains(bad), "{err}");
    }
    ctx.rm("clock");
    ctx.assert_no_leaks();
}

fn containers_outlive_moor_and_a_new_process_sees_their_true_state(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let long = ctx.run("long", None, &["sleep", "1000"]);
    ctx.run("short", None, &["sh", "-c", "sleep 1; exit 7"]);
    // A long-lived moor process (not a shim), killed with SIGKILL.
    let mut follower = ctx
        .command(&["logs", "-f", "long"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    follower.kill().unwrap();
    follower.wait().unwrap();
    // The short one exits while no moor process but the shims runs.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(process_exists(long), "the container survived");
    let ps = ctx.ps_all();
    let by_name = |n: &str| ps.iter().find(|c| c["name"] == n).unwrap().clone();
    assert_eq!(by_name("long")["state"], "running");
    assert_eq!(by_name("long")["pid"], long);
    assert_eq!(by_name("short")["state"], "exited");
    assert_eq!(by_name("short")["exit_code"], 7);
    let running = ctx.moor(&["ps", "--json"]);
    let running: Vec<Value> = serde_json::from_slice(&running.stdout).unwrap();
    assert_eq!(
        running.len(),
        1,
        "ps without --all lists running containers only"
    );
    // The shim is in its own session, not the caller's.
    let shim = ctx.inspect("long")["shim"]["shim_pid"].as_i64().unwrap();
    let sid = |pid: i64| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .rsplit(") ")
            .next()
            .unwrap()
            .split(' ')
            .nth(3)
            .unwrap()
            .to_string()
    };
    assert_eq!(
        sid(shim),
        shim.to_string(),
        "the shim leads its own session"
    );
    ctx.rm("long");
    ctx.rm("short");
    assert!(!process_exists(long));
    ctx.assert_no_leaks();
}

fn a_killed_shim_is_detected_and_cleaned_up(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let pid = ctx.run("orphan", None, &["sleep", "1000"]);
    let shim = ctx.inspect("orphan")["shim"]["shim_pid"].as_i64().unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &shim.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_for("the shim to die", Duration::from_secs(5), || {
        !process_exists(shim as i32)
    });
    let info = ctx.inspect("orphan");
    assert_eq!(info["state"], "lost", "{info}");
    let stop = ctx.moor(&["dev", "stop", "orphan"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let info = ctx.inspect("orphan");
    assert_eq!(info["state"], "exited");
    assert_eq!(info["exit_code"], 137);
    assert_eq!(info["reason"], "supervisor lost; killed");
    wait_for(
        "the container's process to die",
        Duration::from_secs(5),
        || !process_exists(pid),
    );
    ctx.assert_no_leaks();
    ctx.rm("orphan");
}

fn stop_signal_grace_period_then_sigkill(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let polite = "[containers.polite]\nimage = \"busybox\"\nstop_grace_period = \"10s\"\n";
    ctx.run(
        "polite",
        Some(polite),
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ],
    );
    // A plain `sleep` as PID 1 ignores SIGTERM: only SIGKILL ends it.
    let stubborn = "[containers.stubborn]\nimage = \"busybox\"\nstop_grace_period = \"1s\"\n";
    ctx.run("stubborn", Some(stubborn), &["sleep", "1000"]);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let out = ctx.moor(&["dev", "stop", "polite"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stopped by its signal, not the grace period"
    );
    assert_eq!(ctx.inspect("polite")["exit_code"], 0);
    let t = Instant::now();
    let out = ctx.moor(&["dev", "stop", "stubborn"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "the grace period was given"
    );
    assert_eq!(ctx.inspect("stubborn")["exit_code"], 137);
    ctx.assert_no_leaks();
}

fn init_forwards_signals_and_reaps(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    if !require(&["tini-static"], false) {
        return;
    }
    let manifest = "[containers.sleeper]\nimage = \"busybox\"\ninit = true\n";
    ctx.run("sleeper", Some(manifest), &["sleep", "1000"]);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let out = ctx.moor(&["dev", "stop", "sleeper"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the init forwarded SIGTERM: {:?}",
        t.elapsed()
    );
    assert_eq!(ctx.inspect("sleeper")["exit_code"], 143);
    ctx.assert_no_leaks();
}

fn exec_joins_the_container(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let manifest = "[containers.box]\nimage = \"busybox\"\nenv = { GREETING = \"hello\" }\n";
    ctx.run("box", Some(manifest), &["sleep", "1000"]);
    let out = ctx.moor(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "hostname; echo $GREETING; ps -o comm | grep -c '^sleep'",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "box\nhello\n1\n");
    let out = ctx.moor(&["exec", "box", "--", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    ctx.rm("box");
    let out = ctx.moor(&["exec", "box", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no container named \"box\""),
        "{}",
        text(&out.stderr)
    );
    ctx.assert_no_leaks();
}

fn exec_tty_gives_a_controlling_terminal(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    if !require(&["script", "stty"], true) {
        return;
    }
    ctx.run("box", None, &["sleep", "1000"]);
    // The terminal is the container's own, its controlling terminal, with
    // the caller's window size; the caller's terminal is back in cooked
    // mode afterwards.
    let out = ctx.moor_on_a_terminal(
        "stty rows 33 cols 99",
        &[
            "exec",
            "-it",
            "box",
            "--",
            "sh",
            "-c",
            // The size is set on the terminal right after the process
            // starts (SIGWINCH tells it): wait for it, not for a time.
            "tty; for i in $(seq 100); do s=$(stty size 2>/dev/null); [ -n \"$s\" ] && break; sleep 0.05; done; \
             echo \"$s\"; read -r a b c d e f g rest < /proc/self/stat; echo tty_nr=$g; echo TERM=$TERM",
        ],
        "stty -a",
    );
    let shown = text(&out.stdout).replace('\r', "");
    assert!(
        out.status.success(),
        "exec -it: {shown} {}",
        text(&out.stderr)
    );
    let mut lines = shown.lines();
    let tty = lines.next().unwrap_or_default();
    assert!(tty.starts_with("/dev/pts/"), "tty printed {tty:?}: {shown}");
    assert_eq!(lines.next(), Some("33 99"), "window size: {shown}");
    let tty_nr = lines.next().unwrap_or_default();
    assert!(
        tty_nr.starts_with("tty_nr=") && tty_nr != "tty_nr=0",
        "no controlling terminal: {shown}"
    );
    assert_eq!(lines.next(), Some("TERM=xterm"), "{shown}");
    assert!(
        shown.contains(" icanon") && shown.contains(" echo "),
        "the caller's terminal was left in raw mode: {shown}"
    );
    // The exit code passes through.
    let out = ctx.moor_on_a_terminal(
        "true",
        &["exec", "-t", "box", "--", "sh", "-c", "exit 7"],
        "true",
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stdout));
    // Without -t the process has no terminal, as before.
    let out = ctx.moor(&["exec", "box", "--", "tty"]);
    assert_eq!(text(&out.stdout), "not a tty\n");
    assert_eq!(out.status.code(), Some(1));
    ctx.rm("box");
    ctx.assert_no_leaks();
}

fn seccomp_filters_by_default_and_can_be_turned_off(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    // A new user namespace needs no capability, so only the filter stops
    // root in the container from making one.
    let probe = [
        "sh",
        "-c",
        "grep '^Seccomp:' /proc/self/status; if unshare -U true; then echo allowed; else echo denied; fi",
    ];
    let cases = [
        ("filtered", "", "2", "denied"),
        ("free", "seccomp = \"unconfined\"\n", "0", "allowed"),
        ("admin", "cap_add = [\"SYS_ADMIN\"]\n", "2", "allowed"),
    ];
    for (name, extra, mode, unshare) in cases {
        let manifest = format!("[containers.{name}]\nimage = \"busybox\"\n{extra}");
        ctx.run(name, Some(&manifest), &probe);
        assert_eq!(
            ctx.wait(name)["exit_code"],
            0,
            "{name}: {:?}",
            ctx.logs(name)
        );
        let out = ctx.stdout(name);
        assert_eq!(
            out,
            vec![format!("Seccomp:\t{mode}"), unshare.to_string()],
            "{name}: {:?}",
            ctx.logs(name)
        );
        if unshare == "denied" {
            let logs = ctx.logs(name).join("\n");
            assert!(logs.contains("Operation not permitted"), "{logs}");
        }
        // An exec'd process runs under the same filter, with or without a
        // terminal.
        let sleeper = format!("{name}-exec");
        ctx.run(
            &sleeper,
            Some(&manifest.replace(name, &sleeper)),
            &["sleep", "1000"],
        );
        let out = ctx.moor(&["exec", &sleeper, "--", probe[0], probe[1], probe[2]]);
        assert_eq!(
            text(&out.stdout),
            format!("Seccomp:\t{mode}\n{unshare}\n"),
            "exec in {name}: {}",
            text(&out.stderr)
        );
        let out = ctx.moor_on_a_terminal(
            "true",
            &["exec", "-t", &sleeper, "--", probe[0], probe[1], probe[2]],
            "true",
        );
        let shown = text(&out.stdout).replace('\r', "");
        // (On a terminal, unshare's complaint shows up in between.)
        assert!(
            shown.starts_with(&format!("Seccomp:\t{mode}\n"))
                && shown.contains(&format!("\n{unshare}\n")),
            "exec -t in {name}: {shown}"
        );
        ctx.rm(&sleeper);
        ctx.rm(name);
    }
    ctx.assert_no_leaks();
}

fn named_volume_survives_recreation(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let manifest =
        "[volumes.data]\n[containers.db]\nimage = \"busybox\"\nmounts = [\"data:/var/data\"]\n";
    ctx.run(
        "db",
        Some(manifest),
        &["sh", "-c", "echo persisted > /var/data/f"],
    );
    assert_eq!(ctx.wait("db")["exit_code"], 0);
    ctx.rm("db");
    ctx.run("db", Some(manifest), &["cat", "/var/data/f"]);
    assert_eq!(ctx.wait("db")["exit_code"], 0);
    assert_eq!(ctx.stdout("db"), vec!["persisted"]);
    ctx.rm("db");
    assert!(
        ctx.state().join("volumes/data/data/f").exists(),
        "the volume stays after removal"
    );
    ctx.assert_no_leaks();
}

fn read_only_mounts_and_root_are_enforced(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let host = ctx.dir.path().join("shared");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("in"), "from host").unwrap();
    let manifest = format!(
        "[containers.ro]\nimage = \"busybox\"\nread_only = true\nmounts = [\"{}:/shared:ro\", \"tmpfs:/scratch\"]\n",
        host.display()
    );
    let script = "cat /shared/in; echo; \
                  (echo x > /shared/new) 2>/dev/null && echo bind-written || echo bind-denied; \
                  touch /rootfile 2>/dev/null && echo root-written || echo root-denied; \
                  echo ok > /scratch/f && cat /scratch/f";
    ctx.run("ro", Some(&manifest), &["sh", "-c", script]);
    ctx.wait("ro");
    assert_eq!(
        ctx.stdout("ro"),
        vec!["from host", "bind-denied", "root-denied", "ok"]
    );
    assert!(!host.join("new").exists());
    ctx.rm("ro");
    ctx.assert_no_leaks();
}

fn symlinked_mount_destination_stays_inside_the_container(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    // A layer on top of busybox with symlinks that point at / and above it.
    let evil = ctx.layer("evil");
    symlink("/", evil.join("escape")).unwrap();
    symlink("../../../../../..", evil.join("up")).unwrap();
    let unique = format!("moor-escape-{}", std::process::id());
    let manifest = format!(
        "[volumes.v]\n[containers.sneaky]\nimage = \"busybox\"\nmounts = [\"v:/escape/tmp/{unique}\", \"tmpfs:/up/{unique}\"]\n"
    );
    let script = format!(
        "echo in > /tmp/{unique}/f && cat /tmp/{unique}/f; test -d /{unique} && echo tmpfs-inside"
    );
    let out = ctx.run_with(
        "sneaky",
        &[&ctx.layer("busybox"), &evil],
        Some(&manifest),
        &["sh", "-c", &script],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    ctx.wait("sneaky");
    assert_eq!(ctx.stdout("sneaky"), vec!["in", "tmpfs-inside"]);
    assert!(
        !Path::new("/tmp").join(&unique).exists(),
        "a mount escaped to the host's /tmp"
    );
    assert!(
        !Path::new("/").join(&unique).exists(),
        "a mount escaped to the host's /"
    );
    assert_eq!(
        fs::read_to_string(ctx.state().join("volumes/v/data/f")).unwrap(),
        "in\n"
    );
    ctx.rm("sneaky");
    ctx.assert_no_leaks();
}

fn missing_bind_source_fails_clearly(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let missing = ctx.dir.path().join("does-not-exist");
    let manifest = format!(
        "[containers.b]\nimage = \"busybox\"\nmounts = [\"{}:/data\"]\n",
        missing.display()
    );
    let out = ctx.run_with("b", &[&ctx.layer("busybox")], Some(&manifest), &["true"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "bind mount source {} does not exist",
            missing.display()
        )),
        "unclear error: {err}"
    );
    assert!(
        ctx.ps_all().is_empty(),
        "the failed container was not left behind"
    );
    ctx.assert_no_leaks();
}

/// Bind sources next to the manifest (`./conf`, `./conf/site.conf`) are
/// mounted, through staging mounts that are gone once the container is
/// created. A source swapped for a link out of the tree after the manifest
/// was validated (here: before a restart of the container the record was
/// made for) is refused, whether the link is absolute or climbs with `..`;
/// a link that stays inside the tree is followed.
fn relative_binds_stay_inside_their_tree_at_every_start(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    let tree = ctx.dir.path().join("manifests");
    fs::create_dir_all(tree.join("conf")).unwrap();
    fs::write(tree.join("conf/site.conf"), "inside the tree\n").unwrap();
    let manifest = tree.join("app.toml");
    fs::write(
        &manifest,
        "[containers.site]\nimage = \"busybox\"\n\
         mounts = [\"./conf:/etc/site:ro\", \"./conf/site.conf:/etc/site.conf:ro\"]\n\
         command = [\"sh\", \"-c\", \"cat /etc/site/site.conf /etc/site.conf; ls /etc/site\"]\n",
    )
    .unwrap();
    let layer = ctx.layer("busybox");
    let out = ctx.moor(&[
        "dev",
        "run",
        "--name",
        "site",
        "--rootfs",
        layer.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "dev run: {}", text(&out.stderr));
    let staged: Vec<String> = ctx
        .mounts()
        .into_iter()
        .filter(|m| m.contains("/binds/"))
        .collect();
    assert!(staged.is_empty(), "staging mounts left: {staged:?}");
    assert_eq!(ctx.wait("site")["exit_code"], 0);
    assert_eq!(
        ctx.stdout("site"),
        ["inside the tree", "inside the tree", "site.conf"]
    );
    ctx.assert_no_leaks();

    // The source is swapped for a link out of the tree, to a directory
    // that has a `site.conf` too (so only the tree check can refuse it):
    // every later start is refused, and nothing was mounted.
    let outside = ctx.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("site.conf"), "host secret\n").unwrap();
    fs::rename(tree.join("conf"), tree.join("conf.orig")).unwrap();
    let absolute = outside.to_str().unwrap().to_string();
    let climbing = format!("../../../../../../../../..{absolute}");
    for escape in [absolute.as_str(), "../outside", climbing.as_str(), "/etc"] {
        symlink(escape, tree.join("conf")).unwrap();
        let out = ctx.moor(&["dev", "start", "site"]);
        let err = text(&out.stderr);
        assert!(
            !out.status.success() && err.contains("leads outside its tree"),
            "a swap to {escape} was not refused: {err}{}",
            text(&out.stdout)
        );
        assert_ne!(ctx.inspect("site")["state"], "running", "never started");
        ctx.assert_no_leaks();
        fs::remove_file(tree.join("conf")).unwrap();
    }
    let shown = ctx.stdout("site");
    assert!(
        !shown.iter().any(|l| l.contains("host secret")),
        "{shown:?}"
    );
    // A link that stays inside the tree is followed, as at load time.
    symlink("conf.orig", tree.join("conf")).unwrap();
    let out = ctx.moor(&["dev", "start", "site"]);
    assert!(out.status.success(), "dev start: {}", text(&out.stderr));
    assert_eq!(ctx.wait("site")["exit_code"], 0);
    assert_eq!(
        ctx.stdout("site")
            .iter()
            .filter(|l| *l == "inside the tree")
            .count(),
        4,
        "{:?}",
        ctx.stdout("site")
    );
    ctx.rm("site");
    ctx.assert_no_leaks();
}

/// What the engine starts as a container's shim is the `moor-shim` binary
/// built beside `moor`, not `moor` itself, or the one `MOOR_SHIM` names.
fn the_shim_is_the_moor_shim_binary(executor: &str) {
    let Some(ctx) = Ctx::new(executor) else {
        return;
    };
    ctx.run("idle", None, &["sleep", "1000"]);
    let shim = ctx.inspect("idle")["shim"]["shim_pid"].as_i64().unwrap();
    let exe = fs::read_link(format!("/proc/{shim}/exe")).expect("the shim's exe");
    assert_eq!(exe, fs::canonicalize(shim_bin()).unwrap());
    assert_ne!(exe, fs::canonicalize(moor_bin()).unwrap());
    ctx.rm("idle");
    // `MOOR_SHIM` names one installed elsewhere.
    let elsewhere = ctx.dir.path().join("elsewhere-shim");
    fs::copy(shim_bin(), &elsewhere).unwrap();
    let layer = ctx.layer("busybox");
    let out = ctx
        .command(&[
            "dev",
            "run",
            "--name",
            "other",
            "--rootfs",
            layer.to_str().unwrap(),
        ])
        .args(["--", "sleep", "1000"])
        .env("MOOR_SHIM", &elsewhere)
        .output()
        .expect("run moor");
    assert!(out.status.success(), "dev run: {}", text(&out.stderr));
    let shim = ctx.inspect("other")["shim"]["shim_pid"].as_i64().unwrap();
    let exe = fs::read_link(format!("/proc/{shim}/exe")).expect("the shim's exe");
    assert_eq!(exe, elsewhere);
    ctx.rm("other");
    // A relative one is refused before anything is touched.
    let empty = ctx.dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = ctx
        .command(&["apply", "-p", "shimexe", empty.to_str().unwrap()])
        .env("MOOR_SHIM", "moor-shim")
        .output()
        .expect("run moor");
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("MOOR_SHIM=\"moor-shim\" is not an absolute path"),
        "{err}"
    );
    ctx.assert_no_leaks();
}

/// The ELF type of a binary and whether it asks for a program interpreter:
/// `(3, true)` is a position-independent executable, `(2, _)` one linked
/// at a fixed address.
fn elf_kind(path: &Path) -> (u16, bool) {
    let bytes = fs::read(path).expect("read the binary");
    assert_eq!(&bytes[..5], b"\x7fELF\x02", "a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    let interp = (0..usize::from(phnum)).any(|i| u32_at(phoff + i * phentsize) == 3);
    (u16_at(16), interp)
}

/// `moor`, the root daemon that talks to the network, is a
/// position-independent executable (ASLR covers its own code); the shim
/// is linked at a fixed address, so that its read-only data stays shared.
#[test]
fn moor_is_position_independent_and_the_shim_is_not() {
    assert_eq!(elf_kind(&moor_bin()), (3, true), "moor is not a PIE");
    assert_eq!(elf_kind(&shim_bin()).0, 2, "moor-shim is not ET_EXEC");
}

crate::common::on_every_executor!(
    container_sees_only_itself,
    security_defaults_follow_docker,
    exit_codes_and_signals_are_recorded,
    memory_limit_kills_with_137_and_the_oom_flag,
    pids_limit_stops_a_fork_bomb,
    logs_hold_both_streams_in_order_and_follow,
    logs_since_and_until_pick_a_time_window,
    containers_outlive_moor_and_a_new_process_sees_their_true_state,
    a_killed_shim_is_detected_and_cleaned_up,
    stop_signal_grace_period_then_sigkill,
    init_forwards_signals_and_reaps,
    exec_joins_the_container,
    exec_tty_gives_a_controlling_terminal,
    seccomp_filters_by_default_and_can_be_turned_off,
    named_volume_survives_recreation,
    read_only_mounts_and_root_are_enforced,
    symlinked_mount_destination_stays_inside_the_container,
    missing_bind_source_fails_clearly,
    relative_binds_stay_inside_their_tree_at_every_start,
    the_shim_is_the_moor_shim_binary,
);
