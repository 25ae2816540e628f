//! One scrape of /metrics at the server with 100 containers (issue 8: ≤ 5 ms):
//! the per-container cgroup figures recorded, then every family encoded in
//! the text format. Reading the cgroup files is the runtime's part and is
//! measured by bench/metrics.sh against the running agent.

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use moor_metrics::{ContainerUsage, Metrics};
use moor_reconcile::{ContainerState, Health, Observed, ObservedContainer, Recorder, Verb};
use moor_spec::Kind;

const CONTAINERS: usize = 100;

fn container(i: usize) -> ObservedContainer {
    ObservedContainer {
        id: String::new(),
        project: Some("bench".into()),
        resource: format!("app{i:03}"),
        replica: 1,
        hash: moor_spec::hash::volume(&Default::default()),
        spec: None,
        networks: vec![],
        volumes: vec![],
        state: ContainerState::Running,
        health: Health::Healthy,
        restart_count: (i % 3) as u32,
        started_at: None,
        finished_at: None,
        fault: None,
        hold: None,
    }
}

/// Metrics as an agent running 100 containers has them.
fn populated() -> Metrics {
    let m = Metrics::new("0.1.0", "bench");
    let manifest: String = (0..CONTAINERS)
        .map(|i| format!("[containers.app{i:03}]\nimage = \"busybox\"\n"))
        .collect();
    let desired =
        moor_spec::load_texts(&[("/m/bench.toml".into(), manifest)]).expect("valid manifest");
    let mut observed = Observed::default();
    for i in 0..CONTAINERS {
        observed
            .containers
            .insert(format!("app{i:03}"), container(i));
    }
    m.host(&desired, &observed, "bench", &BTreeMap::new());
    for kind in [Kind::Image, Kind::Network, Kind::Volume, Kind::Container] {
        for verb in [Verb::Create, Verb::Remove] {
            m.action(kind, verb, true);
        }
    }
    for i in 0..50 {
        m.reconcile(i % 10 != 0, Duration::from_millis(i));
    }
    m.source_sync("main", Some("0123abcd"), true, 1.7e9);
    m.image_pull(1 << 20, Duration::from_secs(1), true);
    m
}

fn scrape(c: &mut Criterion) {
    let m = populated();
    let mut tick = 0.0;
    c.bench_function("scrape_100_containers", |b| {
        b.iter(|| {
            tick += 0.001;
            for i in 0..CONTAINERS {
                m.container_usage(
                    &format!("app{i:03}"),
                    ContainerUsage {
                        cpu_seconds: tick,
                        memory_bytes: 1 << 24,
                        pids: 3,
                    },
                );
            }
            m.encode()
        })
    });
    c.bench_function("encode_100_containers", |b| b.iter(|| m.encode()));
    let text = m.encode();
    eprintln!(
        "exposition: {} bytes, {} samples",
        text.len(),
        text.lines().filter(|l| !l.starts_with('#')).count()
    );
}

criterion_group!(benches, scrape);
criterion_main!(benches);
