//! `moor-shim DIR`: the per-container supervisor, started by the engine for
//! each container it starts (see `moor_runtime::container::shim`).
//!
//! A binary of its own, as containerd has `containerd-shim-runc-v2`: one
//! runs beside every container for as long as it lives, so it carries only
//! the shim's code path (the executor, logs, cgroups), none of `moor`'s
//! command line, async runtime, git or HTTP, and it is linked without PIE
//! (see build.rs) so that its read-only data needs no relocation and stays
//! shared, clean pages of the file. It reads no network input and holds no
//! secret; `moor`, the network-facing daemon, is position-independent.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let code = match (args.next(), args.next()) {
        (Some(flag), None) if flag == "--version" || flag == "-V" => {
            println!("moor-shim {}", env!("CARGO_PKG_VERSION"));
            0
        }
        // The shim forks and relies on being single-threaded: it is the
        // first and only thing this process does.
        (Some(dir), None) if !dir.to_string_lossy().starts_with('-') => {
            moor_runtime::container::shim::run(std::path::Path::new(&dir))
        }
        _ => {
            eprintln!(
                "usage: moor-shim DIR (started by moor for each container; DIR is the container's directory)"
            );
            2
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
