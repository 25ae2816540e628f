//! The OCI runtime bundle's `config.json`, built with `oci-spec` from the
//! image's configuration and the container's spec, with Docker's semantics
//! and security defaults.
//!
//! - Command: a spec `entrypoint` replaces the image's and drops the image's
//!   `Cmd`; a spec `command` replaces `Cmd`; the process runs entrypoint +
//!   cmd.
//! - Environment: the image's, then the spec's (which wins), plus `PATH`,
//!   `HOSTNAME` and `HOME` when not given.
//! - Security: new pid, mount, uts, ipc and net namespaces (cgroup too on
//!   v2), Docker's 14 default capabilities adjusted by `cap_add`/`cap_drop`,
//!   `no_new_privs`, a seccomp filter like Docker's ([`super::seccomp`],
//!   unless `seccomp = "unconfined"`), Docker's masked and read-only paths, a fresh `/dev`
//!   with only the standard devices, rlimits clamped to the host's hard
//!   limits so that start-up never fails on them.
//! - Mounts: destinations are resolved inside the root filesystem
//!   ([`super::rootfs::resolve_in_root`]), so a symlink in the image cannot
//!   redirect a mount onto the host.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use moor_spec::linux::DEFAULT_CAPABILITIES;
use moor_spec::{ContainerSpec, MountSource, NetworkMode};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use super::cgroups::Hierarchies;
use super::error::{ContainerError, Result};
use super::rootfs::{mkdir_in_root, resolve_in_root};
use super::state::ContainerRecord;
use super::users;
use super::volumes;

/// `PATH` when neither the image nor the spec sets one (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's masked paths: hidden behind /dev/null or an empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `RLIMIT_NOFILE` a container gets (as with Docker's containerd), clamped
/// to the host's hard limit.
pub const NOFILE: u64 = 1_048_576;

/// Where the init binary is mounted in a container with `init = true`.
pub const INIT_PATH: &str = "/sbin/moor-init";

/// What a bundle is built from besides the record.
#[derive(Debug)]
pub struct BundleInput<'a> {
    /// The container.
    pub record: &'a ContainerRecord,
    /// The mounted root filesystem (host path), where paths are resolved.
    pub rootfs: &'a Path,
    /// The bundle directory; generated files (`hostname`, `hosts`) go here.
    pub bundle_dir: &'a Path,
    /// The state dir (named volumes live under it).
    pub state_dir: &'a Path,
    /// The host's cgroup hierarchies.
    pub hierarchies: &'a Hierarchies,
    /// The host's hard `RLIMIT_NOFILE`.
    pub nofile_hard: u64,
    /// A static init binary to run as PID 1 when the spec asks for `init`.
    pub init: Option<&'a Path>,
    /// The network namespace to join (`network_mode = "container:NAME"`).
    pub join_netns: Option<PathBuf>,
    /// Per mount of the spec, the staging path a bind source next to the
    /// manifests was attached at (see `binds`): bound instead of the source.
    pub staged: &'a [Option<PathBuf>],
}

/// The process arguments: Docker's entrypoint and command rules.
pub fn command(spec: &ContainerSpec, image: Option<&oci_spec::image::Config>) -> Vec<String> {
    let image_entrypoint = image
        .and_then(|c| c.entrypoint().clone())
        .unwrap_or_default();
    let image_cmd = image.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let (entrypoint, cmd) = match (&spec.entrypoint, &spec.command) {
        (Some(e), Some(c)) => (e.clone(), c.clone()),
        // A new entrypoint drops the image's command, as in Docker.
        (Some(e), None) => (e.clone(), Vec::new()),
        (None, Some(c)) => (image_entrypoint, c.clone()),
        (None, None) => (image_entrypoint, image_cmd),
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// The environment: the image's, then the spec's, plus defaults.
pub fn environment(
    spec: &ContainerSpec,
    image: Option<&oci_spec::image::Config>,
    hostname: &str,
    home: Option<&str>,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in image.and_then(|c| c.env().clone()).unwrap_or_default() {
        match kv.split_once('=') {
            Some((k, v)) => set(k, v),
            None => set(&kv, ""),
        }
    }
    for (k, v) in &spec.env {
        set(k, v);
    }
    let mut out: Vec<(String, String)> = Vec::new();
    if !env.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        out.push(("HOSTNAME".into(), hostname.into()));
    }
    out.extend(env);
    if !out.iter().any(|(k, _)| k == "HOME") {
        out.push(("HOME".into(), home.unwrap_or("/").into()));
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The capability set: Docker's defaults, minus `cap_drop`, plus `cap_add`
/// (`ALL` in either means every capability), within what this process may
/// grant: its own bounding set.
pub fn capabilities(spec: &ContainerSpec) -> Result<Capabilities> {
    capabilities_within(spec, own_bounding_set())
}

/// Kernel numbers of the capabilities moor knows, for the bounding set test.
#[rustfmt::skip]
const CAPABILITY_BITS: &[(&str, u32)] = &[
    ("CHOWN", 0), ("DAC_OVERRIDE", 1), ("DAC_READ_SEARCH", 2), ("FOWNER", 3), ("FSETID", 4),
    ("KILL", 5), ("SETGID", 6), ("SETUID", 7), ("SETPCAP", 8), ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10), ("NET_BROADCAST", 11), ("NET_ADMIN", 12), ("NET_RAW", 13),
    ("IPC_LOCK", 14), ("IPC_OWNER", 15), ("SYS_MODULE", 16), ("SYS_RAWIO", 17),
    ("SYS_CHROOT", 18), ("SYS_PTRACE", 19), ("SYS_PACCT", 20), ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22), ("SYS_NICE", 23), ("SYS_RESOURCE", 24), ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26), ("MKNOD", 27), ("LEASE", 28), ("AUDIT_WRITE", 29),
    ("AUDIT_CONTROL", 30), ("SETFCAP", 31), ("MAC_OVERRIDE", 32), ("MAC_ADMIN", 33),
    ("SYSLOG", 34), ("WAKE_ALARM", 35), ("BLOCK_SUSPEND", 36), ("AUDIT_READ", 37),
    ("PERFMON", 38), ("BPF", 39), ("CHECKPOINT_RESTORE", 40),
];

/// This process's bounding set (`CapBnd` in `/proc/self/status`): a
/// container can never hold more. A host (or a sandbox moor itself runs in)
/// may withhold some, as this one may withhold `SYS_RESOURCE`.
fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

fn in_set(bounding: u64, name: &str) -> bool {
    let bare = name.strip_prefix("CAP_").unwrap_or(name);
    CAPABILITY_BITS
        .iter()
        .find(|(n, _)| *n == bare)
        .is_none_or(|(_, bit)| bounding & (1u64 << bit) != 0)
}

/// [`capabilities`] against a given bounding set. `ALL` means every
/// capability in it (as Docker grants what its daemon holds); one named in
/// `cap_add` that is outside it is an error that says so, instead of the
/// runtime's "operation not permitted" at exec.
fn capabilities_within(spec: &ContainerSpec, bounding: u64) -> Result<Capabilities> {
    let parse = |name: &str| -> Result<Capability> {
        serde_json::from_value(serde_json::Value::String(name.to_string()))
            .map_err(|_| ContainerError::Invalid(format!("unknown capability {name}")))
    };
    let all = || -> Result<Capabilities> {
        moor_spec::linux::CAPABILITIES
            .iter()
            .filter(|c| in_set(bounding, c))
            .map(|c| parse(c))
            .collect()
    };
    let mut caps: Capabilities = if spec.cap_drop.iter().any(|c| c == "ALL") {
        Capabilities::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .filter(|c| in_set(bounding, c))
            .map(|c| parse(c))
            .collect::<Result<_>>()?
    };
    for c in spec.cap_drop.iter().filter(|c| *c != "ALL") {
        caps.remove(&parse(c)?);
    }
    for c in &spec.cap_add {
        if c == "ALL" {
            caps.extend(all()?);
        } else if in_set(bounding, c) {
            caps.insert(parse(c)?);
        } else {
            return Err(ContainerError::Invalid(format!(
                "cap_add {c}: the host does not grant moor this capability (it is not in moor's bounding set), so no container can hold it"
            )));
        }
    }
    Ok(caps)
}

/// The host name inside the container: the spec's, or its instance name
/// (`web`, also for the `web--1a2b3c4d` of a start-first update).
pub fn hostname(record: &ContainerRecord) -> String {
    record
        .spec
        .hostname
        .clone()
        .unwrap_or_else(|| record.instance().to_string())
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> Result<LinuxNamespace> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match path {
        Some(p) => b.path(p).build()?,
        None => b.build()?,
    })
}

/// The mode of the files moor puts into a container (`/etc/hosts`,
/// `/etc/hostname`, `/etc/resolv.conf`): readable by every user, as in
/// Docker, since the container's processes may run as any user (most
/// images set a non-root `USER`) and need them to resolve names.
pub const CONTAINER_FILE_MODE: u32 = 0o644;

/// Writes a file that is bind-mounted into a container: atomically (temp
/// file, rename; with `durable`, fsync-ed too) and with
/// [`CONTAINER_FILE_MODE`] whatever the process's umask.
pub fn write_container_file(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(CONTAINER_FILE_MODE)
            .open(&tmp)?;
        // The umask narrowed the mode given to open: set it whole.
        file.set_permissions(fs::Permissions::from_mode(CONTAINER_FILE_MODE))?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(ContainerError::io("write", &tmp)(e));
    }
    fs::rename(&tmp, path).map_err(ContainerError::io("rename into place", path))?;
    if durable && let Ok(d) = fs::File::open(dir) {
        d.sync_all().map_err(ContainerError::io("fsync", dir))?;
    }
    Ok(())
}

/// Builds the runtime spec, creating what it refers to on the way: named
/// volumes, the working dir, the generated `/etc/hostname` and `/etc/hosts`.
pub fn build(input: &BundleInput<'_>) -> Result<Spec> {
    let record = input.record;
    let spec = &record.spec;
    let image = record.image_config.as_ref();
    let hostname = hostname(record);

    let mut args = command(spec, image);
    if args.is_empty() {
        return Err(ContainerError::NoCommand(record.name.clone()));
    }
    let identity = users::resolve(
        input.rootfs,
        spec.user
            .as_deref()
            .or(image.and_then(|c| c.user().as_deref())),
    )?;
    let env = environment(spec, image, &hostname, identity.home.as_deref());
    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| image.and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(ContainerError::Invalid(format!(
            "working dir \"{cwd}\" is not absolute"
        )));
    }
    if !spec.read_only {
        // Docker creates a missing working dir.
        mkdir_in_root(input.rootfs, &cwd)?;
    }

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
        )?,
    ];

    // Generated /etc files, bind-mounted like Docker's.
    let hostname_file = input.bundle_dir.join("hostname");
    write_container_file(&hostname_file, format!("{hostname}\n").as_bytes(), false)?;
    let hosts_file = input.bundle_dir.join("hosts");
    let mut hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    for (name, ip) in &spec.extra_hosts {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    write_container_file(&hosts_file, hosts.as_bytes(), false)?;
    for (file, dest) in [
        (&hostname_file, "/etc/hostname"),
        (&hosts_file, "/etc/hosts"),
    ] {
        let dest = resolve_in_root(input.rootfs, dest)?;
        let opts: &[&str] = if spec.read_only {
            &["rbind", "rprivate", "ro"]
        } else {
            &["rbind", "rprivate"]
        };
        mounts.push(mount(
            &dest.to_string_lossy(),
            "bind",
            &file.to_string_lossy(),
            opts,
        )?);
    }

    if spec.init {
        let init = input.init.ok_or_else(|| {
            ContainerError::Invalid(
                "init = true needs a static init binary (tini-static) on the host".into(),
            )
        })?;
        mounts.push(mount(
            INIT_PATH,
            "bind",
            &init.to_string_lossy(),
            &["rbind", "rprivate", "ro"],
        )?);
        args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
    }

    for (i, m) in spec.mounts.iter().enumerate() {
        let dest = resolve_in_root(input.rootfs, &m.target)?;
        if dest == Path::new("/") {
            return Err(ContainerError::Invalid(format!(
                "mount target {} resolves to the container's root inside the image",
                m.target
            )));
        }
        let dest = dest.to_string_lossy().into_owned();
        let ro = if m.read_only { Some("ro") } else { None };
        match &m.source {
            MountSource::Volume { name } => {
                let data =
                    volumes::ensure(input.state_dir, name, Some((input.rootfs, dest.as_str())))?;
                let opts: Vec<&str> = ["rbind", "rprivate"].into_iter().chain(ro).collect();
                mounts.push(mount(&dest, "bind", &data.to_string_lossy(), &opts)?);
            }
            MountSource::Bind { source, tree, .. } => {
                let staged = input.staged.get(i).and_then(Option::as_ref);
                let source = match (staged, tree) {
                    (Some(staged), _) => staged,
                    // Never the path itself: it could have been swapped.
                    (None, Some(_)) => {
                        return Err(ContainerError::Invalid(format!(
                            "bind source {} for {} was not opened beneath its tree",
                            source.display(),
                            m.target
                        )));
                    }
                    (None, None) => source,
                };
                if !source.exists() {
                    return Err(ContainerError::BindSourceMissing {
                        source_path: source.clone(),
                        target: m.target.clone(),
                    });
                }
                let opts: Vec<&str> = ["rbind", "rprivate"].into_iter().chain(ro).collect();
                mounts.push(mount(&dest, "bind", &source.to_string_lossy(), &opts)?);
            }
            MountSource::Tmpfs { size } => {
                let size = size.map(|s| format!("size={s}"));
                let opts: Vec<&str> = ["nosuid", "nodev", "mode=1777"]
                    .into_iter()
                    .chain(size.as_deref())
                    .chain(ro)
                    .collect();
                mounts.push(mount(&dest, "tmpfs", "tmpfs", &opts)?);
            }
        }
    }

    let caps = capabilities(spec)?;
    let seccomp = match spec.seccomp {
        moor_spec::Seccomp::Default => Some(super::seccomp::default_profile(&caps)?),
        moor_spec::Seccomp::Unconfined => None,
    };
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(identity.uid)
                .gid(identity.gid)
                .additional_gids(identity.additional_gids.clone())
                // Docker's (runc's) default, whatever moor's umask is: a
                // file a container makes has the same mode on every host.
                .umask(0o022u32)
                .build()?,
        )
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(Capabilities::new())
                .ambient(Capabilities::new())
                .build()?,
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(NOFILE.min(input.nofile_hard))
                .hard(NOFILE.min(input.nofile_hard))
                .build()?,
        ])
        .no_new_privileges(true)
        .build()?;

    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid, None)?,
        namespace(LinuxNamespaceType::Mount, None)?,
        namespace(LinuxNamespaceType::Uts, None)?,
        namespace(LinuxNamespaceType::Ipc, None)?,
    ];
    match &spec.network_mode {
        NetworkMode::Host => {}
        NetworkMode::Container(_) => namespaces.push(namespace(
            LinuxNamespaceType::Network,
            input.join_netns.clone(),
        )?),
        NetworkMode::Bridge | NetworkMode::None => {
            namespaces.push(namespace(LinuxNamespaceType::Network, None)?)
        }
    }
    if !input.hierarchies.is_v1() {
        namespaces.push(namespace(LinuxNamespaceType::Cgroup, None)?);
    }

    let mut resources = LinuxResourcesBuilder::default().devices(device_rules()?);
    let r = &spec.resources;
    if let Some(limit) = r.memory {
        let limit = i64::try_from(limit)
            .map_err(|_| ContainerError::Invalid("memory limit too large".into()))?;
        let mut mem = LinuxMemoryBuilder::default().limit(limit);
        if input.hierarchies.swap_limit_supported() {
            // memory + swap = memory: no swap, so the OOM killer acts at the limit.
            mem = mem.swap(limit);
        }
        resources = resources.memory(mem.build()?);
    }
    if let Some(cpus) = r.cpus {
        let period: u64 = 100_000;
        let quota = (cpus * period as f64).round() as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota(quota.max(1000))
                .build()?,
        );
    }
    if let Some(pids) = r.pids {
        let pids = i64::try_from(pids)
            .map_err(|_| ContainerError::Invalid("pids limit too large".into()))?;
        resources = resources.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        // No `rootfsPropagation`: both executors default to rslave, and
        // libcontainer 0.7 rejects "rprivate".
        .cgroups_path(PathBuf::from(record.cgroup_path()))
        .resources(resources.build()?)
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        );
    let linux = match seccomp {
        Some(filter) => linux.seccomp(filter),
        None => linux,
    }
    .build()?;

    let mut annotations: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    annotations.insert("io.moor.container.name".into(), record.name.clone());
    annotations.insert("io.moor.container.image".into(), spec.image.to_string());

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(spec.read_only)
                .build()?,
        )
        .hostname(hostname)
        .mounts(mounts)
        .process(process)
        .linux(linux)
        .annotations(annotations)
        .build()?)
}

/// The device cgroup: deny everything, then allow the standard devices
/// (and mknod of any, as Docker does: creating a node is harmless when
/// opening it is denied).
fn device_rules() -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>> {
    let rule = |allow: bool,
                typ: LinuxDeviceType,
                major: Option<i64>,
                minor: Option<i64>,
                access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build()
    };
    use LinuxDeviceType::{A, B, C};
    Ok(vec![
        rule(false, A, None, None, "rwm")?,
        rule(true, C, None, None, "m")?,
        rule(true, B, None, None, "m")?,
        rule(true, C, Some(1), Some(3), "rwm")?, // null
        rule(true, C, Some(1), Some(5), "rwm")?, // zero
        rule(true, C, Some(1), Some(7), "rwm")?, // full
        rule(true, C, Some(1), Some(8), "rwm")?, // random
        rule(true, C, Some(1), Some(9), "rwm")?, // urandom
        rule(true, C, Some(5), Some(0), "rwm")?, // tty
        rule(true, C, Some(5), Some(2), "rwm")?, // ptmx
        rule(true, C, Some(136), None, "rwm")?,  // pts
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_for_the_container_are_readable_by_every_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        // A file left with a private mode (as resolv.conf once was) is replaced.
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        for durable in [false, true] {
            write_container_file(&path, b"127.0.0.1\tlocalhost\n", durable).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644);
            assert_eq!(std::fs::read(&path).unwrap(), b"127.0.0.1\tlocalhost\n");
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    fn spec() -> ContainerSpec {
        let state = moor_spec::load_texts(&[(
            PathBuf::from("/m/t.toml"),
            "[containers.c]\nimage = \"busybox\"\n".to_string(),
        )])
        .unwrap();
        (*state.containers["c"].spec).clone()
    }

    fn image(
        entrypoint: Option<&[&str]>,
        cmd: Option<&[&str]>,
        env: &[&str],
    ) -> oci_spec::image::Config {
        let mut c = oci_spec::image::Config::default();
        c.set_entrypoint(entrypoint.map(|v| v.iter().map(|s| s.to_string()).collect()));
        c.set_cmd(cmd.map(|v| v.iter().map(|s| s.to_string()).collect()));
        c.set_env(Some(env.iter().map(|s| s.to_string()).collect()));
        c
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_command_follow_docker() {
        let img = image(Some(&["/entry"]), Some(&["default"]), &[]);
        let mut s = spec();
        assert_eq!(command(&s, Some(&img)), v(&["/entry", "default"]));
        s.command = Some(v(&["mine"]));
        assert_eq!(command(&s, Some(&img)), v(&["/entry", "mine"]));
        s.entrypoint = Some(v(&["/other"]));
        assert_eq!(command(&s, Some(&img)), v(&["/other", "mine"]));
        s.command = None;
        assert_eq!(
            command(&s, Some(&img)),
            v(&["/other"]),
            "a new entrypoint drops the image's cmd"
        );
        assert!(command(&spec(), None).is_empty());
    }

    #[test]
    fn environment_merges_with_spec_winning() {
        let img = image(None, None, &["A=image", "PATH=/img/bin", "B=keep"]);
        let mut s = spec();
        s.env.insert("A".into(), "spec".into());
        s.env.insert("C".into(), "new".into());
        let env = environment(&s, Some(&img), "web", Some("/root"));
        assert_eq!(
            env,
            v(&[
                "HOSTNAME=web",
                "A=spec",
                "PATH=/img/bin",
                "B=keep",
                "C=new",
                "HOME=/root"
            ])
        );
        let env = environment(&spec(), None, "web", None);
        assert!(env.contains(&format!("PATH={DEFAULT_PATH}")));
        assert!(env.contains(&"HOME=/".to_string()));
    }

    #[test]
    fn capabilities_default_add_drop() {
        let mut s = spec();
        assert_eq!(capabilities(&s).unwrap().len(), 14);
        s.cap_drop = v(&["CAP_NET_RAW"]);
        s.cap_add = v(&["CAP_SYS_TIME"]);
        let caps = capabilities(&s).unwrap();
        assert!(!caps.contains(&Capability::NetRaw));
        assert!(caps.contains(&Capability::SysTime));
        assert_eq!(caps.len(), 14);
        s.cap_drop = v(&["ALL"]);
        s.cap_add = v(&["CAP_CHOWN"]);
        assert_eq!(capabilities(&s).unwrap().len(), 1);
        s.cap_add = v(&["ALL"]);
        assert_eq!(
            capabilities_within(&s, u64::MAX).unwrap().len(),
            moor_spec::linux::CAPABILITIES.len()
        );
    }

    #[test]
    fn capabilities_stay_within_the_bounding_set() {
        let mut s = spec();
        let without_sys_resource = !(1u64 << 24);
        s.cap_add = v(&["ALL"]);
        let caps = capabilities_within(&s, without_sys_resource).unwrap();
        assert_eq!(caps.len(), moor_spec::linux::CAPABILITIES.len() - 1);
        assert!(!caps.contains(&Capability::SysResource));
        assert!(caps.contains(&Capability::SysAdmin));
        s.cap_add = v(&["CAP_SYS_RESOURCE"]);
        let err = capabilities_within(&s, without_sys_resource).unwrap_err();
        assert!(
            err.to_string()
                .contains("CAP_SYS_RESOURCE: the host does not grant"),
            "{err}"
        );
        // Without CHOWN in the set, the default set loses it quietly.
        let caps = capabilities_within(&spec(), !1).unwrap();
        assert_eq!(caps.len(), 13);
        // Every name moor knows has a bit.
        for c in moor_spec::linux::CAPABILITIES {
            assert!(CAPABILITY_BITS.iter().any(|(n, _)| n == c), "{c}");
        }
    }
}
