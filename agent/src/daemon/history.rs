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
}
