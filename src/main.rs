//! The `moor` binary: everything it does is in the `moor-agent` library
//! (`agent/src/lib.rs`); the end-to-end tests in `tests/` run this binary.

fn main() -> std::process::ExitCode {
    moor_agent::main()
}
