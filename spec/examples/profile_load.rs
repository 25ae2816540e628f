//! Profiling aid for the load benchmark: times each phase on the benchmark
//! corpus, each the median of five runs, on one thread unless it says so.
//! `cargo run --release -p moor-spec --example profile_load`
//!
//! `profile_load once` loads the corpus from disk once and exits;
//! `profile_load corpus DIR` writes it to DIR and `profile_load cold DIR
//! N` loads it from there N times, each from scratch;
//! `profile_load loads N` makes N loads through one `Loader`, each after
//! an edit of one file. Under `valgrind --tool=callgrind`, the difference
//! between `loads 3` and `loads 1`, halved, is the cost of a warm load.

#[path = "../benches/corpus.rs"]
mod corpus;

use std::time::{Duration, Instant};

/// The median time of five runs of `f`.
fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `profile_load corpus DIR` writes the corpus into DIR; `profile_load
    // cold DIR N` loads it N times from scratch (each a new `Loader`), so
    // that a profile or a timing of cold loads leaves the writing out.
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("corpus"), Some(dir)) => {
            std::fs::create_dir_all(dir).expect("corpus dir");
            corpus::write_corpus(std::path::Path::new(dir));
            return;
        }
        (Some("cold"), Some(dir)) => {
            let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1);
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let state = moor_spec::load(&[dir]).expect("valid corpus");
                // The state's drop is not timed (as in the benchmark).
                times.push(t.elapsed());
                assert_eq!(state.len(), corpus::FILES * corpus::PER_FILE);
            }
            times.sort();
            println!("cold load, median of {n}: {:?}", times[n / 2]);
            return;
        }
        _ => {}
    }
    let dir = tempfile::tempdir().expect("temp dir");
    corpus::write_corpus(dir.path());
    let file = dir.path().join("m050.toml");
    let original = std::fs::read_to_string(&file).expect("read");
    let edited = original.replacen("MODE = \"bench\"", "MODE = \"edited\"", 1);
    match args.first().map(String::as_str) {
        Some("once") => {
            let state = moor_spec::load(&[dir.path()]).expect("valid corpus");
            assert_eq!(state.len(), corpus::FILES * corpus::PER_FILE);
            return;
        }
        Some("loads") => {
            let n: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1);
            let mut loader = moor_spec::Loader::default();
            for i in 0..n {
                std::fs::write(&file, if i % 2 == 1 { &edited } else { &original }).expect("write");
                let t = Instant::now();
                let state = loader.load(&[dir.path()], None).expect("valid corpus");
                println!("load {i}: {:?} ({:?})", t.elapsed(), loader.last_load());
                drop(state);
            }
            return;
        }
        _ => {}
    }

    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let texts: Vec<_> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read_to_string(f).expect("read")))
        .collect();
    for format in [
        moor_spec::parse::Format::Toml,
        moor_spec::parse::Format::Yaml,
    ] {
        let t = median(|| {
            for (p, s) in &texts {
                if moor_spec::parse::Format::from_path(p) == Some(format) {
                    moor_spec::parse::parse(format, s).expect("parse");
                }
            }
        });
        println!("parse {format:?} (50 files): {t:?}");
    }
    let state = moor_spec::load(&[dir.path()]).expect("valid corpus");
    let t = median(|| {
        for c in state.containers.values() {
            std::hint::black_box(moor_spec::hash::container(&c.spec));
        }
    });
    println!("hash {} container specs: {t:?}", state.containers.len());
    let t = median(|| drop(std::hint::black_box(state.clone())));
    println!(
        "copy (and drop) the state of {} resources: {t:?}",
        state.len()
    );
    let t = median(|| drop(moor_spec::load(&[dir.path()]).expect("valid corpus")));
    println!("cold load from disk, every core: {t:?}");
    let mut loader = moor_spec::Loader::default();
    loader.load(&[dir.path()], None).expect("valid corpus");
    let t = median(|| drop(loader.load(&[dir.path()], None).expect("valid corpus")));
    println!("warm load, nothing changed, every core: {t:?}");
    let mut flip = false;
    let mut times = Vec::new();
    for _ in 0..5 {
        flip = !flip;
        std::fs::write(&file, if flip { &edited } else { &original }).expect("write");
        let t = Instant::now();
        let state = loader.load(&[dir.path()], None).expect("valid corpus");
        times.push(t.elapsed());
        drop(state);
    }
    times.sort();
    println!(
        "warm load after a one-file edit, every core: {:?}",
        times[2]
    );
}
