//! `moor build`: Dockerfiles built on moor's own engine from the example's
//! busybox image, then run by `moor apply` — multi-stage builds, `RUN`
//! layers with whiteouts and opaque directories, the image config applied,
//! the cache (hits, a changed `COPY` source, `.dockerignore`), and hostile
//! contexts and `RUN`s that must stay inside.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::instance::Instance;
use crate::common::{text, wait_for};

const BUSYBOX: &str = "localhost/moor-example/busybox:1";

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("context dir");
    for (path, content) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, content).expect("write context file");
    }
    dir
}

fn build(host: &Instance, ctx: &Path, args: &[&str]) -> Output {
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    a.push(ctx.to_str().expect("utf-8"));
    host.moor(&a)
}

/// `text` (a build's plain progress, `#N …` lines) with each line's `#N `
/// removed: a `RUN`'s output as it printed it.
pub(crate) fn unprefixed(text: &str) -> String {
    text.lines()
        .map(|l| match l.split_once(' ') {
            Some((n, rest))
                if n.strip_prefix('#')
                    .is_some_and(|n| n.parse::<usize>().is_ok()) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `moor build`'s output, progress included, [`unprefixed`].
#[track_caller]
fn build_ok(host: &Instance, ctx: &Path, args: &[&str]) -> String {
    let out = build(host, ctx, args);
    assert!(
        out.status.success(),
        "moor build {args:?} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    unprefixed(&text(&out))
}

fn apply(host: &Instance, project: &str, manifest: &str) {
    let dir = tempfile::tempdir().expect("manifest dir");
    fs::write(dir.path().join("stack.toml"), manifest).expect("write manifest");
    host.moor_ok(&["apply", "-p", project, dir.path().to_str().expect("utf-8")]);
}

/// The container's log once it printed `done`.
fn report(host: &Instance, name: &str) -> String {
    let mut log = String::new();
    wait_for("the container's report", Duration::from_secs(60), || {
        log = text(&host.moor(&["logs", name]));
        log.contains("done")
    });
    log
}

#[test]
fn multi_stage_build_runs_under_apply_with_its_config() {
    let Some(host) = Instance::with_busybox("bld", &[]) else {
        return;
    };
    let ctx = context(&[
        ("app/hello.txt", "hello from the context\n"),
        ("app/secret.txt", "must not be copied\n"),
        (".dockerignore", "app/secret.txt\n"),
        (
            "Dockerfile",
            &format!(
                r#"FROM {BUSYBOX} AS builder
RUN mkdir -p /out && echo built > /out/artifact && echo temp > /out/temp
RUN rm /out/temp
FROM {BUSYBOX}
COPY --from=builder /out /app/
COPY app/ /app/
RUN echo doomed > /etc/doomed && mkdir -p /d && touch /d/old
RUN rm /etc/doomed && rm -rf /d && mkdir /d && touch /d/new
ENV GREETING="hi there" STAGE=final
WORKDIR /srv/www
USER nobody
RUN id -u > /tmp/run-uid && pwd > /tmp/run-pwd
CMD ["sh", "-c", "echo uid=$(id -u) pwd=$(pwd) greeting=$GREETING; ls /app; ls /d; cat /tmp/run-uid /tmp/run-pwd; for f in /etc/doomed /out /app/temp /app/secret.txt; do [ -e $f ] && echo present $f; done; echo done; exec sleep 3600"]
"#
            ),
        ),
    ]);
    let out = build_ok(&host, ctx.path(), &["-t", "localhost/bld/app:1"]);
    assert!(out.contains("[builder 1/3] FROM"), "{out}");
    assert!(out.contains("naming to localhost/bld/app:1 done"), "{out}");
    let images = host.moor_ok(&["images"]);
    assert!(images.contains("localhost/bld/app:1"), "{images}");

    apply(
        &host,
        "bld",
        "[containers.app]\nimage = \"localhost/bld/app:1\"\nnetwork_mode = \"none\"\n",
    );
    let log = report(&host, "app");
    assert!(
        log.contains("uid=65534 pwd=/srv/www greeting=hi there"),
        "USER, WORKDIR and ENV of the image: {log}"
    );
    let lines: Vec<&str> = log.lines().collect();
    for expected in ["artifact", "hello.txt", "new", "65534", "/srv/www"] {
        assert!(lines.contains(&expected), "{expected} missing: {log}");
    }
    assert!(
        !log.contains("present"),
        "deleted, ignored or other-stage files are in the image: {log}"
    );
    assert!(!lines.contains(&"old"), "an opaque directory leaked: {log}");
}

#[test]
fn rebuild_is_cached_until_a_copied_file_changes() {
    let Some(host) = Instance::with_busybox("bldc", &[]) else {
        return;
    };
    let ctx = context(&[
        ("first.txt", "one\n"),
        ("last.txt", "two\n"),
        ("ignored.log", "noise\n"),
        (".dockerignore", "*.log\n"),
        (
            "Dockerfile",
            &format!(
                "FROM {BUSYBOX}\nCOPY first.txt /f/\nRUN echo ran-step-3\nCOPY . /all/\nCOPY last.txt /f/\nRUN echo ran-step-6\nCMD [\"true\"]\n"
            ),
        ),
    ]);
    // A RUN's own output, not the step's title.
    let ran = |out: &str, step: &str| out.lines().any(|l| l == step);
    let first = build_ok(&host, ctx.path(), &["-t", "localhost/bldc/app:1"]);
    assert!(
        ran(&first, "ran-step-3") && ran(&first, "ran-step-6"),
        "{first}"
    );
    assert!(!first.contains("CACHED"), "{first}");

    let again = build_ok(&host, ctx.path(), &["-t", "localhost/bldc/app:1"]);
    assert_eq!(again.matches("CACHED").count(), 6, "{again}");
    assert!(
        !ran(&again, "ran-step-3") && !ran(&again, "ran-step-6"),
        "{again}"
    );
    let id = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("writing image "))
            .and_then(|l| l.strip_suffix(" done"))
            .expect("an image id")
            .to_owned()
    };
    assert_eq!(
        id(&first),
        id(&again),
        "a cached rebuild gives the same image"
    );
    let quiet = build_ok(&host, ctx.path(), &["-q"]);
    assert_eq!(quiet.lines().count(), 1, "{quiet}");
    assert!(quiet.trim() == id(&first), "{quiet}");

    // Ignored files change nothing.
    fs::write(ctx.path().join("ignored.log"), "more noise\n").expect("write");
    let ignored = build_ok(&host, ctx.path(), &[]);
    assert_eq!(ignored.matches("CACHED").count(), 6, "{ignored}");

    // The file only the last COPY reads (and `COPY .`): from there on.
    fs::write(ctx.path().join("last.txt"), "changed\n").expect("write");
    let changed = build_ok(&host, ctx.path(), &[]);
    assert_eq!(changed.matches("CACHED").count(), 2, "{changed}");
    assert!(!ran(&changed, "ran-step-3"), "{changed}");
    assert!(ran(&changed, "ran-step-6"), "{changed}");

    let fresh = build_ok(&host, ctx.path(), &["--no-cache"]);
    assert!(!fresh.contains("CACHED"), "{fresh}");
    assert!(ran(&fresh, "ran-step-3"), "{fresh}");
}

#[test]
fn a_failing_run_names_its_code_and_tags_nothing() {
    let Some(host) = Instance::with_busybox("bldf", &[]) else {
        return;
    };
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {BUSYBOX}\nRUN echo about to fail; exit 3\n"),
    )]);
    let out = build(&host, ctx.path(), &["-t", "localhost/bldf/app:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("about to fail"), "{all}");
    assert!(all.contains("returned a non-zero code: 3"), "{all}");
    assert!(!host.moor_ok(&["images"]).contains("localhost/bldf/app"));
    let leftovers = fs::read_dir(host.dir().join("build/containers"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "a build container was left behind");
}

#[test]
fn hostile_contexts_and_runs_stay_inside() {
    let Some(host) = Instance::with_busybox("bldh", &[]) else {
        return;
    };
    let marker = format!("moor-build-escape-{}", std::process::id());
    let host_file = Path::new("/tmp").join(&marker);
    let _ = fs::remove_file(&host_file);
    let ctx = context(&[("payload", "payload\n")]);
    symlink("/etc", ctx.path().join("etc-link")).expect("symlink");
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            r#"FROM {BUSYBOX}
COPY etc-link /copied-link
RUN ln -s / /escape && echo from-run > /tmp/{marker}
COPY payload /escape/tmp/{marker}-copy
CMD ["sh", "-c", "readlink /copied-link; ls /copied-link/ | wc -l; cat /tmp/{marker} /tmp/{marker}-copy; echo done; exec sleep 3600"]
"#
        ),
    )
    .expect("write Dockerfile");
    build_ok(&host, ctx.path(), &["-t", "localhost/bldh/app:1"]);
    assert!(!host_file.exists(), "a RUN wrote on the host");
    assert!(
        !Path::new("/tmp").join(format!("{marker}-copy")).exists(),
        "a COPY through a symlink in the image wrote on the host"
    );
    apply(
        &host,
        "bldh",
        "[containers.app]\nimage = \"localhost/bldh/app:1\"\nnetwork_mode = \"none\"\n",
    );
    let log = report(&host, "app");
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"/etc"),
        "the link is copied as a link: {log}"
    );
    assert!(
        lines.contains(&"from-run") && lines.contains(&"payload"),
        "both writes land in the image: {log}"
    );

    // Through the link, or out of the context: refused.
    for (source, message) in [
        ("etc-link/passwd", "not found"),
        ("../outside", "outside the build context"),
    ] {
        fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM {BUSYBOX}\nCOPY {source} /x\n"),
        )
        .expect("write Dockerfile");
        let out = build(&host, ctx.path(), &[]);
        assert_eq!(out.status.code(), Some(1), "{source}: {}", text(&out));
        assert!(text(&out).contains(message), "{source}: {}", text(&out));
    }

    // A VOLUME's mount point made for a RUN: inside the image, through
    // `..` and through a symlink to `/` alike.
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {BUSYBOX}\nRUN ln -s / /to-root\nVOLUME {}/tmp/{marker}-vol /to-root/tmp/{marker}-link\nRUN true\n",
            "/..".repeat(30)
        ),
    )
    .expect("write Dockerfile");
    build_ok(&host, ctx.path(), &[]);
    for made in ["vol", "link"] {
        let p = Path::new("/tmp").join(format!("{marker}-{made}"));
        assert!(!p.exists(), "a VOLUME's mount point was made on the host");
    }

    // A heredoc named to climb out of the directory it is copied into.
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {BUSYBOX}\nCOPY <<../../tmp/{marker}-doc /etc/\npwn\n../../tmp/{marker}-doc\n"
        ),
    )
    .expect("write Dockerfile");
    let out = build(&host, ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is not a file name"), "{}", text(&out));
}

/// The config of image `reference`, read from the store.
fn image_config(host: &Instance, reference: &str) -> serde_json::Value {
    let image = host
        .image(reference)
        .unwrap_or_else(|| panic!("{reference} not in the image store"));
    let hex = image["config"]
        .as_str()
        .and_then(|c| c.strip_prefix("sha256:"))
        .expect("config digest");
    let raw = fs::read(host.dir().join("blobs/sha256").join(hex)).expect("config blob");
    serde_json::from_slice(&raw).expect("config JSON")
}

#[test]
fn add_copy_options_and_every_config_instruction() {
    let Some(host) = Instance::with_busybox("blda", &[]) else {
        return;
    };
    let ctx = context(&[("tree/a.txt", "a\n"), ("tree/sub/b.txt", "b\n")]);
    let status = std::process::Command::new("tar")
        .args(["-czf", "bundle.tar.gz", "-C", "tree", "."])
        .current_dir(ctx.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar failed");
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            r#"FROM {BUSYBOX}
ADD bundle.tar.gz /unpacked/
COPY --chown=nobody:nogroup --chmod=640 tree/a.txt /owned/a.txt
COPY --chown=33 tree/ /www-tree/
COPY <<EOF /etc/motd
hello from a heredoc
EOF
LABEL org.example.team="build team" version=1
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD ["true"]
ONBUILD RUN echo triggered
ENTRYPOINT ["sh", "-c"]
CMD ["for f in /unpacked/a.txt /unpacked/sub/b.txt /owned/a.txt /www-tree/sub/b.txt; do stat -c \"%n %u:%g %a\" $f; done; cat /etc/motd; echo done; exec sleep 3600"]
"#
        ),
    )
    .expect("write Dockerfile");
    build_ok(&host, ctx.path(), &["-t", "localhost/blda/app:1"]);

    let config = image_config(&host, "localhost/blda/app:1");
    let run = &config["config"];
    assert_eq!(run["Labels"]["org.example.team"], "build team", "{config}");
    assert_eq!(run["Labels"]["version"], "1", "{config}");
    assert_eq!(
        run["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "53/udp": {}})
    );
    assert_eq!(run["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(run["StopSignal"], "SIGINT");
    assert_eq!(
        run["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "true"])
    );
    assert_eq!(run["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(run["Healthcheck"]["Retries"], 2);
    assert_eq!(run["OnBuild"], serde_json::json!(["RUN echo triggered"]));
    assert_eq!(run["Entrypoint"], serde_json::json!(["sh", "-c"]));
    let history = config["history"].as_array().expect("history");
    assert!(
        history
            .iter()
            .any(|h| h["created_by"] == "/bin/sh -c #(nop) STOPSIGNAL SIGINT"
                && h["empty_layer"] == true),
        "{config}"
    );
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(5),
        "the base's layer and one per ADD/COPY: {config}"
    );

    apply(
        &host,
        "blda",
        "[containers.app]\nimage = \"localhost/blda/app:1\"\nnetwork_mode = \"none\"\n",
    );
    let log = report(&host, "app");
    for expected in [
        "/unpacked/a.txt 0:0 644",
        "/unpacked/sub/b.txt 0:0 644",
        "/owned/a.txt 65534:65534 640",
        "/www-tree/sub/b.txt 33:33 644",
        "hello from a heredoc",
    ] {
        assert!(log.contains(expected), "{expected}: {log}");
    }

    // A stage built on it runs its ONBUILD trigger first.
    let child = context(&[("Dockerfile", "FROM localhost/blda/app:1\nRUN echo child\n")]);
    let out = build_ok(&host, child.path(), &["-t", "localhost/blda/child:1"]);
    assert!(out.lines().any(|l| l == "triggered"), "{out}");
    let config = image_config(&host, "localhost/blda/child:1");
    assert!(config["config"].get("OnBuild").is_none(), "{config}");
}

#[test]
fn a_killed_build_leaves_nothing_after_the_next_one() {
    let Some(host) = Instance::with_busybox("bldk", &[]) else {
        return;
    };
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {BUSYBOX}\nRUN echo started && sleep 600\n"),
    )]);
    let mut child = host
        .command()
        .args(["build", ctx.path().to_str().expect("utf-8")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start moor build");
    let containers = host.dir().join("build/containers");
    let running = || {
        fs::read_dir(&containers)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.path().join("state.json").exists())
            })
            .unwrap_or(false)
    };
    wait_for("the RUN container", Duration::from_secs(60), running);
    child.kill().expect("kill moor build");
    let _ = child.wait();
    assert!(running(), "the RUN container went with its build");

    let other = context(&[("Dockerfile", &format!("FROM {BUSYBOX}\nRUN true\n"))]);
    build_ok(&host, other.path(), &[]);
    let left: Vec<_> = fs::read_dir(&containers)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left-over build containers: {left:?}");
}

#[test]
fn run_has_no_network_unless_host_is_asked_for() {
    let Some(host) = Instance::with_busybox("bldn", &[]) else {
        return;
    };
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM {BUSYBOX}\nRUN echo links: $(ls /sys/class/net) && cat /etc/resolv.conf 2>/dev/null | grep -c nameserver || true\n"
        ),
    )]);
    let links = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("links: "))
            .expect("the RUN's output")
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let none = build_ok(&host, ctx.path(), &[]);
    assert_eq!(links(&none), ["lo"], "{none}");
    let on_host = build_ok(&host, ctx.path(), &["--network", "host", "--no-cache"]);
    // The host's links (other tests add and remove theirs meanwhile).
    let seen = links(&on_host);
    assert!(
        seen.len() > 1 && seen.iter().any(|l| l == "lo"),
        "a host-network RUN sees the host's links: {on_host}"
    );
    let host_nameservers = fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .count();
    if host_nameservers > 0 {
        assert!(
            on_host.lines().any(|l| l == host_nameservers.to_string()),
            "the host's resolv.conf in a host-network RUN: {on_host}"
        );
    }
}

/// A Docker Engine of the test's own (data root, exec root, socket; no
/// iptables, no bridge), stopped and its mounts removed when dropped.
pub(crate) struct Dockerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Dockerd {
    pub(crate) fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("moor-dockerd-")
            .tempdir()
            .expect("dockerd dir");
        let d = dir.path();
        let log = fs::File::create(d.join("dockerd.log")).expect("dockerd log");
        let child = std::process::Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let dockerd = Dockerd { dir, child };
        wait_for("dockerd to answer", Duration::from_secs(60), || {
            dockerd.docker(&["version"]).status.success()
        });
        dockerd
    }

    pub(crate) fn docker(&self, args: &[&str]) -> Output {
        std::process::Command::new("docker")
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("docker.sock").display()),
            )
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("run docker")
    }

    #[track_caller]
    pub(crate) fn docker_ok(&self, args: &[&str]) {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::common::host::unmount_under(self.dir.path());
    }
}

/// One entry of a layer: (path, type, mode, uid, gid, link target, content
/// digest).
pub(crate) type Entry = (String, String, u32, u64, u64, String, String);

/// What a layer holds, per entry, sorted.
pub(crate) fn layer_entries(tar_bytes: &[u8]) -> Vec<Entry> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for e in archive.entries().expect("layer entries") {
        let mut e = e.expect("layer entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        if path.is_empty() {
            continue;
        }
        let h = e.header().clone();
        let link = e
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read entry");
        out.push((
            path,
            format!("{:?}", h.entry_type()),
            h.mode().expect("mode") & 0o7777,
            h.uid().expect("uid"),
            h.gid().expect("gid"),
            link,
            hex::encode(sha2::Sha256::digest(&data)),
        ));
    }
    out.sort();
    out
}

#[test]
fn layers_and_config_match_docker_build() {
    let Some(host) = Instance::with_busybox("bldd", &["dockerd", "docker", "tar"]) else {
        return;
    };
    // One base image for both, from a root filesystem tar.
    let work = tempfile::tempdir().expect("work dir");
    let root = work.path().join("rootfs");
    for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let busybox = crate::common::which("busybox").expect("busybox");
    fs::copy(&busybox, root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "mkdir", "echo", "rm", "touch", "chmod", "cat"] {
        symlink("busybox", root.join("bin").join(applet)).expect("applet");
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("passwd");
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
    let rootfs = work.path().join("rootfs.tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&rootfs)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    let base = "localhost/bldd/busybox:1";
    let rootfs = rootfs.to_str().expect("utf-8");
    host.moor_ok(&["image", "import", rootfs, "--tag", base]);
    let docker = Dockerd::start();
    docker.docker_ok(&["import", rootfs, base]);

    let ctx = context(&[
        ("tree/a.txt", "a\n"),
        ("tree/sub/b.txt", "b\n"),
        ("ignored.log", "noise\n"),
        (".dockerignore", "*.log\n"),
        (
            "Dockerfile",
            &format!(
                r#"FROM {base} AS builder
RUN mkdir -p /out && echo built > /out/artifact && echo temp > /out/temp
RUN rm /out/temp
FROM {base}
COPY --from=builder /out /app/
COPY tree/ /app/tree/
COPY --chown=nobody:nogroup tree/a.txt /owned/a.txt
COPY . /everything/
RUN echo doomed > /etc/doomed && mkdir -p /d && touch /d/old && chmod 700 /d
RUN rm /etc/doomed && rm -rf /d && mkdir /d && touch /d/new
ENV GREETING=hi
WORKDIR /srv/www
USER nobody
EXPOSE 8080
LABEL team=build
VOLUME /data
ENTRYPOINT ["sh", "-c"]
CMD ["echo hi"]
"#
            ),
        ),
    ]);
    let ctx_path = ctx.path().to_str().expect("utf-8");
    docker.docker_ok(&["build", "-q", "-t", "localhost/bldd/app:1", ctx_path]);
    let saved = work.path().join("docker.tar");
    docker.docker_ok(&[
        "save",
        "-o",
        saved.to_str().expect("utf-8"),
        "localhost/bldd/app:1",
    ]);
    build_ok(&host, ctx.path(), &["-t", "localhost/bldd/app:1"]);

    // Docker's side: manifest.json, its config and layer tars.
    let read_member = |name: &str| -> Vec<u8> {
        let mut archive = tar::Archive::new(fs::File::open(&saved).expect("docker save"));
        for e in archive.entries().expect("entries") {
            let mut e = e.expect("entry");
            if e.path().expect("path").to_string_lossy() == name {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).expect("read");
                return data;
            }
        }
        panic!("{name} not in docker save output")
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_member("manifest.json")).expect("manifest.json");
    let docker_config: serde_json::Value = serde_json::from_slice(&read_member(
        manifest[0]["Config"].as_str().expect("config"),
    ))
    .expect("docker config");
    let docker_layers: Vec<_> = manifest[0]["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| layer_entries(&read_member(l.as_str().expect("layer"))))
        .collect();

    // moor's side, from its store.
    let moor_config = image_config(&host, "localhost/bldd/app:1");
    let image = host.image("localhost/bldd/app:1").expect("the built image");
    let moor_layers: Vec<_> = image["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let hex = l["blob"]
                .as_str()
                .expect("blob")
                .trim_start_matches("sha256:");
            layer_entries(&fs::read(host.dir().join("blobs/sha256").join(hex)).expect("blob"))
        })
        .collect();

    assert_eq!(moor_layers.len(), docker_layers.len(), "layer count");
    // The base layer is each tool's import of the same tar; the rest are built.
    for (i, (m, d)) in moor_layers.iter().zip(&docker_layers).enumerate().skip(1) {
        assert_eq!(m, d, "layer {i} differs from docker build's");
    }
    for key in [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Labels",
        "Volumes",
    ] {
        assert_eq!(
            moor_config["config"][key], docker_config["config"][key],
            "config {key}"
        );
    }
    let empty = |c: &serde_json::Value| -> Vec<bool> {
        c["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|h| h["empty_layer"] == true)
            .collect()
    };
    // `docker import` gives the base a history entry, moor's import none:
    // the steps of the build are the last ones of both.
    let (m, d) = (empty(&moor_config), empty(&docker_config));
    assert_eq!(m.len(), 14, "a history entry per step: {moor_config}");
    assert_eq!(m, d[d.len() - m.len()..], "history entries");
}

#[test]
fn only_the_stages_the_target_needs_are_built() {
    let Some(host) = Instance::with_busybox("blds", &[]) else {
        return;
    };
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "ARG BASE={BUSYBOX}\nFROM $BASE AS base\nRUN echo base-ran\nFROM $BASE AS broken\nRUN exit 7\nFROM base AS final\nARG MESSAGE=default\nRUN echo message=$MESSAGE\n"
        ),
    )]);
    let out = build_ok(&host, ctx.path(), &["--build-arg", "MESSAGE=given"]);
    assert!(out.lines().any(|l| l == "message=given"), "{out}");
    assert!(
        !out.contains("exit 7"),
        "an unneeded stage was built: {out}"
    );
    let target = build_ok(
        &host,
        ctx.path(),
        &["--target", "base", "-t", "localhost/blds/base:1"],
    );
    assert!(!target.contains("message="), "{target}");
    assert!(
        target.contains("naming to localhost/blds/base:1 done"),
        "{target}"
    );
    let broken = build(&host, ctx.path(), &["--target", "broken"]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    assert!(
        text(&broken).contains("returned a non-zero code: 7"),
        "{}",
        text(&broken)
    );

    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {BUSYBOX}\nCOPY --bogus=1 a /b\n"),
    )
    .expect("write Dockerfile");
    let bad = build(&host, ctx.path(), &[]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("Dockerfile:2:"), "{}", text(&bad));

    // A --from glob that matches nothing names the source.
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {BUSYBOX} AS a\nFROM {BUSYBOX}\nCOPY --from=a /nothing/*.so /x/\n"),
    )
    .expect("write Dockerfile");
    let none = build(&host, ctx.path(), &[]);
    assert_eq!(none.status.code(), Some(1), "{}", text(&none));
    assert!(
        text(&none).contains("/nothing/*.so: no source files were specified"),
        "{}",
        text(&none)
    );
}

#[test]
fn add_of_a_hostile_archive_stays_in_the_image() {
    let Some(host) = Instance::with_busybox("bldx", &[]) else {
        return;
    };
    let marker = format!("moor-add-escape-{}", std::process::id());
    let ctx = context(&[]);
    // A symlink to the host's /tmp, then a file through it; a `..` entry.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "x", "/tmp").expect("symlink entry");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, format!("x/{marker}"), &b"pwn\n"[..])
        .expect("file entry");
    fs::write(ctx.path().join("evil.tar"), b.into_inner().expect("tar")).expect("write tar");
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {BUSYBOX}\nADD evil.tar /unpacked/\n"),
    )
    .expect("write Dockerfile");
    let out = build(&host, ctx.path(), &["-t", "localhost/bldx/app:1"]);
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "ADD wrote through a symlink onto the host: {}",
        text(&out)
    );
    let _ = fs::remove_file(Path::new("/tmp").join(&marker));

    // `..` in an archive is refused.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(4);
    h.set_mode(0o644);
    {
        // `append_data` refuses `..`; the raw header takes it.
        let name = format!("../../tmp/{marker}");
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
    }
    b.append(&h, &b"pwn\n"[..]).expect("entry");
    fs::write(ctx.path().join("evil.tar"), b.into_inner().expect("tar")).expect("write tar");
    let out = build(&host, ctx.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("climbs out"), "{}", text(&out));
    assert!(!Path::new("/tmp").join(&marker).exists());
}
