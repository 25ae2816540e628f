//! Create + start + wait for exit of one container, timed in-process through
//! the engine's own calls, for bench/container.sh (issue 4): what the
//! reconciler pays per container, without any command line around it.
//!
//!   container_run STATE_DIR ROOTFS N SHIM_EXE [EXECUTOR] [CGROUP_PARENT]
//!
//! ROOTFS is the image's (single) layer directory, SHIM_EXE the `moor-shim`
//! binary, EXECUTOR `builtin` (default) or `runc`.
//! The container runs `/bin/true` with `network_mode = "none"` (new network
//! namespace with loopback only, as `docker run --network none`).
//!
//! Prints one line per run, in microseconds:
//! `total create start wait remove` where total = create + start + wait
//! (`Engine::create`, `Engine::start` — overlay mount, bundle, shim spawn,
//! container created and started — and `Engine::wait_exit` until the shim
//! has recorded the exit, after releasing the cgroups and the mount).
//! `remove` (deleting the container's directory) is timed apart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use moor_runtime::container::{Engine, EngineConfig, Executor};

fn main() {
    let mut args = std::env::args().skip(1);
    let state: PathBuf = args.next().expect("STATE_DIR").into();
    let rootfs: PathBuf = args.next().expect("ROOTFS").into();
    let n: usize = args.next().expect("N").parse().expect("N is a number");
    let shim: PathBuf = args.next().expect("SHIM_EXE").into();
    let executor = args.next().unwrap_or_else(|| "builtin".into());
    let parent = args.next().unwrap_or_else(|| "moor-bench".into());

    let mut config = EngineConfig::new(&state);
    config.shim_exe = shim;
    config.executor = Executor::parse(&executor).expect("executor");
    config.cgroup_parent = parent;
    let engine = Engine::new(config).expect("open the engine");
    let rootfs = std::fs::canonicalize(&rootfs).expect("root filesystem");

    for i in 0..n {
        let name = format!("run{i}");
        let text = format!(
            "[containers.{name}]\nimage = \"moor.invalid/bench/busybox\"\n\
             command = [\"/bin/true\"]\nnetwork_mode = \"none\"\n"
        );
        let mut desired = moor_spec::load_texts(&[(PathBuf::from("bench.toml"), text)])
            .unwrap_or_else(|d| panic!("manifest: {d}"));
        let spec = std::sync::Arc::unwrap_or_clone(
            desired
                .containers
                .remove(&name)
                .expect("the container")
                .spec,
        );

        let t0 = Instant::now();
        engine
            .create(&name, spec, None, vec![rootfs.clone()])
            .expect("create");
        let t1 = Instant::now();
        engine.start(&name).expect("start");
        let t2 = Instant::now();
        let exit = engine
            .wait_exit(&name, Duration::from_secs(30))
            .expect("wait")
            .expect("the container exited within 30 s");
        let t3 = Instant::now();
        assert_eq!(exit.exit_code, 0, "/bin/true failed: {exit:?}");
        engine.remove(&name, false).expect("remove");
        let t4 = Instant::now();
        let us = |d: Duration| d.as_micros();
        println!(
            "{} {} {} {} {}",
            us(t3 - t0),
            us(t1 - t0),
            us(t2 - t1),
            us(t3 - t2),
            us(t4 - t3)
        );
    }
}
