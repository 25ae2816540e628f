//! Builds from manifests (`[images.X] build = …`): what an image is built
//! from ([`inputs`]), and the record of what the image a reference names
//! was built from (`<state>/builds/<hex>.json`, see [`record`]), which the
//! reconciler compares to decide whether to build again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use moor_build::context::{Context, EntryKind};
use moor_build::dockerfile;
use moor_build::ignore::Ignore;
use moor_build::plan::{self, Request};
use moor_reconcile::BuildInputs;
use moor_spec::BuildSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::BuildError;
use crate::image::Images;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The Dockerfile of `spec`: its path and the name errors call it by.
pub fn dockerfile_path(spec: &BuildSpec) -> (PathBuf, String) {
    let path = spec.context.join(&spec.dockerfile);
    let name = spec
        .dockerfile
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    (path, name)
}

/// What `spec` builds from now: the Dockerfile's digest, the arguments,
/// the target, the base images the target needs (their image IDs in
/// `images`, `None` for one not there) and every file of the context that
/// `.dockerignore` keeps (type, mode and content; never times or owners,
/// so a fresh checkout of the same commit builds nothing).
pub fn inputs(images: &Images, spec: &BuildSpec) -> Result<BuildInputs, BuildError> {
    let (file, text, context) = read_source(spec)?;
    let df = dockerfile::parse(&file, &text)?;
    let graph = plan::graph(Request {
        file: &file,
        dockerfile: &df,
        build_args: &spec.args,
        target: spec.target.as_deref(),
    })?;
    let mut bases = BTreeMap::new();
    for r in &graph.images {
        let id = images.resolve(r)?.map(|i| i.config);
        let key = moor_spec::reference::parse(r).map_or_else(|_| r.clone(), |r| r.to_string());
        bases.insert(key, id);
    }
    Ok(with_digest(BuildInputs {
        digest: String::new(),
        dockerfile: sha256(text.as_bytes()),
        args: spec.args.clone(),
        target: spec.target.clone(),
        bases,
        context,
    }))
}

/// What of the inputs is read from the source: the Dockerfile (the name
/// errors call it by, and its text) and the context's files (a digest of
/// each, by path).
#[allow(clippy::type_complexity)]
fn read_source(spec: &BuildSpec) -> Result<(String, String, BTreeMap<String, String>), BuildError> {
    let (path, file) = dockerfile_path(spec);
    let text =
        std::fs::read_to_string(&path).map_err(BuildError::io("read the Dockerfile", &path))?;
    let ignore_path = spec.context.join(".dockerignore");
    let ignore_text = match std::fs::read_to_string(&ignore_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(BuildError::io("read", &ignore_path)(e)),
    };
    let context = Context::walk(&spec.context, &Ignore::parse(&ignore_text)?)?;
    let context: BTreeMap<String, String> = context
        .entries()
        .filter(|(p, _)| !p.is_empty())
        .map(|(p, e)| {
            let what = match &e.kind {
                EntryKind::Dir => format!("dir {:o}", e.mode),
                EntryKind::File { size, digest } => format!("file {:o} {size} {digest}", e.mode),
                EntryKind::Symlink { target } => format!("symlink {:o} {target}", e.mode),
            };
            (p.to_string(), sha256(what.as_bytes()))
        })
        .collect();
    Ok((file, text, context))
}

/// A digest of what `spec` reads from the source (the Dockerfile and the
/// context after `.dockerignore`): a directory source folds it into its
/// revision, so that editing a file of a build context is a new desired
/// state, applied at once, as editing a bind source is.
pub fn source_digest(spec: &BuildSpec) -> Result<String, BuildError> {
    let (_, text, context) = read_source(spec)?;
    let canonical =
        serde_json::to_vec(&(sha256(text.as_bytes()), context)).expect("plain data serialises");
    Ok(sha256(&canonical))
}

/// `inputs` with its digest computed over the rest.
fn with_digest(mut inputs: BuildInputs) -> BuildInputs {
    inputs.digest = String::new();
    let canonical = serde_json::to_vec(&inputs).expect("inputs serialise");
    inputs.digest = sha256(&canonical);
    inputs
}

/// What a reference's image was built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    reference: String,
    /// The manifest digest the build tagged.
    digest: String,
    inputs: BuildInputs,
}

fn record_path(root: &Path, reference: &str) -> PathBuf {
    let hex = hex::encode(Sha256::digest(reference.as_bytes()));
    root.join("builds").join(format!("{hex}.json"))
}

/// Records that the image `digest` tagged `reference` was built from `inputs`.
pub fn record(
    root: &Path,
    reference: &str,
    digest: &str,
    inputs: &BuildInputs,
) -> Result<(), BuildError> {
    let path = record_path(root, reference);
    let dir = path.parent().expect("a parent");
    std::fs::create_dir_all(dir).map_err(BuildError::io("create directory", dir))?;
    let rec = Record {
        reference: reference.to_string(),
        digest: digest.to_string(),
        inputs: inputs.clone(),
    };
    crate::container::state::write_json_atomic(&path, &rec)?;
    Ok(())
}

/// What the image `digest` that `reference` names was built from, when
/// moor built it from manifests (and nothing retagged the reference since).
pub fn recorded(root: &Path, reference: &str, digest: &str) -> Option<BuildInputs> {
    let raw = std::fs::read(record_path(root, reference)).ok()?;
    let rec: Record = serde_json::from_slice(&raw).ok()?;
    (rec.reference == reference && rec.digest == digest).then_some(rec.inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> BuildSpec {
        BuildSpec {
            context: dir.to_path_buf(),
            dockerfile: PathBuf::from("Dockerfile"),
            args: BTreeMap::from([("V".to_string(), "1".to_string())]),
            target: None,
        }
    }

    #[test]
    fn inputs_follow_content_not_times_and_skip_ignored_files() {
        let state = tempfile::tempdir().unwrap();
        let images = Images::open(state.path()).unwrap();
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nARG V\nCOPY . /\n",
        )
        .unwrap();
        std::fs::write(ctx.path().join("main.py"), "1").unwrap();
        std::fs::write(ctx.path().join(".dockerignore"), "*.log\n").unwrap();
        let first = inputs(&images, &spec(ctx.path())).unwrap();
        let source = source_digest(&spec(ctx.path())).unwrap();
        assert!(first.context.contains_key("main.py"));
        assert!(first.bases.is_empty(), "scratch is no image");
        // Times are not content; an ignored file is not read.
        let f = std::fs::File::options()
            .write(true)
            .open(ctx.path().join("main.py"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        std::fs::write(ctx.path().join("debug.log"), "noise").unwrap();
        assert_eq!(inputs(&images, &spec(ctx.path())).unwrap(), first);
        assert_eq!(source_digest(&spec(ctx.path())).unwrap(), source);
        // Content, arguments and the Dockerfile are.
        std::fs::write(ctx.path().join("main.py"), "2").unwrap();
        let edited = inputs(&images, &spec(ctx.path())).unwrap();
        assert_ne!(source_digest(&spec(ctx.path())).unwrap(), source);
        assert_ne!(edited.digest, first.digest);
        assert_eq!(
            edited.changes_since(&first),
            ["build context changed: main.py"]
        );
        let mut other = spec(ctx.path());
        other.args.insert("V".into(), "2".into());
        assert_ne!(inputs(&images, &other).unwrap().digest, edited.digest);
        std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\n").unwrap();
        let based = inputs(&images, &spec(ctx.path())).unwrap();
        assert_eq!(
            based.bases,
            BTreeMap::from([("docker.io/library/busybox:latest".to_string(), None)])
        );
        // A Dockerfile that does not parse is an error with its position.
        std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nFORM x\n").unwrap();
        let err = inputs(&images, &spec(ctx.path())).unwrap_err().to_string();
        assert!(err.contains("Dockerfile:2"), "{err}");
    }

    #[test]
    fn a_record_holds_for_the_digest_it_names_only() {
        let root = tempfile::tempdir().unwrap();
        let inputs = with_digest(BuildInputs {
            digest: String::new(),
            dockerfile: "sha256:d".into(),
            args: BTreeMap::new(),
            target: None,
            bases: BTreeMap::new(),
            context: BTreeMap::new(),
        });
        assert!(recorded(root.path(), "localhost/app:1", "sha256:a").is_none());
        record(root.path(), "localhost/app:1", "sha256:a", &inputs).unwrap();
        assert_eq!(
            recorded(root.path(), "localhost/app:1", "sha256:a"),
            Some(inputs)
        );
        assert!(recorded(root.path(), "localhost/app:1", "sha256:b").is_none());
        assert!(recorded(root.path(), "localhost/app:2", "sha256:a").is_none());
    }
}
