//! Names the kernel knows: capabilities and signals.

/// Every capability of Linux 6.x, without the `CAP_` prefix.
#[rustfmt::skip]
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE",
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER",
    "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP",
    "SETUID", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT",
    "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "SYSLOG",
    "WAKE_ALARM",
];

/// Docker's default capability set (the 14 a container gets unless told otherwise).
#[rustfmt::skip]
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
];

/// Normalises a capability name: upper case, `CAP_` prefix; `ALL` stays `ALL`.
pub fn normalize_capability(name: &str) -> Result<String, String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if CAPABILITIES.contains(&bare) {
        Ok(format!("CAP_{bare}"))
    } else {
        let hint = crate::decode::did_you_mean(bare, CAPABILITIES.iter().copied())
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
        Err(format!("unknown capability \"{name}\"{hint}"))
    }
}

/// Signal names and numbers on Linux (x86-64 and arm64 agree on these).
#[rustfmt::skip]
pub const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1), ("INT", 2), ("QUIT", 3), ("ILL", 4), ("TRAP", 5), ("ABRT", 6), ("BUS", 7),
    ("FPE", 8), ("KILL", 9), ("USR1", 10), ("SEGV", 11), ("USR2", 12), ("PIPE", 13),
    ("ALRM", 14), ("TERM", 15), ("STKFLT", 16), ("CHLD", 17), ("CONT", 18), ("STOP", 19),
    ("TSTP", 20), ("TTIN", 21), ("TTOU", 22), ("URG", 23), ("XCPU", 24), ("XFSZ", 25),
    ("VTALRM", 26), ("PROF", 27), ("WINCH", 28), ("IO", 29), ("PWR", 30), ("SYS", 31),
];

/// Normalises a signal (`TERM`, `sigterm`, `SIGTERM`, `15`, `SIGRTMIN+3`) to its `SIG…` name or number.
pub fn normalize_signal(s: &str) -> Result<String, String> {
    let upper = s.trim().to_ascii_uppercase();
    if let Ok(n) = upper.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(SIGNALS
                .iter()
                .find(|(_, v)| *v == n)
                .map_or_else(|| n.to_string(), |(name, _)| format!("SIG{name}")))
        } else {
            Err(format!("signal number {n} is out of range 1-64"))
        };
    }
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.iter().any(|(name, _)| *name == bare) {
        return Ok(format!("SIG{bare}"));
    }
    if let Some(off) = bare
        .strip_prefix("RTMIN+")
        .and_then(|n| n.parse::<u8>().ok())
        && off <= 30
    {
        return Ok(format!("SIGRTMIN+{off}"));
    }
    Err(format!("unknown signal \"{s}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities() {
        assert_eq!(DEFAULT_CAPABILITIES.len(), 14);
        assert_eq!(normalize_capability("net_admin").unwrap(), "CAP_NET_ADMIN");
        assert_eq!(
            normalize_capability("CAP_SYS_TIME").unwrap(),
            "CAP_SYS_TIME"
        );
        assert_eq!(normalize_capability("all").unwrap(), "ALL");
        let err = normalize_capability("NET_ADMN").unwrap_err();
        assert!(err.contains("NET_ADMIN"), "{err}");
    }

    #[test]
    fn signals() {
        assert_eq!(normalize_signal("term").unwrap(), "SIGTERM");
        assert_eq!(normalize_signal("SIGQUIT").unwrap(), "SIGQUIT");
        assert_eq!(normalize_signal("9").unwrap(), "SIGKILL");
        assert_eq!(normalize_signal("SIGRTMIN+3").unwrap(), "SIGRTMIN+3");
        assert!(normalize_signal("SIGFOO").is_err());
        assert!(normalize_signal("99").is_err());
    }
}
