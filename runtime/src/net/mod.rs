//! Container networking: a Linux bridge per network, a veth pair per
//! attachment, persistent IPAM, DNS on every network's gateway (served by a
//! detached [`resolver`] process per state dir), and published ports,
//! masquerade and isolation in one nftables table.
//!
//! Start at [`Networks`]: it owns the persisted [`State`] and drives the
//! pieces, each in its own file — [`names`] (interface names), `bridge`,
//! `veth`, `ipam`, `dns` (what names resolve to), [`resolver`] (the
//! process that serves them), `ports` (nftables), `cleanup` (what a
//! crash left behind) and `dump` (the links and addresses it reads).
//! Every operation persists its intent before touching the host and rolls
//! back on failure, so a bad input leaves nothing half-created and a crash
//! leaves nothing that [`Networks::cleanup`] cannot find.

mod bridge;
mod cleanup;
pub(crate) mod dns;
mod dump;
mod error;
mod ipam;
pub mod names;
mod netlink;
mod networks;
mod nfnl;
mod ports;
pub mod resolver;
mod state;
mod veth;

pub use cleanup::CleanupReport;
pub use error::{NetError, Result};
pub use networks::{Interface, NetConfig, NetworkInfo, Networks};
pub use state::{ContainerRecord, Lease, NetworkRecord, Published, State};
