//! Load + validate + hash of 10,000 resources spread over 100 files
//! (issue 2's target: ≤ 100 ms). Half the files are TOML, half YAML.
//!
//! `load_after_one_file_edit` is what the agent does after a commit or a
//! save that touches one file: a [`moor_spec::Loader`] that loaded the
//! corpus before loads it again with one file changed (issue 15's target:
//! ≤ 10 ms). `load_unchanged` is the same with nothing changed.
//!
//! Run: `cargo bench -p moor-spec --bench load`

#[path = "corpus.rs"]
mod corpus;

use std::path::Path;
use std::time::{Duration, Instant};

use corpus::{FILES, PER_FILE, write_corpus};
use criterion::{Criterion, criterion_group, criterion_main};
use moor_spec::{LoadOptions, Loader};

/// Times `loader.load` of `dir`, with `before` run untimed ahead of each.
/// Dropping the state is not timed: the agent hands it to the reconciler,
/// which drops the one before on its own thread.
fn time_loads(
    loader: &mut Loader,
    dir: &Path,
    iters: u64,
    mut before: impl FnMut(),
    reused: usize,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        before();
        let t = Instant::now();
        let state = loader.load(&[dir], None).expect("valid corpus");
        total += t.elapsed();
        drop(state);
        assert_eq!(loader.last_load().reused, reused);
    }
    total
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let state =
        moor_spec::load(&[dir.path()]).unwrap_or_else(|d| panic!("corpus must be valid:\n{d}"));
    assert_eq!(state.len(), FILES * PER_FILE);
    let mut group = c.benchmark_group("spec");
    group.sample_size(20);
    // The state is dropped untimed, as in the agent (the reconciler drops
    // the one before on its own thread) and in `moor apply` (at its end);
    // and before the next load, as in the agent, which holds the state it
    // runs and the one it loads, not a batch of them (a batch dropped only
    // at its end made every load of it fault in fresh pages).
    group.bench_function("load_validate_hash_10k_resources_100_files", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let state = moor_spec::load(&[dir.path()]).unwrap();
                total += t.elapsed();
                drop(state);
            }
            total
        })
    });

    let mut loader = Loader::new(LoadOptions::default());
    loader.load(&[dir.path()], None).expect("valid corpus");
    group.bench_function("load_unchanged", |b| {
        b.iter_custom(|iters| time_loads(&mut loader, dir.path(), iters, || {}, FILES))
    });

    // One environment value of one container changes, back and forth.
    let file = dir.path().join("m050.toml");
    let original = std::fs::read_to_string(&file).unwrap();
    let edited = original.replacen("MODE = \"bench\"", "MODE = \"edited\"", 1);
    assert_ne!(original, edited);
    let mut flip = false;
    group.bench_function("load_after_one_file_edit", |b| {
        b.iter_custom(|iters| {
            let edit = || {
                flip = !flip;
                std::fs::write(&file, if flip { &edited } else { &original }).unwrap();
            };
            time_loads(&mut loader, dir.path(), iters, edit, FILES - 1)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
