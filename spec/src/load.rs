//! Loading manifests from files and directory trees.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::decode::{Decoder, Drafts};
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::DesiredState;
use crate::node::Pos;
use crate::parse::{Format, parse};

/// Loads, normalises and validates every manifest under `paths` (files, or
/// directories searched recursively; dot-files and dot-directories skipped;
/// files read in sorted path order). Returns the desired state, or every
/// diagnostic found.
pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<DesiredState, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut files = Vec::new();
    // Directories already walked, by device and inode: a symlink loop (or a
    // directory given twice) is read once.
    let mut seen_dirs = HashSet::new();
    for p in paths {
        collect(p.as_ref(), true, &mut seen_dirs, &mut files, &mut diags);
    }
    files.sort();
    files.dedup();
    let mut sources = Vec::with_capacity(files.len());
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => sources.push((file, text)),
            Err(e) => diags.push(Diagnostic::error(
                &file,
                Pos::new(1, 1),
                "",
                format!("cannot read file: {}", crate::diag::io_reason(&e)),
            )),
        }
    }
    load_sources(&sources, diags)
}

/// Loads manifests from text already in memory: `(path, text)` pairs. The
/// path's extension picks the format and its directory anchors relative paths.
pub fn load_texts(sources: &[(PathBuf, String)]) -> Result<DesiredState, Diagnostics> {
    load_sources(sources, Diagnostics::default())
}

fn load_sources(
    sources: &[(PathBuf, String)],
    mut diags: Diagnostics,
) -> Result<DesiredState, Diagnostics> {
    // Files parse and decode independently: spread them over the cores in
    // contiguous chunks, then merge in file order so results are deterministic.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(sources.len().div_ceil(8))
        .max(1);
    let chunk = sources.len().div_ceil(workers).max(1);
    let parts: Vec<(Drafts, Diagnostics)> = if workers == 1 {
        vec![decode_files(sources)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = sources
                .chunks(chunk)
                .map(|files| s.spawn(move || decode_files(files)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("manifest decoding panicked"))
                .collect()
        })
    };
    let mut drafts = Drafts::default();
    for (d, e) in parts {
        drafts.extend(d);
        diags.extend(e);
    }
    crate::validate::finish(drafts, diags)
}

fn decode_files(sources: &[(PathBuf, String)]) -> (Drafts, Diagnostics) {
    let mut drafts = Drafts::default();
    let mut diags = Diagnostics::default();
    for (file, text) in sources {
        let Some(format) = Format::from_path(file) else {
            diags.push(Diagnostic::error(
                file,
                Pos::new(1, 1),
                "",
                "not a manifest: the name must end in .toml, .yaml or .yml",
            ));
            continue;
        };
        let docs = match parse(format, text) {
            Ok(docs) => docs,
            Err(e) => {
                diags.push(Diagnostic::error(file, e.pos, "", e.message));
                continue;
            }
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut decoder = Decoder::new(file, dir);
        for doc in &docs {
            decoder.document(doc, &mut drafts);
        }
        diags.extend(decoder.diags);
    }
    (drafts, diags)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n != "." && n != "..")
}

fn collect(
    path: &Path,
    explicit: bool,
    seen_dirs: &mut HashSet<(u64, u64)>,
    out: &mut Vec<PathBuf>,
    diags: &mut Diagnostics,
) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            diags.push(Diagnostic::error(
                path,
                Pos::new(1, 1),
                "",
                format!("cannot read: {}", crate::diag::io_reason(&e)),
            ));
            return;
        }
    };
    if meta.is_dir() {
        if (!explicit && is_hidden(path)) || !seen_dirs.insert((meta.dev(), meta.ino())) {
            return;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(it) => it,
            Err(e) => {
                diags.push(Diagnostic::error(
                    path,
                    Pos::new(1, 1),
                    "",
                    format!("cannot read directory: {}", crate::diag::io_reason(&e)),
                ));
                return;
            }
        };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            if is_hidden(&child) {
                continue;
            }
            let is_dir = std::fs::metadata(&child).is_ok_and(|m| m.is_dir());
            if is_dir || Format::from_path(&child).is_some() {
                collect(&child, false, seen_dirs, out, diags);
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_loop_is_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "containers:\n  a:\n    image: busybox\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("self")).unwrap();
        let state = load(&[dir.path()]).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(state.containers.len(), 1);
        let twice = load(&[dir.path(), &dir.path().join("self")]).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(twice.containers.len(), 1);
    }

    #[test]
    fn an_empty_name_is_quoted_in_the_field_path() {
        let err = load_texts(&[(
            PathBuf::from("x.yaml"),
            "containers:\n  \"\":\n    image: a\n".into(),
        )])
        .unwrap_err();
        let first = err.iter().next().unwrap();
        assert_eq!(first.field, "containers.\"\"");
    }
}
