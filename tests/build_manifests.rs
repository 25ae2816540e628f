//! `[images.X] build = …`: the images the manifests build, end to end on
//! the real engine. `moor apply` builds, a second apply builds and changes
//! nothing, a changed file of the context rebuilds and replaces the
//! container, an ignored one does not; a failing `RUN` leaves the running
//! container on its image and is reported (apply's exit, and the agent's
//! log, `/status` condition and metrics); a context out of the source is
//! refused, and a link in one is copied as a link.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{http_get, text, wait_for};

const BUSYBOX: &str = "localhost/moor-example/busybox:1";

/// A source directory: `stack.toml` building `localhost/PROJECT/app:dev`
/// from `./app` into container `app`, which prints its page and greeting.
fn source(project: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("source dir");
    let app = dir.path().join("app");
    fs::create_dir_all(&app).expect("mkdir app");
    fs::write(
        dir.path().join("stack.toml"),
        format!(
            "[images.app]\nref = \"localhost/{project}/app:dev\"\n\
             build = {{ context = \"./app\", args = {{ GREETING = \"hi\" }} }}\n\n\
             [containers.app]\nimage = \"app\"\nnetwork_mode = \"none\"\nrestart = \"always\"\n"
        ),
    )
    .expect("write manifest");
    fs::write(app.join("Dockerfile"), dockerfile("")).expect("write Dockerfile");
    fs::write(app.join("page.txt"), "page one\n").expect("write page");
    fs::write(app.join(".dockerignore"), "*.log\n").expect("write .dockerignore");
    dir
}

fn dockerfile(extra: &str) -> String {
    format!(
        "FROM {BUSYBOX}\nARG GREETING\nCOPY page.txt /page.txt\n\
         RUN echo \"greeting=$GREETING\" > /greeting\n{extra}\
         CMD [\"sh\", \"-c\", \"cat /page.txt /greeting; echo ready; exec sleep 3600\"]\n"
    )
}

fn apply(host: &Instance, project: &str, dir: &Path) -> std::process::Output {
    host.moor(&["apply", "-p", project, dir.to_str().expect("utf-8")])
}

fn plan(host: &Instance, project: &str, dir: &Path) -> (Option<i32>, String) {
    let out = host.moor(&["plan", "-p", project, dir.to_str().expect("utf-8")]);
    (out.status.code(), text(&out))
}

/// Waits until container `name`'s log shows `what`.
fn log_shows(host: &Instance, name: &str, what: &str) {
    wait_for(
        &format!("{name}'s log to show {what:?}"),
        Duration::from_secs(60),
        || text(&host.moor(&["logs", name])).contains(what),
    );
}

#[test]
fn apply_builds_once_and_again_only_when_the_context_changes() {
    let project = "bldm";
    let Some(mut host) = Instance::with_busybox(project, &[]) else {
        return;
    };
    host.owns(project);
    let src = source(project);
    let dir = src.path();

    let (code, out) = plan(&host, project, dir);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "build image localhost/{project}/app:dev (not in the image store)"
        )) || out.contains(&format!(
            "* image localhost/{project}/app:dev (not in the image store)"
        )),
        "{out}"
    );
    let first = apply(&host, project, dir);
    assert!(first.status.success(), "{}", text(&first));
    let first = text(&first);
    assert!(
        first.contains(&format!("build image localhost/{project}/app:dev")),
        "{first}"
    );
    log_shows(&host, "app", "page one");
    log_shows(&host, "app", "greeting=hi");
    let pid = host.pid("app").expect("app runs");
    assert!(
        host.moor_ok(&["images"])
            .contains(&format!("localhost/{project}/app"))
    );

    // Nothing changed: nothing is built, nothing changes.
    let again = apply(&host, project, dir);
    assert!(again.status.success(), "{}", text(&again));
    let again = text(&again);
    assert!(!again.contains("build image"), "{again}");
    assert!(again.contains("up to date"), "{again}");
    assert_eq!(host.pid("app"), Some(pid));
    let (code, out) = plan(&host, project, dir);
    assert_eq!(code, Some(0), "{out}");

    // A file `.dockerignore` leaves out, or a new mtime, is not a change.
    fs::write(dir.join("app/debug.log"), "noise\n").expect("write log");
    let page = fs::File::options()
        .write(true)
        .open(dir.join("app/page.txt"))
        .expect("open page");
    page.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .expect("touch page");
    let (code, out) = plan(&host, project, dir);
    assert_eq!(code, Some(0), "{out}");

    // A file of the context changed: the plan says which; apply rebuilds
    // and replaces the container.
    fs::write(dir.join("app/page.txt"), "page two\n").expect("write page");
    let (code, out) = plan(&host, project, dir);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("build context changed: page.txt"), "{out}");
    let rebuilt = apply(&host, project, dir);
    assert!(rebuilt.status.success(), "{}", text(&rebuilt));
    let rebuilt = text(&rebuilt);
    assert!(
        rebuilt.contains("build context changed: page.txt"),
        "{rebuilt}"
    );
    assert!(rebuilt.contains("replace container app"), "{rebuilt}");
    let new_pid = host.pid("app").expect("app runs");
    assert_ne!(new_pid, pid, "the container is replaced");
    log_shows(&host, "app", "page two");

    // The build args changed.
    let stack = dir.join("stack.toml");
    let manifest = fs::read_to_string(&stack).expect("read manifest");
    fs::write(&stack, manifest.replace("\"hi\"", "\"hello\"")).expect("write manifest");
    let (code, out) = plan(&host, project, dir);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("build args changed: GREETING"), "{out}");
    let args = apply(&host, project, dir);
    assert!(args.status.success(), "{}", text(&args));
    log_shows(&host, "app", "greeting=hello");

    // A failing RUN: apply fails and says why; the container runs on, on
    // its image.
    let pid = host.pid("app").expect("app runs");
    fs::write(
        dir.join("app/Dockerfile"),
        dockerfile("RUN echo about to fail; exit 7\n"),
    )
    .expect("write Dockerfile");
    let failed = apply(&host, project, dir);
    assert!(!failed.status.success(), "{}", text(&failed));
    let failed = text(&failed);
    assert!(failed.contains("returned a non-zero code: 7"), "{failed}");
    assert!(
        failed.contains("about to fail"),
        "the step's output: {failed}"
    );
    assert!(!failed.contains("replace container"), "{failed}");
    assert_eq!(host.pid("app"), Some(pid), "the container keeps running");
    assert!(host.running("app"));
    let (code, out) = plan(&host, project, dir);
    assert_eq!(code, Some(2), "the build is still due: {out}");
    assert!(out.contains("Dockerfile changed"), "{out}");
}

#[test]
fn the_agent_reports_a_failed_build_and_keeps_the_container() {
    let project = "bldg";
    let Some(mut host) = Instance::with_busybox(project, &[]) else {
        return;
    };
    host.owns(project);
    let src = source(project);
    let dir = src.path();
    host.start_agent(&[
        "--source",
        dir.to_str().expect("utf-8"),
        "-p",
        project,
        // No periodic pass helps: an edit of the context must trigger one.
        "--resync",
        "10m",
    ]);
    log_shows(&host, "app", "page one");
    let pid = host.pid("app").expect("app runs");
    wait_for(
        "a successful build in the metrics",
        Duration::from_secs(30),
        || {
            http_get(host.port, "/metrics")
                .is_some_and(|(_, m)| m.contains("moor_build_total{result=\"success\"} 1"))
        },
    );

    fs::write(
        dir.join("app/Dockerfile"),
        dockerfile("RUN echo about to fail; exit 7\n"),
    )
    .expect("write Dockerfile");
    let image = format!("localhost/{project}/app:dev");
    wait_for(
        "the failed build in /status",
        Duration::from_secs(60),
        || {
            host.status()["resources"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    r["kind"] == "image"
                        && r["name"] == image.as_str()
                        && r["status"] == "Failed"
                        && r["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("returned a non-zero code: 7"))
                })
            })
        },
    );
    let (_, metrics) = http_get(host.port, "/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("moor_build_total{result=\"failure\"} ")),
        "{metrics}"
    );
    assert!(
        metrics.contains("moor_build_duration_seconds_count"),
        "{metrics}"
    );
    let log = host.agent_log();
    assert!(log.contains("returned a non-zero code: 7"), "{log}");
    assert!(
        log.contains("about to fail"),
        "the step's output is logged: {log}"
    );
    assert_eq!(host.pid("app"), Some(pid), "the container keeps running");

    // Fixed: built again, and the container replaced by one on the new image.
    fs::write(dir.join("app/Dockerfile"), dockerfile("")).expect("write Dockerfile");
    fs::write(dir.join("app/page.txt"), "page three\n").expect("write page");
    log_shows(&host, "app", "page three");
    assert_ne!(host.pid("app"), Some(pid));
}

#[test]
fn a_context_out_of_the_source_is_refused_and_links_in_it_stay_links() {
    let project = "bldh";
    let Some(mut host) = Instance::with_busybox(project, &[]) else {
        return;
    };
    host.owns(project);
    let src = source(project);
    let dir = src.path();
    let stack = dir.join("stack.toml");
    let manifest = fs::read_to_string(&stack).expect("read manifest");

    // A context that climbs out of the source, or a link that leads out:
    // refused at its field, and nothing happens on the host.
    let outside = tempfile::tempdir().expect("outside dir");
    fs::write(outside.path().join("Dockerfile"), dockerfile("")).expect("write");
    std::os::unix::fs::symlink(outside.path(), dir.join("linked")).expect("symlink");
    for context in ["../..", "./linked"] {
        fs::write(
            &stack,
            manifest.replace("\"./app\"", &format!("\"{context}\"")),
        )
        .expect("write manifest");
        let out = apply(&host, project, dir);
        assert_eq!(out.status.code(), Some(1), "{context}: {}", text(&out));
        let err = text(&out);
        assert!(
            err.contains("stack.toml:3:21: error: images.app.build.context: build context"),
            "{context}: {err}"
        );
        assert!(
            err.contains("outside the source's tree"),
            "{context}: {err}"
        );
        assert!(host.containers().is_empty(), "{context}");
        assert!(
            !host
                .moor_ok(&["images"])
                .contains(&format!("localhost/{project}/"))
        );
    }

    // (A link out of the source anywhere in it is refused by the loader
    // as well.) A link in the context to a file of the source outside the
    // context is copied as the link: what it points at never reaches the
    // image.
    fs::remove_file(dir.join("linked")).expect("remove link");
    fs::write(&stack, &manifest).expect("write manifest");
    std::os::unix::fs::symlink("../stack.toml", dir.join("app/leak")).expect("symlink");
    fs::write(
        dir.join("app/Dockerfile"),
        format!(
            "FROM {BUSYBOX}\nCOPY . /ctx/\n\
             CMD [\"sh\", \"-c\", \"echo link=$(readlink /ctx/leak); cat /ctx/leak; echo ready; exec sleep 3600\"]\n"
        ),
    )
    .expect("write Dockerfile");
    let out = apply(&host, project, dir);
    assert!(out.status.success(), "{}", text(&out));
    log_shows(&host, "app", "ready");
    let log = text(&host.moor(&["logs", "app"]));
    assert!(log.contains("link=../stack.toml"), "{log}");
    assert!(
        !log.contains("[images.app]"),
        "a file outside the context leaked: {log}"
    );
}
