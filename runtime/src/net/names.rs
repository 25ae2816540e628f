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
//! `mo-` is the default bridge prefix. Several moor instances on one machine
//! (three agents of a test fleet, say) each take their own with
//! `MOOR_BRIDGE_PREFIX` (a [`Naming`]): `m1-` gives bridges `m1-NAME` /
//! `m1_…`, and the veth hashes are salted with the prefix, so two instances
//! that both run a container `web` on a network `front` share no interface
//! name. A prefix is 1 to 6 lower-case letters or digits and a `-`, so no
//! two prefixes can produce the same name. The default keeps the unsalted
//! names above, which existing hosts already use.
//!
//! Every bridge and veth host end moor creates also carries an alias
//! (`IFLA_IFALIAS`) naming its state directory's [`instance`], so clean-up
//! removes only what this moor made — never a user's bridge that happens to
//! be called `mo-something`, nor another moor's (a second state directory,
//! tests side by side). A bridge's alias also names the state directory
//! itself ([`bridge_alias`]), so that a bridge left by a moor whose state
//! directory is gone can be told from one a live moor still uses
//! ([`BridgeOwner`]).

use sha2::{Digest, Sha256};

/// The kernel's limit on an interface name, in bytes.
pub const IFNAME_MAX: usize = 15;

/// The start of the alias on every interface moor creates.
pub const ALIAS_PREFIX: &str = "moor:";

/// The bridge prefix of an instance that sets none.
pub const DEFAULT_BRIDGE_PREFIX: &str = "mo-";

/// The longest stem of a bridge prefix (the part before its `-`): a hashed
/// bridge name keeps at least 6 hex digits of hash.
const MAX_STEM: usize = 6;

/// How one moor instance names the interfaces it creates (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// The prefix without its `-` (`mo`).
    stem: String,
}

impl Default for Naming {
    fn default() -> Self {
        Self { stem: "mo".into() }
    }
}

impl Naming {
    /// The naming of an instance whose bridge prefix is `prefix`: 1 to 6
    /// lower-case letters or digits, then `-` (which may be left out).
    pub fn new(prefix: &str) -> Result<Self, String> {
        let stem = prefix.strip_suffix('-').unwrap_or(prefix);
        let ok = !stem.is_empty()
            && stem.len() <= MAX_STEM
            && stem
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(format!(
                "bridge prefix \"{prefix}\" must be 1 to {MAX_STEM} lower-case letters or digits followed by '-', such as \"m1-\""
            ));
        }
        Ok(Self { stem: stem.into() })
    }

    /// The bridge prefix, with its `-` (`mo-`).
    pub fn prefix(&self) -> String {
        format!("{}-", self.stem)
    }

    /// The bridge of the network `network`.
    pub fn bridge(&self, network: &str) -> String {
        let plain = format!("{}-{network}", self.stem);
        let simple = network
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if plain.len() <= IFNAME_MAX && simple && !network.is_empty() {
            return plain;
        }
        // `STEM_` + up to 5 letters of the name + at least 6 hex digits.
        let room = IFNAME_MAX - self.stem.len() - 1;
        let head: String = network
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(5.min(room - 6))
            .collect();
        let hash = short_hash(network.as_bytes(), room - head.len());
        format!("{}_{head}{hash}", self.stem)
    }

    /// The host end of the veth pair attaching `container` to `network`.
    pub fn veth_host(&self, container: &str, network: &str) -> String {
        format!("mv-{}", self.pair_hash(container, network))
    }

    /// The container end of the pair before it is moved and renamed.
    pub fn veth_peer(&self, container: &str, network: &str) -> String {
        format!("mp-{}", self.pair_hash(container, network))
    }

    fn pair_hash(&self, container: &str, network: &str) -> String {
        let mut key = Vec::with_capacity(self.stem.len() + container.len() + network.len() + 2);
        // The default instance's names are unsalted, as they always were.
        if *self != Self::default() {
            key.extend_from_slice(self.stem.as_bytes());
            key.push(0);
        }
        key.extend_from_slice(container.as_bytes());
        key.push(0);
        key.extend_from_slice(network.as_bytes());
        short_hash(&key, 12)
    }
}

/// The bridge of the network `network` under the default prefix.
pub fn bridge(network: &str) -> String {
    Naming::default().bridge(network)
}

/// The host end of the veth pair attaching `container` to `network`, under
/// the default prefix.
pub fn veth_host(container: &str, network: &str) -> String {
    Naming::default().veth_host(container, network)
}

/// The container end of the pair before it is moved and renamed, under the
/// default prefix.
pub fn veth_peer(container: &str, network: &str) -> String {
    Naming::default().veth_peer(container, network)
}

/// The name of the `index`th interface inside a container.
pub fn container_ifname(index: usize) -> String {
    format!("eth{index}")
}

/// The token that tells one moor state directory's interfaces from
/// another's (tests, or two agents, on one host).
pub fn instance(state_dir: &std::path::Path) -> String {
    let path = canonical_state_dir(state_dir);
    short_hash(path.as_os_str().as_encoded_bytes(), 8)
}

/// The longest alias the kernel keeps (`IFALIASZ` less the NUL).
const ALIAS_MAX: usize = 255;

/// The alias that marks a bridge as moor's: `moor:TOKEN:network:NAME:DIR`,
/// where DIR is the (canonical) state directory, so that another moor can
/// tell whether the owner is still there ([`BridgeOwner`]). A directory
/// whose path is not UTF-8 or too long for the alias is left out
/// (`moor:TOKEN:network:NAME`, the form older versions wrote).
pub fn bridge_alias(instance: &str, network: &str, state_dir: &std::path::Path) -> String {
    let short = format!("{ALIAS_PREFIX}{instance}:network:{network}");
    match state_dir.to_str() {
        Some(dir) if dir.starts_with('/') && short.len() + 1 + dir.len() <= ALIAS_MAX => {
            format!("{short}:{dir}")
        }
        _ => short,
    }
}

/// The state directory named by [`instance`]'s token, as written into aliases.
pub fn canonical_state_dir(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf())
}

/// Who made a bridge, as its alias says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOwner {
    /// The owner's [`instance`] token.
    pub instance: String,
    /// The network the bridge is for.
    pub network: String,
    /// The owner's state directory; `None` in an alias of the older form,
    /// which named only the token.
    pub state_dir: Option<std::path::PathBuf>,
}

impl BridgeOwner {
    /// Reads a bridge alias; `None` when it is not one of moor's.
    pub fn parse(alias: &str) -> Option<Self> {
        let rest = alias.strip_prefix(ALIAS_PREFIX)?;
        let (instance, rest) = rest.split_once(':')?;
        let rest = rest.strip_prefix("network:")?;
        let (network, dir) = match rest.split_once(':') {
            Some((network, dir)) => (network, Some(dir)),
            None => (rest, None),
        };
        let ok = !instance.is_empty() && instance.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok || network.is_empty() {
            return None;
        }
        Some(Self {
            instance: instance.to_string(),
            network: network.to_string(),
            state_dir: dir
                .filter(|d| d.starts_with('/'))
                .map(std::path::PathBuf::from),
        })
    }
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
    fn the_default_names_do_not_change() {
        // Hosts run with these names: a change would orphan their interfaces.
        assert_eq!(bridge("a-very-long-network-name"), "mo_avery9f0fbfc");
        assert_eq!(veth_host("web", "front"), "mv-e3ffe994e16b");
        assert_eq!(Naming::new("mo-").unwrap(), Naming::default());
        assert_eq!(Naming::new("mo").unwrap().prefix(), "mo-");
    }

    #[test]
    fn other_prefixes_share_no_name_with_the_default() {
        let m1 = Naming::new("m1-").unwrap();
        assert_eq!(m1.bridge("front"), "m1-front");
        assert_ne!(m1.bridge("front"), bridge("front"));
        assert_ne!(m1.veth_host("web", "front"), veth_host("web", "front"));
        assert_ne!(m1.veth_peer("web", "front"), veth_peer("web", "front"));
        assert!(is_veth(&m1.veth_host("web", "front")));
        let long = m1.bridge("a-very-long-network-name");
        assert!(long.starts_with("m1_avery"), "{long}");
        assert_eq!(long.len(), IFNAME_MAX);
        let widest = Naming::new("abcdef").unwrap();
        for name in [
            "front",
            "x",
            "a-very-long-network-name",
            "a.b",
            "thirteen-char",
        ] {
            let b = widest.bridge(name);
            assert!(b.len() <= IFNAME_MAX, "{b}");
            assert!(b.starts_with("abcdef-") || b.starts_with("abcdef_"), "{b}");
        }
        let hashed = widest.bridge("a-very-long-network-name");
        assert!(hashed.len() - "abcdef_".len() >= 6 + 2, "{hashed}");
        for bad in ["", "-", "M1-", "m_1-", "abcdefg-", "m1--", "m 1"] {
            assert!(Naming::new(bad).is_err(), "{bad:?}");
        }
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
        let dir = std::path::Path::new("/var/lib/moor");
        assert_eq!(owned_by(&bridge_alias(me, "front", dir), me), Some(true));
        assert_eq!(owned_by(&veth_alias(me, "web", "front"), me), Some(false));
        assert_eq!(owned_by(&bridge_alias("99999999", "front", dir), me), None);
        assert_eq!(owned_by("my own bridge", me), None);
        // The older form, without the directory, is still this instance's.
        assert_eq!(owned_by("moor:0123abcd:network:front", me), Some(true));
    }

    #[test]
    fn a_bridge_alias_names_its_state_dir_when_it_fits() {
        let dir = std::path::Path::new("/srv/moor:a/state");
        let alias = bridge_alias("0123abcd", "front", dir);
        assert_eq!(alias, "moor:0123abcd:network:front:/srv/moor:a/state");
        assert_eq!(
            BridgeOwner::parse(&alias),
            Some(BridgeOwner {
                instance: "0123abcd".into(),
                network: "front".into(),
                state_dir: Some(dir.into()),
            })
        );
        let old = BridgeOwner::parse("moor:ffffffff:network:f").unwrap();
        assert_eq!((old.network.as_str(), old.state_dir), ("f", None));
        // A path that would not fit the kernel's alias is left out.
        let long = std::path::PathBuf::from(format!("/{}", "d".repeat(300)));
        let alias = bridge_alias("0123abcd", "front", &long);
        assert_eq!(alias, "moor:0123abcd:network:front");
        let widest = bridge_alias("0123abcd", &"n".repeat(63), &long);
        assert!(widest.len() <= ALIAS_MAX);
        for junk in [
            "moor:",
            "moor:zz:network:f",
            "moor:0123abcd:veth:web/front",
            "moor:0123abcd:network:",
            "my bridge",
        ] {
            assert_eq!(BridgeOwner::parse(junk), None, "{junk}");
        }
    }
}
