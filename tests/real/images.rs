//! The real images: PostgreSQL, Redis, a Python app and nginx, from
//! Debian bookworm's packages (see `tests/common/debimage.rs` for how they
//! are built and cached; the files baked in are under `tests/real/images/`).
//! Each runs as its own user, as the official images do.

use std::sync::OnceLock;
use std::time::Instant;

use crate::common::debimage::{Built, File, Recipe};
use crate::common::instance::Instance;
use crate::common::repo_root;

/// An image built for this test process.
#[derive(Debug, Clone)]
pub struct Image {
    /// How it is made.
    pub recipe: Recipe,
    /// The cached root filesystem.
    pub built: Built,
}

impl Image {
    /// The reference tests name it by.
    pub fn reference(&self) -> String {
        format!("localhost/moor-test/{}:1", self.recipe.name)
    }
}

fn file(path: &'static str, mode: u32, source: &str) -> File {
    let src = repo_root().join("tests/real/images").join(source);
    File {
        path,
        mode,
        data: std::fs::read(&src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())),
    }
}

/// `postgres`: PostgreSQL 15, user postgres, `$PGDATA` shipped empty and
/// owned by postgres (0700) so that a new named volume takes that over.
pub fn postgres() -> Recipe {
    Recipe {
        name: "postgres",
        packages: &["postgresql-15"],
        // /run/postgresql (the socket directory) is made by the script.
        options: &["--skip=cleanup/run"],
        files: vec![file(
            "/usr/local/bin/docker-entrypoint.sh",
            0o755,
            "postgres/docker-entrypoint.sh",
        )],
        script: r#"
# The cluster the package made when it was installed: the entrypoint makes its own.
rm -rf /var/lib/postgresql/15 /etc/postgresql/15
# LLVM serves only the JIT, which the entrypoint turns off: ~130 MB less.
rm -f /usr/lib/*/libLLVM-*.so* /usr/lib/*/libz3.so*
rm -rf /usr/lib/postgresql/15/lib/bitcode /usr/lib/postgresql/15/lib/llvmjit*
install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
install -d -o postgres -g postgres -m 2775 /run/postgresql
/usr/lib/postgresql/15/bin/postgres --version
"#,
        changes: &[
            "USER postgres",
            "ENV PGDATA=/var/lib/postgresql/data",
            "ENV PATH=/usr/lib/postgresql/15/bin:$PATH",
            "VOLUME /var/lib/postgresql/data",
            "EXPOSE 5432",
            "STOPSIGNAL SIGINT",
            r#"ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]"#,
            r#"CMD ["postgres"]"#,
        ],
    }
}

/// `redis`: redis-server as user redis, not protected (it listens on the
/// container's network only).
pub fn redis() -> Recipe {
    Recipe {
        name: "redis",
        packages: &["redis-server"],
        options: &[],
        files: vec![],
        script: "redis-server --version",
        changes: &[
            "USER redis",
            "WORKDIR /var/lib/redis",
            "EXPOSE 6379",
            r#"CMD ["redis-server", "--protected-mode", "no"]"#,
        ],
    }
}

/// `app`: the Python app (`/app/app.py`) and its migration job
/// (`/app/migrate.py`), as nobody.
pub fn app() -> Recipe {
    Recipe {
        name: "app",
        packages: &["python3", "python3-psycopg2", "python3-redis"],
        options: &[],
        files: vec![
            file("/app/app.py", 0o644, "app/app.py"),
            file("/app/migrate.py", 0o644, "app/migrate.py"),
        ],
        script: "python3 -c 'import psycopg2, redis'",
        changes: &[
            "USER nobody",
            "WORKDIR /app",
            "ENV PYTHONUNBUFFERED=1 PORT=8000",
            "EXPOSE 8000",
            r#"CMD ["python3", "/app/app.py"]"#,
        ],
    }
}

/// `nginx`: nginx-light proxying to `app:8000`; master root, workers
/// www-data, as in the official image (see `images/nginx/nginx.conf`).
pub fn nginx() -> Recipe {
    Recipe {
        name: "nginx",
        packages: &["nginx-light"],
        options: &[],
        files: vec![file("/etc/nginx/nginx.conf", 0o644, "nginx/nginx.conf")],
        script: "rm -f /etc/nginx/sites-enabled/default\nnginx -v",
        changes: &[
            "EXPOSE 80",
            "STOPSIGNAL SIGQUIT",
            r#"CMD ["nginx", "-g", "daemon off;"]"#,
        ],
    }
}

/// Every image, built (or found in the cache) once per test process.
pub struct Images {
    /// postgres, redis, app, nginx.
    pub all: Vec<Image>,
}

impl Images {
    /// One image by recipe name.
    pub fn get(&self, name: &str) -> &Image {
        self.all
            .iter()
            .find(|i| i.recipe.name == name)
            .unwrap_or_else(|| panic!("no image {name}"))
    }

    /// Imports every image into `host`'s store with its changes; returns
    /// the seconds it took.
    pub fn import_into(&self, host: &Instance) -> f64 {
        let started = Instant::now();
        for image in &self.all {
            import(host, image);
        }
        started.elapsed().as_secs_f64()
    }
}

/// `moor image import TAR --tag REF --change …` into `host`.
pub fn import(host: &Instance, image: &Image) {
    let tar = image.built.path.to_str().expect("utf-8 cache path");
    let reference = image.reference();
    let mut args = vec!["image", "import", tar, "--tag", &reference];
    for c in image.recipe.changes {
        args.extend(["--change", c]);
    }
    let out = host.moor(&args);
    assert!(
        out.status.success(),
        "import {}: {}",
        image.recipe.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The images, built once per test process (and cached across runs).
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let started = Instant::now();
        // Built side by side: a build waits on the mirror and the disk as
        // much as on the CPU.
        let all: Vec<Image> = std::thread::scope(|s| {
            let builds: Vec<_> = [postgres(), redis(), app(), nginx()]
                .into_iter()
                .map(|recipe| {
                    s.spawn(move || {
                        let built = recipe.tarball();
                        Image { recipe, built }
                    })
                })
                .collect();
            builds
                .into_iter()
                .map(|b| b.join().expect("image build panicked"))
                .collect()
        });
        for Image { recipe, built } in &all {
            eprintln!(
                "image {}: {} in {:.1}s ({})",
                recipe.name,
                if built.built { "built" } else { "cached" },
                built.seconds,
                built.path.display()
            );
        }
        eprintln!("images ready in {:.1}s", started.elapsed().as_secs_f64());
        Images { all }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache key covers what goes into the tarball, and only that.
    #[test]
    fn recipe_keys_follow_what_goes_into_the_tarball() {
        let base = app();
        let key = base.key();
        assert_eq!(key.len(), 16);
        assert_eq!(app().key(), key, "the key is stable");
        let mut r = app();
        r.files[0].data.push(b'\n');
        assert_ne!(r.key(), key, "a file's contents");
        let mut r = app();
        r.files[0].mode = 0o600;
        assert_ne!(r.key(), key, "a file's mode");
        let mut r = app();
        r.packages = &["python3", "python3-psycopg2"];
        assert_ne!(r.key(), key, "the packages");
        let mut r = app();
        r.script = "true";
        assert_ne!(r.key(), key, "the script");
        let mut r = app();
        r.options = &["--skip=cleanup/run"];
        assert_ne!(r.key(), key, "the options");
        let mut r = app();
        r.changes = &["USER root"];
        assert_eq!(r.key(), key, "changes are applied at import, not built in");
        let names: Vec<&str> = [postgres(), redis(), app(), nginx()]
            .iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["postgres", "redis", "app", "nginx"]);
    }

    /// A tarball in the cache is used as it is, and no build is started.
    #[test]
    fn a_cached_tarball_is_reused() {
        let cache = tempfile::tempdir().expect("tempdir");
        let recipe = redis();
        let path = cache.path().join(format!("redis-{}.tar", recipe.key()));
        std::fs::write(&path, b"cached").expect("write");
        let built = recipe.tarball_in(cache.path());
        assert!(!built.built);
        assert_eq!(built.path, path);
        assert_eq!(std::fs::read(&path).expect("read"), b"cached");
    }
}
