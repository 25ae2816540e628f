//! Observing containers: their true state, read from disk and `/proc`.

use serde::Serialize;

use super::engine::Engine;
use super::error::Result;
use super::state::{ContainerRecord, ExitRecord, ShimState, process_alive, read_json};

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Status {
    /// Created, never started (or a start is under way).
    Created,
    /// Its process runs under a live shim.
    Running {
        /// The container's PID 1 as the host sees it.
        pid: i32,
        /// When it started (ms since the epoch).
        started_ms: u64,
    },
    /// It has exited; its mounts and cgroups are released.
    Exited(ExitRecord),
    /// Its shim died (e.g. SIGKILL) without recording an exit: the
    /// container's processes may still run, with nobody holding their
    /// stdio. `stop` or `remove` cleans it up.
    Lost {
        /// The container's PID 1, if it still runs.
        pid: Option<i32>,
        /// When it started (ms since the epoch).
        started_ms: u64,
    },
}

impl Status {
    /// `created`, `running`, `exited` or `lost`.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running { .. } => "running",
            Status::Exited(_) => "exited",
            Status::Lost { .. } => "lost",
        }
    }

    /// True while a process of the container may run.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            Status::Running { .. } | Status::Lost { pid: Some(_), .. }
        )
    }
}

/// A container and its observed state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerInfo {
    /// What it was created from.
    pub record: ContainerRecord,
    /// What it is doing now.
    pub status: Status,
    /// The shim's state file, when it wrote one.
    pub shim: Option<ShimState>,
}

impl Engine {
    /// Container `name` and its state.
    pub fn inspect(&self, name: &str) -> Result<ContainerInfo> {
        let record = self.record(name)?;
        self.info(name, record)
    }

    /// The state of container `name`, created as `record`.
    fn info(&self, name: &str, record: ContainerRecord) -> Result<ContainerInfo> {
        let paths = self.paths(name);
        let shim: Option<ShimState> = read_json(&paths.shim_state())?;
        let status = match read_json::<ExitRecord>(&paths.exit())? {
            Some(exit) => Status::Exited(exit),
            None => match shim {
                None => Status::Created,
                Some(s) if process_alive(s.shim_pid, s.shim_start_ticks) => Status::Running {
                    pid: s.pid,
                    started_ms: s.started_ms,
                },
                Some(s) => Status::Lost {
                    pid: process_alive(s.pid, s.pid_start_ticks).then_some(s.pid),
                    started_ms: s.started_ms,
                },
            },
        };
        Ok(ContainerInfo {
            record,
            status,
            shim,
        })
    }

    /// Every container and its state, by name.
    pub fn list(&self) -> Result<Vec<ContainerInfo>> {
        self.names_and_records()?
            .into_iter()
            .map(|(name, record)| self.info(&name, record))
            .collect()
    }
}
