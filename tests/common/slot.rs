//! Slots: what keeps end-to-end tests apart on one machine, also when two
//! checkouts (or two developers) run the suite at the same time.
//!
//! A test instance claims a slot N (0 to 99) by taking an exclusive `flock`
//! on `/run/moor-tests/slot-N.lock`, held for the instance's lifetime; the
//! first free N wins. Everything host-wide the instance makes is named after
//! N, in a namespace nothing else on the machine uses:
//!
//! | what | name |
//! | --- | --- |
//! | bridge prefix (`MOOR_BRIDGE_PREFIX`) | `mtN-` (bridges `mtN-NET` or `mtN_…`) |
//! | other links and network namespaces a test makes | `mtN-…`, or marked with the alias `moor-tests:slot-N` |
//! | nftables table (`MOOR_NFT_TABLE`) | `moor_tN` |
//! | cgroup parent (`MOOR_CGROUP_PARENT`) | `moor-tN` |
//! | address pool (`MOOR_NET_POOL`) | `10.(100+N).0.0/16` |
//!
//! Nothing outside tests uses 10.100.0.0–10.199.255.255 (moor's default pool
//! is 10.89.0.0/16), and no test may use moor's defaults.
//!
//! The lock file also records the holder's pid and state dirs. A run that
//! crashed or was killed releases its locks with its process, so its slots
//! are free again; the next claimer first removes what the dead holder left:
//! processes working on its state dirs, their mounts and the dirs
//! themselves, the slot's cgroups (killing what runs in them), links and
//! namespaces with the slot's prefix, and the slot's table. A slot cleans up
//! the same way when it is dropped, so clean-up removes only what its slot
//! owns.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use super::host;

/// Where slot lock files live: on tmpfs, so a reboot frees every slot.
pub const LOCK_DIR: &str = "/run/moor-tests";
/// How many slots there are.
pub const SLOTS: u8 = 100;
/// Slot N's pool is `10.(FIRST_POOL + N).0.0/16`.
const FIRST_POOL: u8 = 100;

/// A claimed slot; released (after cleaning up) on drop.
#[derive(Debug)]
pub struct Slot {
    n: u8,
    /// The locked file; closing it releases the slot.
    lock: File,
}

impl Slot {
    /// Claims the first free slot, after removing whatever a previous
    /// holder left in it. Panics when every slot is taken.
    pub fn claim() -> Slot {
        (0..SLOTS)
            .find_map(|n| Self::take(n, rustix::fs::FlockOperation::NonBlockingLockExclusive))
            .unwrap_or_else(|| panic!("all {SLOTS} test slots in {LOCK_DIR} are taken"))
    }

    /// Claims slot `n`, waiting while another instance (of this run or
    /// another) holds it, after removing whatever a previous holder left.
    pub fn claim_exactly(n: u8) -> Slot {
        assert!(n < SLOTS, "there is no slot {n}");
        Self::take(n, rustix::fs::FlockOperation::LockExclusive)
            .unwrap_or_else(|| panic!("lock {}", lock_path(n).display()))
    }

    /// Locks slot `n` with `how`; when that succeeds, cleans it and records
    /// this process as its holder.
    fn take(n: u8, how: rustix::fs::FlockOperation) -> Option<Slot> {
        std::fs::create_dir_all(LOCK_DIR).unwrap_or_else(|e| {
            panic!("create {LOCK_DIR} (tests that claim a slot run as root): {e}")
        });
        let path = lock_path(n);
        let lock = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        rustix::fs::flock(&lock, how).ok()?;
        let slot = Slot { n, lock };
        slot.clean(true);
        slot.lock.set_len(0).expect("truncate slot lock file");
        writeln!(&slot.lock, "pid {}", std::process::id()).expect("write slot lock file");
        Some(slot)
    }

    /// The slot's number.
    pub fn index(&self) -> u8 {
        self.n
    }

    /// A short name for messages and for names a test makes (`t7`).
    pub fn tag(&self) -> String {
        format!("t{}", self.n)
    }

    /// The bridge prefix (`mt7-`).
    pub fn bridge_prefix(&self) -> String {
        format!("mt{}-", self.n)
    }

    /// The bridge of the network `network`, whose name must be short and
    /// plain enough to be used as it is.
    pub fn bridge(&self, network: &str) -> String {
        let name = format!("{}{network}", self.bridge_prefix());
        assert!(
            name.len() <= 15
                && network
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "network {network:?} gets a hashed bridge name; use a shorter one"
        );
        name
    }

    /// The name of a link or network namespace the test itself makes
    /// (`mt7-what`): removed with the slot.
    pub fn name(&self, what: &str) -> String {
        let name = format!("{}{what}", self.bridge_prefix());
        assert!(name.len() <= 15, "{name:?} is too long for an interface");
        name
    }

    /// Marks the link `name`, which the test made under a name that is not
    /// the slot's, as the slot's (by its alias), so that the slot's
    /// clean-up removes it.
    pub fn mark(&self, link: &str) {
        let out = std::process::Command::new("ip")
            .args(["link", "set", "dev", link, "alias", &self.mark_alias()])
            .output()
            .expect("run ip");
        assert!(out.status.success(), "mark {link}: {out:?}");
    }

    fn mark_alias(&self) -> String {
        format!("moor-tests:slot-{}", self.n)
    }

    /// The nftables table (`moor_t7`).
    pub fn nft_table(&self) -> String {
        format!("moor_t{}", self.n)
    }

    /// The cgroup parent (`moor-t7`).
    pub fn cgroup_parent(&self) -> String {
        format!("moor-t{}", self.n)
    }

    /// The first two octets of every address in the pool (`10.107`).
    pub fn net(&self) -> String {
        format!("10.{}", FIRST_POOL + self.n)
    }

    /// The address pool (`10.107.0.0/16`).
    pub fn pool(&self) -> String {
        format!("{}.0.0/16", self.net())
    }

    /// The /24 number `third` of the pool (`10.107.THIRD.0/24`), for
    /// manifests and networks that name their subnet.
    pub fn subnet(&self, third: u8) -> String {
        format!("{}.{third}.0/24", self.net())
    }

    /// The address `10.107.THIRD.FOURTH` of the pool.
    pub fn addr(&self, third: u8, fourth: u8) -> String {
        format!("{}.{third}.{fourth}", self.net())
    }

    /// True when `addr` (an address, or a network `ADDR/LEN`) lies in the
    /// slot's pool.
    pub fn in_pool(&self, addr: &str) -> bool {
        let pool: ipnet::Ipv4Net = self.pool().parse().expect("pool");
        let ip = addr.split('/').next().unwrap_or(addr);
        ip.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| pool.contains(&ip))
    }

    /// The environment that makes moor use this slot.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("MOOR_NFT_TABLE".into(), self.nft_table()),
            ("MOOR_NET_POOL".into(), self.pool()),
            ("MOOR_CGROUP_PARENT".into(), self.cgroup_parent()),
            ("MOOR_BRIDGE_PREFIX".into(), self.bridge_prefix()),
        ]
    }

    /// Records `dir` as a state dir of this slot, so that whoever claims
    /// the slot after a crash stops its processes and removes it.
    pub fn adopt(&self, dir: &Path) {
        writeln!(&self.lock, "dir {}", dir.display()).expect("write slot lock file");
    }

    /// The state dirs recorded in the lock file.
    fn state_dirs(&self) -> Vec<PathBuf> {
        let text = std::fs::read_to_string(lock_path(self.n)).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("dir "))
            .map(PathBuf::from)
            .collect()
    }

    /// Removes everything this slot owns; with `dead_holder`, also the
    /// state dirs recorded by a holder that is gone.
    fn clean(&self, dead_holder: bool) {
        for dir in self.state_dirs() {
            host::stop_state_dir(&dir);
            // Only ever a temporary dir, whatever the file says.
            let temp = std::env::temp_dir();
            let plain = dir
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if dead_holder && plain && dir.starts_with(&temp) && dir != temp {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        host::remove_cgroup_tree(&self.cgroup_parent());
        // Hashed bridge names are `mtN_…`.
        let stem = format!("mt{}", self.n);
        for link in host::links() {
            let alias = std::fs::read_to_string(format!("/sys/class/net/{link}/ifalias"));
            if link
                .strip_prefix(&stem)
                .is_some_and(|r| r.starts_with(['-', '_']))
                || alias.is_ok_and(|a| a.trim_end() == self.mark_alias())
            {
                host::delete_link(&link);
            }
        }
        for ns in host::netns_names() {
            if ns.starts_with(&self.bridge_prefix()) {
                host::delete_netns(&ns);
            }
        }
        host::delete_nft_table(&self.nft_table());
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.clean(false);
        let _ = self.lock.set_len(0);
    }
}

fn lock_path(n: u8) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("slot-{n}.lock"))
}
