//! Links `moor` as a position-dependent executable (`-no-pie`), as Debian
//! builds `runc` and `containerd-shim-runc-v2`.
//!
//! Why: every container has a shim, which is this binary re-executed. In a
//! position-independent executable the loader relocates `.data.rel.ro`
//! (vtables, tables of string slices: about 700 kB here) in every process,
//! which turns those pages into private, dirty memory that each shim keeps
//! for the life of its container. Linked at a fixed address they need no
//! relocation: they stay clean pages of the file, shared by all shims and
//! dropped from an idle shim's resident set (see `container::shim`). It
//! also spares the relocation work at every start of a shim. The cost is
//! that the binary's own code is not randomised (libraries, heap and stack
//! still are).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=moor=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
