//! `moor convert`: the manifests at PATH printed as one manifest in
//! another format (see `moor_convert`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{ConvertArgs, ConvertTo};

/// The directory the output is meant to be read from: PATH itself, or the
/// file's directory.
pub fn base_of(path: &Path) -> PathBuf {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

fn holds_compose(path: &Path) -> bool {
    if path.is_dir() {
        moor_spec::compose::FILE_NAMES
            .iter()
            .any(|n| path.join(n).is_file())
    } else {
        moor_spec::compose::is_compose_file(path)
    }
}

pub fn run(args: &ConvertArgs) -> anyhow::Result<ExitCode> {
    // Offline, like validate: no state dir, so nothing seen written is skipped.
    let written = crate::source::written::Written::default();
    let state = super::project::load(
        std::slice::from_ref(&args.path),
        &args.host,
        &written,
        super::project::HostKey::None,
    )?;
    let to = args.to.unwrap_or(if holds_compose(&args.path) {
        ConvertTo::Toml
    } else {
        ConvertTo::Compose
    });
    let format = match to {
        ConvertTo::Toml => moor_convert::Format::Toml,
        ConvertTo::Yaml => moor_convert::Format::Yaml,
        ConvertTo::Compose => moor_convert::Format::Compose,
    };
    let (text, notes) = moor_convert::convert(&state, &base_of(&args.path), format);
    for n in &notes {
        eprintln!("warning: {n}");
    }
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
