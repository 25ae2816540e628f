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

fn err_of(r: Result<UnpackReport, UnpackError>) -> String {
    let e = r.expect_err("the hostile layer must be refused");
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[test]
fn dot_dot_path_is_refused() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(&mut t, b"../escaped", Regular, b"", b"x", &[]);
    let e = err_of(s.unpack(&finish(t)));
    assert!(
        e.contains("\"../escaped\" has a `..` path component"),
        "{e}"
    );
}

#[test]
fn dot_dot_inside_a_path_is_refused() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(
        &mut t,
        b"a/b/../../../host/planted",
        Regular,
        b"",
        b"x",
        &[],
    );
    let e = err_of(s.unpack(&finish(t)));
    assert!(e.contains("`..` path component"), "{e}");
}

#[test]
fn absolute_path_is_refused() {
    let s = Sandbox::new();
    let target = format!("{}/planted", s.host().display());
    let mut t = Vec::new();
    raw(&mut t, target.as_bytes(), Regular, b"", b"x", &[]);
    let e = err_of(s.unpack(&finish(t)));
    assert!(e.contains("has an absolute path"), "{e}");
    assert!(!s.host().join("planted").exists());
}

#[test]
fn symlink_to_the_host_then_a_file_through_it_is_refused() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(
        &mut t,
        b"link",
        Symlink,
        s.host().to_str().unwrap().as_bytes(),
        b"",
        &[],
    );
    raw(&mut t, b"link/planted", Regular, b"", b"pwned", &[]);
    let e = err_of(s.unpack(&finish(t)));
    assert!(
        e.contains("\"link/planted\" leads outside the layer through a symlink"),
        "{e}"
    );
}

#[test]
fn symlink_to_dot_dot_then_directories_through_it_are_refused() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(&mut t, b"up", Symlink, b"..", b"", &[]);
    raw(&mut t, b"up/made/", Directory, b"", b"", &[]);
    raw(&mut t, b"up/made/deeper/", Directory, b"", b"", &[]);
    let e = err_of(s.unpack(&finish(t)));
    assert!(
        e.contains("\"up/made/\" leads outside the layer through a symlink"),
        "{e}"
    );
}

#[test]
fn hard_link_to_a_host_file_is_refused() {
    let s = Sandbox::new();
    let secret = format!("{}/secret", s.host().display());
    let mut t = Vec::new();
    raw(&mut t, b"stolen", Link, secret.as_bytes(), b"", &[]);
    let e = err_of(s.unpack(&finish(t)));
    assert!(
        e.contains("hard link to") && e.contains("outside the layer"),
        "{e}"
    );
    let mut t = Vec::new();
    raw(&mut t, b"stolen", Link, b"../host/secret", b"", &[]);
    let e = err_of(s.unpack(&finish(t)));
    assert!(
        e.contains("\"stolen\" is a hard link to \"../host/secret\", which is outside the layer"),
        "{e}"
    );
}

#[test]
fn hard_link_through_a_symlink_to_the_host_is_refused() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(
        &mut t,
        b"h",
        Symlink,
        s.host().to_str().unwrap().as_bytes(),
        b"",
        &[],
    );
    raw(&mut t, b"stolen", Link, b"h/secret", b"", &[]);
    let e = err_of(s.unpack(&finish(t)));
    assert!(
        e.contains("\"stolen\" is a hard link to \"h/secret\", which is outside the layer"),
        "{e}"
    );
}

#[test]
fn directory_entry_over_a_symlink_does_not_chmod_its_target() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(
        &mut t,
        b"d",
        Symlink,
        s.host().to_str().unwrap().as_bytes(),
        b"",
        &[],
    );
    raw(&mut t, b"d/", Directory, b"", b"", &[]);
    let e = err_of(s.unpack(&finish(t)));
    assert!(e.contains("\"d/\" is a directory over a symlink"), "{e}");
    assert_eq!(std::fs::metadata(s.host()).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn whiteout_of_dot_dot_is_refused() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(&mut t, b"sub/", Directory, b"", b"", &[]);
    raw(&mut t, b"sub/.wh...", Regular, b"", b"", &[]);
    let e = err_of(s.unpack(&finish(t)));
    assert!(e.contains("\"sub/.wh...\" is a whiteout of \"..\""), "{e}");
}

#[test]
fn whiteout_through_a_symlink_is_refused() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(
        &mut t,
        b"s",
        Symlink,
        s.host().to_str().unwrap().as_bytes(),
        b"",
        &[],
    );
    raw(&mut t, b"s/.wh.secret", Regular, b"", b"", &[]);
    let e = err_of(s.unpack(&finish(t)));
    assert!(
        e.contains("\"s/.wh.secret\" leads outside the layer through a symlink"),
        "{e}"
    );
    assert!(s.host().join("secret").is_file());
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
fn pax_header_declaring_an_absurd_size_is_refused() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(
        &mut t,
        b"huge",
        Regular,
        b"",
        b"tiny",
        &[("size", b"1099511627776")],
    );
    let e = err_of(s.unpack(&finish(t)));
    assert!(
        e.contains("beyond the limit") || e.contains("read layer archive"),
        "{e}"
    );
    assert!(
        !s.root().join("huge").exists()
            || std::fs::metadata(s.root().join("huge")).unwrap().len() < 1 << 20
    );
}

#[test]
fn very_long_names_are_refused() {
    let s = Sandbox::new();
    let long_component = "a".repeat(300);
    let mut t = Vec::new();
    raw(
        &mut t,
        b"placeholder",
        Regular,
        b"",
        b"x",
        &[("path", long_component.as_bytes())],
    );
    let e = err_of(s.unpack(&finish(t)));
    assert!(
        e.contains("has a name of 300 bytes, longer than Linux allows"),
        "{e}"
    );
    let long_path = vec!["d"; 3000].join("/");
    let mut t = Vec::new();
    raw(
        &mut t,
        b"placeholder",
        Regular,
        b"",
        b"x",
        &[("path", long_path.as_bytes())],
    );
    let e = err_of(s.unpack(&finish(t)));
    assert!(e.contains("has a name of 5999 bytes"), "{e}");
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
fn gzip_bomb_is_stopped_at_the_cap() {
    let s = Sandbox::new();
    let mut t = Vec::new();
    raw(&mut t, b"zeros", Regular, b"", &vec![0u8; 80 << 20], &[]);
    let gz = super::layers::gzip(&finish(t));
    assert!(gz.len() < 1 << 20);
    let e = err_of(s.unpack(&gz));
    assert!(
        e.contains("expands beyond the limit of 67108864 bytes"),
        "{e}"
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
