//! The loop of a polled source (git): fetch every interval, or at once when
//! the source's webhook wakes it; load a revision only when it is new; keep
//! the last good revision in force when a fetch fails, retrying with backoff.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moor_metrics::Metrics;
use moor_reconcile::Trigger;
use tokio::sync::{Notify, mpsc};

use super::{Loader, SharedStatus, unix_now};

/// What one fetch produced.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The revision (a commit id).
    pub revision: String,
    /// Its subject line.
    pub subject: String,
    /// The directory holding its manifests.
    pub dir: PathBuf,
}

/// Where a polled source reports.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// The source's status.
    pub status: SharedStatus,
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
    /// The source's controller.
    pub triggers: mpsc::Sender<Trigger>,
}

/// The wait before the next attempt: the interval after a success; after `n`
/// failures in a row the interval doubled `n - 1` times, at most 5 minutes
/// (or the interval, if that is longer). A webhook call cuts any wait short.
pub fn next_delay(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let cap = interval.max(Duration::from_secs(300));
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    interval.saturating_mul(factor).min(cap)
}

/// Runs until the controller goes away. `fetch` is blocking and runs on the
/// blocking pool; it returns the head revision and its checkout.
pub async fn run<F>(
    name: String,
    initial: Option<Fetched>,
    fetch: F,
    interval: Duration,
    wake: Arc<Notify>,
    loader: Loader,
    sinks: Sinks,
) where
    F: FnMut() -> Result<Fetched, String> + Send + 'static,
{
    let fetch = Arc::new(Mutex::new(fetch));
    // The revision last handed to the controller (valid or not).
    let mut sent: Option<String> = None;
    // Why that revision's manifests are invalid, if they are.
    let mut sent_error: Option<String> = None;
    let mut failures = 0u32;
    if let Some(cached) = initial {
        let (l, dir) = (loader.clone(), cached.dir.clone());
        let state = tokio::task::spawn_blocking(move || l.load(&dir))
            .await
            .unwrap_or_else(|e| Err(format!("loading panicked: {e}")));
        if let Ok(state) = state {
            tracing::info!(
                source = %name,
                revision = %cached.revision,
                "starting from the revision checked out before"
            );
            sinks.status.lock().expect("status poisoned").revision = Some(cached.revision.clone());
            sent = Some(cached.revision.clone());
            let t = Trigger::Source {
                revision: Some(cached.revision),
                result: Ok(state),
            };
            if sinks.triggers.send(t).await.is_err() {
                return;
            }
        }
    }
    loop {
        let (f, l, last) = (fetch.clone(), loader.clone(), sent.clone());
        let attempt = tokio::task::spawn_blocking(move || {
            let fetched = (f.lock().expect("fetch poisoned"))()?;
            // Load only a revision not seen before: an idle poll costs one fetch.
            let state =
                (last.as_deref() != Some(fetched.revision.as_str())).then(|| l.load(&fetched.dir));
            Ok::<_, String>((fetched, state))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the fetch panicked: {e}")));

        match attempt {
            Ok((fetched, state)) => {
                if let Some(s) = &state {
                    sent_error = s.as_ref().err().cloned();
                }
                let manifest_error = sent_error.clone();
                {
                    let mut st = sinks.status.lock().expect("status poisoned");
                    match &manifest_error {
                        None => st.synced(&fetched.revision, Some(&fetched.subject)),
                        Some(e) => {
                            st.failed(&format!(
                                "revision {} has invalid manifests; the last good state stays in force:\n{e}",
                                short(&fetched.revision)
                            ));
                            // The fetch itself worked: do not back off.
                            st.failures = 0;
                        }
                    }
                }
                failures = 0;
                sinks.metrics.source_sync(
                    &name,
                    Some(&fetched.revision),
                    manifest_error.is_none(),
                    unix_now(),
                );
                if let Some(result) = state {
                    tracing::info!(
                        source = %name,
                        revision = %fetched.revision,
                        subject = %fetched.subject,
                        valid = result.is_ok(),
                        "new revision"
                    );
                    sent = Some(fetched.revision.clone());
                    let t = Trigger::Source {
                        revision: Some(fetched.revision),
                        result,
                    };
                    if sinks.triggers.send(t).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = next_delay(interval, failures);
                tracing::warn!(
                    source = %name,
                    failures,
                    retry_in_s = wait.as_secs_f64(),
                    "sync failed; the last good revision stays in force: {e}"
                );
                sinks.status.lock().expect("status poisoned").failed(&e);
                sinks.metrics.source_sync(&name, None, false, unix_now());
            }
        }
        if sinks.triggers.is_closed() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(next_delay(interval, failures)) => {}
            () = wake.notified() => {
                tracing::debug!(source = %name, "woken by its webhook");
            }
        }
    }
}

/// The first 12 characters of a revision.
pub fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_secs(10);
        assert_eq!(next_delay(i, 0), i);
        assert_eq!(next_delay(i, 1), i);
        assert_eq!(next_delay(i, 2), Duration::from_secs(20));
        assert_eq!(next_delay(i, 4), Duration::from_secs(80));
        assert_eq!(next_delay(i, 30), Duration::from_secs(300));
        // A long interval is never shortened by the cap.
        let hour = Duration::from_secs(3600);
        assert_eq!(next_delay(hour, 3), hour);
    }
}
