//! Links `moor-shim` as a position-dependent executable (`-no-pie`), as
//! Debian builds `runc` and `containerd-shim-runc-v2`; `moor` stays
//! position-independent.
//!
//! Why the shim: one runs beside every container for its whole life. In a
//! position-independent executable the loader relocates `.data.rel.ro`
//! (vtables, tables of string slices) in every process, which turns those
//! pages into private, dirty memory that each shim would keep. Linked at a
//! fixed address they need no relocation: they stay clean pages of the
//! file, shared by all shims and dropped from an idle shim's resident set
//! (see `container::shim`). The cost, that the shim's own code is not
//! randomised (libraries, heap and stack still are), is small for a
//! process that reads no network input and holds no secret: it reads its
//! container's record and the container's output, and writes logs.
//!
//! Why not `moor`: it is the root daemon that talks to git remotes,
//! registries and HTTP clients, with libgit2 and zlib linked in;
//! its code must be randomised (ASLR), and it is one process, not one per
//! container. Its relative relocations (some 70,000) are packed instead
//! (`-z pack-relative-relocs`, DT_RELR: glibc 2.36 and binutils 2.38 or
//! later): a table of a few kilobytes instead of 1.2 MB that the loader
//! reads at every start of every command.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=moor-shim=-no-pie");
        println!("cargo:rustc-link-arg-bin=moor=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
