//! The external OCI runtime (`runc`), driven through its command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::{ContainerError, Result};

/// One container's view of the OCI runtime.
#[derive(Debug, Clone)]
pub struct Runc {
    /// The binary.
    pub program: PathBuf,
    /// `--root`: the runtime's state directory.
    pub root: PathBuf,
    /// The container id.
    pub id: String,
}

impl Runc {
    /// A command `runc --root ROOT ARGS…` (no stdio set).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    /// Runs `runc ARGS…` to completion with no stdio; on failure returns
    /// its error message (from `log`, a `--log-format json` file, when
    /// given, or from its stderr).
    pub fn run(&self, args: &[&str], log: Option<&Path>) -> Result<()> {
        let mut c = self.command(&[]);
        if let Some(log) = log {
            c.arg("--log").arg(log).arg("--log-format").arg("json");
        }
        let out = c
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| ContainerError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let mut msg = log.map(last_error).unwrap_or_default();
        if msg.is_empty() {
            msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
        Err(ContainerError::Start {
            name: self.id.clone(),
            message: format!("runc {}: {msg}", args.first().unwrap_or(&"")),
        })
    }

    /// `runc delete --force ID`, ignoring "does not exist".
    pub fn delete_force(&self) {
        let _ = self.run(&["delete", "--force", &self.id], None);
    }
}

/// The last error message in a runc JSON log.
pub fn last_error(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("level").and_then(|l| l.as_str()) == Some("error"))
        .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_default()
}
