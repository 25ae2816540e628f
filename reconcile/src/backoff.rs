//! Per-resource exponential backoff for failed actions: about 1 s, doubling
//! to 5 minutes, with ±10 % jitter so that many failures do not retry in step.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    due: Instant,
}

/// Failures and retry deadlines by key.
#[derive(Debug)]
pub struct Backoff<K> {
    entries: HashMap<K, Entry>,
    seed: u64,
}

impl<K: Hash + Eq + Clone> Default for Backoff<K> {
    fn default() -> Self {
        Self::new(0x9e37_79b9_7f4a_7c15)
    }
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    /// Empty, with a jitter seed (fixed seeds make tests repeatable).
    pub fn new(seed: u64) -> Self {
        Self {
            entries: HashMap::new(),
            seed: seed | 1,
        }
    }

    /// The delay before retry number `failures` (1 = after the first failure), without jitter.
    pub fn delay(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX)
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: enough randomness for spreading retries.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let unit = (self.seed % 2001) as f64 / 1000.0 - 1.0; // -1.0 ..= 1.0
        d.mul_f64(1.0 + 0.1 * unit)
    }

    /// Records a failure of `key` at `now`. The delay grows only when this
    /// attempt was the retry the backoff itself scheduled (it was due): a
    /// failure seen by an ordinary pass while waiting keeps the current delay.
    /// Returns when to retry.
    pub fn failed(&mut self, key: &K, now: Instant) -> Instant {
        let failures = match self.entries.get(key) {
            Some(e) if now < e.due => return e.due,
            Some(e) => e.failures + 1,
            None => 1,
        };
        let delay = self.jitter(Self::delay(failures));
        let due = now + delay;
        self.entries.insert(key.clone(), Entry { failures, due });
        due
    }

    /// Records a success: the key starts afresh.
    pub fn succeeded(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Forgets every key (the desired state changed, so old failures say little).
    pub fn reset(&mut self) {
        self.entries.clear();
    }

    /// True while `key` waits out its backoff.
    pub fn waiting(&self, key: &K, now: Instant) -> bool {
        self.entries.get(key).is_some_and(|e| now < e.due)
    }

    /// How many consecutive failures `key` has.
    pub fn failures(&self, key: &K) -> u32 {
        self.entries.get(key).map_or(0, |e| e.failures)
    }

    /// The earliest retry deadline still ahead of `now`.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .map(|e| e.due)
            .filter(|d| *d > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_five_minutes() {
        let d: Vec<u64> = (1..=11)
            .map(|f| Backoff::<u8>::delay(f).as_secs())
            .collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn grows_only_on_retries_it_scheduled() {
        let mut b = Backoff::new(42);
        let t0 = Instant::now();
        let due1 = b.failed(&"web", t0);
        let d1 = due1 - t0;
        assert!(
            d1 >= Duration::from_millis(900) && d1 <= Duration::from_millis(1100),
            "{d1:?}"
        );
        assert!(b.waiting(&"web", t0));
        // An ordinary resync fails it again before it is due: no growth.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(b.failed(&"web", Instant::now()), due1);
        assert_eq!(b.failures(&"web"), 1);
        // The scheduled retry fails: about 2 s now.
        tokio::time::advance(Duration::from_millis(600)).await;
        let now = Instant::now();
        assert!(!b.waiting(&"web", now));
        let d2 = b.failed(&"web", now) - now;
        assert!(
            d2 >= Duration::from_millis(1800) && d2 <= Duration::from_millis(2200),
            "{d2:?}"
        );
        assert_eq!(b.next_due(now), Some(now + d2));
        b.succeeded(&"web");
        assert_eq!(b.failures(&"web"), 0);
        assert_eq!(b.next_due(now), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let mut b = Backoff::<u8>::new(7);
        for _ in 0..1000 {
            let d = b.jitter(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }
}
