//! Each source's revision history, `<state dir>/history/<source>.json`:
//! the revisions its controller applied (at most
//! [`moor_reconcile::rollout::HISTORY_LIMIT`], the newest), each with its
//! outcome, what it changed, its image digests and spec hashes. The agent
//! writes it whenever the controller's history changes and reads it at
//! start (so a revision rolled back stays refused across a restart);
//! `moor history` reads it without the agent.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use moor_reconcile::Status;
use moor_reconcile::rollout::{HISTORY_LIMIT, RevisionRecord};
use tokio::sync::watch;

/// The largest history file read: far above what [`HISTORY_LIMIT`]
/// records take; anything larger was not written by moor.
pub const MAX_FILE: u64 = 4 << 20;

/// Where `source`'s history is kept. Source names are checked names (no
/// `/`, no `..`).
pub fn path(state_dir: &Path, source: &str) -> PathBuf {
    state_dir.join("history").join(format!("{source}.json"))
}

/// Reads `source`'s history; none yet is empty.
pub fn load(state_dir: &Path, source: &str) -> anyhow::Result<Vec<RevisionRecord>> {
    let file = path(state_dir, source);
    let f = match std::fs::File::open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mut text = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("reading {}", file.display()))?;
    if text.len() as u64 > MAX_FILE {
        anyhow::bail!("{} is larger than {MAX_FILE} bytes", file.display());
    }
    let mut records: Vec<RevisionRecord> = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a revision history", file.display()))?;
    let extra = records.len().saturating_sub(HISTORY_LIMIT);
    records.drain(..extra);
    Ok(records)
}

/// The most history files [`kept_digests`] reads: far above the sources
/// an agent runs.
pub const MAX_FILES: usize = 1024;

/// The image digests the recorded healthy revisions of every source's
/// history ran (the newest [`moor_reconcile::rollout::KEPT_GOOD`] of
/// each): what `moor image prune` keeps so that a rollback finds them.
/// A history that cannot be read is an error naming it, never a reason
/// to keep less.
pub fn kept_digests(state_dir: &Path) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let dir = state_dir.join("history");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut sources = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name();
        let Some(source) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .filter(|s| !s.is_empty() && !s.starts_with('.'))
        else {
            continue;
        };
        let file = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", file.display()))?;
        if !kind.is_file() {
            anyhow::bail!(
                "{} is not a regular file: moor writes none such (remove it)",
                file.display()
            );
        }
        if sources.len() == MAX_FILES {
            anyhow::bail!(
                "{} holds more than {MAX_FILES} histories: moor writes one per source",
                dir.display()
            );
        }
        sources.push(source.to_string());
    }
    let mut kept = std::collections::BTreeSet::new();
    for source in sources {
        let records = load(state_dir, &source)?;
        kept.extend(moor_reconcile::rollout::kept_digests(&records));
    }
    Ok(kept)
}

/// Writes `source`'s history atomically (a temporary file, synced, renamed).
pub fn save(state_dir: &Path, source: &str, records: &[RevisionRecord]) -> anyhow::Result<()> {
    let file = path(state_dir, source);
    let dir = file.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{source}.json.tmp"));
    let text = serde_json::to_vec_pretty(records).expect("plain data");
    (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, &text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)?;
        std::fs::File::open(dir)?.sync_all()
    })()
    .with_context(|| format!("writing {}", file.display()))
}

/// Keeps `source`'s history file in step with its controller until the
/// controller stops.
pub async fn keep(state_dir: PathBuf, source: String, mut status: watch::Receiver<Status>) {
    let mut written = status.borrow().history.clone();
    while status.changed().await.is_ok() {
        let history = status.borrow_and_update().history.clone();
        if history == written {
            continue;
        }
        let (dir, name, records) = (state_dir.clone(), source.clone(), history.clone());
        let saved = tokio::task::spawn_blocking(move || save(&dir, &name, &records)).await;
        match saved {
            Ok(Ok(())) => written = history,
            Ok(Err(e)) => {
                tracing::warn!(source = %source, "the revision history was not recorded: {e:#}")
            }
            Err(e) => {
                tracing::warn!(source = %source, "the revision history was not recorded: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moor_reconcile::rollout::Outcome;

    fn record(rev: &str) -> RevisionRecord {
        RevisionRecord {
            revision: rev.into(),
            outcome: Outcome::Healthy,
            applied_at: 1,
            decided_at: Some(2),
            message: None,
            changes: vec!["container web: create (not on the host)".into()],
            images: Default::default(),
            specs: Default::default(),
        }
    }

    #[test]
    fn saved_and_loaded_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(load(tmp.path(), "web").expect("none yet").is_empty());
        let records = vec![record("a"), record("b")];
        save(tmp.path(), "web", &records).expect("saved");
        assert_eq!(load(tmp.path(), "web").expect("loaded"), records);
    }

    #[test]
    fn hostile_files_are_refused_with_their_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("history")).expect("dir");
        let file = path(tmp.path(), "web");
        for bad in ["", "{", "[{\"revision\": 1}]", "null"] {
            std::fs::write(&file, bad).expect("write");
            let e = format!("{:#}", load(tmp.path(), "web").expect_err(bad));
            assert!(
                e.contains("web.json is not a revision history"),
                "{bad}: {e}"
            );
        }
        // A huge file is not read into memory.
        let f = std::fs::File::create(&file).expect("create");
        f.set_len(MAX_FILE + 10).expect("sparse");
        let e = format!("{:#}", load(tmp.path(), "web").expect_err("huge"));
        assert!(e.contains("larger than"), "{e}");
        // More records than kept: the newest are.
        let many: Vec<_> = (0..HISTORY_LIMIT + 3)
            .map(|i| record(&format!("r{i}")))
            .collect();
        std::fs::write(&file, serde_json::to_vec(&many).expect("json")).expect("write");
        let loaded = load(tmp.path(), "web").expect("loaded");
        assert_eq!(loaded.len(), HISTORY_LIMIT);
        assert_eq!(loaded[0].revision, "r3");
    }

    fn healthy(rev: &str, digest: char) -> RevisionRecord {
        let mut r = record(rev);
        r.images = [(
            format!("localhost:5000/app:{rev}"),
            format!("sha256:{}", digest.to_string().repeat(64)),
        )]
        .into();
        r
    }

    #[test]
    fn prune_keeps_the_images_of_every_sources_healthy_revisions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(kept_digests(tmp.path()).expect("no history yet").is_empty());
        let mut failed = healthy("c", 'c');
        failed.outcome = Outcome::RolledBack;
        save(tmp.path(), "web", &[healthy("a", 'a'), failed]).expect("saved");
        save(tmp.path(), "db", &[healthy("b", 'b')]).expect("saved");
        // A temporary file left by a crash is not a history.
        std::fs::write(tmp.path().join("history/.web.json.tmp"), "{").expect("write");
        let kept = kept_digests(tmp.path()).expect("read");
        let want: std::collections::BTreeSet<String> = ['a', 'b']
            .map(|c| format!("sha256:{}", c.to_string().repeat(64)))
            .into();
        assert_eq!(kept, want);
    }

    #[test]
    fn a_history_prune_cannot_read_stops_it_with_its_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        save(tmp.path(), "web", &[healthy("a", 'a')]).expect("saved");
        let dir = tmp.path().join("history");
        // Edited into garbage: prune would not know what to keep.
        std::fs::write(dir.join("db.json"), "[{\"revision\": ").expect("write");
        let e = format!("{:#}", kept_digests(tmp.path()).expect_err("garbage"));
        assert!(e.contains("db.json is not a revision history"), "{e}");
        std::fs::remove_file(dir.join("db.json")).expect("rm");
        // Huge: refused, not read into memory.
        let f = std::fs::File::create(dir.join("big.json")).expect("create");
        f.set_len(MAX_FILE + 1).expect("sparse");
        let e = format!("{:#}", kept_digests(tmp.path()).expect_err("huge"));
        assert!(e.contains("big.json is larger than"), "{e}");
        std::fs::remove_file(dir.join("big.json")).expect("rm");
        // A FIFO would block a reader forever; a symlink could point
        // anywhere: neither is read.
        let made = std::process::Command::new("mkfifo")
            .arg(dir.join("fifo.json"))
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let e = format!("{:#}", kept_digests(tmp.path()).expect_err("fifo"));
        assert!(e.contains("fifo.json is not a regular file"), "{e}");
        std::fs::remove_file(dir.join("fifo.json")).expect("rm");
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.json")).expect("symlink");
        let e = format!("{:#}", kept_digests(tmp.path()).expect_err("symlink"));
        assert!(e.contains("zero.json is not a regular file"), "{e}");
        std::fs::remove_file(dir.join("zero.json")).expect("rm");
        // Thousands of files: refused rather than read without end.
        for i in 0..MAX_FILES {
            std::fs::write(dir.join(format!("s{i}.json")), "[]").expect("write");
        }
        let e = format!("{:#}", kept_digests(tmp.path()).expect_err("many"));
        assert!(
            e.contains(&format!("more than {MAX_FILES} histories")),
            "{e}"
        );
    }
}
