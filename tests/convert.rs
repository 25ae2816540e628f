//! `moor convert` and `moor export kubernetes` as a user runs them (the
//! conversions themselves are tested in `convert/tests/`).

use crate::common::{copy_tree, moor_in, repo_root};

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "moor failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn convert_picks_the_other_format_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_tree(&repo_root().join("tests/compose/web-db-cache"), dir);
    std::fs::remove_file(dir.join("config.expected.yaml")).unwrap();
    // A Compose file becomes moor's TOML by default…
    let toml = stdout(&moor_in(dir, &["convert", "compose.yaml"]));
    assert!(toml.contains("[containers.web]"), "{toml}");
    // …and moor's manifests a Compose file, stable byte for byte.
    std::fs::remove_file(dir.join("compose.yaml")).unwrap();
    std::fs::write(dir.join("stack.toml"), &toml).unwrap();
    let compose = stdout(&moor_in(dir, &["convert", "."]));
    assert!(compose.starts_with("services:\n"), "{compose}");
    assert_eq!(stdout(&moor_in(dir, &["convert", "."])), compose);
    // Back again: the same TOML.
    std::fs::remove_file(dir.join("stack.toml")).unwrap();
    std::fs::write(dir.join("compose.yaml"), &compose).unwrap();
    let back = stdout(&moor_in(dir, &["convert", "--to", "toml", "."]));
    assert_eq!(back, toml);
    let yaml = stdout(&moor_in(dir, &["convert", "--to", "yaml", "."]));
    assert!(yaml.starts_with("volumes:\n"), "{yaml}");
}

#[test]
fn export_kubernetes_writes_one_file_per_object_and_strict_refuses() {
    let root = repo_root();
    let fixture = root.join("convert/tests/fixtures/kitchen-sink");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("k8s");
    let out = moor_in(
        &fixture,
        &[
            "export",
            "kubernetes",
            "-o",
            out_dir.to_str().unwrap(),
            "--namespace",
            "shop",
            "--service-type",
            "NodePort",
            ".",
        ],
    );
    stdout(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: containers.web.mounts[/host-log]: host path /var/log"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: containers.hostnet.network_mode:"),
        "{stderr}"
    );
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    for f in [
        "deployment-web.yaml",
        "service-web.yaml",
        "service-web-published.yaml",
        "job-migrate.yaml",
        "persistentvolumeclaim-shared.yaml",
        "secret-secret-token-txt.yaml",
    ] {
        assert!(files.contains(&f.to_string()), "{f} not in {files:?}");
    }
    assert!(
        files.iter().any(|f| f.starts_with("statefulset-db-main-")),
        "{files:?}"
    );
    let svc = std::fs::read_to_string(out_dir.join("service-web-published.yaml")).unwrap();
    assert!(
        svc.contains("namespace: \"shop\"") && svc.contains("type: \"NodePort\""),
        "{svc}"
    );
    assert!(svc.contains("nodePort: 30080"), "{svc}");
    // --strict: an error per field, nothing written.
    let strict_dir = tmp.path().join("strict");
    let out = moor_in(
        &fixture,
        &[
            "export",
            "kubernetes",
            "--strict",
            "-o",
            strict_dir.to_str().unwrap(),
            ".",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: containers.web.mounts[/host-log]: host path"),
        "{stderr}"
    );
    assert!(!strict_dir.exists());
    // Without -o: one stream on stdout, the same bytes twice.
    let a = stdout(&moor_in(&fixture, &["export", "kubernetes", "."]));
    let b = stdout(&moor_in(&fixture, &["export", "kubernetes", "."]));
    assert!(a.starts_with("---\napiVersion: "), "{a}");
    assert_eq!(a, b);
}
