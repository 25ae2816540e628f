//! `update_order = "start-first"` against the fake runtime: the new instance
//! runs (and is healthy) before the old one goes; a new instance that fails
//! goes, and the old one stays.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use moor_spec::DesiredState;

use crate::apply::start_first_id;
use crate::fake::FakeRuntime;
use crate::*;

const PROJECT: &str = "demo";

fn manifest(greeting: &str, extra: &str) -> DesiredState {
    let text = format!(
        r#"
[containers.web]
image = "localhost:5000/busybox:1"
command = ["httpd", "-f"]
env = {{ GREETING = "{greeting}" }}
update_order = "start-first"
healthcheck = {{ cmd = "true", interval = "1s" }}
{extra}
"#
    );
    moor_spec::load_texts(&[(PathBuf::from("/m/stack.toml"), text)])
        .unwrap_or_else(|d| panic!("test manifest invalid:\n{d}"))
}

fn plan(rt: &FakeRuntime, desired: &DesiredState) -> Plan {
    let observed = rt.with_host(|h| h.clone());
    let opts = DiffOptions {
        project: PROJECT,
        allow_empty: false,
        remove_volumes: false,
        now: SystemTime::now(),
    };
    diff(desired, &observed, &opts).expect("diff")
}

async fn apply_once(rt: &FakeRuntime, desired: &DesiredState) -> Vec<Outcome> {
    let p = plan(rt, desired);
    let observed = rt.with_host(|h| h.clone());
    let opts = ApplyOptions {
        health_poll: Duration::from_millis(10),
        health_timeout: Duration::from_secs(5),
        ..ApplyOptions::new(PROJECT)
    };
    apply(rt, &p, desired, &observed, &opts).await
}

async fn converge(rt: &FakeRuntime, desired: &DesiredState) {
    for _ in 0..3 {
        if plan(rt, desired).is_empty() {
            return;
        }
        let outcomes = apply_once(rt, desired).await;
        assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    }
    panic!("did not converge: {}", plan(rt, desired));
}

/// The id the new instance of `web` gets when `desired` is applied.
fn new_id(rt: &FakeRuntime, desired: &DesiredState) -> String {
    let digest = rt.with_host(|h| h.images["localhost:5000/busybox:1"].digest.clone());
    let hash = desired.containers["web"].hash.with_image_digest(&digest);
    start_first_id("web", &hash)
}

fn greeting(rt: &FakeRuntime) -> String {
    rt.with_host(|h| h.containers["web"].spec.as_ref().expect("spec").env["GREETING"].clone())
}

#[tokio::test]
async fn start_first_starts_and_checks_the_new_instance_before_removing_the_old() {
    let rt = FakeRuntime::new();
    converge(&rt, &manifest("hello", "")).await;
    assert_eq!(rt.with_host(|h| h.containers["web"].host_id()), "web");

    let desired = manifest("bonjour", "");
    let p = plan(&rt, &desired);
    let a = p.find(moor_spec::Kind::Container, "web").expect("replace");
    assert!(a.verb == Verb::Replace && a.start_first, "{p}");
    assert!(p.to_string().contains("+/- container web"), "{p}");

    let id = new_id(&rt, &desired);
    assert!(id.starts_with("web--") && id.len() == 13, "{id}");
    rt.script_health(&id, &[Health::Starting, Health::Starting, Health::Healthy]);
    rt.clear_calls();
    let outcomes = apply_once(&rt, &desired).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    assert_eq!(
        rt.calls(),
        [
            format!("create_container {id}"),
            "remove_container web SIGTERM".to_string()
        ],
        "the old instance goes only after the new one is healthy"
    );
    rt.with_host(|h| {
        assert_eq!(h.containers["web"].host_id(), id);
        assert!(h.superseded.is_empty(), "{:?}", h.superseded);
    });
    assert_eq!(greeting(&rt), "bonjour");
    assert!(plan(&rt, &desired).is_empty());

    // The next update replaces the suffixed instance the same way.
    let again = manifest("hallo", "");
    let next = new_id(&rt, &again);
    assert_ne!(next, id);
    rt.clear_calls();
    converge(&rt, &again).await;
    assert_eq!(
        rt.calls(),
        [
            format!("create_container {next}"),
            format!("remove_container {id} SIGTERM")
        ]
    );
    assert_eq!(greeting(&rt), "hallo");
}

#[tokio::test]
async fn a_new_instance_that_fails_is_removed_and_the_old_keeps_running() {
    let rt = FakeRuntime::new();
    converge(&rt, &manifest("hello", "")).await;
    let desired = manifest("bonjour", "");
    let id = new_id(&rt, &desired);
    rt.script_health(&id, &[Health::Starting, Health::Unhealthy]);
    rt.clear_calls();
    let outcomes = apply_once(&rt, &desired).await;
    let err = outcomes[0].result.as_ref().expect_err("the update fails");
    assert!(
        err.contains(&id) && err.contains("unhealthy") && err.contains("web keeps running"),
        "{err}"
    );
    assert_eq!(
        rt.calls(),
        [
            format!("create_container {id}"),
            format!("remove_container {id} SIGTERM")
        ],
        "the old instance is never stopped"
    );
    rt.with_host(|h| {
        assert_eq!(h.containers["web"].host_id(), "web");
        assert_eq!(h.containers["web"].state, ContainerState::Running);
        assert!(h.superseded.is_empty());
    });
    assert_eq!(greeting(&rt), "hello");

    // A new instance that cannot even be created changes nothing either.
    rt.fail_next(&format!("create_container {id}"), "no space left");
    let outcomes = apply_once(&rt, &desired).await;
    let err = outcomes[0].result.as_ref().expect_err("the update fails");
    assert!(err.contains("no space left"), "{err}");
    assert_eq!(greeting(&rt), "hello");
}

#[tokio::test]
async fn a_published_host_port_falls_back_to_stop_first_and_says_why() {
    let rt = FakeRuntime::new();
    let ports = r#"ports = ["8080:80"]"#;
    converge(&rt, &manifest("hello", ports)).await;
    let desired = manifest("bonjour", ports);
    let p = plan(&rt, &desired);
    let a = p.find(moor_spec::Kind::Container, "web").expect("replace");
    assert!(!a.start_first, "{p}");
    assert!(
        a.reason
            .to_string()
            .contains("stop-first, as host port 8080/tcp cannot be published"),
        "{}",
        a.reason
    );
    rt.clear_calls();
    converge(&rt, &desired).await;
    assert_eq!(
        rt.calls(),
        ["remove_container web SIGTERM", "create_container web"]
    );

    // Without a host port of its own (the engine picks one) it can start first.
    let p = plan(&rt, &manifest("hallo", r#"ports = ["80"]"#));
    assert!(p.actions[0].start_first, "{p}");
}

#[tokio::test]
async fn stop_first_stays_the_default() {
    let rt = FakeRuntime::new();
    let stop_first = |g: &str| {
        let mut d = manifest(g, "");
        if let Some(c) = d.containers.get_mut("web") {
            std::sync::Arc::make_mut(&mut c.spec).update_order = moor_spec::UpdateOrder::StopFirst;
        }
        d
    };
    converge(&rt, &stop_first("hello")).await;
    rt.clear_calls();
    converge(&rt, &stop_first("bonjour")).await;
    assert_eq!(
        rt.calls(),
        ["remove_container web SIGTERM", "create_container web"]
    );
}

#[tokio::test]
async fn instances_an_interrupted_update_left_are_removed() {
    let rt = FakeRuntime::new();
    let desired = manifest("hello", "");
    converge(&rt, &desired).await;
    // A crash between starting the new instance and removing the old: the
    // runtime reports the new one as `web` and the old one as superseded.
    rt.with_host(|h| {
        let old = h.containers["web"].clone();
        let mut new = old.clone();
        new.id = "web--0123abcd".into();
        h.containers.insert("web".into(), new);
        h.superseded.insert("web".into(), old);
    });
    let p = plan(&rt, &desired);
    assert_eq!(p.actions.len(), 1, "{p}");
    assert_eq!(p.actions[0].verb, Verb::Remove);
    assert_eq!(p.actions[0].name, "web");
    assert!(
        p.actions[0]
            .reason
            .to_string()
            .contains("superseded by web--0123abcd"),
        "{p}"
    );
    rt.clear_calls();
    converge(&rt, &desired).await;
    assert_eq!(rt.calls(), ["remove_container web SIGTERM"]);
    rt.with_host(|h| {
        assert_eq!(h.containers["web"].host_id(), "web--0123abcd");
        assert!(h.superseded.is_empty());
    });

    // Left behind again, while the manifest changes: the replacement removes
    // the leftover first, then replaces start-first.
    rt.with_host(|h| {
        let mut left = h.containers["web"].clone();
        left.id = "web--feedbeef".into();
        h.superseded.insert(left.id.clone(), left);
    });
    let changed = manifest("bonjour", "");
    let id = new_id(&rt, &changed);
    rt.clear_calls();
    converge(&rt, &changed).await;
    assert_eq!(
        rt.calls(),
        [
            "remove_container web--feedbeef SIGTERM".to_string(),
            format!("create_container {id}"),
            "remove_container web--0123abcd SIGTERM".to_string(),
        ]
    );

    // `down`: every instance of the name goes.
    rt.with_host(|h| {
        let mut left = h.containers["web"].clone();
        left.id = "web".into();
        h.superseded.insert(left.id.clone(), left);
    });
    let empty = DesiredState::default();
    let observed = rt.with_host(|h| h.clone());
    let opts = DiffOptions {
        project: PROJECT,
        allow_empty: true,
        remove_volumes: false,
        now: SystemTime::now(),
    };
    let p = diff(&empty, &observed, &opts).expect("diff");
    let outcomes = apply(&rt, &p, &empty, &observed, &ApplyOptions::new(PROJECT)).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
    rt.with_host(|h| {
        assert!(h.containers.is_empty() && h.superseded.is_empty(), "{h:?}");
    });
}

#[tokio::test]
async fn a_leftover_named_like_its_instance_goes_first_within_the_replacement() {
    let rt = FakeRuntime::new();
    converge(&rt, &manifest("hello", "")).await;
    // The old container, made before ids existed, is `web` itself, and the
    // current one is the new instance; then the manifest changes again.
    rt.with_host(|h| {
        let old = h.containers["web"].clone();
        let mut new = old.clone();
        new.id = "web--0123abcd".into();
        h.containers.insert("web".into(), new);
        h.superseded.insert("web".into(), old);
    });
    let desired = manifest("bonjour", "");
    let p = plan(&rt, &desired);
    assert_eq!(p.actions.len(), 1, "one action on web, not two: {p}");
    assert!(p.actions[0].start_first, "{p}");
    let id = new_id(&rt, &desired);
    rt.clear_calls();
    converge(&rt, &desired).await;
    assert_eq!(
        rt.calls(),
        [
            "remove_container web SIGTERM".to_string(),
            format!("create_container {id}"),
            "remove_container web--0123abcd SIGTERM".to_string(),
        ]
    );
    rt.with_host(|h| assert!(h.superseded.is_empty()));
    assert_eq!(greeting(&rt), "bonjour");
}
