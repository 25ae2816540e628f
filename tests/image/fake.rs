//! A tiny registry that says what the test tells it to: lies about digests
//! and sizes, cuts connections, records requests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::layers::{OCI_MANIFEST, TestImage, digest};

/// What to answer on one path.
#[derive(Clone)]
pub enum Reply {
    /// A normal response.
    Body { content_type: String, body: Vec<u8> },
    /// Announce the whole body, send `after` bytes, then close.
    Cut { body: Vec<u8>, after: usize },
    /// An empty answer with this status.
    Status(u16),
}

/// A fake registry; stops on drop.
pub struct FakeRegistry {
    pub addr: SocketAddr,
    pub routes: Arc<Mutex<HashMap<String, Reply>>>,
    pub log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRegistry {
    /// Listens on `port` (0 for any).
    pub fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, log, stop) = (routes.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (routes, log) = (routes.clone(), log.clone());
                    std::thread::spawn(move || serve(conn, &routes, &log));
                }
            })
        };
        Self {
            addr,
            routes,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    /// Serves `image` as `repo:tag` (and by digest).
    pub fn serve_image(&self, repo: &str, tag: &str, image: &TestImage) {
        let manifest = Reply::Body {
            content_type: OCI_MANIFEST.into(),
            body: image.manifest.clone(),
        };
        self.route(&format!("/v2/{repo}/manifests/{tag}"), manifest.clone());
        self.route(
            &format!("/v2/{repo}/manifests/{}", image.manifest_digest),
            manifest,
        );
        self.serve_blob(repo, &image.config);
        for l in &image.layers {
            self.serve_blob(repo, &l.blob);
        }
    }

    pub fn serve_blob(&self, repo: &str, blob: &[u8]) {
        self.route(
            &format!("/v2/{repo}/blobs/{}", digest(blob)),
            Reply::Body {
                content_type: "application/octet-stream".into(),
                body: blob.to_vec(),
            },
        );
    }

    /// Paths requested so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// `host:port` for references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, routes: &Mutex<HashMap<String, Reply>>, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    log.lock().unwrap().push(path.clone());
    let reply = if path == "/v2/" {
        Some(Reply::Body {
            content_type: "application/json".into(),
            body: b"{}".to_vec(),
        })
    } else {
        routes.lock().unwrap().get(&path).cloned()
    };
    let mut conn = conn;
    let _ = match reply {
        None => conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        Some(Reply::Body { content_type, body }) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes())
                .and_then(|()| conn.write_all(&body))
        }
        Some(Reply::Status(code)) => conn.write_all(
            format!("HTTP/1.1 {code} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ),
        Some(Reply::Cut { body, after }) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes())
                .and_then(|()| conn.write_all(&body[..after]))
        }
    };
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Both);
}
