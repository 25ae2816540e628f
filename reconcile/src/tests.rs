//! Diff, plan and apply against the fake runtime.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use moor_spec::{DesiredState, Kind};

use crate::fake::FakeRuntime;
use crate::*;

const PROJECT: &str = "demo";

const BASE: &str = r#"
[images.busybox]
ref = "localhost:5000/busybox:1"

[networks.front]
subnet = "10.89.1.0/24"

[volumes.site]

[containers.db]
image = "busybox"
command = ["sleep", "1000"]
networks = ["front"]
healthcheck = { cmd = "true", interval = "1s" }

[containers.web]
image = "busybox"
command = ["httpd", "-f"]
env = { GREETING = "hello" }
networks = ["front"]
mounts = ["site:/www"]
ports = ["8080:80"]
restart = "always"
depends_on = { db = "healthy" }
"#;

fn load(toml: &str) -> DesiredState {
    moor_spec::load_texts(&[(PathBuf::from("/m/stack.toml"), toml.to_string())])
        .unwrap_or_else(|d| panic!("test manifest invalid:\n{d}"))
}

fn opts(now: SystemTime) -> DiffOptions<'static> {
    DiffOptions {
        project: PROJECT,
        allow_empty: false,
        remove_volumes: false,
        now,
    }
}

fn plan(rt: &FakeRuntime, desired: &DesiredState) -> Plan {
    let observed = rt.with_host(|h| h.clone());
    diff(desired, &observed, &opts(SystemTime::now())).expect("diff")
}

fn apply_opts() -> ApplyOptions {
    ApplyOptions {
        health_poll: Duration::from_millis(10),
        health_timeout: Duration::from_secs(5),
        ..ApplyOptions::new(PROJECT)
    }
}

/// Diffs and applies until nothing changes; returns the outcomes of the first pass.
async fn converge(rt: &FakeRuntime, desired: &DesiredState) -> Vec<Outcome> {
    let mut first = None;
    for _ in 0..3 {
        let p = plan(rt, desired);
        if p.is_empty() {
            break;
        }
        let observed = rt.with_host(|h| h.clone());
        let outcomes = apply(rt, &p, desired, &observed, &apply_opts()).await;
        first.get_or_insert(outcomes);
    }
    assert!(
        plan(rt, desired).is_empty(),
        "did not converge: {}",
        plan(rt, desired)
    );
    first.unwrap_or_default()
}

fn verbs(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| format!("{} {} {}", a.verb, a.kind, a.name))
        .collect()
}

#[tokio::test]
async fn from_nothing_plans_everything_and_then_nothing() {
    let rt = FakeRuntime::new();
    let desired = load(BASE);
    let p = plan(&rt, &desired);
    assert_eq!(
        verbs(&p),
        [
            "pull image localhost:5000/busybox:1",
            "create network front",
            "create volume site",
            "create container db",
            "create container web",
        ]
    );
    let outcomes = converge(&rt, &desired).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert!(plan(&rt, &desired).is_empty());
    let text = plan(&rt, &desired).to_string();
    assert!(text.contains("No changes"), "{text}");
}

#[tokio::test]
async fn apply_orders_by_dependency() {
    let rt = FakeRuntime::new();
    let desired = load(BASE);
    rt.script_health("db", &[Health::Starting, Health::Starting, Health::Healthy]);
    converge(&rt, &desired).await;
    let calls = rt.calls();
    let at = |c: &str| {
        calls
            .iter()
            .position(|x| x == c)
            .unwrap_or_else(|| panic!("{c} not called: {calls:?}"))
    };
    assert!(at("pull localhost:5000/busybox:1") < at("create_container db"));
    assert!(at("create_network front") < at("create_container db"));
    assert!(at("create_volume site") < at("create_container web"));
    assert!(
        at("create_container db") < at("create_container web"),
        "web waits for db"
    );
}

#[tokio::test(start_paused = true)]
async fn unhealthy_dependency_fails_only_its_dependents() {
    let rt = FakeRuntime::new();
    let mut text = BASE.to_string();
    text.push_str("\n[containers.other]\nimage = \"busybox\"\n");
    let desired = load(&text);
    rt.script_health("db", &[Health::Unhealthy]);
    let p = plan(&rt, &desired);
    let observed = rt.with_host(|h| h.clone());
    let outcomes = apply(&rt, &p, &desired, &observed, &apply_opts()).await;
    let result = |name: &str| {
        outcomes
            .iter()
            .find(|o| o.action.name == name)
            .map(|o| o.result.clone())
            .expect("outcome")
    };
    let web = result("web").unwrap_err();
    assert!(
        web.contains("did not become healthy") && web.contains("unhealthy"),
        "{web}"
    );
    assert!(result("db").is_ok());
    assert!(result("other").is_ok());
}

#[tokio::test]
async fn a_failed_action_skips_what_depends_on_it() {
    let rt = FakeRuntime::new();
    let desired = load(BASE);
    rt.fail_next("create_network front", "bridge: operation not permitted");
    let p = plan(&rt, &desired);
    let observed = rt.with_host(|h| h.clone());
    let outcomes = apply(&rt, &p, &desired, &observed, &apply_opts()).await;
    let get = |name: &str| {
        outcomes
            .iter()
            .find(|o| o.action.name == name)
            .expect("outcome")
    };
    assert_eq!(
        get("front").result,
        Err("bridge: operation not permitted".to_string())
    );
    let db = get("db").result.clone().unwrap_err();
    assert!(
        db.contains("skipped") && db.contains("network front"),
        "{db}"
    );
    assert!(get("web").result.is_err());
    assert!(
        get("site").result.is_ok(),
        "the volume does not depend on the network"
    );
    assert!(!rt.calls().iter().any(|c| c.starts_with("create_container")));
    // The next pass retries and converges.
    converge(&rt, &desired).await;
}

#[tokio::test]
async fn env_change_replaces_only_that_container() {
    let rt = FakeRuntime::new();
    converge(&rt, &load(BASE)).await;
    let changed = load(&BASE.replace("GREETING = \"hello\"", "GREETING = \"bonjour\""));
    let p = plan(&rt, &changed);
    assert_eq!(verbs(&p), ["replace container web"]);
    assert_eq!(
        p.actions[0].reason.to_string(),
        "spec changed: env.GREETING"
    );
    rt.clear_calls();
    converge(&rt, &changed).await;
    assert_eq!(
        rt.calls(),
        ["remove_container web SIGTERM", "create_container web"]
    );
}

#[tokio::test]
async fn each_kind_of_spec_change_replaces() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "command = [\"httpd\", \"-f\"]",
            "command = [\"httpd\", \"-f\", \"-v\"]",
            "command",
        ),
        ("ports = [\"8080:80\"]", "ports = [\"8081:80\"]", "ports"),
        (
            "mounts = [\"site:/www\"]",
            "mounts = [\"site:/www:ro\"]",
            "mounts",
        ),
        (
            "restart = \"always\"",
            "restart = \"always\"\nresources = { memory = \"64m\" }",
            "resources",
        ),
        (
            "restart = \"always\"",
            "restart = \"always\"\ncap_add = [\"NET_ADMIN\"]",
            "cap_add",
        ),
        (
            "restart = \"always\"",
            "restart = \"always\"\nuser = \"1000\"",
            "user",
        ),
        (
            "restart = \"always\"",
            "restart = \"always\"\nlabels = { tier = \"front\" }",
            "labels.tier",
        ),
        (
            "restart = \"always\"",
            "restart = \"always\"\ninit = true",
            "init",
        ),
        (
            "restart = \"always\"",
            "restart = \"always\"\nread_only = true",
            "read_only",
        ),
        (
            "image = \"busybox\"\ncommand = [\"httpd\"",
            "image = \"localhost:5000/other:2\"\ncommand = [\"httpd\"",
            "image",
        ),
    ];
    for (from, to, field) in cases {
        let rt = FakeRuntime::new();
        converge(&rt, &load(BASE)).await;
        let text = BASE.replacen(from, to, 1);
        assert_ne!(text, BASE, "case {field} did not change the manifest");
        let p = plan(&rt, &load(&text));
        let web = p
            .find(Kind::Container, "web")
            .unwrap_or_else(|| panic!("{field}: web not replaced: {p}"));
        assert_eq!(web.verb, Verb::Replace, "{field}");
        assert!(
            web.reason.to_string().contains(field),
            "{field}: reason {:?}",
            web.reason
        );
        assert!(
            p.find(Kind::Container, "db").is_none(),
            "{field}: db must not be touched: {p}"
        );
    }
}

#[tokio::test]
async fn policy_changes_do_not_replace() {
    let rt = FakeRuntime::new();
    converge(&rt, &load(BASE)).await;
    let text = BASE
        .replace(
            "restart = \"always\"",
            "restart = \"on-failure:3\"\nstop_grace_period = \"3s\"\nstop_signal = \"SIGQUIT\"",
        )
        .replace("depends_on = { db = \"healthy\" }", "depends_on = [\"db\"]");
    assert!(
        plan(&rt, &load(&text)).is_empty(),
        "{}",
        plan(&rt, &load(&text))
    );
}

#[tokio::test]
async fn scaling_adds_and_removes_replicas_without_touching_the_first() {
    let rt = FakeRuntime::new();
    converge(&rt, &load(BASE)).await;
    let three = load(&BASE.replace("ports = [\"8080:80\"]", "replicas = 3"));
    // Dropping the port replaces web once; then scaling only adds.
    converge(&rt, &three).await;
    assert!(rt.with_host(|h| h.containers.contains_key("web-3")));
    let one = load(&BASE.replace("ports = [\"8080:80\"]", "replicas = 1"));
    let p = plan(&rt, &one);
    assert_eq!(
        verbs(&p),
        ["remove container web-2", "remove container web-3"]
    );
    assert!(
        p.actions[0]
            .reason
            .to_string()
            .contains("beyond replicas = 1"),
        "{}",
        p.actions[0].reason
    );
}

#[tokio::test]
async fn removed_resources_are_pruned_but_volumes_kept() {
    let rt = FakeRuntime::new();
    converge(&rt, &load(BASE)).await;
    let only_db = load(
        r#"
[networks.other]
[containers.db]
image = "localhost:5000/busybox:1"
command = ["sleep", "1000"]
networks = ["other"]
healthcheck = { cmd = "true", interval = "1s" }
"#,
    );
    let p = plan(&rt, &only_db);
    let v = verbs(&p);
    assert!(v.contains(&"remove container web".to_string()), "{v:?}");
    assert!(v.contains(&"remove network front".to_string()), "{v:?}");
    assert!(v.contains(&"replace container db".to_string()), "{v:?}");
    assert!(
        !v.iter().any(|a| a.contains("volume site")),
        "volumes are kept: {v:?}"
    );
    rt.clear_calls();
    converge(&rt, &only_db).await;
    let calls = rt.calls();
    let at = |c: &str| {
        calls
            .iter()
            .position(|x| x.starts_with(c))
            .unwrap_or_else(|| panic!("{c}: {calls:?}"))
    };
    assert!(
        at("remove_container web") < at("remove_network front"),
        "{calls:?}"
    );
    assert!(
        at("remove_container db") < at("remove_network front"),
        "{calls:?}"
    );
    assert!(rt.with_host(|h| h.volumes.contains_key("site")));
}

#[tokio::test]
async fn prune_true_volumes_go_with_their_manifest() {
    let rt = FakeRuntime::new();
    converge(
        &rt,
        &load(&BASE.replace(
            "[volumes.site]",
            "[volumes.site]\nprune = true\n[volumes.scratch]\nprune = true",
        )),
    )
    .await;
    let p = plan(
        &rt,
        &load(&BASE.replace("[volumes.site]", "[volumes.site]\nprune = true")),
    );
    assert_eq!(verbs(&p), ["remove volume scratch"]);
}

#[tokio::test]
async fn down_with_volumes_removes_everything() {
    let rt = FakeRuntime::new();
    converge(&rt, &load(BASE)).await;
    let observed = rt.with_host(|h| h.clone());
    let empty = DesiredState::default();
    let err = diff(&empty, &observed, &opts(SystemTime::now())).unwrap_err();
    assert!(
        matches!(err, DiffError::EmptySource { owned: 4, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--allow-empty"));
    let down = DiffOptions {
        allow_empty: true,
        remove_volumes: true,
        ..opts(SystemTime::now())
    };
    let p = diff(&empty, &observed, &down).expect("diff");
    assert_eq!(p.count(Verb::Remove), 4, "{p}");
    let outcomes = apply(&rt, &p, &empty, &observed, &apply_opts()).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    let calls = rt.calls();
    let at = |c: &str| {
        calls
            .iter()
            .position(|x| x.starts_with(c))
            .unwrap_or_else(|| panic!("{c}: {calls:?}"))
    };
    assert!(
        at("remove_container web") < at("remove_container db"),
        "dependents go first: {calls:?}"
    );
    assert!(!rt.with_host(|h| h.owns_anything(PROJECT)));
}

#[tokio::test]
async fn other_projects_and_strangers_are_never_touched() {
    let rt = FakeRuntime::new();
    converge(&rt, &load(BASE)).await;
    rt.with_host(|h| {
        let mut c = h.containers["db"].clone();
        c.project = Some("other".into());
        h.containers.insert("theirs".into(), c.clone());
        c.project = None;
        h.containers.insert("stranger".into(), c);
        h.networks.get_mut("front").expect("front").project = Some("other".into());
    });
    let p = plan(&rt, &load(BASE));
    assert!(p.find(Kind::Container, "theirs").is_none());
    assert!(p.find(Kind::Container, "stranger").is_none());
    let blocked: Vec<_> = p
        .blocked
        .iter()
        .map(|b| (b.name.as_str(), b.reason.to_string()))
        .collect();
    assert!(
        blocked.contains(&(
            "front",
            "the name is taken by project \"other\"".to_string()
        )),
        "{blocked:?}"
    );
    assert!(
        blocked
            .iter()
            .any(|(n, r)| *n == "web" && r.contains("network front is blocked")),
        "{blocked:?}"
    );
}

#[tokio::test]
async fn a_network_namespace_of_another_project_is_never_joined() {
    // Another project runs a container named db; these manifests declare a
    // db of their own (blocked: the name is taken) and a sidecar in its
    // network namespace, which would be theirs.
    let rt = FakeRuntime::new();
    converge(&rt, &load(BASE)).await;
    rt.with_host(|h| {
        for c in h.containers.values_mut() {
            c.project = Some("other".into());
        }
    });
    let sidecar = format!(
        "{BASE}\n[containers.sidecar]\nimage = \"busybox\"\nnetwork_mode = \"container:db\"\n"
    );
    let p = plan(&rt, &load(&sidecar));
    assert!(p.find(Kind::Container, "sidecar").is_none(), "{p}");
    let blocked: Vec<_> = p
        .blocked
        .iter()
        .map(|b| (b.name.as_str(), b.reason.to_string()))
        .collect();
    assert!(
        blocked.contains(&("sidecar", "container db is blocked".to_string())),
        "{blocked:?}"
    );
}

#[test]
fn restart_backoff_doubles_to_five_minutes() {
    assert_eq!(restart_delay(0), Duration::from_secs(1));
    assert_eq!(restart_delay(1), Duration::from_secs(2));
    assert_eq!(restart_delay(3), Duration::from_secs(8));
    assert_eq!(restart_delay(8), Duration::from_secs(256));
    assert_eq!(restart_delay(9), Duration::from_secs(300));
    assert_eq!(restart_delay(200), Duration::from_secs(300));
}

#[tokio::test]
async fn restart_policies_with_crash_loop_backoff() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let rt = FakeRuntime::new();
    let text = BASE.to_string()
        + "\n[containers.job]\nimage = \"busybox\"\n\n[containers.worker]\nimage = \"busybox\"\nrestart = \"on-failure:2\"\n";
    let desired = load(&text);
    converge(&rt, &desired).await;
    let exited = |name: &str, code: i32, ran: u64, restarts: u32| {
        rt.with_host(|h| {
            let c = h.containers.get_mut(name).expect("container");
            c.state = ContainerState::Exited { code, oom: false };
            c.started_at = Some(t0 - Duration::from_secs(ran));
            c.finished_at = Some(t0);
            c.restart_count = restarts;
        })
    };
    let at = |secs: f64| {
        let observed = rt.with_host(|h| h.clone());
        diff(
            &desired,
            &observed,
            &opts(t0 + Duration::from_secs_f64(secs)),
        )
        .expect("diff")
    };
    // restart = no: an exit is final.
    exited("job", 1, 5, 0);
    assert!(at(10.0).find(Kind::Container, "job").is_none());
    // restart = always: after 1 s the first time, 8 s after three restarts.
    exited("web", 0, 5, 0);
    let p = at(0.25);
    assert!(p.find(Kind::Container, "web").is_none());
    assert_eq!(p.requeue_after, Some(Duration::from_millis(750)));
    let start = at(1.0);
    let a = start.find(Kind::Container, "web").expect("restart");
    assert_eq!(
        (a.verb, a.reason.to_string().as_str()),
        (Verb::Start, "exited 0, restart = always")
    );
    exited("web", 0, 5, 3);
    assert_eq!(at(2.0).requeue_after, Some(Duration::from_secs(6)));
    // It ran ten minutes before exiting: not a crash loop, back to 1 s.
    exited("web", 0, 600, 3);
    assert!(at(1.0).find(Kind::Container, "web").is_some());
    // on-failure:2 — success is final, failure restarts, until two restarts.
    exited("web", 0, 600, 0);
    exited("worker", 0, 5, 0);
    assert!(at(10.0).find(Kind::Container, "worker").is_none());
    exited("worker", 3, 5, 1);
    assert_eq!(
        at(10.0).find(Kind::Container, "worker").map(|a| a.verb),
        Some(Verb::Start)
    );
    exited("worker", 3, 5, 2);
    let p = at(10.0);
    assert!(p.find(Kind::Container, "worker").is_none());
    assert!(
        p.blocked.iter().any(
            |b| b.name == "worker" && b.reason.to_string().contains("gave up after 2 restarts")
        ),
        "{p}"
    );
}

#[tokio::test]
async fn a_stopped_or_paused_container_is_left_alone_until_its_spec_changes() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let rt = FakeRuntime::new();
    let desired = load(BASE);
    converge(&rt, &desired).await;
    let at = |desired: &DesiredState, secs: u64| {
        let observed = rt.with_host(|h| h.clone());
        diff(desired, &observed, &opts(t0 + Duration::from_secs(secs))).expect("diff")
    };
    // `moor stop web`: restart = "always", but it stays stopped, for ever.
    rt.with_host(|h| {
        let c = h.containers.get_mut("web").expect("web");
        c.state = ContainerState::Exited {
            code: 137,
            oom: false,
        };
        c.finished_at = Some(t0);
        c.hold = Some(Hold::Stopped);
    });
    for secs in [1, 60, 3600] {
        let p = at(&desired, secs);
        assert!(p.is_empty(), "at {secs} s: {p}");
        assert_eq!(p.requeue_after, None);
    }
    // Without the hold (`moor start`, or a crash), the policy applies.
    rt.with_host(|h| h.containers.get_mut("web").expect("web").hold = None);
    assert_eq!(
        at(&desired, 60)
            .find(Kind::Container, "web")
            .map(|a| a.verb),
        Some(Verb::Start)
    );
    // A change of its spec replaces it, stopped or not.
    rt.with_host(|h| h.containers.get_mut("web").expect("web").hold = Some(Hold::Stopped));
    let changed = load(&BASE.replace("GREETING = \"hello\"", "GREETING = \"bye\""));
    assert_eq!(
        at(&changed, 60)
            .find(Kind::Container, "web")
            .map(|a| a.verb),
        Some(Verb::Replace)
    );
    // Between the create and the start of `moor start` (which holds it
    // stopped until it runs), it is not taken for an interrupted create.
    rt.with_host(|h| h.containers.get_mut("web").expect("web").state = ContainerState::Created);
    assert!(at(&desired, 60).is_empty());
    rt.with_host(|h| h.containers.get_mut("web").expect("web").hold = None);
    assert_eq!(
        at(&desired, 60)
            .find(Kind::Container, "web")
            .map(|a| a.verb),
        Some(Verb::Replace)
    );
    // Paused: running, nothing to do.
    rt.with_host(|h| {
        let c = h.containers.get_mut("web").expect("web");
        c.state = ContainerState::Running;
        c.hold = Some(Hold::Paused);
    });
    assert!(at(&desired, 60).is_empty());
}

#[tokio::test]
async fn drift_is_repaired() {
    let rt = FakeRuntime::new();
    let desired = load(BASE);
    converge(&rt, &desired).await;
    rt.with_host(|h| {
        h.networks.get_mut("front").expect("front").fault =
            Some("bridge mo-front is missing".into());
        h.volumes.get_mut("site").expect("site").fault = Some("directory is missing".into());
    });
    let p = plan(&rt, &desired);
    let v = verbs(&p);
    assert!(v.contains(&"replace network front".to_string()), "{v:?}");
    assert!(v.contains(&"create volume site".to_string()), "{v:?}");
    assert_eq!(
        p.find(Kind::Container, "web").map(|a| a.reason.to_string()),
        Some("network front is being recreated".to_string())
    );
    converge(&rt, &desired).await;
    // A running container that is broken on the host is replaced.
    rt.with_host(|h| {
        h.containers.get_mut("web").expect("web").fault =
            Some("not plugged into network front".into())
    });
    let p = plan(&rt, &desired);
    assert_eq!(
        p.find(Kind::Container, "web")
            .map(|a| (a.verb, a.reason.to_string())),
        Some((Verb::Replace, "not plugged into network front".to_string()))
    );
    converge(&rt, &desired).await;
    // What an interrupted create left behind is created again.
    rt.with_host(|h| h.containers.get_mut("web").expect("web").state = ContainerState::Created);
    assert_eq!(
        plan(&rt, &desired)
            .find(Kind::Container, "web")
            .map(|a| a.verb),
        Some(Verb::Replace)
    );
    converge(&rt, &desired).await;
    // A container whose supervisor vanished is replaced.
    rt.with_host(|h| h.containers.get_mut("db").expect("db").state = ContainerState::Dead);
    assert_eq!(
        plan(&rt, &desired)
            .find(Kind::Container, "db")
            .map(|a| a.verb),
        Some(Verb::Replace)
    );
}

#[tokio::test]
async fn a_new_image_digest_replaces_its_containers() {
    let rt = FakeRuntime::new();
    let always = load(&BASE.replace(
        "ref = \"localhost:5000/busybox:1\"",
        "ref = \"localhost:5000/busybox:1\"\npull = \"always\"",
    ));
    converge(&rt, &always).await;
    let new = format!("sha256:{}", "b".repeat(64));
    rt.with_host(|h| {
        h.images
            .get_mut("localhost:5000/busybox:1")
            .expect("image")
            .remote_digest = Some(new.clone());
    });
    rt.set_registry_digest("localhost:5000/busybox:1", &new);
    let p = plan(&rt, &always);
    assert_eq!(verbs(&p), ["pull image localhost:5000/busybox:1"]);
    assert_eq!(p.actions[0].reason.to_string(), "tag moved to bbbbbbbbbbbb");
    let observed = rt.with_host(|h| h.clone());
    apply(&rt, &p, &always, &observed, &apply_opts()).await;
    rt.with_host(|h| {
        h.images
            .get_mut("localhost:5000/busybox:1")
            .expect("image")
            .remote_digest = None
    });
    let p = plan(&rt, &always);
    assert_eq!(p.count(Verb::Replace), 2, "{p}");
    assert!(
        p.actions
            .iter()
            .all(|a| a.reason.to_string() == "image changed to bbbbbbbbbbbb"),
        "{p}"
    );
}

/// `pull = "always"` asks the registry on each observation (not only
/// when a test sets what it answered): a moved tag is pulled and its
/// containers replaced; an unmoved one is left; a registry that cannot
/// be asked changes nothing.
#[tokio::test]
async fn pull_always_asks_the_registry_where_the_tag_points() {
    let rt = FakeRuntime::new();
    let always = load(&BASE.replace(
        "ref = \"localhost:5000/busybox:1\"",
        "ref = \"localhost:5000/busybox:1\"\npull = \"always\"",
    ));
    converge(&rt, &always).await;
    let observe = || async {
        crate::runtime::observe(&rt, &always)
            .await
            .expect("observe")
    };

    // The tag has not moved: asked, and nothing to do.
    rt.clear_calls();
    let seen = observe().await;
    assert_eq!(rt.calls(), ["head localhost:5000/busybox:1"]);
    assert_eq!(seen.images["localhost:5000/busybox:1"].remote_digest, None);
    assert!(
        diff(&always, &seen, &opts(SystemTime::now()))
            .expect("diff")
            .is_empty()
    );

    // The registry cannot be asked: the image and its containers stay.
    rt.fail_next("head localhost:5000/busybox:1", "connection refused");
    let new = format!("sha256:{}", "c".repeat(64));
    rt.set_registry_digest("localhost:5000/busybox:1", &new);
    let seen = observe().await;
    assert_eq!(seen.images["localhost:5000/busybox:1"].remote_digest, None);
    assert!(
        diff(&always, &seen, &opts(SystemTime::now()))
            .expect("diff")
            .is_empty()
    );

    // It can again, and the tag has moved: pull, then replace.
    let seen = observe().await;
    assert_eq!(
        seen.images["localhost:5000/busybox:1"].remote_digest,
        Some(new.clone())
    );
    let p = diff(&always, &seen, &opts(SystemTime::now())).expect("diff");
    assert_eq!(verbs(&p), ["pull image localhost:5000/busybox:1"]);
    apply(&rt, &p, &always, &seen, &apply_opts()).await;
    let seen = observe().await;
    assert_eq!(seen.images["localhost:5000/busybox:1"].remote_digest, None);
    let p = diff(&always, &seen, &opts(SystemTime::now())).expect("diff");
    assert_eq!(p.count(Verb::Replace), 2, "{p}");

    // `if-not-present` (the default) never asks.
    let lazy = load(BASE);
    rt.clear_calls();
    crate::runtime::observe(&rt, &lazy).await.expect("observe");
    assert!(rt.calls().is_empty(), "{:?}", rt.calls());
}

/// `desired` with `busybox`'s reference pinned to `digest` (as the agent's
/// image updates pin it): the entry and its containers, hashes kept.
fn pinned(desired: &DesiredState, digest: &str) -> DesiredState {
    let mut out = desired.clone();
    let r: moor_spec::reference::ImageRef = format!("localhost:5000/busybox:1@{digest}")
        .parse()
        .expect("reference");
    std::sync::Arc::make_mut(&mut out.images.get_mut("busybox").expect("entry").spec).reference =
        r.clone();
    for c in out.containers.values_mut() {
        std::sync::Arc::make_mut(&mut c.spec).image = r.clone();
    }
    out
}

#[tokio::test]
async fn a_pinned_image_replaces_containers_only_when_its_digest_differs() {
    let rt = FakeRuntime::new();
    let written = load(BASE);
    converge(&rt, &written).await;
    let ids = |rt: &FakeRuntime| {
        rt.with_host(|h| {
            h.containers
                .values()
                .map(|c| c.hash.clone())
                .collect::<Vec<_>>()
        })
    };
    let before = ids(&rt);
    // The first check pins what runs: a pull by digest, and nothing else.
    let same = fake::default_digest("localhost:5000/busybox:1");
    let first = pinned(&written, &format!("sha256:{}", "a".repeat(64)));
    rt.set_registry_digest(&first.images["busybox"].spec.reference.to_string(), &same);
    let p = plan(&rt, &first);
    assert_eq!(p.count(Verb::Pull), 1, "{p}");
    assert_eq!(p.actions.len(), 1, "{p}");
    converge(&rt, &first).await;
    assert_eq!(ids(&rt), before, "the same image replaces nothing");
    // A new index whose image for this platform is the same: nothing either.
    let other = pinned(&written, &format!("sha256:{}", "c".repeat(64)));
    rt.set_registry_digest(&other.images["busybox"].spec.reference.to_string(), &same);
    let p = plan(&rt, &other);
    assert_eq!(p.count(Verb::Pull), 1, "{p}");
    assert_eq!(p.actions.len(), 1, "{p}");
    converge(&rt, &other).await;
    assert_eq!(
        ids(&rt),
        before,
        "another platform's change replaces nothing"
    );
    // A new image: pulled first, then (next pass) the containers replaced.
    let new = pinned(&written, &format!("sha256:{}", "e".repeat(64)));
    let new_ref = new.images["busybox"].spec.reference.to_string();
    rt.set_registry_digest(&new_ref, &format!("sha256:{}", "f".repeat(64)));
    let p = plan(&rt, &new);
    assert_eq!(verbs(&p), [format!("pull image {new_ref}")]);
    let observed = rt.with_host(|h| h.clone());
    apply(&rt, &p, &new, &observed, &apply_opts()).await;
    let p = plan(&rt, &new);
    assert_eq!(p.count(Verb::Replace), 2, "{p}");
    converge(&rt, &new).await;
    let after = ids(&rt);
    assert!(after.iter().all(|id| !before.contains(id)), "{after:?}");
    // The pinned state is stable.
    assert!(plan(&rt, &new).is_empty());
    // Then a new index with the same image for this platform, over
    // containers made from a pin: a pull, and the containers stay.
    let again = pinned(&written, &format!("sha256:{}", "1".repeat(64)));
    rt.set_registry_digest(
        &again.images["busybox"].spec.reference.to_string(),
        &format!("sha256:{}", "f".repeat(64)),
    );
    let p = plan(&rt, &again);
    assert_eq!(p.count(Verb::Pull), 1, "{p}");
    assert_eq!(p.actions.len(), 1, "{p}");
    converge(&rt, &again).await;
    assert_eq!(ids(&rt), after);
}

#[tokio::test]
async fn pull_never_without_the_image_blocks_its_containers() {
    let rt = FakeRuntime::new();
    let never = load(&BASE.replace(
        "ref = \"localhost:5000/busybox:1\"",
        "ref = \"localhost:5000/busybox:1\"\npull = \"never\"",
    ));
    let p = plan(&rt, &never);
    assert_eq!(p.count(Verb::Pull), 0);
    assert!(
        p.blocked
            .iter()
            .any(|b| b.kind == Kind::Image && b.reason.to_string().contains("pull = \"never\""))
    );
    assert!(
        p.blocked
            .iter()
            .any(|b| b.name == "web" && b.reason.to_string().contains("is blocked"))
    );
    assert!(p.find(Kind::Container, "web").is_none());
}

#[test]
fn the_same_manifest_in_yaml_plans_nothing_after_toml() {
    let toml = load(BASE);
    let yaml = moor_spec::load_texts(&[(
        PathBuf::from("/m/stack.yaml"),
        r#"
images:
  busybox: {ref: "localhost:5000/busybox:1"}
networks:
  front: {subnet: 10.89.1.0/24}
volumes:
  site:
containers:
  db:
    image: busybox
    command: [sleep, "1000"]
    networks: [front]
    healthcheck: {cmd: "true", interval: 1s}
  web:
    depends_on: {db: healthy}
    restart: always
    ports: ["8080:80"]
    mounts: ["site:/www"]
    networks: [front]
    env: {GREETING: hello}
    command: [httpd, -f]
    image: busybox
"#
        .to_string(),
    )])
    .expect("valid yaml");
    for name in ["db", "web"] {
        assert_eq!(
            toml.containers[name].hash, yaml.containers[name].hash,
            "{name}"
        );
    }
}

/// `[images] verify`: the pull is asked to check the key of every entry
/// naming the reference; a pull it refuses (no valid signature) changes
/// nothing for the containers of the image, which keep running the image
/// they run, and the next pass asks again.
#[tokio::test]
async fn a_refused_signed_pull_leaves_its_containers_alone() {
    let rt = FakeRuntime::new();
    let mut always = load(&BASE.replace(
        "ref = \"localhost:5000/busybox:1\"",
        "ref = \"localhost:5000/busybox:1\"\npull = \"always\"",
    ));
    let key = PathBuf::from("/m/keys/cosign.pub");
    std::sync::Arc::make_mut(&mut always.images.get_mut("busybox").unwrap().spec).verify =
        Some(moor_spec::VerifySpec {
            key: key.clone(),
            pem: "-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----\n".into(),
        });
    converge(&rt, &always).await;
    assert_eq!(rt.pull_keys("localhost:5000/busybox:1"), [key]);
    let before: Vec<String> = rt.with_host(|h| {
        h.containers
            .values()
            .map(|c| format!("{} {} {:?}", c.id, c.hash, c.started_at))
            .collect()
    });

    // The tag moves to an image the key did not sign: the pull is refused.
    let new = format!("sha256:{}", "b".repeat(64));
    rt.with_host(|h| {
        h.images
            .get_mut("localhost:5000/busybox:1")
            .expect("image")
            .remote_digest = Some(new.clone());
    });
    rt.set_registry_digest("localhost:5000/busybox:1", &new);
    rt.clear_calls();
    rt.fail_next(
        "pull localhost:5000/busybox:1",
        "localhost:5000/busybox:1 has no valid signature by /m/keys/cosign.pub",
    );
    let p = plan(&rt, &always);
    assert_eq!(verbs(&p), ["pull image localhost:5000/busybox:1"]);
    let observed = rt.with_host(|h| h.clone());
    let outcomes = apply(&rt, &p, &always, &observed, &apply_opts()).await;
    assert_eq!(
        outcomes[0].result,
        Err("localhost:5000/busybox:1 has no valid signature by /m/keys/cosign.pub".into())
    );
    assert_eq!(rt.calls(), ["pull localhost:5000/busybox:1"]);
    let after: Vec<String> = rt.with_host(|h| {
        h.containers
            .values()
            .map(|c| format!("{} {} {:?}", c.id, c.hash, c.started_at))
            .collect()
    });
    assert_eq!(before, after, "a container was touched");
    // The image is still the old one; the next pass tries the pull again.
    let p = plan(&rt, &always);
    assert_eq!(verbs(&p), ["pull image localhost:5000/busybox:1"]);
}
