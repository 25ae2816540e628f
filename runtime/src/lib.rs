//! moor's engine on the live host: images (pull, import, unpack into
//! snapshots) and containers. It decides only *how*, never *whether*.

pub mod container;
pub mod host;
pub mod image;
pub mod net;
