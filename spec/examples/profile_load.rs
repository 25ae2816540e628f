//! Profiling aid for the load benchmark: times each phase on the benchmark
//! corpus. `cargo run --release -p moor-spec --example profile_load`
//!
//! `profile_load once` loads the corpus from disk once and exits, for
//! `valgrind --tool=callgrind --toggle-collect='moor_spec::load::*'`.

#[path = "../benches/corpus.rs"]
mod corpus;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    corpus::write_corpus(dir.path());
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("once") {
        let state = moor_spec::load(&[dir.path()]).expect("valid corpus");
        assert_eq!(state.len(), corpus::FILES * corpus::PER_FILE);
        return;
    }
    if args.first().map(String::as_str) == Some("loads") {
        // `loads N`: N loads through one Loader, each after an edit of one
        // file; the difference between two N is the cost of a warm load.
        let n: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1);
        let file = dir.path().join("m050.toml");
        let original = std::fs::read_to_string(&file).expect("read");
        let edited = original.replacen("MODE = \"bench\"", "MODE = \"edited\"", 1);
        let mut loader = moor_spec::Loader::new(moor_spec::LoadOptions::default());
        for i in 0..n {
            std::fs::write(&file, if i % 2 == 1 { &edited } else { &original }).expect("write");
            let t = std::time::Instant::now();
            let state = loader.load(&[dir.path()], None).expect("valid corpus");
            drop(state);
            println!("load {i}: {:?} ({:?})", t.elapsed(), loader.last_load());
        }
        return;
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
        let t = std::time::Instant::now();
        for (p, s) in &texts {
            if moor_spec::parse::Format::from_path(p) == Some(format) {
                moor_spec::parse::parse(format, s).expect("parse");
            }
        }
        println!("parse {format:?}: {:?}", t.elapsed());
    }
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let state = moor_spec::load_texts(&texts).expect("valid corpus");
        let e = t.elapsed();
        drop(state);
        println!("load_texts: {e:?}");
    }
}
