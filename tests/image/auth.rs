//! Registry credentials are bound to their registry: hostile registries and
//! token services on loopback, each recording every request's headers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use super::layers::{self, Layer, OCI_MANIFEST, TestImage, digest, file, tar_of};
use super::registry::Registry;
use super::stderr;

pub(super) const USER: &str = "alice";
pub(super) const PASSWORD: &str = "s3cr3t-of-registry-a";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    /// Header names in lower case.
    headers: HashMap<String, String>,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn ok(content_type: &str, body: &[u8]) -> Self {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.to_vec(),
        }
    }

    fn status(status: u16, headers: &[(&str, &str)]) -> Self {
        Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// An HTTP server on a loopback port that answers with `handler` and
/// remembers every request; stops on drop.
struct Scripted {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Scripted {
    fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (log, halt) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (log, handler) = (log.clone(), handler.clone());
                std::thread::spawn(move || serve(conn, &*handler, &log));
            }
        });
        Scripted { port, seen, stop }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Every `Authorization` header it received.
    fn authorizations(&self) -> Vec<String> {
        self.seen()
            .iter()
            .filter_map(|s| s.headers.get("authorization").cloned())
            .collect()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let seen = Seen { path, headers };
    log.lock().unwrap().push(seen.clone());
    let reply = handler(&seen);
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = conn;
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&reply.body);
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = reader.read_to_end(&mut Vec::new());
}

fn small_image() -> TestImage {
    layers::image(vec![Layer::gzip(&tar_of(|b| file(b, "hello", b"hi\n")))])
}

/// The image's routes, for a registry that has already let the request in.
fn image_route(image: &TestImage, path: &str) -> Option<Reply> {
    if path == "/v2/" {
        return Some(Reply::ok("application/json", b"{}"));
    }
    if path == "/v2/test/img/manifests/1"
        || path == format!("/v2/test/img/manifests/{}", image.manifest_digest)
    {
        return Some(Reply::ok(OCI_MANIFEST, &image.manifest));
    }
    let blobs = std::iter::once(&image.config).chain(image.layers.iter().map(|l| &l.blob));
    for blob in blobs {
        if path == format!("/v2/test/img/blobs/{}", digest(blob)) {
            return Some(Reply::ok("application/octet-stream", blob));
        }
    }
    None
}

pub(super) fn basic() -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    format!("Basic {b64}")
}

/// An auth file with credentials for `registry` only.
pub(super) fn auth_file(dir: &Path, registry: &str) -> std::path::PathBuf {
    let path = dir.join("auth.json");
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        &path,
        format!(r#"{{"auths": {{"{registry}": {{"auth": "{b64}"}}}}}}"#),
    )
    .unwrap();
    path
}

fn pull(state: &Path, auth: &Path, reference: &str, env: &[(&str, &str)]) -> Output {
    let mut c = crate::common::moor_command();
    c.args(["--state-dir", state.to_str().unwrap(), "image", "pull"])
        .args(["--registry-auth", auth.to_str().unwrap(), reference]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run moor")
}

fn assert_no_password(what: &str, server: &Scripted) {
    let encoded = basic();
    for s in server.seen() {
        for v in s.headers.values() {
            assert!(
                !v.contains(PASSWORD) && !v.contains(&encoded[6..]),
                "{what} received registry A's credentials: {s:?}"
            );
        }
    }
}

/// A registry whose bearer realm is a token service on another port gets
/// an anonymous token request: the service never sees A's credentials. With
/// the realm on A's own host and port, the credentials do go there.
#[test]
fn a_token_realm_on_another_host_or_port_gets_no_credentials() {
    let image = small_image();
    let tmp = tempfile::tempdir().unwrap();
    let token_service =
        Scripted::start(|_| Reply::ok("application/json", br#"{"token":"anonymous"}"#));
    let realm = format!("http://{}/token", token_service.addr());
    let registry = {
        let image = image.clone();
        Scripted::start(move |s| {
            if s.headers.get("authorization").map(String::as_str) == Some("Bearer anonymous") {
                return image_route(&image, &s.path).unwrap_or_else(|| Reply::status(404, &[]));
            }
            let challenge =
                format!(r#"Bearer realm="{realm}",service="a",scope="repository:test/img:pull""#);
            Reply::status(401, &[("WWW-Authenticate", &challenge)])
        })
    };
    let auth = auth_file(tmp.path(), &registry.addr());
    let reference = format!("{}/test/img:1", registry.addr());
    let out = pull(&tmp.path().join("state"), &auth, &reference, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !token_service.seen().is_empty(),
        "the token service was asked"
    );
    assert_eq!(token_service.authorizations(), Vec::<String>::new());
    assert_no_password("the token service on another port", &token_service);
    assert!(
        registry
            .authorizations()
            .iter()
            .all(|a| a == "Bearer anonymous"),
        "{:?}",
        registry.authorizations()
    );

    // The control: a realm on the registry's own host and port gets them.
    let own = {
        let image = image.clone();
        Scripted::start(move |s| {
            let auth = s.headers.get("authorization").cloned().unwrap_or_default();
            if s.path.starts_with("/token") {
                return if auth == basic() {
                    Reply::ok("application/json", br#"{"token":"for-alice"}"#)
                } else {
                    Reply::status(401, &[])
                };
            }
            if auth == "Bearer for-alice" {
                return image_route(&image, &s.path).unwrap_or_else(|| Reply::status(404, &[]));
            }
            let port = s.headers.get("host").cloned().unwrap_or_default();
            let challenge = format!(r#"Bearer realm="http://{port}/token",service="a""#);
            Reply::status(401, &[("WWW-Authenticate", &challenge)])
        })
    };
    let auth = auth_file(tmp.path(), &own.addr());
    let reference = format!("{}/test/img:1", own.addr());
    let out = pull(&tmp.path().join("state2"), &auth, &reference, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(own.authorizations().contains(&basic()));
}

/// Basic credentials of registry A never follow a redirect to B.
#[test]
fn basic_credentials_are_not_sent_along_a_redirect() {
    let image = small_image();
    let tmp = tempfile::tempdir().unwrap();
    let storage = {
        let image = image.clone();
        Scripted::start(move |s| {
            let path = s.path.replacen("/storage", "/v2/test/img/blobs", 1);
            image_route(&image, &path).unwrap_or_else(|| Reply::status(404, &[]))
        })
    };
    let storage_addr = storage.addr();
    let registry = {
        let image = image.clone();
        Scripted::start(move |s| {
            if s.headers.get("authorization") != Some(&basic()) {
                return Reply::status(401, &[("WWW-Authenticate", r#"Basic realm="a""#)]);
            }
            if let Some(d) = s.path.strip_prefix("/v2/test/img/blobs/") {
                let to = format!("http://{storage_addr}/storage/{d}");
                return Reply::status(307, &[("Location", &to)]);
            }
            image_route(&image, &s.path).unwrap_or_else(|| Reply::status(404, &[]))
        })
    };
    let auth = auth_file(tmp.path(), &registry.addr());
    let reference = format!("{}/test/img:1", registry.addr());
    let out = pull(&tmp.path().join("state"), &auth, &reference, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        storage.seen().len() >= 2,
        "the blobs came from the storage host: {:?}",
        storage.seen()
    );
    assert_eq!(storage.authorizations(), Vec::<String>::new());
    assert_no_password("the redirect target", &storage);
}

/// A token realm over plain HTTP to a host that is not loopback is refused
/// before anything is sent; so is a realm with user information.
#[test]
fn a_plain_http_realm_off_loopback_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (realm, why) in [
        (
            "http://10.70.0.1:1/token".to_string(),
            "token realm http://10.70.0.1:1/token is plain http to 10.70.0.1: refused",
        ),
        (
            "http://registry@127.0.0.1:1/token".to_string(),
            "is not an http or https URL without user information",
        ),
    ] {
        let registry = {
            let realm = realm.clone();
            Scripted::start(move |_| {
                let challenge = format!(r#"Bearer realm="{realm}",service="a""#);
                Reply::status(401, &[("WWW-Authenticate", &challenge)])
            })
        };
        let auth = auth_file(tmp.path(), &registry.addr());
        let reference = format!("{}/test/img:1", registry.addr());
        let out = pull(&tmp.path().join("state"), &auth, &reference, &[]);
        assert!(!out.status.success(), "{realm}: pulled");
        let err = stderr(&out);
        assert!(err.contains(why), "{realm}: {err}");
        assert!(!err.contains(PASSWORD), "{err}");
        assert_eq!(registry.authorizations(), Vec::<String>::new());
    }
}

/// Registry B asks for basic auth: it gets neither registry A's entry of the
/// file nor the old global MOOR_REGISTRY_USER/PASSWORD, which are gone.
#[test]
fn credentials_of_one_registry_are_never_sent_to_another() {
    let tmp = tempfile::tempdir().unwrap();
    let other =
        Scripted::start(|_| Reply::status(401, &[("WWW-Authenticate", r#"Basic realm="b""#)]));
    let auth = auth_file(tmp.path(), "127.0.0.1:1");
    let reference = format!("{}/test/img:1", other.addr());
    let out = pull(
        &tmp.path().join("state"),
        &auth,
        &reference,
        &[
            ("MOOR_REGISTRY_USER", USER),
            ("MOOR_REGISTRY_PASSWORD", PASSWORD),
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "registry wants basic auth and the credentials file has none for {}",
            other.addr()
        )),
        "{err}"
    );
    assert_eq!(other.authorizations(), Vec::<String>::new());
    assert_no_password("another registry", &other);
}

/// A credentials file that is not JSON is named in the error, never quoted.
#[test]
fn a_broken_credentials_file_is_named_not_quoted() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = tmp.path().join("auth.json");
    std::fs::write(&auth, format!("{{\"auths\": \"{PASSWORD}\"}}")).unwrap();
    let out = pull(
        &tmp.path().join("state"),
        &auth,
        "127.0.0.1:1/test/img:1",
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&auth.display().to_string()), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

/// `alice`'s entry for Debian's docker-registry (`htpasswd -B`, cost 4):
/// its password is [`PASSWORD`].
pub(super) const HTPASSWD: &str =
    "alice:$2b$04$q2mhtP6N4OJx1izFjeDTpekQoN/H8LnpyLuiPld9/B0Xovf9POmPy\n";

/// Against a real registry with basic auth: the file's entry for it pulls,
/// an entry for the same host on another port does not, nor does no file.
#[test]
fn a_real_registry_with_basic_auth_takes_only_its_own_entry() {
    let Some(registry) = Registry::start_with_auth(HTPASSWD, basic()) else {
        return;
    };
    let image = small_image();
    registry.push("test/img", "1", &image);
    let tmp = tempfile::tempdir().unwrap();
    let reference = format!("{}/test/img:1", registry.addr);
    let other_port = auth_file(tmp.path(), "127.0.0.1:1");
    let out = pull(&tmp.path().join("s1"), &other_port, &reference, &[]);
    assert!(!out.status.success(), "pulled without its credentials");
    assert!(
        stderr(&out).contains("the credentials file has none for 127.0.0.1:"),
        "{}",
        stderr(&out)
    );
    let own = auth_file(tmp.path(), &registry.addr);
    let out = pull(&tmp.path().join("s2"), &own, &reference, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&image.manifest_digest));
}
