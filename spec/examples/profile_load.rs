//! Profiling aid for the load benchmark: times each phase on the benchmark
//! corpus. `cargo run --release -p moor-spec --example profile_load`

#[path = "../benches/corpus.rs"]
mod corpus;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    corpus::write_corpus(dir.path());
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
