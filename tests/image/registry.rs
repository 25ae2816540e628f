//! A real registry (Debian's `docker-registry`) on a free loopback port, and
//! a pusher speaking the distribution API.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::layers::{TestImage, digest};

/// A running `docker-registry`; killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts one, or returns None (off CI) when `docker-registry` is missing.
    pub fn start() -> Option<Self> {
        if !crate::common::require(&["docker-registry", "busybox"], false) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(crate::common::which("docker-registry").unwrap())
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("http://{}/v2/", registry.addr))
            .call()
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up on {}",
                registry.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    /// Uploads a blob unless present.
    pub fn push_blob(&self, repo: &str, blob: &[u8]) {
        let d = digest(blob);
        let head = ureq::head(&format!("http://{}/v2/{repo}/blobs/{d}", self.addr)).call();
        if head.is_ok_and(|r| r.status() == 200) {
            return;
        }
        let resp = ureq::post(&format!("http://{}/v2/{repo}/blobs/uploads/", self.addr))
            .send_empty()
            .unwrap();
        assert_eq!(resp.status(), 202);
        let location = resp
            .headers()
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.addr)
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let resp = ureq::put(&format!("{url}{sep}digest={d}"))
            .header("Content-Type", "application/octet-stream")
            .send(blob)
            .unwrap();
        assert_eq!(resp.status(), 201, "upload {d}");
    }

    /// Uploads a manifest (or index) under `reference`.
    pub fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let resp = ureq::put(&format!(
            "http://{}/v2/{repo}/manifests/{reference}",
            self.addr
        ))
        .header("Content-Type", media_type)
        .send(body)
        .unwrap();
        assert_eq!(resp.status(), 201, "push manifest {repo}:{reference}");
    }

    /// Pushes an image's blobs and manifest, tagged `tag`.
    pub fn push(&self, repo: &str, tag: &str, image: &TestImage) {
        for l in &image.layers {
            self.push_blob(repo, &l.blob);
        }
        self.push_blob(repo, &image.config);
        self.push_manifest(repo, tag, super::layers::OCI_MANIFEST, &image.manifest);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
