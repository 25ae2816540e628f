//! Corpus of manifests and `moor validate` behaviour.
//!
//! `tests/corpus/invalid/` holds invalid manifests, each with its golden
//! diagnostics next to it: `case.toml` + `case.toml.expected`, or for a case
//! that needs several files, `case/` + `case.expected`. A golden is the exact
//! stderr of `moor validate tests/corpus/invalid/CASE` run from the repository
//! root, so it holds relative, machine-independent paths.
//!
//! `MOOR_BLESS=1 cargo test --test tests validate::` rewrites the goldens from
//! what moor prints now; review the diff by eye before committing it.

use std::path::PathBuf;
use std::process::Output;

use crate::common::{copy_tree, moor_in, repo_root};

/// The corpus, relative to the repository root.
const CORPUS: &str = "tests/corpus/invalid";
/// Issue 2 asks for at least 40 invalid manifests; we keep more.
const MIN_CASES: usize = 45;
const MIN_PER_FORMAT: usize = 15;

/// One corpus case.
struct Case {
    /// The case's file or directory name inside the corpus.
    name: String,
    /// Its golden file, absolute.
    golden: PathBuf,
}

impl Case {
    /// The case's path relative to the repository root, as moor is given it.
    fn rel(&self) -> String {
        format!("{CORPUS}/{}", self.name)
    }
}

fn is_manifest(name: &str) -> bool {
    [".toml", ".yaml", ".yml"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Every case of the corpus, in name order. Panics on a file that is neither
/// a case nor a golden, and on a golden without its case.
fn cases() -> Vec<Case> {
    let dir = repo_root().join(CORPUS);
    let mut names: Vec<(String, bool)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            let e = e.expect("corpus entry");
            let is_dir = e.file_type().expect("file type").is_dir();
            (
                e.file_name().into_string().expect("UTF-8 corpus name"),
                is_dir,
            )
        })
        .collect();
    names.sort();
    let mut cases = Vec::new();
    for (name, is_dir) in &names {
        if let Some(case) = name.strip_suffix(".expected") {
            assert!(
                names.iter().any(|(n, _)| n == case),
                "{CORPUS}/{name} is a golden without a case named {case}"
            );
            continue;
        }
        assert!(
            *is_dir || is_manifest(name),
            "{CORPUS}/{name} is neither a case (a manifest or a directory) nor a golden (*.expected)"
        );
        cases.push(Case {
            name: name.clone(),
            golden: dir.join(format!("{name}.expected")),
        });
    }
    cases
}

fn blessing() -> bool {
    std::env::var_os("MOOR_BLESS").is_some_and(|v| v == "1")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What was wrong with one run, or `None` when it matched the golden.
fn mismatch(case: &Case, what: &str, out: &Output, golden: &str) -> Option<String> {
    let stderr = text(&out.stderr);
    if out.status.code() == Some(1) && stderr == golden {
        return None;
    }
    Some(format!(
        "--- {} ({what}): exit {:?}\n--- expected stderr:\n{golden}--- actual stderr:\n{stderr}--- stdout:\n{}",
        case.rel(),
        out.status.code(),
        text(&out.stdout),
    ))
}

fn fail_if_any(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_is_large_and_mixes_both_formats() {
    let cases = cases();
    let count = |ext: &[&str]| {
        cases
            .iter()
            .filter(|c| ext.iter().any(|e| c.name.ends_with(e)))
            .count()
    };
    let (toml, yaml) = (count(&[".toml"]), count(&[".yaml", ".yml"]));
    assert!(
        cases.len() >= MIN_CASES,
        "only {} corpus cases, want {MIN_CASES}",
        cases.len()
    );
    assert!(toml >= MIN_PER_FORMAT, "only {toml} TOML cases");
    assert!(yaml >= MIN_PER_FORMAT, "only {yaml} YAML cases");
    assert!(
        cases.iter().any(|c| !is_manifest(&c.name)),
        "no directory case"
    );
}

/// Every case exits 1 and prints exactly its golden diagnostics.
#[test]
fn corpus_cases_print_their_golden_diagnostics() {
    let root = repo_root();
    let mut failures = Vec::new();
    for case in cases() {
        let out = moor_in(&root, &["validate", &case.rel()]);
        if blessing() {
            assert_eq!(out.status.code(), Some(1), "{} must be invalid", case.rel());
            std::fs::write(&case.golden, &out.stderr).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&case.golden) {
            Ok(golden) => failures.extend(mismatch(&case, "alone", &out, &golden)),
            Err(e) => failures.push(format!(
                "--- {}: cannot read its golden {}: {e} (write it with MOOR_BLESS=1, then review it)",
                case.rel(),
                case.golden.display()
            )),
        }
    }
    fail_if_any(failures);
}

#[test]
fn the_examples_are_valid() {
    let out = moor_in(&repo_root(), &["validate", "examples/manifests"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "valid manifests print nothing on stderr: {}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line, got {stdout:?}");
    let summary = lines[0];
    assert!(summary.starts_with("valid: "), "{summary}");
    for kind in ["image", "network", "volume", "container"] {
        assert!(
            summary.contains(kind),
            "the summary counts {kind}s: {summary}"
        );
    }
    let files = manifest_files(&repo_root().join("examples/manifests"));
    assert!(
        summary.ends_with(&format!(" in {files} files")),
        "{files} manifest files: {summary}"
    );
}

/// How many manifests are in a directory tree.
fn manifest_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .map(|p| {
            if p.is_dir() {
                manifest_files(&p)
            } else {
                usize::from(
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(is_manifest),
                )
            }
        })
        .sum()
}

/// Acceptance: the example stack plus any one invalid case is invalid, and
/// prints that case's diagnostics, nothing more. The stack and the case are
/// copied to `TMP/tests/corpus/invalid/` and validated from `TMP`, so the
/// paths in the output are the golden's.
#[test]
fn each_case_added_to_the_examples_fails_with_its_diagnostics() {
    let root = repo_root();
    let examples = root.join("examples/manifests");
    let mut failures = Vec::new();
    for case in cases() {
        let Ok(golden) = std::fs::read_to_string(&case.golden) else {
            continue; // reported by corpus_cases_print_their_golden_diagnostics
        };
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join(CORPUS);
        copy_tree(&examples, &dir);
        let src = root.join(case.rel());
        if src.is_dir() {
            copy_tree(&src, &dir.join(&case.name));
        } else {
            std::fs::copy(&src, dir.join(&case.name)).expect("copy case");
        }
        let out = moor_in(tmp.path(), &["validate", CORPUS]);
        failures.extend(mismatch(
            &case,
            "added to examples/manifests",
            &out,
            &golden,
        ));
    }
    fail_if_any(failures);
}

/// The diagnostic lines of a run, without the closing count.
fn diagnostic_lines(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter(|l| l.contains(": error: "))
        .map(str::to_string)
        .collect()
}

/// Acceptance: a file with three different mistakes gives three diagnostics in one run.
#[test]
fn three_mistakes_give_three_diagnostics() {
    for file in ["toml-three-mistakes.toml", "yaml-three-mistakes.yaml"] {
        let path = format!("{CORPUS}/{file}");
        let out = moor_in(&repo_root(), &["validate", &path]);
        assert_eq!(out.status.code(), Some(1), "{path}");
        let lines = diagnostic_lines(&out);
        assert_eq!(lines.len(), 3, "{path}: {lines:#?}");
        let mut fields: Vec<&str> = lines
            .iter()
            .map(|l| l.split(": ").nth(2).unwrap_or(""))
            .collect();
        fields.sort();
        fields.dedup();
        assert_eq!(fields.len(), 3, "three different fields: {lines:#?}");
        let mut places: Vec<&str> = lines
            .iter()
            .map(|l| l.split(": ").next().unwrap_or(""))
            .collect();
        places.dedup();
        assert_eq!(places.len(), 3, "three different places: {lines:#?}");
        assert!(
            text(&out.stderr).ends_with("\n3 errors\n"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// Mistakes in several files are all reported by one run too.
#[test]
fn every_file_of_a_run_is_reported() {
    let a = format!("{CORPUS}/toml-three-mistakes.toml");
    let b = format!("{CORPUS}/yaml-three-mistakes.yaml");
    let out = moor_in(&repo_root(), &["validate", &a, &b]);
    assert_eq!(out.status.code(), Some(1));
    let lines = diagnostic_lines(&out);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert!(
        lines[..3].iter().all(|l| l.starts_with(&a))
            && lines[3..].iter().all(|l| l.starts_with(&b)),
        "{lines:#?}"
    );
}

/// `--json` prints every diagnostic with its file, line, column, field and
/// message: the same ones, in the same order, as the text output.
#[test]
fn json_output_lists_file_line_column_field_and_message() {
    let root = repo_root();
    let path = format!("{CORPUS}/yaml-many-mistakes.yaml");
    let text_run = moor_in(&root, &["validate", &path]);
    let json_run = moor_in(&root, &["validate", "--json", &path]);
    assert_eq!(json_run.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json_run.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON: {e}\n{}", text(&json_run.stdout)));
    assert_eq!(v["valid"], false);
    let diags = v["diagnostics"].as_array().expect("a diagnostics array");
    let rendered: Vec<String> = diags
        .iter()
        .map(|d| {
            let s = |k: &str| {
                d[k].as_str()
                    .unwrap_or_else(|| panic!("{k} is a string in {d}"))
                    .to_string()
            };
            let n = |k: &str| {
                d[k].as_u64()
                    .unwrap_or_else(|| panic!("{k} is a number in {d}"))
            };
            assert_eq!(s("severity"), "error");
            assert!(!s("field").is_empty() && !s("message").is_empty(), "{d}");
            format!(
                "{}:{}:{}: error: {}: {}",
                s("file"),
                n("line"),
                n("column"),
                s("field"),
                s("message")
            )
        })
        .collect();
    assert!(rendered.len() >= 5, "{rendered:#?}");
    assert_eq!(rendered, diagnostic_lines(&text_run));

    let ok = moor_in(&root, &["validate", "--json", "examples/manifests"]);
    assert_eq!(ok.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("JSON");
    assert_eq!(v["valid"], true);
    assert_eq!(v["diagnostics"].as_array().map(Vec::len), Some(0));
}

#[test]
fn a_missing_path_is_an_error_not_a_panic() {
    let out = moor_in(&repo_root(), &["validate", "tests/corpus/does-not-exist"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "tests/corpus/does-not-exist:1:1: error: cannot read: no such file or directory\n1 error\n"
    );
}
