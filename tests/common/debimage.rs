//! Real images for end-to-end tests: root filesystems built offline from
//! Debian packages with `mmdebstrap`, cached between runs, imported with
//! `moor image import --change`.
//!
//! A [`Recipe`] is a package list, files to put in, a script to run in the
//! root filesystem, and the `--change`s that give the image its user and
//! command. [`Recipe::tarball`] builds the root filesystem once and keeps it
//! in `${MOOR_TEST_CACHE:-/var/cache/moor-tests}/images/NAME-HASH.tar`,
//! where HASH covers everything that goes into the tar (packages, files,
//! script, mmdebstrap options, suite and [`FORMAT`]): a changed recipe is
//! rebuilt, an unchanged one reused. A build writes a temporary file and
//! renames it, under a file lock per image, so that test processes building
//! the same image at once wait for one another instead of racing.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

/// Bump to rebuild every cached image (a change to how tarballs are made).
pub const FORMAT: u32 = 1;

/// The Debian release images are built from.
pub const SUITE: &str = "bookworm";

/// mmdebstrap options every image is built with: only the packages asked
/// for and what they need (`essential`), no device nodes (as real images),
/// no documentation, manual pages or translations.
const OPTIONS: &[&str] = &[
    "--variant=essential",
    "--skip=output/dev",
    "--format=tar",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/lintian/*",
];

/// A file to put into the root filesystem.
#[derive(Debug, Clone)]
pub struct File {
    /// Absolute path in the image.
    pub path: &'static str,
    /// Permission bits (owner root).
    pub mode: u32,
    /// Contents.
    pub data: Vec<u8>,
}

/// How to make one image.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Short name: the cache file's prefix and the image's repository.
    pub name: &'static str,
    /// Debian packages to install.
    pub packages: &'static [&'static str],
    /// Extra mmdebstrap options (part of the cache key).
    pub options: &'static [&'static str],
    /// Files put in after the packages are installed.
    pub files: Vec<File>,
    /// A shell script run inside the root filesystem (`chroot`, as root)
    /// after the files are in: users, ownership, slimming.
    pub script: &'static str,
    /// `moor image import --change` instructions (not part of the tarball).
    pub changes: &'static [&'static str],
}

/// What a build or a cache look-up did.
#[derive(Debug, Clone)]
pub struct Built {
    /// The tarball.
    pub path: PathBuf,
    /// Whether it was built now (false: found in the cache).
    pub built: bool,
    /// Seconds taken (the build, or the look-up).
    pub seconds: f64,
}

/// Where tarballs are kept: `$MOOR_TEST_CACHE/images`, by default
/// `/var/cache/moor-tests/images` (outside the clone, so that CI keeps it).
pub fn cache_dir() -> PathBuf {
    let root = std::env::var_os("MOOR_TEST_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/cache/moor-tests"), PathBuf::from);
    root.join("images")
}

impl Recipe {
    /// The cache key: a hash of everything that goes into the tarball.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |label: &str, data: &[u8]| {
            h.update(label.as_bytes());
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        };
        field("format", &FORMAT.to_le_bytes());
        field("suite", SUITE.as_bytes());
        for o in OPTIONS.iter().chain(self.options) {
            field("option", o.as_bytes());
        }
        for p in self.packages {
            field("package", p.as_bytes());
        }
        for f in &self.files {
            field("file", f.path.as_bytes());
            field("mode", &f.mode.to_le_bytes());
            field("data", &f.data);
        }
        field("script", self.script.as_bytes());
        hex::encode(&h.finalize()[..8])
    }

    /// The cached tarball, built first when missing.
    pub fn tarball(&self) -> Built {
        self.tarball_in(&cache_dir())
    }

    /// [`Recipe::tarball`] with the cache in `dir`.
    pub fn tarball_in(&self, dir: &Path) -> Built {
        let started = Instant::now();
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create image cache {}: {e}", dir.display()));
        let path = dir.join(format!("{}-{}.tar", self.name, self.key()));
        if path.is_file() {
            return Built {
                path,
                built: false,
                seconds: started.elapsed().as_secs_f64(),
            };
        }
        // One builder per image at a time; the others wait and reuse.
        let lock_path = dir.join(format!("{}.lock", self.name));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", lock_path.display()));
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
        if path.is_file() {
            return Built {
                path,
                built: false,
                seconds: started.elapsed().as_secs_f64(),
            };
        }
        self.remove_leftovers(&dir);
        self.build(&path);
        self.remove_stale(&dir, &path);
        Built {
            path,
            built: true,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// Runs mmdebstrap into a temporary file beside `out`, then renames it.
    fn build(&self, out: &Path) {
        let work = tempfile::Builder::new()
            .prefix(&format!(".{}.build-", self.name))
            .tempdir_in(out.parent().expect("cache dir"))
            .expect("build dir");
        let files = work.path().join("files");
        std::fs::create_dir(&files).expect("mkdir files");
        for f in &self.files {
            let rel = f.path.trim_start_matches('/');
            assert!(
                !rel.is_empty() && !rel.split('/').any(|c| c == ".." || c.is_empty()),
                "recipe {}: bad file path {}",
                self.name,
                f.path
            );
            let dest = files.join(rel);
            std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
            std::fs::write(&dest, &f.data).expect("write recipe file");
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(f.mode))
                .expect("chmod recipe file");
        }
        let script = work.path().join("customize.sh");
        std::fs::write(&script, format!("set -eu\n{}\n", self.script)).expect("write script");
        let partial = work.path().join("rootfs.tar");
        let log = work.path().join("mmdebstrap.log");
        // Hooks run on the host with the root filesystem as $1: copy the
        // files in (owned by root, directories already there left as they
        // are), run the script inside, then remove it.
        let copy = format!(
            "tar -C {} -cf - . | tar -C \"$1\" -xf - --no-same-owner --no-overwrite-dir",
            files.display()
        );
        let run = format!(
            "cp {} \"$1\"/.moor-customize.sh && chroot \"$1\" /bin/sh /.moor-customize.sh; \
             rc=$?; rm -f \"$1\"/.moor-customize.sh; exit $rc",
            script.display()
        );
        let mut cmd = Command::new("mmdebstrap");
        cmd.args(OPTIONS)
            .args(self.options)
            .arg(format!("--include={}", self.packages.join(",")))
            .arg(format!("--customize-hook={copy}"))
            .arg(format!("--customize-hook={run}"))
            .arg(format!("--logfile={}", log.display()))
            .arg(SUITE)
            .arg(&partial)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        let status = cmd.status().expect("run mmdebstrap");
        if !status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "mmdebstrap for image {} failed ({status}):\n{}",
                self.name,
                tail.join("\n")
            );
        }
        let f = std::fs::File::open(&partial).expect("built tarball");
        f.sync_all().expect("fsync tarball");
        std::fs::rename(&partial, out)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", out.display()));
        if let Ok(d) = std::fs::File::open(out.parent().expect("cache dir")) {
            let _ = d.sync_all();
        }
        let _ = writeln!(
            std::io::stderr(),
            "built image {} in {:.1}s: {} ({} MB)",
            self.name,
            started.elapsed().as_secs_f64(),
            out.display(),
            std::fs::metadata(out).map_or(0, |m| m.len() >> 20)
        );
    }

    /// Removes the build directories of builds of this image that were
    /// killed (the caller holds the image's lock, so none is running).
    fn remove_leftovers(&self, dir: &Path) {
        let prefix = format!(".{}.build-", self.name);
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Removes tarballs of older versions of this recipe.
    fn remove_stale(&self, dir: &Path, keep: &Path) {
        let prefix = format!("{}-", self.name);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let hash = name
                .strip_prefix(&prefix)
                .and_then(|n| n.strip_suffix(".tar"));
            // NAME-<16 hex>.tar only: another recipe's name may start with ours.
            if hash.is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                && e.path() != keep
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
