//! The test harness itself: slots keep instances (and whole test runs)
//! apart, a dropped slot removes only what it owns, and a slot whose holder
//! died is cleaned before it is used again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::host::{self, link_exists};
use crate::common::slot::{SLOTS, Slot};
use crate::common::{KillOnDrop, alive, require, wait_for};

/// Slots held at once are distinct in every name and in their pools, and
/// none is moor's default.
#[test]
fn slots_held_at_once_share_no_name_or_pool() {
    if !require(&[], true) {
        return;
    }
    let slots: Vec<Slot> = (0..3).map(|_| Slot::claim()).collect();
    let pools: Vec<ipnet::Ipv4Net> = slots.iter().map(|s| s.pool().parse().unwrap()).collect();
    let default_pool: ipnet::Ipv4Net = "10.89.0.0/16".parse().unwrap();
    for (i, a) in slots.iter().enumerate() {
        assert!(a.index() < SLOTS);
        assert_ne!(a.bridge_prefix(), "mo-");
        assert_ne!(a.nft_table(), "moor");
        assert_ne!(a.cgroup_parent(), "moor");
        assert!(!pools[i].contains(&default_pool) && !default_pool.contains(&pools[i]));
        moor_runtime::net::names::Naming::new(&a.bridge_prefix())
            .unwrap_or_else(|e| panic!("moor refuses {}: {e}", a.bridge_prefix()));
        for (j, b) in slots.iter().enumerate().skip(i + 1) {
            assert_ne!(a.index(), b.index());
            assert_ne!(a.bridge_prefix(), b.bridge_prefix());
            assert_ne!(a.nft_table(), b.nft_table());
            assert_ne!(a.cgroup_parent(), b.cgroup_parent());
            assert!(
                !pools[i].contains(&pools[j]) && !pools[j].contains(&pools[i]),
                "{} and {}",
                pools[i],
                pools[j]
            );
        }
    }
}

/// What the tests below leave in a slot: a link, a table, a network
/// namespace, a cgroup with a process in it, and two processes working on
/// the state dir `state`, as a shim (naming a file in it) and an agent
/// (`MOOR_STATE_DIR`) do. Returns the pids.
fn litter(slot: &Slot, state: &Path) -> Vec<i32> {
    let ok = |c: &mut Command| {
        let out = c.output().expect("run");
        assert!(out.status.success(), "{c:?}: {out:?}");
    };
    ok(Command::new("ip").args(["link", "add", &slot.name("x"), "type", "bridge"]));
    ok(Command::new("nft").args(["add", "table", "ip", &slot.nft_table()]));
    ok(Command::new("ip").args(["netns", "add", &slot.name("ns")]));
    // The pids hierarchy on v1 and hybrid hosts, else the v2 tree.
    let mounts = host::cgroup_mounts();
    let root = mounts
        .iter()
        .find(|m| m.ends_with("pids"))
        .or_else(|| mounts.first())
        .expect("a cgroup hierarchy");
    let cgroup = root.join(slot.cgroup_parent()).join("c1");
    std::fs::create_dir_all(&cgroup).expect("make a cgroup");
    let sleep = || {
        let mut c = Command::new("sleep");
        c.arg("1000").stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    let in_cgroup = sleep().spawn().expect("start sleep").id();
    std::fs::write(cgroup.join("cgroup.procs"), in_cgroup.to_string()).expect("move to cgroup");
    let log = state.join("containers/c1/shim.log");
    std::fs::create_dir_all(log.parent().unwrap()).expect("mkdir");
    std::fs::write(&log, "").expect("write log");
    let naming = Command::new("tail")
        .arg("-f")
        .arg(&log)
        .stdout(Stdio::null())
        .spawn()
        .expect("start tail")
        .id();
    let by_env = sleep()
        .env("MOOR_STATE_DIR", state)
        .spawn()
        .expect("start sleep")
        .id();
    [in_cgroup, naming, by_env].map(|p| p as i32).to_vec()
}

/// Asserts that nothing of [`litter`] is left.
fn assert_clean(slot_index: u8, names: &Names, pids: &[i32]) {
    assert!(!link_exists(&names.link), "{} is left", names.link);
    assert!(
        host::nft_table(&names.table).is_none(),
        "table {} is left",
        names.table
    );
    assert!(
        !host::netns_names().contains(&names.netns),
        "{} is left",
        names.netns
    );
    assert!(
        host::cgroup_mounts()
            .iter()
            .all(|m| !m.join(&names.cgroup).exists()),
        "cgroup {} of slot {slot_index} is left",
        names.cgroup
    );
    for &pid in pids {
        wait_for(
            &format!("process {pid} to die"),
            Duration::from_secs(10),
            || !alive(pid),
        );
    }
}

/// The names [`litter`] uses in a slot.
struct Names {
    link: String,
    table: String,
    netns: String,
    cgroup: String,
}

impl Names {
    fn of(slot: &Slot) -> Self {
        Names {
            link: slot.name("x"),
            table: slot.nft_table(),
            netns: slot.name("ns"),
            cgroup: slot.cgroup_parent(),
        }
    }
}

/// Dropping a slot removes what it owns, and leaves another slot's alone.
#[test]
fn a_dropped_slot_removes_only_what_it_owns() {
    if !require(&["ip", "nft"], true) {
        return;
    }
    let (a, b) = (Slot::claim(), Slot::claim());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    a.adopt(dir_a.path());
    b.adopt(dir_b.path());
    let (names_a, names_b) = (Names::of(&a), Names::of(&b));
    let pids_a = litter(&a, dir_a.path());
    let pids_b = litter(&b, dir_b.path());
    let index = a.index();
    drop(a);
    assert_clean(index, &names_a, &pids_a);
    assert!(link_exists(&names_b.link), "the other slot's link is gone");
    assert!(host::nft_table(&names_b.table).is_some());
    assert!(host::netns_names().contains(&names_b.netns));
    assert!(
        pids_b.iter().all(|p| alive(*p)),
        "the other slot's processes died"
    );
    assert!(dir_b.path().is_dir());
    let index = b.index();
    drop(b);
    assert_clean(index, &names_b, &pids_b);
}

const WORKER_ENV: &str = "MOOR_TEST_DEAD_HOLDER";

/// Worker for [`a_dead_holders_slot_is_cleaned_before_it_is_used_again`]:
/// claims a slot, litters it, says so, and waits to be killed.
#[test]
#[ignore = "run as a child process by a_dead_holders_slot_is_cleaned_before_it_is_used_again"]
fn dead_holder_worker() {
    std::env::var(WORKER_ENV).expect("dead_holder_worker runs only as a child");
    let slot = Slot::claim();
    let state = tempfile::tempdir().unwrap().keep();
    slot.adopt(&state);
    let pids = litter(&slot, &state);
    let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
    println!(
        "holding {} {} {}",
        slot.index(),
        state.display(),
        pids.join(" ")
    );
    std::thread::sleep(Duration::from_secs(600));
}

/// A test run killed while it holds a slot (SIGKILL: no clean-up at all)
/// leaves the slot free, and whoever claims it next first removes what the
/// dead holder left: its processes, cgroups, link, namespace, table and
/// state dir.
#[test]
fn a_dead_holders_slot_is_cleaned_before_it_is_used_again() {
    if !require(&["ip", "nft"], true) {
        return;
    }
    let mut worker = KillOnDrop::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "harness::dead_holder_worker",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    // libtest's "test NAME ... " may come first on the line.
    let line = BufReader::new(worker.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| Some(l.split_once("holding ")?.1.to_string()))
        .expect("the worker holds a slot");
    let words: Vec<&str> = line.split_whitespace().collect();
    let index: u8 = words[0].parse().unwrap();
    let state = PathBuf::from(words[1]);
    let pids: Vec<i32> = words[2..].iter().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 3, "{line}");
    let _ = worker.0.kill();
    let _ = worker.0.wait();

    // Its litter outlives it.
    assert!(pids.iter().all(|p| alive(*p)) && state.is_dir());
    // Another test, of this run or of another, may claim the freed slot
    // first: it cleans it as this claim would, and this claim waits for it.
    let slot = Slot::claim_exactly(index);
    let names = Names::of(&slot);
    assert_clean(index, &names, &pids);
    assert!(!state.exists(), "the dead holder's state dir is left");
}

/// A moor command run without an instance cannot fall back to moor's
/// defaults: anything that would open the host's networks is refused.
#[test]
fn moor_without_an_instance_cannot_touch_the_host() {
    let state = tempfile::tempdir().unwrap();
    let out = crate::common::moor(&[
        "--state-dir",
        state.path().to_str().unwrap(),
        "down",
        "-p",
        "nothing",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MOOR_BRIDGE_PREFIX"), "{err}");
    assert!(
        std::fs::read_dir(state.path()).unwrap().next().is_none(),
        "moor wrote into its state dir"
    );
}
