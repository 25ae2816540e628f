//! A real registry (Debian's `docker-registry`) on a free loopback port,
//! optionally behind basic auth, and a pusher speaking the distribution API.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::layers::{TestImage, digest};
use crate::common::{KillOnDrop, free_port, wait_for};

/// A running `docker-registry`; killed on drop.
pub struct Registry {
    _child: KillOnDrop,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The `Authorization` header every request of the pusher carries.
    authorization: Option<String>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one, or returns None (off CI) when `docker-registry` is missing.
    pub fn start() -> Option<Self> {
        if !crate::common::require(&["docker-registry", "busybox"], false) {
            return None;
        }
        Some(Self::spawn(None))
    }

    /// Starts one that asks for basic auth with the users of `htpasswd`
    /// (`htpasswd -B` lines); the pusher sends `authorization`.
    pub fn start_with_auth(htpasswd: &str, authorization: String) -> Option<Self> {
        if !crate::common::require(&["docker-registry"], false) {
            return None;
        }
        Some(Self::spawn(Some((htpasswd, authorization))))
    }

    fn spawn(auth: Option<(&str, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((htpasswd, _)) = &auth {
            let users = dir.path().join("htpasswd");
            std::fs::write(&users, htpasswd).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: moor-test\n    path: {}\n",
                users.display()
            ));
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let child = KillOnDrop::spawn(
            Command::new(crate::common::which("docker-registry").unwrap())
                .arg("serve")
                .arg(&config_file)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let registry = Self {
            _child: child,
            addr,
            authorization: auth.map(|(_, a)| a),
            _dir: dir,
        };
        wait_for(
            &format!("docker-registry on {}", registry.addr),
            Duration::from_secs(20),
            || {
                registry
                    .authorize(ureq::get(&format!("http://{}/v2/", registry.addr)))
                    .call()
                    .is_ok()
            },
        );
        registry
    }

    /// `request` with the pusher's `Authorization` header, if any.
    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(a) => request.header("Authorization", a),
            None => request,
        }
    }

    /// Uploads a blob unless present.
    pub fn push_blob(&self, repo: &str, blob: &[u8]) {
        let d = digest(blob);
        let head = self
            .authorize(ureq::head(&format!(
                "http://{}/v2/{repo}/blobs/{d}",
                self.addr
            )))
            .call();
        if head.is_ok_and(|r| r.status() == 200) {
            return;
        }
        let resp = self
            .authorize(ureq::post(&format!(
                "http://{}/v2/{repo}/blobs/uploads/",
                self.addr
            )))
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
        let resp = self
            .authorize(ureq::put(&format!("{url}{sep}digest={d}")))
            .header("Content-Type", "application/octet-stream")
            .send(blob)
            .unwrap();
        assert_eq!(resp.status(), 201, "upload {d}");
    }

    /// Uploads a manifest (or index) under `reference`.
    pub fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let resp = self
            .authorize(ureq::put(&format!(
                "http://{}/v2/{repo}/manifests/{reference}",
                self.addr
            )))
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
