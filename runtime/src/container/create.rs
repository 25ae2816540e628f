//! `create`: records a container (no process yet).

use std::fs;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use moor_spec::ContainerSpec;

use super::engine::Engine;
use super::error::{ContainerError, Result};
use super::state::{ContainerRecord, now_ms, write_json_atomic};

impl Engine {
    /// Creates container `name` from `spec`, an image configuration and the
    /// image's layer directories (bottom first). Nothing runs until
    /// [`Engine::start`].
    pub fn create(
        &self,
        name: &str,
        spec: ContainerSpec,
        image_config: Option<oci_spec::image::Config>,
        lowers: Vec<PathBuf>,
    ) -> Result<ContainerRecord> {
        moor_spec::check_name(name)
            .map_err(|e| ContainerError::Invalid(format!("container name: {e}")))?;
        if lowers.is_empty() {
            return Err(ContainerError::Invalid(
                "a root filesystem needs at least one layer".into(),
            ));
        }
        for l in &lowers {
            if !l.is_dir() {
                return Err(ContainerError::Invalid(format!(
                    "layer {} is not a directory",
                    l.display()
                )));
            }
        }
        let paths = self.paths(name);
        match fs::DirBuilder::new().mode(0o700).create(&paths.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ContainerError::Exists(name.to_string()));
            }
            Err(e) => return Err(ContainerError::io("create directory", &paths.dir)(e)),
        }
        let record = ContainerRecord {
            name: name.to_string(),
            id: format!("{name}-{}", random_hex()),
            spec,
            image_config,
            lowers,
            executor: self.config.executor.clone(),
            runtime_root: self.runtime_root(),
            cgroup_parent: self.config.cgroup_parent.clone(),
            log_max_bytes: self.config.log_max_bytes,
            created_ms: now_ms(),
        };
        if let Err(e) = write_json_atomic(&paths.record(), &record) {
            let _ = fs::remove_dir_all(&paths.dir);
            return Err(e);
        }
        Ok(record)
    }
}

/// 8 random hex digits: makes a container's id (and cgroup) unique per creation.
fn random_hex() -> String {
    let mut buf = [0u8; 4];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        let n = now_ms() ^ u64::from(std::process::id()).rotate_left(32);
        buf = (n as u32).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
