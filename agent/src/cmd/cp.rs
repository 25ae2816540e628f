//! `moor cp`: files between a running container and the host, in either
//! direction, as `docker cp` (see `moor_runtime::container::CopyOptions`
//! for the rules and what keeps the copy inside the container's root and
//! the destination).
//!
//! ```text
//! moor cp web:/etc/nginx/nginx.conf ./nginx.conf
//! moor cp ./site/. web:/usr/share/nginx/html
//! moor cp web:/var/log - | tar -t        # a tar stream out
//! tar -c conf | moor cp - web:/etc       # a tar stream in
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use moor_runtime::container::{CopyIn, CopyOptions, CopyOut};

use crate::cli::CpArgs;

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Container { name: String, path: String },
    Host(PathBuf),
    Stream,
}

/// Docker's reading: `NAME:PATH` when what comes before the first `:` is
/// a container name (no `/`); a host path with a `:` is written `./a:b`.
fn parse(arg: &str) -> End {
    if arg == "-" {
        return End::Stream;
    }
    match arg.split_once(':') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') => End::Container {
            name: name.to_string(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_string()
            },
        },
        _ => End::Host(PathBuf::from(arg)),
    }
}

pub fn run(state_dir: &Path, args: &CpArgs) -> anyhow::Result<ExitCode> {
    let opts = CopyOptions {
        archive: args.archive,
        follow_link: args.follow_link,
    };
    let engine = super::common::engine(state_dir)?;
    let id = |name: &str| moor_runtime::host::instances::resolve(&engine, name);
    let skipped = match (parse(&args.src), parse(&args.dest)) {
        (End::Container { name, path }, End::Host(dest)) => {
            engine.copy_from(&id(&name)?, &path, CopyOut::Path(&dest), opts)?
        }
        (End::Container { name, path }, End::Stream) => {
            let mut out = std::io::stdout().lock();
            engine.copy_from(&id(&name)?, &path, CopyOut::Tar(&mut out), opts)?
        }
        (End::Host(src), End::Container { name, path }) => {
            engine.copy_into(&id(&name)?, CopyIn::Path(&src), &path, opts)?
        }
        (End::Stream, End::Container { name, path }) => {
            let mut input = std::io::stdin().lock();
            engine.copy_into(&id(&name)?, CopyIn::Tar(&mut input), &path, opts)?
        }
        (End::Container { .. }, End::Container { .. }) => {
            bail!("copying between two containers is not supported; copy through the host")
        }
        _ => bail!("one of SRC and DEST must be a container path, NAME:PATH"),
    };
    for s in &skipped {
        eprintln!("warning: not copied: {s}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_read_as_docker_reads_them() {
        assert_eq!(
            parse("web:/etc/hosts"),
            End::Container {
                name: "web".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(
            parse("web:"),
            End::Container {
                name: "web".into(),
                path: "/".into()
            }
        );
        assert_eq!(parse("./a:b"), End::Host("./a:b".into()));
        assert_eq!(parse("/tmp/x"), End::Host("/tmp/x".into()));
        assert_eq!(parse(":x"), End::Host(":x".into()));
        assert_eq!(parse("-"), End::Stream);
    }
}
