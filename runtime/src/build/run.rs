//! `RUN`: a container of the engine over the state's snapshots, with the
//! engine's security defaults (namespaces, capabilities, seccomp, masked
//! paths); its output is printed as it comes, and its overlay upper
//! directory becomes the step's layer.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use moor_spec::NetworkMode;

use super::error::BuildError;
use super::layer::{self, LayerTar};
use crate::container::Engine;
use crate::container::logs::Follower;

/// What one `RUN` runs.
pub struct RunStep<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub user: &'a str,
    pub workdir: &'a str,
    pub network: NetworkMode,
    /// `SOURCE_DATE_EPOCH`: the layer's times are clamped to it.
    pub epoch: Option<u64>,
    /// The image's `VOLUME`s so far (relative to the root): what the step
    /// changes under them is not kept, as Docker documents ("If any build
    /// steps change the data within the volume after it has been
    /// declared, those changes will be discarded").
    pub volumes: &'a [String],
}

/// The mount points the runtime creates in the root filesystem when they
/// are missing: stubs, never part of a layer.
const MOUNT_STUBS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
];

/// The host's resolver configuration, given to `RUN` on the host network.
const HOST_RESOLV: &str = "/etc/resolv.conf";

/// Removes the container when dropped, whatever happened.
struct Guard<'a> {
    engine: &'a Engine,
    name: String,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.engine.remove(&self.name, true) {
            tracing::warn!(container = %self.name, error = %e, "remove build container");
        }
    }
}

fn random_hex() -> String {
    let mut buf = [0u8; 6];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        let n = std::process::id() as u64 ^ crate::container::state::now_ms();
        buf.copy_from_slice(&n.to_le_bytes()[..6]);
    }
    hex::encode(buf)
}

/// Removes the `RUN` containers of builds that are gone (killed, or
/// interrupted with Ctrl-C before they could remove their container): a
/// build container is named after the process that made it.
pub fn remove_leftovers(engine: &Engine) {
    let Ok(names) = engine.names() else {
        return;
    };
    for name in names {
        let Some(pid) = name
            .strip_prefix("build-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive && let Err(e) = engine.remove(&name, true) {
            tracing::warn!(container = %name, error = %e, "remove a left-over build container");
        }
    }
}

fn in_lowers(lowers: &[PathBuf], rel: &str) -> bool {
    lowers
        .iter()
        .any(|l| fs::symlink_metadata(l.join(rel)).is_ok())
}

/// Whether the upper directory `rel` is only there because the runtime
/// made its mount stubs in it (overlayfs copied the lower directory up,
/// unchanged): Docker makes them in a layer of their own under the
/// container's, so `/etc` is not in a `RUN` layer that did not touch it.
fn only_stubs(
    upper: &Path,
    lowers: &[PathBuf],
    rel: &str,
    m: &fs::Metadata,
    stub: &dyn Fn(&str, &fs::Metadata) -> bool,
) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let path = upper.join(rel);
    if !m.is_dir() || layer::is_opaque(&path) {
        return false;
    }
    // The lower directory it was copied up from: the topmost.
    let Some(lower) = lowers
        .iter()
        .rev()
        .find_map(|l| fs::symlink_metadata(l.join(rel)).ok())
    else {
        return false;
    };
    if !lower.is_dir() || (lower.mode(), lower.uid(), lower.gid()) != (m.mode(), m.uid(), m.gid()) {
        return false;
    }
    let Ok(entries) = fs::read_dir(&path) else {
        return false;
    };
    entries.into_iter().all(|e| {
        e.ok().is_some_and(|e| {
            let child = format!("{rel}/{}", e.file_name().to_string_lossy());
            fs::symlink_metadata(e.path()).is_ok_and(|cm| stub(&child, &cm))
        })
    })
}

/// Runs `step` over `lowers` (bottom first) and returns the layer tar it
/// made (a file under `scratch`).
pub fn run(
    engine: &Engine,
    scratch: &Path,
    lowers: &[PathBuf],
    step: RunStep<'_>,
    out: &dyn Fn(&str),
) -> Result<PathBuf, BuildError> {
    if lowers.is_empty() {
        return Err(BuildError::Invalid(
            "RUN needs a root filesystem: the stage has no layers (FROM scratch)".into(),
        ));
    }
    let mut text = "[containers.build]\nimage = \"moor.invalid/build\"\n".to_string();
    if step.network == NetworkMode::Host && Path::new(HOST_RESOLV).is_file() {
        // The host's resolvers, read-only, as a container on the host
        // network gets them: `apt-get update` needs names.
        text.push_str(&format!(
            "mounts = [\"{HOST_RESOLV}:/etc/resolv.conf:ro\"]\n"
        ));
    }
    let state = moor_spec::load_texts(&[(PathBuf::from("build.toml"), text)])
        .map_err(|d| BuildError::Invalid(format!("build container spec: {d}")))?;
    let mut spec = (*state.containers["build"].spec).clone();
    spec.command = Some(step.argv.to_vec());
    spec.entrypoint = Some(Vec::new());
    spec.env = step
        .env
        .iter()
        .cloned()
        .collect::<BTreeMap<String, String>>();
    spec.user = (!step.user.is_empty()).then(|| step.user.to_owned());
    spec.working_dir = Some(if step.workdir.is_empty() {
        "/".into()
    } else {
        step.workdir.to_owned()
    });
    spec.network_mode = step.network;
    spec.networks.clear();

    let name = format!("build-{}-{}", std::process::id(), random_hex());
    engine.create(&name, spec, None, lowers.to_vec())?;
    let guard = Guard { engine, name };
    let paths = engine.paths(&guard.name);
    // The volumes' paths as the image resolves them (its symlinks followed
    // inside it, `..` stopping at its root): never outside the upper dir.
    let volumes: Vec<String> = step
        .volumes
        .iter()
        .filter_map(|v| super::copy::resolve(lowers, v).ok())
        .filter(|v| !v.is_empty())
        .collect();
    // Docker mounts each volume on the step's container, making its mount
    // point when the image lacks it: an empty 0755 directory in the layer.
    for v in &volumes {
        if !in_lowers(lowers, v) {
            use std::os::unix::fs::DirBuilderExt as _;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(paths.upper().join(v))
                .map_err(BuildError::io(
                    "make a volume's mount point",
                    &paths.upper(),
                ))?;
        }
    }
    let mut follower = Follower::at_end(&paths.log());
    engine.start(&guard.name)?;
    let print = |follower: &mut Follower| {
        if let Ok(lines) = follower.poll() {
            for l in lines {
                out(&l.text);
            }
        }
    };
    let exit = loop {
        if let Some(exit) = engine.wait_exit(&guard.name, Duration::from_millis(200))? {
            break exit;
        }
        print(&mut follower);
    };
    // The shim writes the last lines before it records the exit.
    print(&mut follower);
    if exit.exit_code != 0 {
        return Err(BuildError::RunFailed {
            command: step.argv.join(" "),
            code: exit.exit_code,
        });
    }
    let tar = scratch.join(format!("layer-{}.tar", guard.name));
    let write = || -> std::io::Result<()> {
        let file = File::create(&tar)?;
        let mut t = LayerTar::new(BufWriter::new(file)).clamped(step.epoch);
        let upper = paths.upper();
        let stub = |rel: &str, m: &fs::Metadata| {
            MOUNT_STUBS.contains(&rel) && (m.is_dir() || m.len() == 0) && !in_lowers(lowers, rel)
        };
        let in_volume = |rel: &str| {
            volumes.iter().any(|v| {
                rel.strip_prefix(v.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
                    || (rel == v && in_lowers(lowers, rel))
            })
        };
        let skip = |rel: &str, m: &fs::Metadata| {
            stub(rel, m)
                || in_volume(rel)
                || (rel == "etc" && only_stubs(&upper, lowers, rel, m, &stub))
        };
        layer::from_upper(&upper, &mut t, &skip)?;
        let mut w = t.finish()?;
        std::io::Write::flush(&mut w)?;
        w.get_ref().sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tar);
        return Err(BuildError::io("write the layer", &tar)(e));
    }
    drop(guard);
    Ok(tar)
}
