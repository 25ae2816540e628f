//! Attach latency of the network engine, for bench/network.sh: one network,
//! N network namespaces (`ip netns add`, made beforehand and not timed),
//! then per namespace the time of `Networks::attach` (lease, veth pair,
//! move + rename, address, route, MTU, DNS record) and of `release`.
//!
//!   net_attach STATE_DIR N   (root; MOOR_NFT_TABLE and MOOR_NET_POOL apply)
//!
//! Prints one line per attach: `attach_us release_us`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use moor_runtime::net::{NetConfig, Networks};
use moor_spec::{NetworkAttachment, NetworkSpec};

fn main() {
    let mut args = std::env::args().skip(1);
    let state: PathBuf = args.next().expect("STATE_DIR").into();
    let n: usize = args.next().expect("N").parse().expect("N is a number");
    let mut cfg = NetConfig::new(&state);
    if let Ok(t) = std::env::var("MOOR_NFT_TABLE") {
        cfg.table = t;
    }
    if let Some(p) = std::env::var("MOOR_NET_POOL")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        cfg.pool = p;
    }
    let nets = Networks::open(cfg).expect("open the network engine");
    let net = "nmbattach";
    nets.create_network(net, &NetworkSpec::default())
        .expect("create network");
    let tag = std::process::id();
    let names: Vec<String> = (0..n).map(|i| format!("nmb{tag}-{i}")).collect();
    for ns in &names {
        run("ip", &["netns", "add", ns]);
    }
    let attachment = [NetworkAttachment {
        network: net.to_string(),
        aliases: vec!["alias".to_string()],
        ipv4_address: None,
    }];
    for ns in &names {
        let path = PathBuf::from("/run/netns").join(ns);
        let t0 = Instant::now();
        nets.attach(ns, &path, &attachment, &[]).expect("attach");
        let attach = t0.elapsed();
        let t0 = Instant::now();
        nets.release(ns).expect("release");
        let release = t0.elapsed();
        println!("{} {}", attach.as_micros(), release.as_micros());
    }
    for ns in &names {
        run("ip", &["netns", "del", ns]);
    }
    nets.remove_network(net).expect("remove network");
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().expect(cmd);
    assert!(st.success(), "{cmd} {args:?} failed");
}
