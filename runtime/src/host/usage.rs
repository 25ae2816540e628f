//! Resource usage of a container, read from its cgroup: CPU time, memory
//! (the working set, as cAdvisor reports it: usage less inactive file cache)
//! and processes, on v1, hybrid and v2 hosts.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::container::cgroups::Hierarchies;

/// What a container uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time used, in seconds.
    pub cpu_seconds: f64,
    /// Working-set memory, in bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
}

/// The four files a container's usage is read from: CPU, memory usage,
/// memory.stat, pids; `None` where the host has no such controller.
type Files<T> = [Option<T>; 4];

/// Where the usage files of the cgroup at `path` are; `None` when the host
/// has no cgroup hierarchy at all.
fn files(h: &Hierarchies, path: &str) -> Option<(bool, Files<PathBuf>)> {
    let rel = path.trim_start_matches('/');
    if h.is_v1() {
        let at = |ctl: &str, file: &str| h.v1_controller(ctl).map(|d| d.join(rel).join(file));
        return Some((
            true,
            [
                at("cpuacct", "cpuacct.usage"),
                at("memory", "memory.usage_in_bytes"),
                at("memory", "memory.stat"),
                at("pids", "pids.current"),
            ],
        ));
    }
    let dir = h.v2.as_ref()?.join(rel);
    Some((
        false,
        [
            Some(dir.join("cpu.stat")),
            Some(dir.join("memory.current")),
            Some(dir.join("memory.stat")),
            Some(dir.join("pids.current")),
        ],
    ))
}

/// The usage in the files' contents (v1 or v2 names); `None` when none
/// could be read (the cgroup does not exist).
fn usage(v1: bool, texts: &Files<String>) -> Option<Usage> {
    if texts.iter().all(Option::is_none) {
        return None;
    }
    let num = |t: &Option<String>| t.as_deref().and_then(|t| t.trim().parse::<u64>().ok());
    let stat = |t: &Option<String>, key: &str| {
        t.as_deref().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        })
    };
    let inactive = stat(
        &texts[2],
        if v1 {
            "total_inactive_file"
        } else {
            "inactive_file"
        },
    );
    let cpu_seconds = if v1 {
        num(&texts[0]).unwrap_or(0) as f64 / 1e9
    } else {
        stat(&texts[0], "usage_usec").unwrap_or(0) as f64 / 1e6
    };
    Some(Usage {
        cpu_seconds,
        memory_bytes: num(&texts[1])
            .unwrap_or(0)
            .saturating_sub(inactive.unwrap_or(0)),
        pids: num(&texts[3]).unwrap_or(0),
    })
}

/// Reads the usage of the cgroup at `path` (relative to each hierarchy's root).
pub fn read(h: &Hierarchies, path: &str) -> Option<Usage> {
    let (v1, files) = files(h, path)?;
    let texts = files.map(|f| f.and_then(|f| fs::read_to_string(f).ok()));
    usage(v1, &texts)
}

/// Reads usage like [`read`], keeping each cgroup's files open between
/// calls: opening a cgroup file costs several times reading it (on a
/// v1 host, 100 containers' four files take about 7 ms to open and read,
/// 1.5 ms to read again), and a scrape reads them all. A file is read again
/// from its start, which makes the kernel write it anew. The files of a
/// cgroup that is gone, or that the last call did not ask for, are closed.
/// At most a quarter of the process's file descriptor limit is kept open;
/// beyond that, files are opened for each read.
/// The hierarchies are looked up once a minute, not on every call: with
/// a container's overlay mount each, the mount table is long to read.
#[derive(Debug)]
pub struct Reader {
    open: HashMap<String, (bool, Files<File>)>,
    max_cgroups: usize,
    /// The hierarchies and until when to use them (`None`: always).
    hierarchies: Option<(Hierarchies, Option<Instant>)>,
}

/// How long the cgroup hierarchies found in the mount table are used.
const HIERARCHIES_TTL: Duration = Duration::from_secs(60);

impl Default for Reader {
    fn default() -> Self {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        Self {
            open: HashMap::new(),
            max_cgroups: usize::try_from(soft / 16).unwrap_or(usize::MAX),
            hierarchies: None,
        }
    }
}

impl Reader {
    /// A reader of the cgroups in `h` (instead of this host's).
    pub fn with_hierarchies(h: Hierarchies) -> Self {
        Self {
            hierarchies: Some((h, None)),
            ..Self::default()
        }
    }

    /// The usage of every cgroup in `paths` that exists, in order, with the
    /// path's index.
    pub fn read_all<'a>(
        &mut self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(usize, Usage)> {
        let (h, until) = match self.hierarchies.take() {
            Some((h, until)) if until.is_none_or(|t| Instant::now() < t) => (h, until),
            _ => (
                Hierarchies::detect(),
                Some(Instant::now() + HIERARCHIES_TTL),
            ),
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, path) in paths.into_iter().enumerate() {
            seen.insert(path);
            if let Some(u) = self.read(&h, path) {
                out.push((i, u));
            }
        }
        self.open.retain(|p, _| seen.contains(p.as_str()));
        self.hierarchies = Some((h, until));
        out
    }

    fn read(&mut self, h: &Hierarchies, path: &str) -> Option<Usage> {
        if let Some((v1, files)) = self.open.get(path) {
            let texts = files.each_ref().map(|f| f.as_ref().and_then(read_at_start));
            if let Some(u) = usage(*v1, &texts) {
                return Some(u);
            }
            // Removed (reads fail with ENODEV): look again below.
            self.open.remove(path);
        }
        if self.open.len() >= self.max_cgroups {
            return read(h, path);
        }
        let (v1, names) = files(h, path)?;
        let files = names.map(|f| f.and_then(|f| File::open(f).ok()));
        let texts = files.each_ref().map(|f| f.as_ref().and_then(read_at_start));
        let u = usage(v1, &texts)?;
        self.open.insert(path.to_string(), (v1, files));
        Some(u)
    }
}

/// The whole content of an open cgroup file, read from its start. The
/// kernel makes such a file whole on each read from its start and hands out
/// as much as fits, so a read that does not fill the buffer has it all.
fn read_at_start(f: &File) -> Option<String> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    loop {
        match f.read_at(&mut buf[len..], len as u64) {
            Ok(n) => {
                len += n;
                if len < buf.len() {
                    break;
                }
                buf.resize(len * 2, 0);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v2_files() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("moor/c1");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("memory.current"), "1048576\n").expect("write");
        fs::write(
            dir.join("memory.stat"),
            "anon 1\ninactive_file 4096\nactive_file 2\n",
        )
        .expect("write");
        fs::write(dir.join("cpu.stat"), "usage_usec 2500000\nuser_usec 1\n").expect("write");
        fs::write(dir.join("pids.current"), "3\n").expect("write");
        let h = Hierarchies {
            v2: Some(root.path().to_path_buf()),
            ..Hierarchies::parse("")
        };
        let u = read(&h, "/moor/c1").expect("usage");
        assert_eq!(
            u,
            Usage {
                cpu_seconds: 2.5,
                memory_bytes: 1048576 - 4096,
                pids: 3
            }
        );
        assert!(read(&h, "/moor/missing").is_none());
    }

    #[test]
    fn reader_keeps_files_open_and_sees_new_contents() {
        let root = tempfile::tempdir().expect("temp dir");
        for c in ["c1", "c2"] {
            let dir = root.path().join("moor").join(c);
            fs::create_dir_all(&dir).expect("mkdir");
            fs::write(dir.join("memory.current"), "1000\n").expect("write");
            fs::write(dir.join("memory.stat"), "inactive_file 10\n").expect("write");
            fs::write(dir.join("cpu.stat"), "usage_usec 1000000\n").expect("write");
            fs::write(dir.join("pids.current"), "1\n").expect("write");
        }
        let h = Hierarchies {
            v2: Some(root.path().to_path_buf()),
            ..Hierarchies::parse("")
        };
        let mut r = Reader::with_hierarchies(h);
        let got = r.read_all(["/moor/c1", "/moor/missing", "/moor/c2"]);
        assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(r.open.len(), 2);
        // Rewritten in place, as the kernel does: the open file shows it.
        fs::write(root.path().join("moor/c1/pids.current"), "7\n").expect("write");
        let got = r.read_all(["/moor/c1"]);
        assert_eq!(
            got,
            [(
                0,
                Usage {
                    cpu_seconds: 1.0,
                    memory_bytes: 990,
                    pids: 7
                }
            )]
        );
        // c2 was not asked for: its files are closed.
        assert_eq!(r.open.len(), 1);
    }
}
