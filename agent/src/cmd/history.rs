//! `moor history`: a source's revisions, newest first, each with its
//! outcome, when it was applied and what it changed — read from the state
//! dir (`<state>/history/<source>.json`), with or without a running agent.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use moor_reconcile::rollout::RevisionRecord;

use crate::cli::HistoryArgs;
use crate::daemon::history;

/// Prints `args.source`'s revision history.
pub fn run(state_dir: &Path, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    moor_spec::check_name(&args.source)
        .map_err(|e| anyhow::anyhow!("source {:?}: {e}", args.source))?;
    let file = history::path(state_dir, &args.source);
    if !file.exists() {
        anyhow::bail!(
            "no revision history for source {:?} in {} (is it a source of the agent with this --state-dir? one is written once it applies a revision)",
            args.source,
            file.parent().unwrap_or(state_dir).display()
        );
    }
    let records = history::load(state_dir, &args.source)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else {
        print!("{}", render(&records));
    }
    Ok(ExitCode::SUCCESS)
}

/// The table, newest first: a line per revision, then what it changed and
/// why it failed or was rolled back, indented.
pub fn render(records: &[RevisionRecord]) -> String {
    let mut out = String::new();
    // An image update's revision is longer (`4b1d2a0e9f3c+img:1a2b3c4d`).
    let w = records
        .iter()
        .map(|r| moor_reconcile::short(&r.revision).chars().count())
        .max()
        .unwrap_or(0)
        .max(12)
        + 1;
    let _ = writeln!(
        out,
        "{:<w$} {:<12} {:<21} {:<21} CHANGES",
        "REVISION", "OUTCOME", "APPLIED", "DECIDED"
    );
    for r in records.iter().rev() {
        let _ = writeln!(
            out,
            "{:<w$} {:<12} {:<21} {:<21} {}",
            moor_reconcile::short(&r.revision),
            r.outcome.as_str(),
            time(Some(r.applied_at)),
            time(r.decided_at),
            r.changes.len()
        );
        if let Some(m) = &r.message {
            let _ = writeln!(out, "    {}", clean(m));
        }
        for c in &r.changes {
            let _ = writeln!(out, "    {}", clean(c));
        }
    }
    out
}

/// Control characters (a crafted message) are not sent to the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn time(t: Option<u64>) -> String {
    match t {
        Some(t) => {
            moor_runtime::container::logs::rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
            )
            .chars()
            .take(19)
            .collect::<String>()
                + "Z"
        }
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moor_reconcile::rollout::Outcome;

    #[test]
    fn newest_first_with_messages_and_changes() {
        let rec = |rev: &str, outcome, message: Option<&str>, changes: &[&str]| RevisionRecord {
            revision: rev.into(),
            outcome,
            applied_at: 1_796_520_000,
            decided_at: Some(1_796_520_012),
            message: message.map(str::to_string),
            changes: changes.iter().map(|c| c.to_string()).collect(),
            images: Default::default(),
            specs: Default::default(),
        };
        let out = render(&[
            rec(
                "0123456789abcdef",
                Outcome::Healthy,
                None,
                &["container web: create (not on the host)"],
            ),
            rec(
                "fedcba9876543210",
                Outcome::RolledBack,
                Some(
                    "rolled back from fedcba987654 to 0123456789ab because container web failed its health check\x1b[2J",
                ),
                &[],
            ),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("REVISION"), "{out}");
        assert!(
            lines[1].starts_with("fedcba987654  rolled_back  2026-12-"),
            "{out}"
        );
        assert!(
            lines[2].contains("because container web failed its health check [2J"),
            "{out}"
        );
        assert!(!out.contains('\x1b'), "no escape reaches the terminal");
        assert!(lines[3].starts_with("0123456789ab  healthy"), "{out}");
        assert_eq!(lines[4], "    container web: create (not on the host)");
    }
}
