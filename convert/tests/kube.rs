//! `moor export kubernetes`: every object of the export of the Compose
//! corpus and of `examples/manifests` passes `kubernetes-validate --strict`,
//! Services and NetworkPolicies select exactly the pods they should, and
//! what has no faithful mapping is a warning (an error with `strict`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::{base, cases, load};
use moor_convert::kube::{Export, ExportError, Options, ServiceType, export};
use moor_spec::node::{Node, Value};

fn options(path: &Path, service_type: ServiceType) -> Options {
    Options {
        namespace: Some("shop".into()),
        project: "demo".into(),
        service_type,
        base: base(path),
        strict: false,
    }
}

fn exported(path: &Path, service_type: ServiceType) -> Export {
    export(&load(path), &options(path, service_type)).unwrap()
}

/// `kubernetes-validate`, from PATH; under CI=true it must be there.
fn validator() -> Option<String> {
    let ok = Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("kubernetes-validate".into());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "kubernetes-validate is not on PATH: CI must have it (.ci/run installs it in a virtualenv)"
    );
    eprintln!("kubernetes-validate is not on PATH: the export is not validated");
    None
}

#[test]
fn every_exported_object_passes_kubernetes_validate_strict() {
    let Some(bin) = validator() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut kinds = BTreeSet::new();
    for (case, path) in cases() {
        for t in [
            ServiceType::ClusterIp,
            ServiceType::NodePort,
            ServiceType::LoadBalancer,
        ] {
            let e = exported(&path, t);
            let dir = tmp.path().join(format!("{case}-{t:?}"));
            std::fs::create_dir(&dir).unwrap();
            for o in &e.objects {
                let f = dir.join(&o.file);
                std::fs::write(&f, o.doc.to_yaml()).unwrap();
                files.push(f);
                kinds.insert(
                    o.doc
                        .get("kind")
                        .and_then(|k| k.as_str())
                        .unwrap()
                        .to_string(),
                );
            }
        }
    }
    // The corpus exercises every kind of object the export makes.
    for k in [
        "ConfigMap",
        "Deployment",
        "Job",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "Secret",
        "Service",
        "StatefulSet",
    ] {
        assert!(
            kinds.contains(k),
            "no {k} in the export of the corpus: {kinds:?}"
        );
    }
    // In batches, so the command line stays short.
    for batch in files.chunks(200) {
        let out = Command::new(&bin)
            .arg("--strict")
            .arg("--quiet")
            .args(batch)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubernetes-validate --strict failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_export_is_stable() {
    for (case, path) in cases() {
        let a = exported(&path, ServiceType::LoadBalancer).stream();
        let b = exported(&path, ServiceType::LoadBalancer).stream();
        assert_eq!(a, b, "{case}");
    }
}

fn get<'n>(n: &'n Node, key: &str) -> Option<&'n Node> {
    match &n.value {
        Value::Map(e) => e.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
        _ => None,
    }
}

fn path<'n>(n: &'n Node, keys: &[&str]) -> Option<&'n Node> {
    keys.iter().try_fold(n, |n, k| get(n, k))
}

fn str_map(n: Option<&Node>) -> BTreeMap<String, String> {
    match n.map(|n| &n.value) {
        Some(Value::Map(e)) => e
            .iter()
            .map(|(k, v)| (k.name.to_string(), v.scalar_text().unwrap()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn items(n: Option<&Node>) -> Vec<&Node> {
    match n.map(|n| &n.value) {
        Some(Value::Seq(i)) => i.iter().collect(),
        _ => Vec::new(),
    }
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Reads the export back as YAML, and checks each Service and
/// NetworkPolicy selects the pods moor's model says it should.
#[test]
fn selectors_select_exactly_the_pods_they_should() {
    let mut checked_networks = 0;
    for (case, p) in cases() {
        let state = load(&p);
        let e = exported(&p, ServiceType::LoadBalancer);
        let docs: Vec<Node> = e
            .objects
            .iter()
            .map(|o| {
                let text = o.doc.to_yaml();
                moor_spec::parse::parse(moor_spec::parse::Format::Yaml, &text)
                    .unwrap()
                    .remove(0)
            })
            .collect();
        // The pods: each workload's template labels, by workload name.
        let mut pods: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for d in &docs {
            let kind = get(d, "kind").unwrap().scalar_text().unwrap();
            if ["Deployment", "StatefulSet", "Job"].contains(&kind.as_str()) {
                let name = path(d, &["metadata", "name"])
                    .unwrap()
                    .scalar_text()
                    .unwrap();
                let labels = str_map(path(d, &["spec", "template", "metadata", "labels"]));
                if let Some(sel) = path(d, &["spec", "selector", "matchLabels"]) {
                    assert!(
                        selects(&str_map(Some(sel)), &labels),
                        "{case}: {name} selects its pods"
                    );
                }
                pods.insert(name, labels);
            }
        }
        let selected = |sel: &BTreeMap<String, String>| -> BTreeSet<String> {
            pods.iter()
                .filter(|(_, l)| selects(sel, l))
                .map(|(n, _)| n.clone())
                .collect()
        };
        let k8s = |n: &String| moor_convert::kube::dns_name(n, 50);
        let all: BTreeSet<String> = state.containers.keys().map(k8s).collect();
        assert_eq!(
            pods.keys().cloned().collect::<BTreeSet<_>>(),
            all,
            "{case}: one workload per container"
        );
        // Who is on each network, from moor's model.
        let mut on: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, r) in &state.containers {
            let s = &r.spec;
            let nets: Vec<String> = match &s.network_mode {
                moor_spec::NetworkMode::Bridge if s.networks.is_empty() => vec!["default".into()],
                moor_spec::NetworkMode::Bridge => {
                    s.networks.iter().map(|a| a.network.clone()).collect()
                }
                moor_spec::NetworkMode::Container(o) => {
                    let o = &state.containers[o].spec;
                    if o.networks.is_empty() {
                        vec!["default".into()]
                    } else {
                        o.networks.iter().map(|a| a.network.clone()).collect()
                    }
                }
                _ => vec![],
            };
            for n in nets {
                let policy = moor_convert::kube::dns_name(&format!("moor-network-{n}"), 63);
                on.entry(policy).or_default().insert(k8s(name));
            }
        }
        let mut seen_networks = BTreeSet::new();
        for d in &docs {
            let kind = get(d, "kind").unwrap().scalar_text().unwrap();
            let name = path(d, &["metadata", "name"])
                .unwrap()
                .scalar_text()
                .unwrap();
            match kind.as_str() {
                "Service" => {
                    let sel = str_map(path(d, &["spec", "selector"]));
                    let owner = name.strip_suffix("-published").unwrap_or(&name);
                    assert_eq!(
                        selected(&sel),
                        BTreeSet::from([owner.to_string()]),
                        "{case}: service {name}"
                    );
                }
                "NetworkPolicy" => {
                    let sel = str_map(path(d, &["spec", "podSelector", "matchLabels"]));
                    let got = selected(&sel);
                    if name == "moor-default-deny" {
                        assert_eq!(got, all, "{case}: the default deny selects every pod");
                        assert!(get(get(d, "spec").unwrap(), "ingress").is_none());
                    } else if let Some(want) = on.get(&name).cloned() {
                        let net = &name;
                        seen_networks.insert(name.clone());
                        assert_eq!(got, want, "{case}: policy {name} selects the pods on {net}");
                        // Ingress only from pods sharing the network.
                        let rules = items(path(d, &["spec", "ingress"]));
                        assert_eq!(rules.len(), 1);
                        let from = items(get(rules[0], "from"));
                        assert_eq!(from.len(), 1, "{case}: {name}: one peer");
                        let peer = str_map(path(from[0], &["podSelector", "matchLabels"]));
                        assert_eq!(
                            selected(&peer),
                            want,
                            "{case}: {name} lets in its network only"
                        );
                        checked_networks += 1;
                    } else {
                        // Per-container policies select that container.
                        assert_eq!(got.len(), 1, "{case}: {name} selects {got:?}");
                    }
                }
                _ => {}
            }
        }
        let want_networks: BTreeSet<String> = on.keys().cloned().collect();
        assert_eq!(
            seen_networks, want_networks,
            "{case}: one policy per network in use"
        );
    }
    assert!(
        checked_networks >= 30,
        "only {checked_networks} network policies checked"
    );
}

fn tiny(text: &str) -> (tempfile::TempDir, moor_spec::DesiredState) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), text).unwrap();
    let state = moor_spec::load(&[dir.path()]).unwrap();
    (dir, state)
}

#[test]
fn host_paths_and_host_network_warn_and_strict_refuses() {
    let (dir, state) = tiny(
        "[containers.a]\nimage = \"busybox\"\nmounts = [\"/var/log:/host-log:ro\"]\n\n[containers.b]\nimage = \"busybox\"\nnetwork_mode = \"host\"\n",
    );
    let mut opts = Options {
        project: "p".into(),
        base: dir.path().to_path_buf(),
        ..Options::default()
    };
    let e = export(&state, &opts).unwrap();
    let w: Vec<String> = e.warnings.iter().map(|n| n.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.starts_with("containers.a.mounts[/host-log]: host path /var/log")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("containers.b.network_mode: the host's network")),
        "{w:?}"
    );
    let a = e
        .objects
        .iter()
        .find(|o| o.file == "deployment-a.yaml")
        .unwrap()
        .doc
        .to_yaml();
    assert!(
        a.contains("hostPath:\n") && a.contains("\"/var/log\""),
        "{a}"
    );
    opts.strict = true;
    match export(&state, &opts) {
        Err(ExportError::Strict(notes)) => assert_eq!(notes.len(), w.len()),
        other => panic!("strict should refuse: {other:?}"),
    }
}

#[test]
fn files_in_the_source_become_configmaps_and_secrets() {
    let (dir, _) = tiny("");
    std::fs::write(dir.path().join("nginx.conf"), "events {}\n").unwrap();
    std::fs::write(dir.path().join("pw.txt"), "hunter2").unwrap();
    std::fs::write(
        dir.path().join("m.toml"),
        "[containers.a]\nimage = \"busybox\"\nmounts = [\"./nginx.conf:/etc/nginx/nginx.conf:ro\", \"./pw.txt:/run/secrets/pw:ro\"]\n",
    )
    .unwrap();
    let state = moor_spec::load(&[dir.path()]).unwrap();
    let opts = Options {
        project: "p".into(),
        base: dir.path().to_path_buf(),
        strict: true,
        ..Options::default()
    };
    let e = export(&state, &opts).unwrap();
    let files: Vec<&str> = e.objects.iter().map(|o| o.file.as_str()).collect();
    let cm = e
        .objects
        .iter()
        .find(|o| o.file.starts_with("configmap-file-nginx-conf"))
        .unwrap();
    assert!(
        cm.doc.to_yaml().contains("nginx.conf: \"events {}\\n\""),
        "{files:?}"
    );
    let secret = e
        .objects
        .iter()
        .find(|o| o.file.starts_with("secret-secret-pw-txt"))
        .unwrap();
    assert!(
        secret.doc.to_yaml().contains("pw.txt: \"aHVudGVyMg==\""),
        "{}",
        secret.doc.to_yaml()
    );
}

/// A repository cannot make the export copy host files into a ConfigMap:
/// a link in a bind-mounted directory is left out, a bind source that is a
/// link out of the source is a host path, and a file too large for an
/// object is not read into one.
#[test]
fn links_out_of_the_source_and_huge_files_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("ok.conf"), "fine\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", conf.join("stolen")).unwrap();
    let big = std::fs::File::create(dir.path().join("big.bin")).unwrap();
    big.set_len(2 << 20).unwrap();
    std::fs::write(
        dir.path().join("m.toml"),
        "[containers.a]\nimage = \"busybox\"\nmounts = [\"./conf:/etc/conf:ro\", \"./big.bin:/big:ro\"]\n",
    )
    .unwrap();
    let state = moor_spec::load(&[dir.path()]).unwrap();
    let opts = Options {
        project: "p".into(),
        base: dir.path().to_path_buf(),
        ..Options::default()
    };
    let e = export(&state, &opts).unwrap();
    let all = e.stream();
    assert!(!all.contains("root:"), "a host file leaked:\n{all}");
    assert!(all.contains("ok.conf: \"fine\\n\""), "{all}");
    let w: Vec<String> = e.warnings.iter().map(|n| n.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("holds stolen, which is not a regular file")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("big.bin holds more than Kubernetes keeps")),
        "{w:?}"
    );
    assert!(!e.objects.iter().any(|o| o.file.contains("big")), "{all}");
}

/// The fields of the kitchen-sink fixture land where the README's table says.
#[test]
fn each_field_maps_where_the_readme_says() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kitchen-sink");
    let e = exported(&path, ServiceType::NodePort);
    let text = |prefix: &str| -> String {
        e.objects
            .iter()
            .find(|o| o.file.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}*"))
            .doc
            .to_yaml()
    };
    let web = text("deployment-web.yaml");
    for want in [
        // depends_on: healthy → wait for the headless Service to resolve.
        "name: \"wait-db-main-2a43a651\"",
        "until nslookup db-main-2a43a651; do",
        // healthcheck.http → httpGet
        "httpGet:\n              path: \"/healthz\"\n              port: 8080\n              scheme: \"HTTP\"",
        // resources, security
        "cpu: \"1500m\"",
        "memory: \"256Mi\"",
        "runAsUser: 1000",
        "runAsGroup: 1000",
        "readOnlyRootFilesystem: true",
        "add:\n                - \"NET_BIND_SERVICE\"",
        "drop:\n                - \"ALL\"",
        // start-first → a rolling update that surges
        "maxSurge: 1",
        "hostAliases:",
        "network.moor.dev/front: \"true\"",
        "network.moor.dev/back: \"true\"",
        "subPath: \"site.conf\"",
        "secretName: \"secret-token-txt\"",
        "claimName: \"shared\"",
        "traefik.enable: \"true\"",
    ] {
        assert!(web.contains(want), "deployment-web lacks {want:?}:\n{web}");
    }
    assert!(
        web.contains(
            "command:\n            - \"/bin/app\"\n          args:\n            - \"serve\""
        ),
        "{web}"
    );
    let worker = text("deployment-worker.yaml");
    assert!(
        worker.contains("tcpSocket:\n              port: 7000"),
        "{worker}"
    );
    assert!(
        worker.contains("type: \"Unconfined\"") && worker.contains("replicas: 2"),
        "{worker}"
    );
    let db = text("statefulset-db-main-");
    assert!(
        db.contains("exec:\n              command:\n                - \"pg_isready\""),
        "{db}"
    );
    assert!(
        db.contains("periodSeconds: 1") && db.contains("initialDelaySeconds: 10"),
        "{db}"
    );
    assert!(
        db.contains("volumeClaimTemplates:")
            && db.contains("medium: \"Memory\"")
            && db.contains("sizeLimit: \"16Mi\""),
        "{db}"
    );
    assert!(db.contains("terminationGracePeriodSeconds: 90"), "{db}");
    let job = text("job-migrate.yaml");
    assert!(
        job.contains("backoffLimit: 3") && job.contains("restartPolicy: \"OnFailure\""),
        "{job}"
    );
    // Only the internal network's pods lose their way out.
    assert!(
        e.objects
            .iter()
            .any(|o| o.file == "networkpolicy-migrate-egress.yaml")
    );
    assert!(
        !e.objects
            .iter()
            .any(|o| o.file == "networkpolicy-web-egress.yaml")
    );
    let published = text("service-web-published.yaml");
    assert!(
        published.contains("nodePort: 30080") && !published.contains("9090"),
        "{published}"
    );
}

/// Two resources that would make objects of one name: the first is kept
/// and the clash is a warning, never a silent overwrite.
#[test]
fn colliding_object_names_warn() {
    let (dir, state) = tiny(
        "[containers.web]\nimage = \"busybox\"\nports = [\"8080:80\"]\n\n[containers.web-published]\nimage = \"busybox\"\n",
    );
    let opts = Options {
        project: "p".into(),
        base: dir.path().to_path_buf(),
        service_type: ServiceType::LoadBalancer,
        ..Options::default()
    };
    let e = export(&state, &opts).unwrap();
    let w: Vec<String> = e.warnings.iter().map(|n| n.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.starts_with("Service web-published: two objects get this name")),
        "{w:?}"
    );
}

#[test]
fn secrets_become_empty_secrets_and_never_leak_into_the_export() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "hunter2-conv").unwrap();
    std::fs::write(
        dir.path().join("app.toml"),
        "[secrets.pw]\nfile = \"pw\"\n[containers.a]\nimage = \"busybox\"\nsecrets = [\"pw\", { source = \"pw\", target = \"/etc/app/pw\", mode = 0o440 }]\n\
         [containers.b]\nimage = \"busybox\"\nsecrets = [\"pw\"]\n",
    )
    .unwrap();
    let state = moor_spec::load(&[dir.path()]).unwrap();
    let opts = Options {
        project: "p".into(),
        base: dir.path().to_path_buf(),
        ..Options::default()
    };
    let e = export(&state, &opts).unwrap();
    let w: Vec<String> = e.warnings.iter().map(|n| n.to_string()).collect();
    assert!(
        w.iter().any(|w| w.starts_with(
            "containers.a.secrets[pw]: the Secret secret-pw is written without its value"
        )),
        "{w:?}"
    );
    assert!(!e.stream().contains("hunter2"));
    // One Secret, shared, with no data; each pod mounts it where moor does.
    let secrets: Vec<_> = e
        .objects
        .iter()
        .filter(|o| o.file.starts_with("secret-"))
        .collect();
    assert_eq!(
        secrets.len(),
        1,
        "{:?}",
        e.objects.iter().map(|o| &o.file).collect::<Vec<_>>()
    );
    let y = secrets[0].doc.to_yaml();
    assert!(
        y.contains("name: \"secret-pw\"") && !y.contains("\ndata:"),
        "{y}"
    );
    let a = e
        .objects
        .iter()
        .find(|o| o.file.starts_with("deployment-a"))
        .expect("a's Deployment")
        .doc
        .to_yaml();
    for want in [
        "mountPath: \"/run/secrets/pw\"",
        "mountPath: \"/etc/app/pw\"",
        "secretName: \"secret-pw\"",
        "mode: 288",
        "mode: 256",
    ] {
        assert!(a.contains(want), "{want} missing from:\n{a}");
    }
}

#[test]
fn a_verify_key_is_a_warning_not_dropped_silently() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cosign.pub"),
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9QXc8dxDb/lNblZ2K9QIWfMry0Yr\n7ZkNhOv+U64T/CIFgNHUqCG/rpZu/zvEPMFD4qf/v5CyNfhqbwjWA/uVIA==\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m.toml"),
        "[images.app]\nref = \"registry.example.com/team/app:1\"\nverify = { key = \"cosign.pub\" }\n[containers.a]\nimage = \"app\"\n",
    )
    .unwrap();
    let state = moor_spec::load(&[dir.path()]).unwrap();
    let mut opts = Options {
        project: "p".into(),
        base: dir.path().to_path_buf(),
        ..Options::default()
    };
    let e = export(&state, &opts).unwrap();
    let w: Vec<String> = e.warnings.iter().map(|n| n.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.starts_with("images.app.verify: Kubernetes checks image signatures")),
        "{w:?}"
    );
    opts.strict = true;
    assert!(matches!(export(&state, &opts), Err(ExportError::Strict(_))));
}
