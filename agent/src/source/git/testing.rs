//! Test fixtures: real repositories made with the `git` command, and real
//! servers on loopback (`git daemon`, `git http-backend` behind a small
//! HTTP-to-CGI bridge, servers that answer garbage or nothing). Every server
//! is stopped by its guard's `Drop`, so a failing test leaves none behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;

/// Socket timeouts for every test of this process (set before any fetch).
pub fn init() {
    super::set_network_timeouts(Duration::from_secs(5), Duration::from_secs(10));
}

/// True when running on CI, where a missing prerequisite is a failure.
fn on_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// The full path of a tool on PATH (or in sbin).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/sbin".into(),
            "/sbin".into(),
            "/usr/lib/git-core".into(),
        ])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Checks that the tools exist. On CI a missing one panics; elsewhere the
/// test says loudly that it did not run, and returns false.
pub fn require(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("prerequisites missing: {}", missing.join(", "));
    assert!(!on_ci(), "{msg} (CI must install them: see .ci/run)");
    eprintln!("SKIPPED (not on CI): {msg}");
    false
}

/// A bare "remote" repository and a work tree that pushes to it.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    /// Holds `remote.git`: the git daemon's and http-backend's base path.
    pub root: PathBuf,
    pub bare: PathBuf,
    pub work: PathBuf,
    gitconfig: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        init();
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("srv");
        let bare = root.join("remote.git");
        let work = tmp.path().join("work");
        let gitconfig = tmp.path().join("gitconfig");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            &gitconfig,
            "[user]\n\tname = Test\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n\
             [commit]\n\tgpgsign = false\n[tag]\n\tgpgsign = false\n[protocol]\n\tversion = 0\n",
        )
        .unwrap();
        let f = Fixture {
            tmp,
            root,
            bare,
            work,
            gitconfig,
        };
        f.git_in(
            &f.root,
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        f.git_in(f.tmp.path(), &["init", "-q", "-b", "main", "work"]);
        f.git(&["remote", "add", "origin", f.bare.to_str().unwrap()]);
        f
    }

    /// A cache directory for a source, inside the fixture's temp dir.
    pub fn cache(&self, name: &str) -> PathBuf {
        self.tmp.path().join("cache").join(name)
    }

    /// `file://` URL of the bare remote.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", &self.gitconfig)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.tmp.path())
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE");
        c
    }

    /// Runs git in `dir`; panics with its stderr when it fails.
    pub fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        let out = self
            .command(dir, args)
            .output()
            .unwrap_or_else(|e| panic!("run git {args:?}: {e}"));
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs git in the work tree.
    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.work, args)
    }

    /// Writes `files` (path, content) into the work tree, commits them with
    /// `extra` commit arguments, and pushes `main` (forced). Returns the id.
    pub fn commit_with(&self, files: &[(&str, &str)], msg: &str, extra: &[&str]) -> String {
        self.commit_env(files, msg, extra, None)
    }

    /// [`commit_with`](Self::commit_with), with GNUPGHOME set for git's gpg.
    pub fn commit_env(
        &self,
        files: &[(&str, &str)],
        msg: &str,
        extra: &[&str],
        gnupghome: Option<&Path>,
    ) -> String {
        for (path, content) in files {
            let p = self.work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
        }
        self.git(&["add", "-A"]);
        let mut args = extra.to_vec();
        args.extend(["commit", "-q", "--allow-empty", "-m", msg]);
        let mut cmd = self.command(&self.work, &args);
        if let Some(home) = gnupghome {
            cmd.env("GNUPGHOME", home);
        }
        let out = cmd.output().expect("run git commit");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.push();
        self.git(&["rev-parse", "HEAD"])
    }

    /// Commits and pushes, unsigned.
    pub fn commit(&self, files: &[(&str, &str)], msg: &str) -> String {
        self.commit_with(files, msg, &[])
    }

    /// Commits signed with the SSH private key `key`, and pushes.
    pub fn commit_signed(&self, key: &Path, files: &[(&str, &str)], msg: &str) -> String {
        let signing = format!("user.signingkey={}", key.display());
        let mut args = vec!["-c", "gpg.format=ssh", "-c", signing.as_str()];
        args.push("-c");
        args.push("commit.gpgsign=true");
        self.commit_with(files, msg, &args)
    }

    /// Commits signed with the OpenPGP key `fingerprint` of `gpg`, and pushes.
    pub fn commit_gpg(
        &self,
        gpg: &Gpg,
        fingerprint: &str,
        files: &[(&str, &str)],
        msg: &str,
    ) -> String {
        let signing = format!("user.signingkey={fingerprint}");
        let args = [
            "-c",
            "gpg.format=openpgp",
            "-c",
            signing.as_str(),
            "-c",
            "commit.gpgsign=true",
        ];
        self.commit_env(files, msg, &args, Some(&gpg.home))
    }

    /// Pushes `main` and the tags, forced.
    pub fn push(&self) {
        self.git(&["push", "-q", "--force", "--tags", "origin", "main"]);
    }

    /// Makes an ed25519 key pair; returns (private key path, public key line).
    pub fn ssh_key(&self, name: &str) -> (PathBuf, String) {
        let path = self.tmp.path().join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .output()
            .expect("run ssh-keygen");
        assert!(
            out.status.success(),
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        (path, public.trim().to_string())
    }
}

/// Waits until something listens on 127.0.0.1:port (a server starting up).
pub fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `git daemon` serving `base` on 127.0.0.1:port; killed on drop.
pub struct Daemon {
    child: Child,
    pub port: u16,
}

impl Daemon {
    pub fn start(base: &Path, port: u16) -> Daemon {
        // The daemon binary itself: `git daemon` would run it as a child
        // that outlives a kill of the `git` wrapper.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg(format!("--base-path={}", base.display()))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        let d = Daemon { child, port };
        wait_listening(port, "git daemon");
        d
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The daemon's children (one per connection) inherit its listening
        // socket: the port is free only once they have finished too.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Binds 127.0.0.1:port (0: any), waiting while a previous server's
/// leftovers still hold it.
fn bind_retrying(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("bind test server on port {port}: {e}"),
        }
    }
}

/// What a [`Server`] does with each connection.
#[derive(Clone)]
pub enum Mode {
    /// `git http-backend` for the repositories under the root; with Some,
    /// requires HTTP basic auth with that user and password.
    Git {
        root: PathBuf,
        auth: Option<(String, String)>,
    },
    /// Answers every request with these bytes, then closes.
    Garbage(Vec<u8>),
    /// Accepts connections and never answers.
    Silent,
}

/// A loopback TCP server running `mode` in a thread; stopped on drop.
pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The `Authorization` user names seen (decoded), for assertions.
    pub users_seen: Arc<Mutex<Vec<String>>>,
    https: bool,
}

impl Server {
    pub fn start(mode: Mode) -> Server {
        Self::start_on(mode, 0)
    }

    pub fn start_on(mode: Mode, port: u16) -> Server {
        Self::serve(mode, port, None)
    }

    /// The same server behind TLS with `tls`'s certificate (https).
    pub fn start_https(mode: Mode, tls: Arc<rustls::ServerConfig>) -> Server {
        Self::serve(mode, 0, Some(tls))
    }

    fn serve(mode: Mode, port: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = bind_retrying(port);
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let users_seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, users2) = (stop.clone(), users_seen.clone());
        let https = tls.is_some();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                match &mode {
                    Mode::Silent => held.push(conn),
                    Mode::Garbage(bytes) => {
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf);
                        let _ = conn.write_all(bytes);
                    }
                    Mode::Git { root, auth } => {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                        let users = &users2;
                        let _ = match &tls {
                            None => serve_cgi(&mut conn, root, auth.as_ref(), users),
                            Some(tls) => rustls::ServerConnection::new(tls.clone())
                                .map_err(std::io::Error::other)
                                .and_then(|c| {
                                    let mut s = rustls::StreamOwned::new(c, conn);
                                    serve_cgi(&mut s, root, auth.as_ref(), users)?;
                                    s.conn.send_close_notify();
                                    s.flush()
                                }),
                        };
                    }
                }
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
            users_seen,
            https,
        }
    }

    /// Whether a request came with `user`'s basic credentials.
    pub fn saw_user(&self, user: &str) -> bool {
        self.users_seen.lock().unwrap().iter().any(|u| u == user)
    }

    pub fn url(&self, repo: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one HTTP request by running `git http-backend` as a CGI program.
fn serve_cgi(
    conn: &mut (impl Read + Write),
    root: &Path,
    auth: Option<&(String, String)>,
    users_seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let (method, target, headers, body) = read_request(conn)?;
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let out = conn;

    let mut remote_user = String::new();
    if let Some((user, pass)) = auth {
        let given = header("authorization")
            .and_then(|a| a.strip_prefix("Basic ").map(str::to_string))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|d| String::from_utf8(d).ok());
        if let Some((u, _)) = given.as_deref().and_then(|g| g.split_once(':')) {
            users_seen.lock().unwrap().push(u.to_string());
        }
        if given.as_deref() != Some(&format!("{user}:{pass}")) {
            out.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
        remote_user = user.clone();
    }

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", &remote_user)
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in [
        ("CONTENT_TYPE", header("content-type")),
        ("HTTP_CONTENT_ENCODING", header("content-encoding")),
        ("HTTP_GIT_PROTOCOL", header("git-protocol")),
    ] {
        if let Some(v) = v {
            cgi.env(k, v);
        }
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut output = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut output)?;
    let _ = writer.join();
    child.wait()?;

    // CGI headers, a blank line, the body.
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, payload) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&output[..i]).to_string(),
            &output[i + n..],
        ),
        None => (String::new(), &output[..]),
    };
    let mut status = "200 OK".to_string();
    let mut response = Vec::new();
    let mut header_lines = String::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            Some(_) => {
                header_lines.push_str(h.trim_end());
                header_lines.push_str("\r\n");
            }
            None => {}
        }
    }
    write!(
        response,
        "HTTP/1.1 {status}\r\n{header_lines}Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )?;
    response.extend_from_slice(payload);
    out.write_all(&response)
}

/// A request's method, target, headers (names in lower case) and body.
type Request = (String, String, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 request: its line, headers and body (by
/// Content-Length, or chunked).
fn read_request(conn: &mut impl Read) -> std::io::Result<Request> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }

    Ok((method, target, headers, body))
}

/// A certificate authority made for one test, and the server certificates
/// it signs (rcgen, ECDSA P-256).
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM: what a client is told to trust.
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A server configuration whose certificate, signed by this CA, is
    /// valid for `names` (host names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        Arc::new(config)
    }
}

/// An HTTP proxy on loopback that answers `CONNECT host:port` by tunnelling
/// to it, as corporate proxies do for https; stopped on drop.
pub struct ConnectProxy {
    pub port: u16,
    /// The `CONNECT` targets asked for.
    pub targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let listener = bind_retrying(0);
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let (stop2, targets2) = (stop.clone(), targets.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut client) = conn else { continue };
                let Ok((method, target, _, _)) = read_request(&mut client) else {
                    continue;
                };
                targets2.lock().unwrap().push(target.clone());
                let upstream = match TcpStream::connect(target.as_str()) {
                    Ok(u) if method == "CONNECT" => u,
                    _ => {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                        continue;
                    }
                };
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (mut client, mut upstream) = (client, upstream);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut upstream, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        ConnectProxy {
            port,
            targets,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// OpenSSH's sshd on 127.0.0.1:port with its own host key, letting the
/// current user in with `authorized_key` only; killed on drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    /// `[127.0.0.1]:port ssh-ed25519 …`: the line known_hosts needs.
    pub known_hosts_line: String,
    /// The login name to use.
    pub user: String,
}

impl Sshd {
    pub fn start(dir: &Path, authorized_key: &str) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        let host_key = dir.join("host_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .output()
            .expect("run ssh-keygen");
        assert!(
            out.status.success(),
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join("authorized_keys"), format!("{authorized_key}\n")).unwrap();
        // The privilege separation directory sshd insists on (the service
        // normally makes it; it is empty and harmless).
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\n\
                 AuthorizedKeysFile {ak}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nLogLevel ERROR\n",
                hk = host_key.display(),
                pid = dir.join("sshd.pid").display(),
                ak = dir.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let sshd = which("sshd").expect("sshd");
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        let public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        let user = String::from_utf8_lossy(
            &Command::new("id")
                .arg("-un")
                .output()
                .expect("id -un")
                .stdout,
        )
        .trim()
        .to_string();
        let d = Sshd {
            child,
            port,
            known_hosts_line: format!("[127.0.0.1]:{port} {}", key.join(" ")),
            user,
        };
        wait_listening(port, "sshd");
        d
    }

    /// `ssh://` URL of a repository at an absolute path.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private GnuPG home; its gpg-agent is stopped on drop.
pub struct Gpg {
    pub home: PathBuf,
}

impl Gpg {
    pub fn new(dir: &Path) -> Gpg {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Gpg {
            home: dir.to_path_buf(),
        }
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .args(["--batch", "--quiet", "--no-tty"])
            .args(args)
            .env("GNUPGHOME", &self.home)
            .output()
            .expect("run gpg");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Makes an ed25519 signing key without passphrase; returns its
    /// fingerprint.
    pub fn gen_key(&self, uid: &str) -> String {
        self.run(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
        ]);
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid])).unwrap();
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| f.len() == 40))
            .expect("fingerprint")
            .to_string()
    }

    /// Adds an ed25519 signing subkey to the key `fingerprint`.
    pub fn add_signing_subkey(&self, fingerprint: &str) {
        self.run(&[
            "--passphrase",
            "",
            "--quick-add-key",
            fingerprint,
            "ed25519",
            "sign",
            "never",
        ]);
    }

    /// The armored public key.
    pub fn export(&self, fingerprint: &str) -> Vec<u8> {
        self.run(&["--armor", "--export", fingerprint])
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "all"])
            .env("GNUPGHOME", &self.home)
            .output();
    }
}
