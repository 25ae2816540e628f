//! cgroups on v2, v1 and hybrid hosts.
//!
//! The OCI runtime creates a container's cgroups from `linux.cgroupsPath`
//! (`/PARENT/ID`, relative to each hierarchy's root, never to the caller's
//! own cgroup). This module finds the hierarchies from `/proc/self/mountinfo`
//! — on v1 each controller may be its own mount (`cpu` and `cpuacct`
//! separately) or joined (`cpu,cpuacct`) — reads what the kernel recorded
//! (the OOM kill counter), and removes whatever a lost runtime left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cgroup hierarchies of this host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hierarchies {
    /// v1 hierarchies: (controllers or `name=…`, mount point).
    pub v1: Vec<(Vec<String>, PathBuf)>,
    /// The cgroup2 mount, if any (`/sys/fs/cgroup` on v2 hosts,
    /// `/sys/fs/cgroup/unified` on hybrid ones).
    pub v2: Option<PathBuf>,
}

impl Hierarchies {
    /// Reads this process's mount table.
    pub fn detect() -> Self {
        Self::parse(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }

    /// Parses a mountinfo text.
    pub fn parse(mountinfo: &str) -> Self {
        let mut h = Hierarchies::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).unwrap_or_default();
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or_default();
            let super_opts = r.nth(1).unwrap_or_default();
            match fstype {
                "cgroup2" if h.v2.is_none() => h.v2 = Some(PathBuf::from(mount_point)),
                "cgroup" => {
                    let controllers: Vec<String> = super_opts
                        .split(',')
                        .filter(|o| {
                            !matches!(
                                *o,
                                "rw" | "ro"
                                    | "relatime"
                                    | "noatime"
                                    | "nosuid"
                                    | "nodev"
                                    | "noexec"
                            ) && !o.starts_with("release_agent")
                                && *o != "clone_children"
                                && *o != "noprefix"
                                && *o != "xattr"
                        })
                        .map(str::to_string)
                        .collect();
                    if !h.v1.iter().any(|(_, p)| p == Path::new(mount_point)) {
                        h.v1.push((controllers, PathBuf::from(mount_point)));
                    }
                }
                _ => {}
            }
        }
        h
    }

    /// True when controllers live in v1 hierarchies (v1 or hybrid hosts).
    pub fn is_v1(&self) -> bool {
        !self.v1.is_empty()
    }

    /// The mount point of v1 controller `name`.
    pub fn v1_controller(&self, name: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| c.iter().any(|x| x == name))
            .map(|(_, p)| p.as_path())
    }

    /// Every directory that holds cgroup `path` (`/PARENT/ID`) in some hierarchy.
    pub fn dirs(&self, path: &str) -> Vec<PathBuf> {
        let rel = path.trim_start_matches('/');
        self.v1
            .iter()
            .map(|(_, p)| p.join(rel))
            .chain(self.v2.iter().map(|p| p.join(rel)))
            .collect()
    }

    /// True when memory+swap can be limited (v1 `memory.memsw.*`, needs
    /// swap accounting) or swap limited (v2).
    pub fn swap_limit_supported(&self) -> bool {
        if self.is_v1() {
            self.v1_controller("memory")
                .is_some_and(|m| m.join("memory.memsw.limit_in_bytes").exists())
        } else {
            self.v2.as_ref().is_some_and(|p| {
                fs::read_to_string(p.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
            })
        }
    }

    /// How many times the kernel's OOM killer killed a process in cgroup `path`.
    pub fn oom_kills(&self, path: &str) -> u64 {
        let rel = path.trim_start_matches('/');
        let (file, key) = if self.is_v1() {
            match self.v1_controller("memory") {
                Some(m) => (m.join(rel).join("memory.oom_control"), "oom_kill"),
                None => return 0,
            }
        } else {
            match &self.v2 {
                Some(p) => (p.join(rel).join("memory.events"), "oom_kill"),
                None => return 0,
            }
        };
        fs::read_to_string(file)
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
            })
            .unwrap_or(0)
    }

    /// PIDs in cgroup `path`, from every hierarchy that has it.
    pub fn pids(&self, path: &str) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs(path)
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The freezer of cgroup `path`: v1's `freezer.state` when the
    /// `freezer` controller holds it, else v2's `cgroup.freeze`; `None`
    /// when the cgroup has neither (it does not exist).
    fn freezer(&self, path: &str) -> Option<Freezer> {
        let rel = path.trim_start_matches('/');
        if let Some(dir) = self.v1_controller("freezer").map(|m| m.join(rel))
            && dir.join("freezer.state").exists()
        {
            return Some(Freezer::V1(dir));
        }
        let dir = self.v2.as_ref()?.join(rel);
        dir.join("cgroup.freeze")
            .exists()
            .then_some(Freezer::V2(dir))
    }

    /// True when cgroup `path` is frozen (or freezing).
    pub fn frozen(&self, path: &str) -> bool {
        // Read rather than looked up first (as [`Self::freezer`] does): a
        // missing file answers too, and every pass asks for every container.
        let rel = path.trim_start_matches('/');
        if let Some(dir) = self.v1_controller("freezer").map(|m| m.join(rel)) {
            match fs::read_to_string(dir.join("freezer.state")) {
                Ok(s) => return matches!(s.trim(), "FROZEN" | "FREEZING"),
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return false,
                Err(_) => {}
            }
        }
        self.v2.as_ref().is_some_and(|v2| {
            fs::read_to_string(v2.join(rel).join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
        })
    }

    /// Freezes (or thaws) every process in cgroup `path` and waits up to
    /// `timeout` until the kernel says it is done. A freeze that does not
    /// complete is undone.
    pub fn freeze(&self, path: &str, frozen: bool, timeout: Duration) -> Result<(), String> {
        let freezer = self.freezer(path).ok_or_else(|| {
            format!("cgroup {path} has no freezer (v1 freezer.state or v2 cgroup.freeze)")
        })?;
        let (file, value, done_file, done): (PathBuf, &str, PathBuf, &str) = match &freezer {
            Freezer::V1(dir) => {
                let state = dir.join("freezer.state");
                let want = if frozen { "FROZEN" } else { "THAWED" };
                (state.clone(), want, state, want)
            }
            Freezer::V2(dir) => (
                dir.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
                dir.join("cgroup.events"),
                if frozen { "frozen 1" } else { "frozen 0" },
            ),
        };
        let deadline = Instant::now() + timeout;
        loop {
            // Written again each round: a v1 freeze can stall on a task
            // that is busy, and is retried (as runc does).
            fs::write(&file, value).map_err(|e| format!("write {}: {e}", file.display()))?;
            let now = fs::read_to_string(&done_file).unwrap_or_default();
            if now.lines().any(|l| l.trim() == done) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if frozen {
                    let _ = self.freeze(path, false, Duration::from_secs(2));
                }
                return Err(format!(
                    "cgroup {path} did not become {} within {timeout:?}",
                    if frozen { "frozen" } else { "thawed" }
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills every process in cgroup `path` and removes its directories in
    /// every hierarchy (children first). Gives up after `timeout` and says
    /// which directories are left. A frozen cgroup is thawed first: a
    /// frozen task does not die of SIGKILL on v1.
    pub fn remove(&self, path: &str, timeout: Duration) -> Result<(), Vec<PathBuf>> {
        let deadline = Instant::now() + timeout;
        if self.frozen(path) {
            let _ = self.freeze(path, false, Duration::from_secs(2));
        }
        loop {
            for pid in self.pids(path) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let mut left = Vec::new();
            for dir in self.dirs(path) {
                if dir.exists() && remove_tree(&dir).is_err() {
                    left.push(dir);
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(left);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where a cgroup's freezer is.
#[derive(Debug)]
enum Freezer {
    /// The v1 `freezer` controller's directory of the cgroup.
    V1(PathBuf),
    /// The cgroup's v2 directory.
    V2(PathBuf),
}

/// Removes a cgroup directory and its child cgroups (rmdir only: a cgroup
/// dir's files are not removable and vanish with it).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys rw - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
34 30 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
35 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    const JOINED: &str =
        "33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
    const V2: &str = "31 30 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn hybrid_with_separate_cpu_and_cpuacct() {
        let h = Hierarchies::parse(HYBRID);
        assert!(h.is_v1());
        assert_eq!(h.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            h.v1_controller("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(
            h.v1_controller("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
        assert_eq!(
            h.v1_controller("memory"),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(h.dirs("/moor/c1").len(), 5);
        assert!(
            h.dirs("/moor/c1")
                .contains(&PathBuf::from("/sys/fs/cgroup/cpu/moor/c1"))
        );
    }

    #[test]
    fn freezes_through_v1_or_v2_files() {
        // v1: freezer.state takes FROZEN / THAWED (the kernel reports it back).
        let root = tempfile::tempdir().unwrap();
        let v1 = root.path().join("freezer");
        fs::create_dir_all(v1.join("moor/c1")).unwrap();
        fs::write(v1.join("moor/c1/freezer.state"), "THAWED\n").unwrap();
        let h = Hierarchies {
            v1: vec![(vec!["freezer".into()], v1.clone())],
            v2: None,
        };
        assert!(!h.frozen("/moor/c1"));
        h.freeze("/moor/c1", true, Duration::from_secs(1)).unwrap();
        assert!(h.frozen("/moor/c1"));
        h.freeze("/moor/c1", false, Duration::from_secs(1)).unwrap();
        assert!(!h.frozen("/moor/c1"));
        assert!(
            h.freeze("/moor/none", true, Duration::from_secs(1))
                .is_err()
        );
        // v2: cgroup.freeze, done when cgroup.events says so.
        let v2 = root.path().join("unified");
        fs::create_dir_all(v2.join("moor/c2")).unwrap();
        fs::write(v2.join("moor/c2/cgroup.freeze"), "0\n").unwrap();
        fs::write(v2.join("moor/c2/cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        let h = Hierarchies {
            v1: Vec::new(),
            v2: Some(v2.clone()),
        };
        h.freeze("/moor/c2", true, Duration::from_secs(1)).unwrap();
        assert!(h.frozen("/moor/c2"));
        // The kernel never reports it thawed: given up, with an error.
        let e = h
            .freeze("/moor/c2", false, Duration::from_millis(50))
            .unwrap_err();
        assert!(e.contains("did not become thawed"), "{e}");
    }

    #[test]
    fn joined_cpu_cpuacct_and_pure_v2() {
        let h = Hierarchies::parse(JOINED);
        assert_eq!(
            h.v1_controller("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        let h = Hierarchies::parse(V2);
        assert!(!h.is_v1());
        assert_eq!(
            h.dirs("/moor/c1"),
            vec![PathBuf::from("/sys/fs/cgroup/moor/c1")]
        );
    }
}
