//! `moor build --progress`: the plain format (a line per event, in order,
//! on stderr), the terminal's live view (under util-linux `script`), a
//! failing `RUN`'s whole output in both, and a `RUN` that prints terminal
//! escapes to take over the screen.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::instance::Instance;
use crate::common::{require, text};

const BUSYBOX: &str = "localhost/moor-example/busybox:1";

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("context dir");
    fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    fs::write(dir.path().join("a.txt"), "a\n").expect("write a.txt");
    dir
}

fn build(host: &Instance, ctx: &Path, args: &[&str]) -> Output {
    let mut c = host.command();
    c.arg("build").args(args).arg(ctx);
    c.output().expect("run moor build")
}

/// `moor build ARGS… CTX` on a terminal of its own (`script`): all it
/// wrote there, and its exit code.
fn build_on_a_terminal(host: &Instance, ctx: &Path, args: &[&str]) -> (String, Option<i32>) {
    let moor = host.command();
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut line = quote(&moor.get_program().to_string_lossy());
    for a in ["build"]
        .iter()
        .copied()
        .chain(args.iter().copied())
        .chain([ctx.to_str().expect("utf-8")])
    {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    for (k, v) in moor.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    // Stdin stays open: at its end, script would type an EOF on the
    // terminal.
    let child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    let out = child.wait_with_output().expect("wait for script");
    (text(&out), out.status.code())
}

/// The lines of `out` without the time of `DONE`: `#2 DONE 0.4s` is
/// `#2 DONE`.
fn events(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| match l.split_once(" DONE ") {
            Some((head, t)) if t.ends_with('s') && t[..t.len() - 1].parse::<f64>().is_ok() => {
                format!("{head} DONE")
            }
            _ => l.to_owned(),
        })
        .collect()
}

#[test]
fn plain_progress_is_a_line_per_event_in_order() {
    let Some(host) = Instance::with_busybox("bprog", &[]) else {
        return;
    };
    let ctx = context(&format!(
        "FROM {BUSYBOX}\nRUN echo one && echo two\nCOPY a.txt /a.txt\n"
    ));
    // Not a terminal: `auto` is plain, on stderr; stdout stays empty.
    let out = build(&host, ctx.path(), &["-t", "localhost/bprog/app:1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains('\x1b'), "escapes in plain output: {err:?}");
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("#4 writing image "))
        .and_then(|l| l.strip_suffix(" done"))
        .unwrap_or_else(|| panic!("no image id: {err}"))
        .to_owned();
    assert_eq!(
        events(&err),
        [
            format!("#1 [1/3] FROM {BUSYBOX}"),
            "#1 DONE".into(),
            "#2 [2/3] RUN echo one && echo two".into(),
            "#2 one".into(),
            "#2 two".into(),
            "#2 DONE".into(),
            "#3 [3/3] COPY a.txt /a.txt".into(),
            "#3 DONE".into(),
            "#4 exporting to image".into(),
            format!("#4 writing image {id} done"),
            "#4 naming to localhost/bprog/app:1 done".into(),
            "#4 DONE".into(),
        ],
        "{err}"
    );

    // Again, from the cache, asked for by name.
    let out = build(&host, ctx.path(), &["--progress", "plain"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        events(&err),
        [
            format!("#1 [1/3] FROM {BUSYBOX}"),
            "#1 DONE".into(),
            "#2 [2/3] RUN echo one && echo two".into(),
            "#2 CACHED".into(),
            "#3 [3/3] COPY a.txt /a.txt".into(),
            "#3 CACHED".into(),
            "#4 exporting to image".into(),
            format!("#4 writing image {id} done"),
            "#4 DONE".into(),
        ],
        "{err}"
    );

    // Quiet: the ID on stdout, nothing else; `-q` and `--progress quiet`.
    for args in [&["-q"][..], &["--progress", "quiet"]] {
        let out = build(&host, ctx.path(), args);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out));
    }

    // A stage name and a failing RUN: its output, then the error.
    let failing = context(&format!(
        "FROM {BUSYBOX} AS first\nRUN echo first\nFROM first AS broken\nRUN echo about to fail; exit 3\n"
    ));
    let out = build(&host, failing.path(), &["--progress", "plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let ev = events(&err);
    let at = |l: &str| {
        ev.iter()
            .position(|e| e == l)
            .unwrap_or_else(|| panic!("{l:?} missing: {err}"))
    };
    assert!(at(&format!("#1 [first 1/2] FROM {BUSYBOX} AS first")) < at("#2 first"));
    assert!(
        at("#3 [broken 1/2] FROM first AS broken")
            < at("#4 [broken 2/2] RUN echo about to fail; exit 3")
    );
    assert!(
        at("#4 about to fail")
            < at(
                "#4 ERROR: the command '/bin/sh -c echo about to fail; exit 3' returned a non-zero code: 3"
            )
    );
    assert!(
        err.contains("returned a non-zero code: 3"),
        "the error names the code: {err}"
    );
    assert!(!err.contains("exporting to image"), "{err}");
}

#[test]
fn a_terminal_shows_steps_live_and_a_failure_whole() {
    if !require(&["script"], true) {
        return;
    }
    let Some(host) = Instance::with_busybox("bprot", &[]) else {
        return;
    };
    let ctx = context(&format!(
        "FROM {BUSYBOX}\nRUN printf '\\033]0;pwned\\007\\033[2J\\033[31mred\\n'; for i in $(seq 1 4); do echo tick-$i; done; sleep 1\nCOPY a.txt /a.txt\n"
    ));
    let (out, code) = build_on_a_terminal(&host, ctx.path(), &["-t", "localhost/bprot/app:1"]);
    assert_eq!(code, Some(0), "{out}");
    // Redrawn in place: the cursor goes up over the live view.
    assert!(
        out.contains("\x1b[") && out.contains("A\r\x1b[J"),
        "{out:?}"
    );
    // The RUN's escapes are shown, not obeyed.
    for evil in ["\x1b]0;pwned", "\x1b[2J", "\x1b[31m", "\x07"] {
        assert!(
            !out.contains(evil),
            "{evil:?} reached the terminal: {out:?}"
        );
    }
    assert!(out.contains("\u{fffd}]0;pwned\u{fffd}"), "{out:?}");
    // The live tail showed the RUN's output as it came.
    assert!(out.contains("  > tick-4"), "{out:?}");
    // The final list: every step with its time, after the last redraw.
    let last = out
        .rfind("FINISHED")
        .unwrap_or_else(|| panic!("no final list: {out:?}"));
    let list = &out[last..];
    for step in [
        format!("#1 [1/3] FROM {BUSYBOX}"),
        "#2 [2/3] RUN printf".into(),
        "#3 [3/3] COPY a.txt /a.txt".into(),
        "#4 exporting to image".into(),
    ] {
        let line = list
            .lines()
            .find(|l| l.starts_with(&step))
            .unwrap_or_else(|| panic!("{step} not in the final list: {list:?}"));
        assert!(line.contains("DONE "), "{line:?}");
    }
    assert!(!list.contains("  > "), "tails in the final list: {list:?}");

    // `--progress plain` on a terminal: plain.
    let (out, code) = build_on_a_terminal(&host, ctx.path(), &["--progress", "plain"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("#2 CACHED"), "{out:?}");
    assert!(!out.contains("\x1b[J"), "{out:?}");

    // A failure: the whole output of the step, not only its tail.
    let failing = context(&format!(
        "FROM {BUSYBOX}\nRUN for i in $(seq 1 20); do echo line-$i; done; exit 3\n"
    ));
    let (out, code) = build_on_a_terminal(&host, failing.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    for i in 1..=20 {
        assert!(
            out.contains(&format!("#2 line-{i}\r\n")),
            "line-{i}: {out:?}"
        );
    }
    assert!(out.contains("returned a non-zero code: 3"), "{out:?}");
    assert!(out.contains("FAILED"), "{out:?}");
}
