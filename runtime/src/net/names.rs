//! Interface names: deterministic, within the kernel's 15-byte limit
//! (`IFNAMSIZ` less the NUL), and recognisably moor's.
//!
//! - a network's bridge is `mo-NAME` when that fits and `NAME` holds only
//!   `[A-Za-z0-9_-]`, else `mo_` + the first letters of the name + a hash;
//!   the `_` after `mo` tells the hashed form apart from any literal name;
//! - the host end of a veth pair is `mv-` + 12 hex digits of a hash of
//!   (container, network); its peer is created as `mp-` + the same digits
//!   and renamed `eth0`, `eth1`, … once it is inside the container.
//!
//! Every bridge and veth host end moor creates also carries an alias
//! (`IFLA_IFALIAS`) naming its state directory's [`instance`], so clean-up
//! removes only what this moor made — never a user's bridge that happens to
//! be called `mo-something`, nor another moor's (a second state directory,
//! tests side by side).

use sha2::{Digest, Sha256};

/// The kernel's limit on an interface name, in bytes.
pub const IFNAME_MAX: usize = 15;

/// The start of the alias on every interface moor creates.
pub const ALIAS_PREFIX: &str = "moor:";

/// The bridge of the network `network`.
pub fn bridge(network: &str) -> String {
    let plain = format!("mo-{network}");
    let simple = network
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain.len() <= IFNAME_MAX && simple && !network.is_empty() {
        return plain;
    }
    let head: String = network
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect();
    let hash = short_hash(network.as_bytes(), IFNAME_MAX - 3 - head.len());
    format!("mo_{head}{hash}")
}

/// The host end of the veth pair attaching `container` to `network`.
pub fn veth_host(container: &str, network: &str) -> String {
    format!("mv-{}", pair_hash(container, network))
}

/// The container end of the pair before it is moved and renamed.
pub fn veth_peer(container: &str, network: &str) -> String {
    format!("mp-{}", pair_hash(container, network))
}

/// The name of the `index`th interface inside a container.
pub fn container_ifname(index: usize) -> String {
    format!("eth{index}")
}

/// The token that tells one moor state directory's interfaces from
/// another's (tests, or two agents, on one host).
pub fn instance(state_dir: &std::path::Path) -> String {
    let path = state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf());
    short_hash(path.as_os_str().as_encoded_bytes(), 8)
}

/// The alias that marks a bridge as moor's.
pub fn bridge_alias(instance: &str, network: &str) -> String {
    format!("{ALIAS_PREFIX}{instance}:network:{network}")
}

/// The alias that marks a veth host end as moor's.
pub fn veth_alias(instance: &str, container: &str, network: &str) -> String {
    format!("{ALIAS_PREFIX}{instance}:veth:{container}/{network}")
}

/// What an alias of `instance` marks: `Some(true)` a bridge, `Some(false)` a
/// veth, `None` when it is not this instance's.
pub fn owned_by(alias: &str, instance: &str) -> Option<bool> {
    let rest = alias.strip_prefix(ALIAS_PREFIX)?.strip_prefix(instance)?;
    if rest.starts_with(":network:") {
        Some(true)
    } else if rest.starts_with(":veth:") {
        Some(false)
    } else {
        None
    }
}

/// True for a name of the form moor gives veth ends (`mv-`/`mp-` + 12 hex
/// digits): such a link is moor's even before its alias is set.
pub fn is_veth(name: &str) -> bool {
    let (prefix, rest) = name.split_at(name.len().min(3));
    matches!(prefix, "mv-" | "mp-")
        && rest.len() == 12
        && rest.bytes().all(|b| b.is_ascii_hexdigit())
}

fn pair_hash(container: &str, network: &str) -> String {
    let mut key = Vec::with_capacity(container.len() + network.len() + 1);
    key.extend_from_slice(container.as_bytes());
    key.push(0);
    key.extend_from_slice(network.as_bytes());
    short_hash(&key, 12)
}

fn short_hash(data: &[u8], digits: usize) -> String {
    let mut hex = hex::encode(Sha256::digest(data));
    hex.truncate(digits);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_readable() {
        assert_eq!(bridge("front"), "mo-front");
        assert_eq!(bridge("a_b-c"), "mo-a_b-c");
        assert_eq!(bridge("twelve-chars"), "mo-twelve-chars");
    }

    #[test]
    fn long_or_odd_names_are_hashed_within_the_limit() {
        for name in ["thirteen-char", "a.b", "a-very-long-network-name", "x"] {
            let b = bridge(name);
            assert!(b.len() <= IFNAME_MAX, "{b} is too long");
            assert!(b.starts_with("mo"), "{b}");
        }
        assert!(bridge("a.b").starts_with("mo_ab"));
        let long = bridge("a-very-long-network-name");
        assert_eq!(long.len(), IFNAME_MAX);
        assert!(long.starts_with("mo_avery"));
    }

    #[test]
    fn names_are_deterministic_and_distinct() {
        assert_eq!(bridge("backend-services"), bridge("backend-services"));
        assert_ne!(bridge("backend-services1"), bridge("backend-services2"));
        assert_eq!(veth_host("web", "front"), veth_host("web", "front"));
        assert_ne!(veth_host("web", "front"), veth_host("web", "back"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(veth_host("ab", "c"), veth_host("a", "bc"));
        assert_eq!(veth_host("web", "front").len(), IFNAME_MAX);
        assert_eq!(veth_peer("web", "front").len(), IFNAME_MAX);
        assert_eq!(container_ifname(1), "eth1");
        assert!(is_veth(&veth_host("web", "front")));
        assert!(is_veth(&veth_peer("web", "front")));
        assert!(!is_veth("mv-front"));
        assert!(!is_veth("eth0"));
        let me = "0123abcd";
        assert_eq!(owned_by(&bridge_alias(me, "front"), me), Some(true));
        assert_eq!(owned_by(&veth_alias(me, "web", "front"), me), Some(false));
        assert_eq!(owned_by(&bridge_alias("99999999", "front"), me), None);
        assert_eq!(owned_by("my own bridge", me), None);
    }
}
