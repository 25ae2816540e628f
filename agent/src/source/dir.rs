//! The directory source: watches a manifest directory with filesystem
//! notifications and reloads it after a short quiet period.
//!
//! Editors save through temporary files, write in several steps, and touch
//! swap files; reloading only once the directory has been quiet for the
//! debounce period, and sending a new desired state only when its revision
//! differs from the last one sent, means a half-saved file never applies (at
//! worst it fails validation, which keeps the last good state in force, and the
//! completed save follows a moment later).

use std::path::{Path, PathBuf};
use std::time::Duration;

use moor_reconcile::Trigger;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Loader;

/// Loads `dir` into a trigger, with the revision of what loaded.
pub fn load(loader: &Loader, dir: &Path) -> (Option<String>, Trigger) {
    match loader.load(dir) {
        Ok(state) => {
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
    triggers: mpsc::Sender<Trigger>,
) -> notify::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher: RecommendedWatcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(e) => !e.kind.is_access() && e.paths.iter().any(|p| !is_noise(p)),
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
    if let Some(t) = send(load(&loader, &dir))
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
        let (dir, loader) = (dir.clone(), loader.clone());
        let loaded = tokio::task::spawn_blocking(move || load(&loader, &dir))
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
}
