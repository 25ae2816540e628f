//! Diff + plan of 10,000 resources (target: ≤ 50 ms, see BENCHMARKS.md): once
//! against a host that matches (the no-op every resync does), once against an
//! empty host (everything to create).
//!
//! Run: `cargo bench -p moor-reconcile --bench plan`

#[path = "../../spec/benches/corpus.rs"]
mod corpus;

use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use moor_reconcile::{
    ContainerState, DiffOptions, Health, Observed, ObservedContainer, ObservedImage,
    ObservedNetwork, ObservedVolume, diff,
};
use moor_spec::{DesiredState, MountSource};

fn matching_host(desired: &DesiredState) -> Observed {
    let mut o = Observed::default();
    let digest = format!("sha256:{}", "a".repeat(64));
    for c in desired.containers.values() {
        o.images.insert(
            c.spec.image.to_string(),
            ObservedImage {
                digest: digest.clone(),
                remote_digest: None,
                built_from: None,
            },
        );
    }
    for n in desired.networks.values() {
        o.networks.insert(
            n.name.clone(),
            ObservedNetwork {
                project: Some("bench".into()),
                spec_hash: Some(n.hash.clone()),
                fault: None,
            },
        );
    }
    for v in desired.volumes.values() {
        o.volumes.insert(
            v.name.clone(),
            ObservedVolume {
                project: Some("bench".into()),
                spec_hash: Some(v.hash.clone()),
                fault: None,
                prune: false,
            },
        );
    }
    for c in desired.containers.values() {
        o.containers.insert(
            c.name.clone(),
            ObservedContainer {
                id: String::new(),
                project: Some("bench".into()),
                resource: c.name.clone(),
                replica: 1,
                hash: c.hash.with_image_digest(&digest),
                spec: Some((*c.spec).clone()),
                networks: c.spec.networks.iter().map(|n| n.network.clone()).collect(),
                volumes: c
                    .spec
                    .mounts
                    .iter()
                    .filter_map(|m| match &m.source {
                        MountSource::Volume { name } => Some(name.clone()),
                        _ => None,
                    })
                    .collect(),
                state: ContainerState::Running,
                health: Health::Healthy,
                restart_count: 0,
                started_at: Some(SystemTime::now()),
                finished_at: None,
                fault: None,
                hold: None,
            },
        );
    }
    o
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    corpus::write_corpus(dir.path());
    let desired = moor_spec::load(&[dir.path()]).expect("valid corpus");
    assert_eq!(desired.len(), corpus::FILES * corpus::PER_FILE);
    let host = matching_host(&desired);
    let empty = Observed::default();
    let opts = DiffOptions {
        project: "bench",
        allow_empty: false,
        remove_volumes: false,
        now: SystemTime::now(),
    };
    assert!(
        diff(&desired, &host, &opts).expect("diff").is_empty(),
        "matching host must plan nothing"
    );
    let mut group = c.benchmark_group("reconcile");
    group.bench_function("diff_plan_10k_resources_noop", |b| {
        b.iter(|| diff(&desired, &host, &opts).expect("diff"))
    });
    group.bench_function("diff_plan_10k_resources_create_all", |b| {
        b.iter(|| diff(&desired, &empty, &opts).expect("diff"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
