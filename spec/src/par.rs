//! Spreading independent work over the cores, with scoped threads.
//!
//! Parsing, decoding and hashing one manifest file needs nothing from the
//! others, and copying one container's resource out of the drafts nothing
//! from the others either. A few threads take runs of items from a shared
//! counter (so that one big file does not hold up a whole share of small
//! ones), and the results come back in the order of the items, so a load is
//! deterministic however the work was spread.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` of every item, in order, computed on up to as many threads as there
/// are cores. Threads take `run` items at a time, and each thread is given
/// at least `per_thread` items (fewer items than that run on this thread).
pub(crate) fn map<T, R, F>(items: &[T], run: usize, per_thread: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let wanted = items.len().div_ceil(per_thread.max(1));
    let threads = if wanted <= 1 { 1 } else { cores().min(wanted) };
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let run = run.max(1);
    let next = AtomicUsize::new(0);
    // Each thread's runs: (index of the first item, results).
    let work = || {
        let mut done: Vec<(usize, Vec<R>)> = Vec::new();
        loop {
            let start = next.fetch_add(run, Ordering::Relaxed);
            if start >= items.len() {
                return done;
            }
            let end = (start + run).min(items.len());
            done.push((start, items[start..end].iter().map(&f).collect()));
        }
    };
    let mut runs: Vec<(usize, Vec<R>)> = std::thread::scope(|s| {
        // This thread works too: one thread fewer to start.
        let others: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in others {
            all.extend(h.join().expect("a worker thread panicked"));
        }
        all
    });
    runs.sort_unstable_by_key(|(start, _)| *start);
    let mut out = Vec::with_capacity(items.len());
    for (_, results) in runs {
        out.extend(results);
    }
    out
}

/// The cores this process may use, asked once: the answer reads the
/// cgroup's CPU quota (several files), and every load asks.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_back_in_order() {
        let items: Vec<u64> = (0..1000).collect();
        for run in [1, 7, 64, 5000] {
            let out = super::map(&items, run, 1, |i| i * 2);
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
        assert!(super::map(&[] as &[u64], 1, 1, |i| *i).is_empty());
    }
}
