//! Independent stages of a Dockerfile build at once: two stages that do
//! not depend on each other each record when their `RUN` started and ended
//! (the host's uptime, one clock for every container), and the intervals
//! must overlap; a failing stage fails the build while its sibling's steps
//! stay cached.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::common::instance::Instance;
use crate::common::text;

const BUSYBOX: &str = "localhost/moor-example/busybox:1";

fn build(host: &Instance, ctx: &Path, args: &[&str]) -> Output {
    let mut c = host.command();
    c.arg("build")
        .args(["--progress", "plain"])
        .args(args)
        .arg(ctx);
    c.output().expect("run moor build")
}

/// The `(start, end)` a stage's RUN printed as `NAME START END`.
fn interval(out: &str, name: &str) -> (f64, f64) {
    let line = out
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no times of {name}: {out}"));
    let t: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().expect("a time"))
        .collect();
    assert_eq!(t.len(), 2, "{line}");
    (t[0], t[1])
}

#[test]
fn independent_stages_build_at_once() {
    let Some(host) = Instance::with_busybox("bconc", &[]) else {
        return;
    };
    let ctx = tempfile::tempdir().expect("context");
    let stage = |name: &str| {
        format!(
            "FROM {BUSYBOX} AS {name}\nRUN cut -d' ' -f1 /proc/uptime > /start && sleep 2 && cut -d' ' -f1 /proc/uptime > /end && echo {name} > /name\n"
        )
    };
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "{}{}FROM {BUSYBOX}\nCOPY --from=left /start /end /name /t/left/\nCOPY --from=right /start /end /name /t/right/\nRUN for s in left right; do echo $(cat /t/$s/name) $(cat /t/$s/start) $(cat /t/$s/end); done\n",
            stage("left"),
            stage("right")
        ),
    )
    .expect("write Dockerfile");
    let out = build(&host, ctx.path(), &["-t", "localhost/bconc/app:1"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let (l0, l1) = interval(&all, "left");
    let (r0, r1) = interval(&all, "right");
    assert!(l1 - l0 >= 1.9 && r1 - r0 >= 1.9, "the RUNs slept: {all}");
    assert!(
        l0 < r1 && r0 < l1,
        "the stages' RUNs did not overlap: left {l0}..{l1}, right {r0}..{r1}\n{all}"
    );
    // Both stages' steps are numbered in advance: #1-#2 left, #3-#4 right.
    for l in [
        "#2 [left 2/2] RUN",
        "#4 [right 2/2] RUN",
        "#5 [stage-2 1/4] FROM",
    ] {
        assert!(all.lines().any(|x| x.starts_with(l)), "{l}: {all}");
    }
}

#[test]
fn a_failing_stage_fails_the_build_and_its_sibling_stays_cached() {
    let Some(host) = Instance::with_busybox("bconf", &[]) else {
        return;
    };
    let ctx = tempfile::tempdir().expect("context");
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {BUSYBOX} AS good\nRUN sleep 1 && echo good > /good\nFROM {BUSYBOX} AS bad\nRUN exit 5\nFROM {BUSYBOX}\nCOPY --from=good /good /\nCOPY --from=bad /etc/passwd /\n"
        ),
    )
    .expect("write Dockerfile");
    let out = build(&host, ctx.path(), &["-t", "localhost/bconf/app:1"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("returned a non-zero code: 5"), "{all}");
    assert!(!all.contains("exporting to image"), "{all}");
    assert!(!host.moor_ok(&["images"]).contains("localhost/bconf/app"));
    // The good stage finished (it was running when the other failed) and
    // is in the cache.
    let again = build(&host, ctx.path(), &[]);
    let all = text(&again);
    assert_eq!(again.status.code(), Some(1), "{all}");
    assert!(all.contains("#2 CACHED"), "{all}");
}
