//! Container exits, turned into a trigger for every controller.

use std::sync::Arc;
use std::time::Duration;

use moor_reconcile::Trigger;
use moor_runtime::container::ExitWatch;
use moor_runtime::host::Host;
use tokio::sync::{Notify, mpsc};

/// How often the engine is listed even when no shim exited and no pass ran.
const EXIT_SAFETY_NET: Duration = Duration::from_secs(10);

/// Sends [`Trigger::HostChanged`] to every controller whenever a container's
/// state changes: waits on the pidfds of the active containers' shims, on
/// the end of any pass (which may have started or stopped containers) and
/// on a slow timer; polls every 500 ms only where the kernel has no pidfds.
pub async fn watch_exits(host: Host, senders: Vec<mpsc::Sender<Trigger>>, passes: Arc<Notify>) {
    let mut last: Option<Vec<(String, &'static str)>> = None;
    loop {
        let engine_host = host.clone();
        let listed = tokio::task::spawn_blocking(move || engine_host.engine().list()).await;
        let Ok(Ok(list)) = listed else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let now: Vec<(String, &'static str)> = list
            .iter()
            .map(|i| (i.record.name.clone(), i.status.name()))
            .collect();
        if last.as_ref().is_some_and(|l| *l != now) {
            for tx in &senders {
                // A full queue already holds a pass; nothing is lost.
                let _ = tx.try_send(Trigger::HostChanged);
            }
        }
        last = Some(now);
        let shims: Vec<(i32, u64)> = list
            .iter()
            .filter(|i| i.status.is_active())
            .filter_map(|i| i.shim.map(|s| (s.shim_pid, s.shim_start_ticks)))
            .collect();
        match ExitWatch::new(shims.iter().copied()) {
            // A shim exited between the listing and the watch: list again.
            Some(watch) if watch.len() < shims.len() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(watch) => {
                tokio::select! {
                    _ = watch.any_exit() => {}
                    _ = passes.notified() => {}
                    _ = tokio::time::sleep(EXIT_SAFETY_NET) => {}
                }
            }
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
