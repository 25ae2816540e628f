//! Hostile layers against the extractor. Each one runs in a sandbox: a
//! `host/` directory with a secret beside the snapshot root; afterwards
//! nothing outside the root has changed and the error names the problem.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use moor_runtime::image::unpack::{UnpackError, UnpackLimits, UnpackReport, unpack};

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("host")).unwrap();
        std::fs::write(dir.path().join("host/secret"), "secret\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("host/secret"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::set_permissions(
            dir.path().join("host"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        Self { dir }
    }
    fn host(&self) -> PathBuf {
        self.dir.path().join("host")
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    /// Everything outside `root/`: path → (mode, size, content).
    fn outside(&self) -> BTreeMap<PathBuf, (u32, u64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &self.root(), &mut out);
        // The sandbox's parent (the temp dir's siblings) must not grow either.
        out
    }
    /// Unpacks `tar` and checks that nothing outside the root changed.
    fn unpack(&self, tar: &[u8]) -> Result<UnpackReport, UnpackError> {
        let before = self.outside();
        let parent_before = listing(self.dir.path().parent().unwrap());
        let limits = UnpackLimits {
            max_bytes: 64 << 20,
            max_entries: 10_000,
        };
        let result = unpack(tar, &self.root(), limits);
        assert_eq!(self.outside(), before, "something outside the root changed");
        assert_eq!(
            listing(self.dir.path().parent().unwrap()),
            parent_before,
            "something appeared beside the sandbox"
        );
        result
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".tmp"))
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (u32, u64, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let p = e.path();
        if p == skip {
            continue;
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.insert(p.clone(), (m.mode(), m.len(), content));
        if m.is_dir() {
            walk(&p, skip, out);
        }
    }
}

/// A tar entry with a raw name (no checks by the tar crate), optionally
/// preceded by a PAX header with `pax` records.
fn raw(
    b: &mut Vec<u8>,
    name: &[u8],
    kind: tar::EntryType,
    link: &[u8],
    data: &[u8],
    pax: &[(&str, &[u8])],
) {
    if !pax.is_empty() {
        let mut records = Vec::new();
        for (k, v) in pax {
            let body_len = k.len() + v.len() + 3;
            let mut len = body_len + body_len.to_string().len();
            if len.to_string().len() != (len - body_len) {
                len += 1;
            }
            records.extend_from_slice(format!("{len} {k}=").as_bytes());
            records.extend_from_slice(v);
            records.push(b'\n');
        }
        header(
            b,
            b"././@PaxHeader",
            tar::EntryType::XHeader,
            b"",
            records.len() as u64,
            0o644,
        );
        block(b, &records);
    }
    header(
        b,
        name,
        kind,
        link,
        data.len() as u64,
        if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        },
    );
    block(b, data);
}

fn header(b: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, link: &[u8], size: u64, mode: u32) {
    let mut h = tar::Header::new_ustar();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(kind);
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        h.set_device_major(1).unwrap();
        h.set_device_minor(1).unwrap();
    }
    h.set_cksum();
    b.extend_from_slice(h.as_bytes());
}

fn block(b: &mut Vec<u8>, data: &[u8]) {
    b.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    b.extend(std::iter::repeat_n(0u8, pad));
}

fn finish(mut b: Vec<u8>) -> Vec<u8> {
    b.extend(std::iter::repeat_n(0u8, 1024));
    b
}

use tar::EntryType::{Char, Directory, Link, Regular, Symlink};

/// One tar entry: name, type, link target, data, PAX records.
struct E<'a>(
    &'a [u8],
    tar::EntryType,
    &'a [u8],
    &'a [u8],
    &'a [(&'a str, &'a [u8])],
);

/// A finished tar of `entries`.
fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = Vec::new();
    for E(name, kind, link, data, pax) in entries {
        raw(&mut b, name, *kind, link, data, pax);
    }
    finish(b)
}

/// What a refusal must say.
enum Says {
    /// Every one of these.
    All(&'static [&'static str]),
    /// At least one of these.
    Any(&'static [&'static str]),
}

/// A hostile layer, refused.
struct Case {
    name: &'static str,
    /// The layer, given the sandbox's `host/` directory (outside the root).
    layer: fn(&str) -> Vec<u8>,
    says: Says,
    /// What else must hold afterwards; `Err` says what does not.
    after: fn(&Sandbox) -> Result<(), String>,
}

fn nothing_more(_: &Sandbox) -> Result<(), String> {
    Ok(())
}

/// Every layer here must be refused, leave everything outside the root as
/// it was (the sandbox checks), and say what was wrong.
const CASES: &[Case] = &[
    Case {
        name: "dot-dot path",
        layer: |_| tar(&[E(b"../escaped", Regular, b"", b"x", &[])]),
        says: Says::All(&["\"../escaped\" has a `..` path component"]),
        after: nothing_more,
    },
    Case {
        name: "dot-dot inside a path",
        layer: |_| tar(&[E(b"a/b/../../../host/planted", Regular, b"", b"x", &[])]),
        says: Says::All(&["`..` path component"]),
        after: nothing_more,
    },
    Case {
        name: "absolute path",
        layer: |host| {
            tar(&[E(
                format!("{host}/planted").as_bytes(),
                Regular,
                b"",
                b"x",
                &[],
            )])
        },
        says: Says::All(&["has an absolute path"]),
        after: |s| match s.host().join("planted").exists() {
            true => Err("host/planted was written".into()),
            false => Ok(()),
        },
    },
    Case {
        name: "symlink to the host, then a file through it",
        layer: |host| {
            tar(&[
                E(b"link", Symlink, host.as_bytes(), b"", &[]),
                E(b"link/planted", Regular, b"", b"pwned", &[]),
            ])
        },
        says: Says::All(&["\"link/planted\" leads outside the layer through a symlink"]),
        after: nothing_more,
    },
    Case {
        name: "symlink to .., then directories through it",
        layer: |_| {
            tar(&[
                E(b"up", Symlink, b"..", b"", &[]),
                E(b"up/made/", Directory, b"", b"", &[]),
                E(b"up/made/deeper/", Directory, b"", b"", &[]),
            ])
        },
        says: Says::All(&["\"up/made/\" leads outside the layer through a symlink"]),
        after: nothing_more,
    },
    Case {
        name: "hard link to a host file by its absolute path",
        layer: |host| {
            tar(&[E(
                b"stolen",
                Link,
                format!("{host}/secret").as_bytes(),
                b"",
                &[],
            )])
        },
        says: Says::All(&["hard link to", "outside the layer"]),
        after: nothing_more,
    },
    Case {
        name: "hard link to a host file by a relative path",
        layer: |_| tar(&[E(b"stolen", Link, b"../host/secret", b"", &[])]),
        says: Says::All(&[
            "\"stolen\" is a hard link to \"../host/secret\", which is outside the layer",
        ]),
        after: nothing_more,
    },
    Case {
        name: "hard link through a symlink to the host",
        layer: |host| {
            tar(&[
                E(b"h", Symlink, host.as_bytes(), b"", &[]),
                E(b"stolen", Link, b"h/secret", b"", &[]),
            ])
        },
        says: Says::All(&["\"stolen\" is a hard link to \"h/secret\", which is outside the layer"]),
        after: nothing_more,
    },
    Case {
        name: "directory entry over a symlink (no chmod of its target)",
        layer: |host| {
            tar(&[
                E(b"d", Symlink, host.as_bytes(), b"", &[]),
                E(b"d/", Directory, b"", b"", &[]),
            ])
        },
        says: Says::All(&["\"d/\" is a directory over a symlink"]),
        after: |s| match std::fs::metadata(s.host()).unwrap().mode() & 0o777 {
            0o700 => Ok(()),
            mode => Err(format!("host/ is now {mode:o}")),
        },
    },
    Case {
        name: "whiteout of ..",
        layer: |_| {
            tar(&[
                E(b"sub/", Directory, b"", b"", &[]),
                E(b"sub/.wh...", Regular, b"", b"", &[]),
            ])
        },
        says: Says::All(&["\"sub/.wh...\" is a whiteout of \"..\""]),
        after: nothing_more,
    },
    Case {
        name: "whiteout through a symlink",
        layer: |host| {
            tar(&[
                E(b"s", Symlink, host.as_bytes(), b"", &[]),
                E(b"s/.wh.secret", Regular, b"", b"", &[]),
            ])
        },
        says: Says::All(&["\"s/.wh.secret\" leads outside the layer through a symlink"]),
        after: |s| match s.host().join("secret").is_file() {
            true => Ok(()),
            false => Err("host/secret was removed".into()),
        },
    },
    Case {
        name: "PAX header declaring an absurd size",
        layer: |_| {
            tar(&[E(
                b"huge",
                Regular,
                b"",
                b"tiny",
                &[("size", b"1099511627776")],
            )])
        },
        says: Says::Any(&["beyond the limit", "read layer archive"]),
        after: |s| {
            let huge = s.root().join("huge");
            match huge.exists() && std::fs::metadata(&huge).unwrap().len() >= 1 << 20 {
                true => Err("root/huge was written in full".into()),
                false => Ok(()),
            }
        },
    },
    Case {
        name: "a name component of 300 bytes",
        layer: |_| {
            let long = "a".repeat(300);
            tar(&[E(
                b"placeholder",
                Regular,
                b"",
                b"x",
                &[("path", long.as_bytes())],
            )])
        },
        says: Says::All(&["has a name of 300 bytes, longer than Linux allows"]),
        after: nothing_more,
    },
    Case {
        name: "a path of 5999 bytes",
        layer: |_| {
            let long = vec!["d"; 3000].join("/");
            tar(&[E(
                b"placeholder",
                Regular,
                b"",
                b"x",
                &[("path", long.as_bytes())],
            )])
        },
        says: Says::All(&["has a name of 5999 bytes"]),
        after: nothing_more,
    },
    Case {
        name: "gzip bomb",
        layer: |_| {
            let gz = super::layers::gzip(&tar(&[E(
                b"zeros",
                Regular,
                b"",
                &vec![0u8; 80 << 20],
                &[],
            )]));
            assert!(gz.len() < 1 << 20, "the bomb is small: {} bytes", gz.len());
            gz
        },
        says: Says::All(&["expands beyond the limit of 67108864 bytes"]),
        after: nothing_more,
    },
];

/// An error and its sources, as one line.
fn chain(e: &UnpackError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Runs one case in a fresh sandbox; `Err` says how it failed.
fn run_case(case: &Case) -> Result<(), String> {
    let s = Sandbox::new();
    let layer = (case.layer)(s.host().to_str().expect("utf-8 temp path"));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.unpack(&layer)))
        .map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|m| m.to_string()))
                .unwrap_or_else(|| "panicked".into())
        })?;
    let e = match result {
        Ok(report) => return Err(format!("accepted ({report:?})")),
        Err(e) => chain(&e),
    };
    let said = match &case.says {
        Says::All(all) => all.iter().all(|w| e.contains(w)),
        Says::Any(any) => any.iter().any(|w| e.contains(w)),
    };
    if !said {
        return Err(format!("the error does not say what was wrong: {e}"));
    }
    (case.after)(&s)
}

/// Each hostile layer of [`CASES`] is refused with its error and changes
/// nothing outside the root; every failing case is named.
#[test]
fn hostile_layers_are_refused_and_change_nothing_outside() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|case| run_case(case).err().map(|e| format!("{}: {e}", case.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} hostile layers:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn device_nodes_are_skipped_and_reported() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(&mut t, b"dev/", Directory, b"", b"", &[]);
    raw(&mut t, b"dev/mem", Char, b"", b"", &[]);
    raw(&mut t, b"dev/sda", tar::EntryType::Block, b"", b"", &[]);
    let report = s
        .unpack(&finish(t))
        .expect("device nodes are skipped, not fatal");
    let reasons: Vec<_> = report
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![("dev/mem", "device node"), ("dev/sda", "device node")]
    );
    assert!(!s.root().join("dev/mem").exists() && !s.root().join("dev/sda").exists());
}

#[test]
fn layer_set_trusted_overlay_xattrs_are_dropped() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(
        &mut t,
        b"forged/",
        Directory,
        b"",
        b"",
        &[
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.kept", b"1"),
        ],
    );
    raw(&mut t, b"forged/.wh.nothing", Regular, b"", b"", &[]);
    s.unpack(&finish(t)).unwrap();
    let mut buf = [0u8; 8];
    assert!(
        rustix::fs::getxattr(
            s.root().join("forged"),
            "trusted.overlay.opaque",
            &mut buf[..]
        )
        .is_err()
    );
}

#[test]
fn hostile_layer_through_the_cli_leaves_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(&mut t, b"ok.txt", Regular, b"", b"fine", &[]);
    raw(
        &mut t,
        b"link",
        Symlink,
        s.host().to_str().unwrap().as_bytes(),
        b"",
        &[],
    );
    raw(&mut t, b"link/planted", Regular, b"", b"pwned", &[]);
    let file = tmp.path().join("evil.tar");
    std::fs::write(&file, finish(t)).unwrap();
    let out = super::moor_in(
        &state,
        &["image", "import", file.to_str().unwrap(), "--tag", "evil:1"],
    );
    assert!(!out.status.success());
    let err = super::stderr(&out);
    assert!(
        err.contains("\"link/planted\" leads outside the layer through a symlink"),
        "{err}"
    );
    assert!(!s.host().join("planted").exists());
    assert!(
        super::leftovers(&state)
            .iter()
            .all(|l| !l.starts_with("snapshots/")),
        "{:?}",
        super::leftovers(&state)
    );
    assert_eq!(
        super::ok(&super::moor_in(&state, &["images", "--json"])).trim(),
        "[]"
    );
}
