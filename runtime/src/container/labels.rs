//! Labels moor adds to the containers it creates. The engine reads one of
//! them (a container's instance name); the host writes them all and
//! re-exports this module as `host::labels`.

/// The project that owns the container.
pub const PROJECT: &str = "moor.project";
/// The `[containers]` resource it is an instance of.
pub const RESOURCE: &str = "moor.resource";
/// Its replica number.
pub const REPLICA: &str = "moor.replica";
/// The instance name (`web`, `web-2`) when its container's own name
/// differs (`web--1a2b3c4d`, the new instance of a start-first update).
pub const INSTANCE: &str = "moor.instance";
/// The instance hash it was created from.
pub const HASH: &str = "moor.hash";
/// The digest of its image.
pub const IMAGE_DIGEST: &str = "moor.image-digest";
/// The prefix of every label moor adds.
pub const PREFIX: &str = "moor.";
