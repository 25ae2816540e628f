//! The default seccomp filter, in the spirit of Docker's: every system call
//! is allowed except those that act on the whole machine rather than on the
//! container (kernel modules, reboot and kexec, the clocks, swap), that
//! reach other processes' memory or the kernel's keyrings, or that build new
//! namespaces and mounts from inside; those fail with `EPERM`. A blocked
//! call comes back when the container holds the capability the kernel
//! would ask for (`cap_add = ["SYS_ADMIN"]` allows `mount`, `unshare`,
//! `setns`…), as Docker relaxes its profile. `seccomp = "unconfined"` turns
//! the filter off.
//!
//! Both executors take the filter from the bundle's `config.json`; names
//! the host's libseccomp does not know (a system call this architecture
//! lacks, such as `vm86` on x86-64) are skipped by both.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::error::Result;

/// `EPERM`: what a blocked system call returns.
const EPERM: u32 = libc::EPERM as u32;
/// `ENOSYS`: what `clone3` returns, so that libc falls back to `clone`,
/// whose flags the filter can see (`clone3` passes them in memory).
const ENOSYS: u32 = libc::ENOSYS as u32;

/// The namespace flags of `clone`: creating namespaces needs CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// System calls blocked unless the container holds one of the listed
/// capabilities (none: always blocked).
const BLOCKED: &[(&[Capability], &[&str])] = &[
    // Gone from the kernel, or never namespaced.
    (
        &[],
        &[
            "add_key",
            "keyctl",
            "request_key",
            "nfsservctl",
            "_sysctl",
            "sysfs",
            "uselib",
            "ustat",
            "vm86",
            "vm86old",
        ],
    ),
    (
        &[Capability::SysModule],
        &[
            "create_module",
            "delete_module",
            "finit_module",
            "get_kernel_syms",
            "init_module",
            "query_module",
        ],
    ),
    (
        &[Capability::SysBoot],
        &["kexec_file_load", "kexec_load", "reboot"],
    ),
    (
        &[Capability::SysTime],
        &[
            "clock_adjtime",
            "clock_adjtime64",
            "clock_settime",
            "clock_settime64",
            "settimeofday",
            "stime",
        ],
    ),
    (
        &[Capability::SysAdmin],
        &[
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setns",
            "swapoff",
            "swapon",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (&[Capability::SysAdmin, Capability::Bpf], &["bpf"]),
    (
        &[Capability::SysAdmin, Capability::Perfmon],
        &["perf_event_open"],
    ),
    (&[Capability::SysAdmin, Capability::Syslog], &["syslog"]),
    (
        // Docker allows ptrace, process_vm_* and kcmp to every container on
        // kernels from 4.8 (whose seccomp runs after ptrace's own checks, so
        // a traced process cannot escape the filter): debuggers work.
        &[Capability::SysPtrace],
        &["userfaultfd"],
    ),
    (&[Capability::SysRawio], &["ioperm", "iopl"]),
    (&[Capability::DacReadSearch], &["open_by_handle_at"]),
];

/// The architectures a filter covers on this host: the native one and the
/// 32-bit ones its kernel also runs (a call made through those would
/// otherwise bypass the rules).
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

fn rule(names: &[&str], errno: u32) -> Result<LinuxSyscall> {
    Ok(LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno)
        .build()?)
}

/// The default filter for a container with capability set `caps` (after
/// `cap_add`/`cap_drop`).
pub fn default_profile(caps: &Capabilities) -> Result<LinuxSeccomp> {
    let mut syscalls = Vec::new();
    for (needs, names) in BLOCKED {
        if !needs.iter().any(|c| caps.contains(c)) {
            syscalls.push(rule(names, EPERM)?);
        }
    }
    if !caps.contains(&Capability::SysAdmin) {
        // One rule per flag: a rule compares an argument once, and the
        // filter blocks a clone with any of them.
        for flag in CLONE_NAMESPACE_FLAGS {
            let arg = LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(*flag)
                .value_two(*flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()?;
            let mut clone = rule(&["clone"], EPERM)?;
            clone.set_args(Some(vec![arg]));
            syscalls.push(clone);
        }
        syscalls.push(rule(&["clone3"], ENOSYS)?);
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errno `name` (without argument conditions) fails with, if any.
    fn blocked(profile: &LinuxSeccomp, name: &str) -> Option<u32> {
        profile.syscalls().iter().flatten().find_map(|s| {
            (s.args().is_none() && s.names().iter().any(|n| n == name))
                .then(|| s.errno_ret())
                .flatten()
        })
    }

    fn clone_rules(profile: &LinuxSeccomp) -> usize {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names() == &["clone"])
            .count()
    }

    #[test]
    fn blocks_what_reaches_past_the_container() {
        let caps: Capabilities = [Capability::Chown, Capability::NetBindService].into();
        let p = default_profile(&caps).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        for name in [
            "mount",
            "unshare",
            "setns",
            "keyctl",
            "init_module",
            "reboot",
            "userfaultfd",
            "bpf",
            "clock_settime",
            "iopl",
            "open_by_handle_at",
            "perf_event_open",
        ] {
            assert_eq!(blocked(&p, name), Some(EPERM), "{name}");
        }
        assert_eq!(blocked(&p, "clone3"), Some(ENOSYS));
        assert_eq!(clone_rules(&p), CLONE_NAMESPACE_FLAGS.len());
        for name in [
            "read",
            "clone",
            "socket",
            "chown",
            "sethostname",
            "ptrace",
            "process_vm_readv",
            "kcmp",
        ] {
            assert_eq!(blocked(&p, name), None, "{name}");
        }
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json["syscalls"][BLOCKED.len()]["args"][0]["op"],
            "SCMP_CMP_MASKED_EQ"
        );
    }

    #[test]
    fn capabilities_relax_it_as_in_docker() {
        let caps: Capabilities = [Capability::SysAdmin, Capability::SysPtrace].into();
        let p = default_profile(&caps).unwrap();
        for name in ["mount", "unshare", "setns", "bpf", "userfaultfd", "clone3"] {
            assert_eq!(blocked(&p, name), None, "{name}");
        }
        assert_eq!(clone_rules(&p), 0);
        assert_eq!(blocked(&p, "keyctl"), Some(EPERM), "never relaxed");
        assert_eq!(blocked(&p, "init_module"), Some(EPERM));
    }
}
