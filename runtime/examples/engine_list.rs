//! Times `Engine::list` (what `moor ps` and the agent's exit watch do) and
//! the reads of every container's cgroup usage (what a /metrics scrape does
//! before encoding) on a state dir with containers, from a fresh engine and
//! reader as a new process would have them and then from warm ones:
//! `engine_list STATE_DIR [N]` prints medians of N calls.
use std::time::Instant;

use moor_runtime::container::{Engine, EngineConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let state: std::path::PathBuf = args.next().expect("STATE_DIR").into();
    let n: usize = args.next().map_or(200, |s| s.parse().expect("N"));
    let engine = Engine::new(EngineConfig::new(&state)).expect("engine");
    let mut times: Vec<u128> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let list = engine.list().expect("list");
            std::hint::black_box(list);
            t0.elapsed().as_micros()
        })
        .collect();
    times.sort_unstable();
    let count = engine.list().expect("list").len();
    println!(
        "{count} containers: list median {} µs, p90 {} µs",
        times[n / 2],
        times[n * 9 / 10]
    );
    let h = moor_runtime::container::cgroups::Hierarchies::detect();
    let paths: Vec<String> = engine
        .list()
        .expect("list")
        .into_iter()
        .map(|i| i.record.cgroup_path())
        .collect();
    let mut reader = moor_runtime::host::usage::Reader::with_hierarchies(h.clone());
    let mut times: Vec<u128> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let u = reader.read_all(paths.iter().map(String::as_str));
            std::hint::black_box(u);
            t0.elapsed().as_micros()
        })
        .collect();
    times.sort_unstable();
    let read = reader.read_all(paths.iter().map(String::as_str)).len();
    let t0 = Instant::now();
    let once: Vec<_> = paths
        .iter()
        .filter_map(|p| moor_runtime::host::usage::read(&h, p))
        .collect();
    let cold = t0.elapsed().as_micros();
    println!(
        "{read} cgroups: usage with files kept open median {} µs, p90 {} µs; opening each file: {cold} µs ({} read)",
        times[n / 2],
        times[n * 9 / 10],
        once.len()
    );
}
