//! `moor convert`: every case of the Compose corpus and `examples/manifests`
//! converted to moor's TOML and YAML and to Compose loads back to the same
//! spec hashes, the output is stable, and docker-compose reads the Compose
//! output.

mod common;

use std::path::Path;
use std::process::Command;

use common::{base, cases, hashes, load};
use moor_convert::{Format, convert};

/// Loads `text` as the file `name` in `dir` (bind sources next to it are read from there).
fn reload(dir: &Path, name: &str, text: &str) -> moor_spec::DesiredState {
    moor_spec::load_texts(&[(dir.join(name), text.to_string())])
        .unwrap_or_else(|d| panic!("{name} should load:\n{d}\n{text}"))
}

#[test]
fn moor_formats_load_back_to_the_same_hashes() {
    for (case, path) in cases() {
        let state = load(&path);
        let dir = base(&path);
        let want = hashes(&state, true);
        for (format, name) in [(Format::Toml, "out.toml"), (Format::Yaml, "out.yaml")] {
            let (text, _) = convert(&state, &dir, format);
            let got = reload(&dir, name, &text);
            assert_eq!(hashes(&got, true), want, "{case} as {name}:\n{text}");
            assert!(got.warnings.is_empty(), "{case}: {}", got.warnings);
            // Same input, same bytes.
            assert_eq!(
                convert(&state, &dir, format).0,
                text,
                "{case}: {name} unstable"
            );
            assert_eq!(
                convert(&got, &dir, format).0,
                text,
                "{case}: {name} not a fixed point"
            );
        }
    }
}

#[test]
fn compose_output_loads_back_to_the_same_hashes() {
    for (case, path) in cases() {
        let state = load(&path);
        let dir = base(&path);
        // Compose has no image entries: those are compared through the
        // containers' hashes, which cover the image reference.
        let want = hashes(&state, false);
        let (text, _) = convert(&state, &dir, Format::Compose);
        // Read back under the Compose name an override file beside it
        // (already in the output) does not go with.
        let overridden = moor_spec::compose::OVERRIDE_NAMES
            .iter()
            .any(|n| dir.join(n).exists());
        let name = if overridden {
            "docker-compose.yaml"
        } else {
            "compose.yaml"
        };
        let got = reload(&dir, name, &text);
        assert!(got.warnings.is_empty(), "{case}: {}\n{text}", got.warnings);
        assert_eq!(hashes(&got, false), want, "{case} as compose:\n{text}");
        assert_eq!(
            convert(&state, &dir, Format::Compose).0,
            text,
            "{case}: unstable"
        );
        // moor → compose → moor → toml gives what moor → toml gives, but
        // for the image entries Compose cannot hold.
        let again = convert(&got, &dir, Format::Toml).0;
        let back = reload(&dir, "again.toml", &again);
        assert_eq!(hashes(&back, false), want, "{case}: compose → toml");
        // A state without image entries (any Compose file's) is a fixed point.
        if state.images.is_empty() {
            assert_eq!(
                convert(&got, &dir, Format::Compose).0,
                text,
                "{case}: not a fixed point"
            );
        }
    }
}

#[test]
fn the_compose_output_of_examples_keeps_what_compose_cannot_say_as_notes() {
    let path = common::root().join("examples/manifests");
    let state = load(&path);
    let (_, notes) = convert(&state, &path, Format::Compose);
    let notes: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("images.busybox: Compose has no image entries")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("containers.web.healthcheck.http:")),
        "{notes:?}"
    );
    // moor's own formats say everything.
    assert_eq!(convert(&state, &path, Format::Toml).1, vec![]);
}

#[test]
fn dollars_are_escaped_for_compose_interpolation() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[containers.a]\nimage = \"busybox\"\ncommand = [\"sh\", \"-c\", \"echo $HOME ${X:-y} $$\"]\nenv = { A = \"$B\" }\n";
    let state = reload(dir.path(), "m.toml", text);
    let (out, _) = convert(&state, dir.path(), Format::Compose);
    assert!(out.contains("\"echo $$HOME $${X:-y} $$$$\""), "{out}");
    let back = reload(dir.path(), "compose.yaml", &out);
    assert_eq!(hashes(&back, false), hashes(&state, false));
    assert_eq!(back.containers["a"].spec.env["A"], "$B");
}

/// Whether `docker-compose` runs; under CI=true it must.
fn docker_compose_present() -> bool {
    let present = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "docker-compose is not installed: CI must have it (see .ci/run)"
        );
        eprintln!("docker-compose is not installed: the Compose output is not checked against it");
    }
    present
}

#[test]
fn docker_compose_config_accepts_the_compose_output() {
    if !docker_compose_present() {
        return;
    }
    for (case, path) in cases() {
        let state = load(&path);
        let tmp = tempfile::tempdir().unwrap();
        // Written away from the case: bind sources are absolute.
        let (text, _) = convert(&state, tmp.path(), Format::Compose);
        let file = tmp.path().join("compose.yaml");
        std::fs::write(&file, &text).unwrap();
        let out = Command::new("docker-compose")
            .arg("-f")
            .arg(&file)
            .arg("config")
            .current_dir(tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{case}: docker-compose config refused:\n{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        // And moor reads it back, absolute binds and all — but not an
        // absolute build context (a context must lie inside the source),
        // which is a note of the conversion.
        let built = state.images.values().any(|i| i.spec.build.is_some());
        if built {
            assert!(
                text.contains("build:"),
                "{case}: the build is written\n{text}"
            );
            continue;
        }
        let got = reload(tmp.path(), "compose.yaml", &text);
        assert_eq!(
            got.containers.keys().collect::<Vec<_>>(),
            state.containers.keys().collect::<Vec<_>>(),
            "{case}"
        );
    }
}

#[test]
fn secrets_are_notes_and_their_values_never_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "hunter2-rt").unwrap();
    std::fs::write(
        dir.path().join("app.toml"),
        "[secrets.pw]\nfile = \"pw\"\n[containers.a]\nimage = \"busybox\"\nsecrets = [\"pw\"]\n",
    )
    .unwrap();
    let state = moor_spec::load(&[dir.path()]).unwrap();
    for format in [Format::Toml, Format::Yaml, Format::Compose] {
        let (text, notes) = convert(&state, dir.path(), format);
        assert!(!text.contains("hunter2"), "{text}");
        let notes: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("containers.a.secrets[pw]: not converted")),
            "{notes:?}"
        );
    }
}

/// `[images] verify`: kept by moor's formats (the key written relative to
/// the output, read back to the same spec), a note where the format has
/// no such check (Compose), never dropped silently.
#[test]
fn a_verify_key_is_kept_or_noted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(
        dir.path().join("keys/cosign.pub"),
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9QXc8dxDb/lNblZ2K9QIWfMry0Yr\n7ZkNhOv+U64T/CIFgNHUqCG/rpZu/zvEPMFD4qf/v5CyNfhqbwjWA/uVIA==\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("app.toml"),
        "[images.app]\nref = \"registry.example.com/team/app:1\"\nverify = { key = \"keys/cosign.pub\" }\n[containers.a]\nimage = \"app\"\n",
    )
    .unwrap();
    let state = moor_spec::load(&[dir.path()]).unwrap();
    let want = state.images["app"].hash.clone();
    for (format, name) in [(Format::Toml, "out.toml"), (Format::Yaml, "out.yaml")] {
        let (text, notes) = convert(&state, dir.path(), format);
        assert!(text.contains("./keys/cosign.pub"), "{name}:\n{text}");
        assert!(notes.is_empty(), "{name}: {notes:?}");
        let got = moor_spec::load_texts(&[(dir.path().join(name), text.clone())]);
        let got = got.unwrap_or_else(|d| panic!("{name}:\n{d}\n{text}"));
        assert_eq!(got.images["app"].hash, want, "{name}:\n{text}");
        assert_eq!(
            got.images["app"].spec.verify,
            state.images["app"].spec.verify
        );
    }
    let (text, notes) = convert(&state, dir.path(), Format::Compose);
    assert!(!text.contains("cosign.pub"), "{text}");
    let notes: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("images.app.verify: Compose does not check image signatures")),
        "{notes:?}"
    );
}
