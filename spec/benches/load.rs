//! Load + validate + hash of 10,000 resources spread over 100 files
//! (issue 2's target: ≤ 100 ms). Half the files are TOML, half YAML.
//!
//! Run: `cargo bench -p moor-spec --bench load`

#[path = "corpus.rs"]
mod corpus;

use corpus::{FILES, PER_FILE, write_corpus};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let state =
        moor_spec::load(&[dir.path()]).unwrap_or_else(|d| panic!("corpus must be valid:\n{d}"));
    assert_eq!(state.len(), FILES * PER_FILE);
    let mut group = c.benchmark_group("spec");
    group.sample_size(20);
    group.bench_function("load_validate_hash_10k_resources_100_files", |b| {
        b.iter(|| moor_spec::load(&[dir.path()]).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
