//! The directory source: watches a manifest directory with filesystem
//! notifications and reloads it after a short quiet period.
//!
//! Editors save through temporary files, write in several steps, and touch
//! swap files; reloading only once the directory has been quiet for the
//! debounce period, and sending a new desired state only when its revision
//! differs from the last one sent, means a half-saved file never applies (at
//! worst it fails validation, which keeps the last good state in force, and the
//! completed save follows a moment later).
//!
//! What containers write is not read: the directories they mount read-write
//! ([`Written`]) are skipped by the loader, and changes under them wake
//! nothing (a container writing without pause would otherwise keep the
//! debounce from ever ending, and the operator's edits from applying).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use moor_reconcile::Trigger;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Loader;
use super::written::Written;

/// Loads `dir` into a trigger, with the revision of what loaded, skipping
/// what containers write (and remembering where that is).
pub fn load(loader: &Loader, dir: &Path, written: &mut Written) -> (Option<String>, Trigger) {
    let mut loader = loader.clone();
    loader.options.skip = written.dirs().to_vec();
    match loader.load(dir) {
        Ok(state) => {
            if let Err(e) = written.remember(&state) {
                tracing::warn!(
                    dir = %dir.display(),
                    "cannot record the directories containers write: {e}"
                );
            }
            let rev = super::revision(&state);
            (
                Some(rev.clone()),
                Trigger::Source {
                    revision: Some(rev),
                    result: Ok(state),
                },
            )
        }
        Err(diags) => (
            None,
            Trigger::Source {
                revision: None,
                result: Err(diags),
            },
        ),
    }
}

/// [`load`], and what the watcher skips updated to what it remembers.
fn load_now(
    loader: &Loader,
    dir: &Path,
    written: &Mutex<Written>,
    skip: &RwLock<Vec<PathBuf>>,
) -> (Option<String>, Trigger) {
    let mut w = written.lock().unwrap_or_else(|p| p.into_inner());
    let loaded = load(loader, dir, &mut w);
    *skip.write().unwrap_or_else(|p| p.into_inner()) = w.dirs().to_vec();
    loaded
}

/// True for paths whose changes cannot affect the desired state: editor swap
/// and backup files. (Dot-files are skipped by the loader too, but a change to
/// a bind source or env file of any name must reload.)
fn is_noise(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
        || name == "4913"
        || (name.starts_with(".#"))
}

/// Watches `dir` and sends a trigger for the initial state and after every
/// change that alters the desired state (or breaks it). Runs until `triggers`
/// is closed.
pub async fn watch(
    dir: PathBuf,
    debounce: Duration,
    loader: Loader,
    written: Written,
    triggers: mpsc::Sender<Trigger>,
) -> notify::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let skip = Arc::new(RwLock::new(written.dirs().to_vec()));
    let written = Arc::new(Mutex::new(written));
    let skipped = skip.clone();
    let mut watcher: RecommendedWatcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(e) => {
                    let skip = skipped.read().unwrap_or_else(|p| p.into_inner());
                    !e.kind.is_access()
                        && e.paths
                            .iter()
                            .any(|p| !is_noise(p) && !moor_spec::writes::is_under(p, &skip))
                }
                // An overflow or a watch error: reload to be safe.
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        })?;
    watcher.watch(&dir, RecursiveMode::Recursive)?;

    let mut last_sent: Option<Option<String>> = None;
    let mut send = |(rev, trigger): (Option<String>, Trigger)| {
        let changed = last_sent.as_ref() != Some(&rev);
        last_sent = Some(rev);
        changed.then_some(trigger)
    };
    if let Some(t) = send(load_now(&loader, &dir, &written, &skip))
        && triggers.send(t).await.is_err()
    {
        return Ok(());
    }
    while rx.recv().await.is_some() {
        // Debounce: wait until nothing has happened for `debounce`.
        loop {
            match tokio::time::timeout(debounce, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return Ok(()),
                Err(_) => break,
            }
        }
        let (dir, loader, written, skip) =
            (dir.clone(), loader.clone(), written.clone(), skip.clone());
        let loaded = tokio::task::spawn_blocking(move || load_now(&loader, &dir, &written, &skip))
            .await
            .expect("manifest loading panicked");
        if let Some(t) = send(loaded)
            && triggers.send(t).await.is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(rx: &mut mpsc::Receiver<Trigger>) -> (Option<String>, Result<usize, String>) {
        let t = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("test timeout expired, no trigger from the directory source")
            .expect("source alive");
        match t {
            Trigger::Source { revision, result } => (revision, result.map(|s| s.len())),
            other => panic!("unexpected trigger {other:?}"),
        }
    }

    async fn quiet(rx: &mut mpsc::Receiver<Trigger>) {
        if let Ok(Some(t)) = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await {
            panic!("unexpected trigger {t:?}");
        }
    }

    #[tokio::test]
    async fn reloads_on_change_and_ignores_noise() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("stack.toml");
        std::fs::write(&file, "[containers.web]\nimage = \"busybox\"\n").expect("write");
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(watch(
            dir.path().to_path_buf(),
            Duration::from_millis(30),
            Loader::default(),
            Written::in_memory(),
            tx,
        ));

        let (rev1, n) = next(&mut rx).await;
        assert_eq!(n, Ok(1));
        // A change in meaning gives a new revision.
        std::fs::write(
            &file,
            "[containers.web]\nimage = \"busybox\"\nenv = { A = \"1\" }\n",
        )
        .expect("write");
        let (rev2, n) = next(&mut rx).await;
        assert_eq!(n, Ok(1));
        assert_ne!(rev1, rev2);
        // Swap files, and rewriting the same content, send nothing.
        std::fs::write(dir.path().join(".stack.toml.swp"), "junk").expect("write");
        std::fs::write(dir.path().join("stack.toml~"), "junk").expect("write");
        std::fs::write(
            &file,
            "[containers.web]\nimage = \"busybox\"\nenv = { A = \"1\" }\n",
        )
        .expect("write");
        quiet(&mut rx).await;
        // A broken save is reported; fixing it brings the state back.
        std::fs::write(&file, "[containers.web]\nimage = ").expect("write");
        let (rev, r) = next(&mut rx).await;
        assert_eq!(rev, None);
        assert!(
            r.expect_err("invalid").contains("stack.toml:2:"),
            "names file and line"
        );
        std::fs::write(
            &file,
            "[containers.web]\nimage = \"busybox\"\nenv = { A = \"1\" }\n",
        )
        .expect("write");
        let (rev3, _) = next(&mut rx).await;
        assert_eq!(rev3, rev2);
        drop(rx);
        task.abort();
    }

    #[tokio::test]
    async fn a_burst_of_writes_is_one_reload() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(watch(
            dir.path().to_path_buf(),
            Duration::from_millis(200),
            Loader::default(),
            Written::in_memory(),
            tx,
        ));
        let (_, n) = next(&mut rx).await;
        assert_eq!(n, Ok(0));
        for i in 0..10 {
            std::fs::write(
                dir.path().join(format!("c{i}.toml")),
                format!("[containers.c{i}]\nimage = \"busybox\"\n"),
            )
            .expect("write");
        }
        let (_, n) = next(&mut rx).await;
        assert_eq!(n, Ok(10), "all ten files arrive in one state");
        quiet(&mut rx).await;
        task.abort();
    }

    #[tokio::test]
    async fn what_containers_write_wakes_nothing_and_is_not_read() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().expect("temp dir");
        let app = dir.path().join("app.toml");
        let manifest = |greeting: &str| {
            format!(
                "[containers.app]\nimage = \"busybox\"\nmounts = [\"./data:/data\"]\nenv = {{ G = \"{greeting}\" }}\n"
            )
        };
        std::fs::write(&app, manifest("one")).expect("write");
        std::fs::create_dir(dir.path().join("data")).expect("mkdir");
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(watch(
            dir.path().to_path_buf(),
            Duration::from_millis(100),
            Loader::default(),
            Written::in_memory(),
            tx,
        ));
        let (rev1, n) = next(&mut rx).await;
        assert_eq!(n, Ok(1));

        // The container writes without pause, a manifest among its files.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, data) = (stop.clone(), dir.path().join("data"));
            std::thread::spawn(move || {
                let evil = "[containers.evil]\nimage = \"busybox\"\nnetwork_mode = \"host\"\n";
                std::fs::write(data.join("x.toml"), evil).expect("write");
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    std::fs::write(data.join("log"), i.to_string()).expect("write");
                    i += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        quiet(&mut rx).await;
        // The operator's edit still applies, alone.
        std::fs::write(&app, manifest("two")).expect("write");
        let (rev2, n) = next(&mut rx).await;
        assert_eq!(n, Ok(1), "x.toml is not read");
        assert_ne!(rev1, rev2);
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
        drop(rx);
        task.abort();
    }
}
