//! `build = { context, dockerfile, args, target }` of an `[images]` entry:
//! the paths a build reads, confined to the source's tree as bind sources
//! are (see [`crate::tree`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::outside::FileKind;
use super::{Decoder, Field};
use crate::model::BuildSpec;
use crate::node::{Node, Pos, Value};

impl Decoder<'_> {
    /// `build = "./app"` (the context alone) or `build = { context =
    /// "./app", dockerfile = "Dockerfile", args = { K = "V" }, target =
    /// "runtime" }`.
    pub(crate) fn build(&mut self, node: &Node, field: &Field<'_>) -> Option<BuildSpec> {
        if let Value::Str(context) = &node.value {
            let (context, dockerfile) = self.build_paths(context, None, node.pos, field)?;
            return Some(BuildSpec {
                context,
                dockerfile,
                args: BTreeMap::new(),
                target: None,
            });
        }
        let f = self.fields(
            node,
            field,
            &["context", "dockerfile", "args", "target"],
            &[("file", "dockerfile"), ("build_args", "args")],
        )?;
        let mut ok = true;
        let cf = field.key("context");
        let context = match f.get("context") {
            Some(n) => self.string(n, &cf).map(|s| (s, n.pos)),
            None => {
                self.error(f.pos, field, "missing required field \"context\"");
                None
            }
        };
        let df = field.key("dockerfile");
        let dockerfile = match f.get("dockerfile") {
            Some(n) => match self.string(n, &df) {
                Some(s) => Some((s, n.pos)),
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let mut args = BTreeMap::new();
        if let Some(n) = f.get("args") {
            let af = field.key("args");
            for (k, v, pos) in self.string_map(n, &af, "a build argument") {
                if let Err(e) = check_arg_name(&k) {
                    self.error(pos, &af.key(&k), e);
                    ok = false;
                    continue;
                }
                args.insert(k, v);
            }
        }
        let mut target = None;
        if let Some(n) = f.get("target") {
            let tf = field.key("target");
            match self.string(n, &tf) {
                Some(t) if t.is_empty() => {
                    self.error(n.pos, &tf, "the target stage's name is empty");
                    ok = false;
                }
                Some(t) => target = Some(t),
                None => ok = false,
            }
        }
        let (written, pos) = context?;
        let context = self.build_context(&written, pos, &cf)?;
        let dockerfile = match &dockerfile {
            Some((d, dpos)) => self.build_dockerfile(&written, d, *dpos, &df)?,
            None => self.build_dockerfile(&written, "Dockerfile", pos, &cf)?,
        };
        ok.then_some(BuildSpec {
            context,
            dockerfile,
            args,
            target,
        })
    }

    /// The context (absolute, lexical) and the Dockerfile (relative to the
    /// context, `Dockerfile` when `None`) of a build written `context` in
    /// this manifest, both checked to exist inside the source's tree.
    /// Problems are reported at `pos`, `field`. What a Compose service's
    /// `build:` decodes through.
    pub(crate) fn build_paths(
        &mut self,
        context: &str,
        dockerfile: Option<&str>,
        pos: Pos,
        field: &Field<'_>,
    ) -> Option<(PathBuf, PathBuf)> {
        let absolute = self.build_context(context, pos, field)?;
        let dockerfile =
            self.build_dockerfile(context, dockerfile.unwrap_or("Dockerfile"), pos, field)?;
        Some((absolute, dockerfile))
    }

    /// The build context written `context`: an existing directory inside
    /// the source's tree, returned absolute (and lexical, as bind sources
    /// are, so the spec does not depend on where a checkout lies).
    fn build_context(&mut self, context: &str, pos: Pos, field: &Field<'_>) -> Option<PathBuf> {
        let written = Path::new(context);
        if context.is_empty() {
            self.error(
                pos,
                field,
                "the build context is empty (write \".\" for the manifest's directory)",
            );
            return None;
        }
        if written.is_absolute() {
            self.error(
                pos,
                field,
                format!("build context \"{context}\" is an absolute path; a build context is a directory of the source, written relative to the manifest"),
            );
            return None;
        }
        let (resolved, real) = match self.in_tree(written) {
            Ok(p) => p,
            Err(e) => {
                self.error(pos, field, format!("build context \"{context}\": {e}"));
                return None;
            }
        };
        let what = match self.file_kind(&real) {
            FileKind::Dir => return Some(self.absolute(resolved)),
            FileKind::Missing => "does not exist",
            _ => "is not a directory",
        };
        self.error(
            pos,
            field,
            format!(
                "build context \"{context}\" {what} (looked for {}; relative paths are read from the manifest's directory)",
                resolved.display()
            ),
        );
        None
    }

    /// The Dockerfile written `dockerfile` of the context written
    /// `context`: a file inside the source's tree, returned relative to
    /// the context (lexically normalised).
    fn build_dockerfile(
        &mut self,
        context: &str,
        dockerfile: &str,
        pos: Pos,
        field: &Field<'_>,
    ) -> Option<PathBuf> {
        let relative = Path::new(dockerfile);
        if dockerfile.is_empty() || relative.is_absolute() {
            self.error(
                pos,
                field,
                format!("dockerfile \"{dockerfile}\" must be a path relative to the build context"),
            );
            return None;
        }
        let (resolved, real) = match self.in_tree(&Path::new(context).join(relative)) {
            Ok(p) => p,
            Err(e) => {
                self.error(pos, field, format!("dockerfile \"{dockerfile}\": {e}"));
                return None;
            }
        };
        if self.file_kind(&real) != FileKind::File {
            self.error(
                pos,
                field,
                format!(
                    "dockerfile \"{dockerfile}\" is not a file (looked for {}; the dockerfile is read from the build context)",
                    resolved.display()
                ),
            );
            return None;
        }
        Some(crate::tree::normalize(relative))
    }
}

/// A build argument's name: what `ARG NAME` accepts.
fn check_arg_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a build argument name (letters, digits and _, not starting with a digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use crate::load::load;

    /// A repository with `app/Dockerfile`, `app/main.py` and `m.toml` holding `toml`.
    fn repo(toml: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("app/docker")).unwrap();
        std::fs::write(root.join("app/Dockerfile"), "FROM busybox\n").unwrap();
        std::fs::write(root.join("app/docker/Dockerfile.prod"), "FROM busybox\n").unwrap();
        std::fs::write(root.join("app/main.py"), "print(1)\n").unwrap();
        std::fs::write(root.join("m.toml"), toml).unwrap();
        tmp
    }

    fn error_of(root: &Path) -> String {
        load(&[root]).unwrap_err().to_string()
    }

    #[test]
    fn decodes_the_long_and_short_forms() {
        let tmp = repo(
            "[images.app]\nref = \"localhost/app:dev\"\n\
             build = { context = \"./app\", dockerfile = \"docker/Dockerfile.prod\", args = { VERSION = \"1\", N = 2 }, target = \"runtime\" }\n\
             [images.short]\nref = \"localhost/short:1\"\nbuild = \"app\"\n",
        );
        let state = load(&[tmp.path()]).unwrap_or_else(|d| panic!("{d}"));
        let b = state.images["app"].spec.build.as_ref().unwrap();
        assert_eq!(b.context, tmp.path().join("app"));
        assert!(b.context.is_absolute());
        assert_eq!(b.dockerfile, Path::new("docker/Dockerfile.prod"));
        assert_eq!(b.args["VERSION"], "1");
        assert_eq!(b.args["N"], "2");
        assert_eq!(b.target.as_deref(), Some("runtime"));
        assert_eq!(
            state.images["app"].spec.reference.to_string(),
            "localhost/app:dev"
        );
        let s = state.images["short"].spec.build.as_ref().unwrap();
        assert_eq!(s.context, tmp.path().join("app"));
        assert_eq!(s.dockerfile, Path::new("Dockerfile"));
        assert!(s.args.is_empty() && s.target.is_none());
        // A built image's hash differs from a pulled one's; a pulled one's
        // hash is what it was before `build` existed.
        let pulled = crate::model::ImageSpec {
            build: None,
            update: None,
            verify: None,
            ..(*state.images["app"].spec).clone()
        };
        assert_ne!(crate::hash::image(&pulled), state.images["app"].hash);
        assert_eq!(
            serde_json::to_string(&pulled).unwrap(),
            "{\"reference\":\"localhost/app:dev\",\"pull\":\"if-not-present\"}"
        );
    }

    #[test]
    fn the_yaml_spelling_means_the_same() {
        let tmp = repo("");
        std::fs::remove_file(tmp.path().join("m.toml")).unwrap();
        std::fs::write(
            tmp.path().join("m.yaml"),
            "images:\n  app:\n    ref: localhost/app:dev\n    build:\n      context: ./app\n      args: [VERSION=1]\n",
        )
        .unwrap();
        let state = load(&[tmp.path()]).unwrap_or_else(|d| panic!("{d}"));
        let b = state.images["app"].spec.build.as_ref().unwrap();
        assert_eq!(b.args["VERSION"], "1");
        assert_eq!(b.dockerfile, Path::new("Dockerfile"));
    }

    #[test]
    fn a_context_that_climbs_out_of_the_tree_is_refused_at_its_field() {
        let tmp =
            repo("[images.app]\nref = \"localhost/app:dev\"\nbuild = { context = \"../..\" }\n");
        let err = error_of(tmp.path());
        assert!(
            err.contains("m.toml:3:") && err.contains("images.app.build.context"),
            "{err}"
        );
        assert!(err.contains("leads outside the source's tree"), "{err}");
        // Through the middle of a path too.
        std::fs::write(
            tmp.path().join("m.toml"),
            "[images.app]\nref = \"localhost/app:dev\"\nbuild = \"app/../../etc\"\n",
        )
        .unwrap();
        let err = error_of(tmp.path());
        assert!(err.contains("leads outside the source's tree"), "{err}");
        assert!(err.contains("images.app.build"), "{err}");
    }

    #[test]
    fn a_context_or_dockerfile_linked_out_of_the_tree_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("Dockerfile"), "FROM busybox\n").unwrap();
        let tmp =
            repo("[images.app]\nref = \"localhost/app:dev\"\nbuild = { context = \"./linked\" }\n");
        symlink(outside.path(), tmp.path().join("linked")).unwrap();
        let err = error_of(tmp.path());
        assert!(err.contains("images.app.build.context"), "{err}");
        assert!(
            err.contains("a link to an absolute path is never followed"),
            "{err}"
        );
        // A relative link that climbs out.
        std::fs::remove_file(tmp.path().join("linked")).unwrap();
        let rel = pathdiff(outside.path(), tmp.path());
        symlink(&rel, tmp.path().join("linked")).unwrap();
        let err = error_of(tmp.path());
        assert!(err.contains("leads outside the source's tree"), "{err}");
        // A Dockerfile that is a link out of the tree, inside a good context.
        std::fs::write(
            tmp.path().join("m.toml"),
            "[images.app]\nref = \"localhost/app:dev\"\n\
             build = { context = \"./app\", dockerfile = \"evil\" }\n",
        )
        .unwrap();
        symlink(
            outside.path().join("Dockerfile"),
            tmp.path().join("app/evil"),
        )
        .unwrap();
        let err = error_of(tmp.path());
        assert!(
            err.contains("m.toml:3:") && err.contains("images.app.build.dockerfile"),
            "{err}"
        );
        assert!(err.contains("leads outside the source's tree"), "{err}");
        // And a dockerfile path that climbs out.
        std::fs::write(
            tmp.path().join("m.toml"),
            "[images.app]\nref = \"localhost/app:dev\"\n\
             build = { context = \"./app\", dockerfile = \"../../x/Dockerfile\" }\n",
        )
        .unwrap();
        let err = error_of(tmp.path());
        assert!(err.contains("images.app.build.dockerfile"), "{err}");
        assert!(err.contains("leads outside the source's tree"), "{err}");
    }

    #[test]
    fn hostile_and_wrong_values_are_diagnosed() {
        let cases = [
            ("build = { context = \"/etc\" }", "is an absolute path"),
            ("build = { context = \"\" }", "the build context is empty"),
            ("build = { context = \"./nope\" }", "does not exist"),
            (
                "build = { context = \"./app/main.py\" }",
                "is not a directory",
            ),
            (
                "build = { context = \"./app\", dockerfile = \"/etc/passwd\" }",
                "must be a path relative to the build context",
            ),
            (
                "build = { context = \"./app\", dockerfile = \"Missing\" }",
                "is not a file",
            ),
            (
                "build = { context = \"./app\", dockerfile = \"docker\" }",
                "is not a file",
            ),
            (
                "build = { context = \"./app\", args = { \"A B\" = \"1\" } }",
                "is not a build argument name",
            ),
            (
                "build = { context = \"./app\", target = \"\" }",
                "target stage's name is empty",
            ),
            (
                "build = { dockerfile = \"Dockerfile\" }",
                "missing required field \"context\"",
            ),
            (
                "build = { context = \"./app\", contxt = 1 }",
                "unknown field",
            ),
            ("build = 3", "expected"),
            (
                "build = { context = \"./app\" }\npull = \"always\"",
                "never pulled",
            ),
        ];
        for (line, expected) in cases {
            let tmp = repo(&format!(
                "[images.app]\nref = \"localhost/app:dev\"\n{line}\n"
            ));
            let err = error_of(tmp.path());
            assert!(err.contains(expected), "{line}: {err}");
            assert!(err.contains("m.toml:"), "{line}: {err}");
            assert!(err.contains("images.app"), "{line}: {err}");
        }
    }

    /// `path` relative to `base` (both absolute), through `..` as needed.
    fn pathdiff(path: &Path, base: &Path) -> std::path::PathBuf {
        let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
        let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let mut out = std::path::PathBuf::new();
        for _ in common..b.len() {
            out.push("..");
        }
        out.extend(&p[common..]);
        out
    }
}
