//! Hostile manifest trees: what the loader refuses, and that it says why
//! without reading (or quoting) what it must not.
//!
//! `tests/hostile/` holds one directory per case, each with its golden
//! diagnostics next to it (`case.expected`: the exact stderr of `moor
//! validate CASE` run from the directory holding the cases, with `--policy
//! CASE/.policy.toml` when the case has one: what a source under that
//! policy refuses; an empty one is what a git source gets). A case's
//! symbolic links are not committed — a link to `/` in moor's own
//! repository would send other tools walking the host — but listed in its
//! `symlinks` file (`NAME -> TARGET` per line) and made by the test in a
//! temporary copy of the whole corpus (so a link to `..` sees the other
//! cases, as a link out of a real repository would see the host).
//!
//! `MOOR_BLESS=1 cargo test --test tests hostile::` rewrites the goldens;
//! review the diff by eye before committing it.

use std::path::PathBuf;
use std::process::Output;

use crate::common::{copy_tree, moor_in, repo_root};

const CORPUS: &str = "tests/hostile";
/// Every secret in the corpus holds this; no output may.
const SECRET_MARK: &str = "s3cr3t";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The case names, sorted.
fn cases() -> Vec<String> {
    let dir = repo_root().join(CORPUS);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry"))
        .filter(|e| e.file_type().expect("file type").is_dir())
        .map(|e| e.file_name().into_string().expect("UTF-8 name"))
        .collect();
    names.sort();
    names
}

/// A copy of the corpus with every case's links made; returns the temp dir
/// and the directory holding the cases.
fn materialise() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("cases");
    for case in cases() {
        let from = repo_root().join(CORPUS).join(&case);
        let to = root.join(&case);
        copy_tree(&from, &to);
        let Ok(list) = std::fs::read_to_string(from.join("symlinks")) else {
            continue;
        };
        std::fs::remove_file(to.join("symlinks")).expect("remove the list");
        for line in list.lines().filter(|l| !l.trim().is_empty()) {
            let (name, target) = line
                .split_once(" -> ")
                .unwrap_or_else(|| panic!("{case}/symlinks: {line:?} is not NAME -> TARGET"));
            std::os::unix::fs::symlink(target, to.join(name))
                .unwrap_or_else(|e| panic!("{case}: link {name}: {e}"));
        }
    }
    (tmp, root)
}

fn golden(case: &str) -> PathBuf {
    repo_root().join(CORPUS).join(format!("{case}.expected"))
}

fn blessing() -> bool {
    std::env::var_os("MOOR_BLESS").is_some_and(|v| v == "1")
}

fn assert_no_secret(case: &str, what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text(bytes).contains(SECRET_MARK),
            "{case} ({what}): the {stream} quotes a secret:\n{}",
            text(bytes)
        );
    }
}

/// Every case is refused (exit 1) with exactly its golden diagnostics, in
/// text and in JSON, and no output holds a secret of the corpus.
#[test]
fn hostile_trees_are_refused_with_their_golden_diagnostics() {
    let (_tmp, root) = materialise();
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 12, "only {} hostile cases", all.len());
    for case in &all {
        let policy = format!("{case}/.policy.toml");
        let mut args = vec!["validate", case.as_str()];
        if root.join(&policy).is_file() {
            args.extend(["--policy", policy.as_str()]);
        }
        let out = moor_in(&root, &args);
        assert_no_secret(case, "text", &out);
        args.push("--json");
        let json = moor_in(&root, &args);
        assert_no_secret(case, "json", &json);
        assert_eq!(json.status.code(), Some(1), "{case} --json must be invalid");
        if blessing() {
            assert_eq!(out.status.code(), Some(1), "{case} must be invalid");
            std::fs::write(golden(case), &out.stderr).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(golden(case)).unwrap_or_else(|e| {
            panic!("{case}: no golden ({e}); write it with MOOR_BLESS=1 and review it")
        });
        let got = text(&out.stderr);
        if out.status.code() != Some(1) || got != want {
            failures.push(format!(
                "--- {case}: exit {:?}\n--- expected:\n{want}--- actual:\n{got}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same cases from a directory above them all: every case's problems
/// are reported, and no link is followed out of the tree (a link to `..`
/// from a case would otherwise read the corpus twice, and `all -> /` the
/// host).
#[test]
fn hostile_trees_under_one_root_are_not_walked_out_of() {
    let (_tmp, root) = materialise();
    let out = moor_in(&root, &["validate", "."]);
    assert_eq!(out.status.code(), Some(1));
    assert_no_secret(".", "text", &out);
    let stderr = text(&out.stderr);
    for line in stderr.lines().filter(|l| l.contains(": error: ")) {
        let file = line.split(':').next().unwrap_or("");
        assert!(
            !file.starts_with('/') && !file.starts_with(".."),
            "a diagnostic about a file outside the tree: {line}"
        );
    }
    // The links that stay inside this larger tree (`walk-link-up/up -> ..`)
    // are followed, and read nothing twice: each case's app manifest once.
    let reported = |needle: &str| stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(reported("walk-link-up/up/"), 0, "{stderr}");
    assert_eq!(
        reported("not followed: \"walk-link-to-root/all\""),
        1,
        "{stderr}"
    );
}

/// A manifest file larger than the cap is refused unread; the cap can be
/// raised from the command line.
#[test]
fn a_manifest_over_the_size_cap_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("big");
    std::fs::create_dir(&dir).unwrap();
    // A valid manifest, padded with comments to one byte over 4 MiB.
    let head = "[containers.app]\nimage = \"busybox\"\n";
    let mut body = String::from(head);
    while body.len() < (4 << 20) + 1 - 2 {
        body.push_str("# padding\n");
    }
    body.truncate((4 << 20) + 1 - 2);
    body.push_str("\n\n");
    assert_eq!(body.len(), (4 << 20) + 1);
    std::fs::write(dir.join("app.toml"), &body).unwrap();

    let out = moor_in(tmp.path(), &["validate", "big"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "big/app.toml:1:1: error: the file is larger than the 4 MiB limit for a manifest \
         (4194305 bytes); nothing in it was read (raise the limit with --max-manifest-size \
         or max_manifest_size)\n1 error\n"
    );
    let raised = moor_in(
        tmp.path(),
        &["validate", "--max-manifest-size", "5m", "big"],
    );
    assert_eq!(raised.status.code(), Some(0), "{}", text(&raised.stderr));
    // plan and apply take it too (and fail the same way, before touching anything).
    let state = tmp.path().join("state");
    let plan = moor_in(
        tmp.path(),
        &["--state-dir", state.to_str().unwrap(), "plan", "big"],
    );
    assert_eq!(plan.status.code(), Some(1));
    assert!(
        text(&plan.stderr).contains("larger than the 4 MiB limit"),
        "{}",
        text(&plan.stderr)
    );
    assert!(!state.exists(), "a refused plan created state");
}

/// A file with thousands of mistakes: a hundred are shown, and a count of
/// the rest; the total is right.
#[test]
fn at_most_a_hundred_diagnostics_per_file_are_shown() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut body = String::new();
    for i in 0..5000 {
        body.push_str(&format!("[containers.c{i}]\nimage = {i}\n"));
    }
    std::fs::write(tmp.path().join("many.toml"), body).unwrap();
    std::fs::write(
        tmp.path().join("other.yaml"),
        "containers:\n  a: {image: 1}\n",
    )
    .unwrap();
    let out = moor_in(tmp.path(), &["validate", "many.toml", "other.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        100 + 1 + 1 + 1,
        "{}",
        &stderr[..2000.min(stderr.len())]
    );
    assert!(lines[..100].iter().all(|l| l.starts_with("many.toml:")));
    assert_eq!(
        lines[100],
        "many.toml:200:9: error: 4900 more errors in this file are not shown (at most 100 are kept per file)"
    );
    assert!(lines[101].starts_with("other.yaml:2:14: error: containers.a.image: "));
    assert_eq!(lines[102], "5001 errors");

    let json = moor_in(tmp.path(), &["validate", "--json", "many.toml"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(v["diagnostics"].as_array().map(Vec::len), Some(101));
}
