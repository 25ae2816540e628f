//! TLS for libgit2's https transport, on rustls.
//!
//! git2 is built without its `https` feature: that feature links OpenSSL,
//! and the dynamic loader maps, relocates and binds libssl and libcrypto at
//! the start of every `moor` process (about 0.9 ms of a 6 ms no-op apply)
//! though only a fetch over https uses them. libgit2 keeps its https
//! transport (the smart protocol over its own HTTP client, proxies and
//! authentication included) and asks a registered TLS stream for the
//! encryption: [`register`] gives it this one.
//!
//! The server's certificate chain is checked against the system's trust
//! store, found as OpenSSL finds it: `SSL_CERT_FILE` or `SSL_CERT_DIR`, else
//! the distribution's bundle (`/etc/ssl/certs`). A chain that does not
//! verify fails the connection with `GIT_ECERTIFICATE` and a message saying
//! why; the `certificate_check` callback then sees `valid = false`.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};

use libgit2_sys as raw;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// libgit2's `git_stream` (include/git2/sys/stream.h), version 1.
#[repr(C)]
struct GitStream {
    version: c_int,
    /// The bit fields `encrypted : 1, proxy_support : 1`, in one unsigned
    /// int: bit 0 and bit 1.
    flags: c_uint,
    timeout: c_int,
    connect_timeout: c_int,
    connect: Option<unsafe extern "C" fn(*mut GitStream) -> c_int>,
    certificate: Option<unsafe extern "C" fn(*mut *mut raw::git_cert, *mut GitStream) -> c_int>,
    set_proxy: Option<unsafe extern "C" fn(*mut GitStream, *const raw::git_proxy_options) -> c_int>,
    read: Option<unsafe extern "C" fn(*mut GitStream, *mut c_void, usize) -> isize>,
    write: Option<unsafe extern "C" fn(*mut GitStream, *const c_char, usize, c_int) -> isize>,
    close: Option<unsafe extern "C" fn(*mut GitStream) -> c_int>,
    free: Option<unsafe extern "C" fn(*mut GitStream)>,
}

const GIT_STREAM_VERSION: c_int = 1;
const ENCRYPTED: c_uint = 1;
/// `GIT_STREAM_TLS` of `git_stream_t`.
const GIT_STREAM_TLS: c_int = 2;

/// libgit2's `git_stream_registration`.
#[repr(C)]
struct Registration {
    version: c_int,
    init: Option<unsafe extern "C" fn(*mut *mut GitStream, *const c_char, *const c_char) -> c_int>,
    wrap: Option<unsafe extern "C" fn(*mut *mut GitStream, *mut GitStream, *const c_char) -> c_int>,
}

unsafe extern "C" {
    /// Part of libgit2's public API (sys/stream.h); libgit2-sys builds it
    /// but does not declare it.
    fn git_stream_register(kind: c_int, registration: *mut Registration) -> c_int;
}

/// Makes this module libgit2's TLS stream, once per process; the TCP
/// connection and each read or write are bound by the sources' network
/// timeouts (those the plain sockets get). Ok once registered.
pub(super) fn register() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut registration = Registration {
            version: GIT_STREAM_VERSION,
            init: Some(init),
            wrap: Some(wrap),
        };
        // SAFETY: git_libgit2_init sets up the registry's lock (it is
        // reference counted, and moor never shuts libgit2 down); the
        // registration is copied by libgit2; the OnceLock makes this the
        // only registration, before any fetch of this process.
        let rc = unsafe {
            raw::git_libgit2_init();
            git_stream_register(GIT_STREAM_TLS, &mut registration)
        };
        if rc < 0 {
            Err(format!("libgit2 refused the TLS stream ({})", last_error()))
        } else {
            Ok(())
        }
    })
    .clone()
}

/// The trust store and protocol settings, read once per process.
fn config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(format!(
                    "no trusted CA certificates found (install ca-certificates, or set SSL_CERT_FILE){why}"
                ));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// The connection under TLS.
enum Io {
    /// Not connected yet: the host and port `init` was given.
    Pending { port: String },
    /// A TCP connection of this stream's own.
    Tcp(TcpStream),
    /// A stream libgit2 owns (an HTTP CONNECT tunnel through a proxy).
    Wrapped(*mut GitStream),
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.read(buf),
            Io::Wrapped(s) => {
                // SAFETY: libgit2 keeps the wrapped stream alive until after
                // this one is freed, and its read callback is set.
                let n = unsafe {
                    let read = (**s).read.ok_or_else(|| io::Error::other("no read"))?;
                    read(*s, buf.as_mut_ptr().cast(), buf.len())
                };
                usize::try_from(n).map_err(|_| io::Error::other(last_error()))
            }
            Io::Pending { .. } => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.write(buf),
            Io::Wrapped(s) => {
                // SAFETY: as for read.
                let n = unsafe {
                    let write = (**s).write.ok_or_else(|| io::Error::other("no write"))?;
                    write(*s, buf.as_ptr().cast(), buf.len(), 0)
                };
                usize::try_from(n).map_err(|_| io::Error::other(last_error()))
            }
            Io::Pending { .. } => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Tcp(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

/// One TLS connection, as libgit2 sees it: `parent` first, so a pointer to
/// it is a pointer to a `git_stream`.
#[repr(C)]
struct Tls {
    parent: GitStream,
    host: String,
    /// Before `connect`: the connection to make (or wrap).
    io: Option<Io>,
    /// After a successful `connect`.
    tls: Option<StreamOwned<ClientConnection, Io>>,
    /// The server's certificate (DER), once the handshake verified it.
    peer: Vec<u8>,
    cert: raw::git_cert_x509,
}

/// A failed connect: a certificate that does not verify, or anything else.
enum Failure {
    Certificate(String),
    Other(String),
}

impl Tls {
    fn boxed(host: &str, io: Io) -> *mut GitStream {
        let t = Box::new(Tls {
            parent: GitStream {
                version: GIT_STREAM_VERSION,
                flags: ENCRYPTED,
                timeout: 0,
                connect_timeout: 0,
                connect: Some(connect),
                certificate: Some(certificate),
                set_proxy: None,
                read: Some(read),
                write: Some(write),
                close: Some(close),
                free: Some(free),
            },
            host: host.to_string(),
            io: Some(io),
            tls: None,
            peer: Vec::new(),
            cert: raw::git_cert_x509 {
                parent: raw::git_cert {
                    cert_type: raw::GIT_CERT_X509,
                },
                data: std::ptr::null_mut(),
                len: 0,
            },
        });
        Box::into_raw(t).cast()
    }

    fn connect(&mut self) -> Result<(), Failure> {
        let io = match self.io.take() {
            Some(Io::Pending { port }) => Io::Tcp(tcp(&self.host, &port).map_err(Failure::Other)?),
            Some(io) => io,
            None => return Err(Failure::Other("the TLS stream is connected already".into())),
        };
        let config = config().map_err(Failure::Other)?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| Failure::Other(format!("{}: {e}", self.host)))?;
        let conn = ClientConnection::new(config, name)
            .map_err(|e| Failure::Other(format!("TLS to {}: {e}", self.host)))?;
        let mut stream = StreamOwned::new(conn, io);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                let rejected = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| {
                        matches!(
                            r,
                            rustls::Error::InvalidCertificate(_)
                                | rustls::Error::InvalidCertRevocationList(_)
                        )
                    });
                return Err(if rejected {
                    Failure::Certificate(format!(
                        "the TLS certificate of {} is not trusted ({e}); moor trusts the system's CA certificates (SSL_CERT_FILE, SSL_CERT_DIR or /etc/ssl/certs)",
                        self.host
                    ))
                } else {
                    Failure::Other(io_message(&self.host, "TLS handshake with", &e))
                });
            }
        }
        if let Some(cert) = stream.conn.peer_certificates().and_then(|c| c.first()) {
            self.peer = cert.to_vec();
        }
        self.tls = Some(stream);
        Ok(())
    }
}

/// Connects to host:port, trying each address the name resolves to, within
/// the connect timeout each; reads and writes then wait at most the io
/// timeout.
fn tcp(host: &str, port: &str) -> Result<TcpStream, String> {
    let (connect, io) = super::network_timeouts();
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{host}: port `{port}` is not a number"))?;
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("{host} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, connect) {
            Ok(s) => {
                s.set_read_timeout(Some(io))
                    .and_then(|()| s.set_write_timeout(Some(io)))
                    .map_err(|e| e.to_string())?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = format!("cannot connect to {host}:{port} ({addr}): {e}"),
        }
    }
    Err(last)
}

/// The message of libgit2's last error on this thread.
fn last_error() -> String {
    // SAFETY: git_error_last returns a pointer to a thread-local error that
    // stays valid until the next libgit2 call on this thread; it is copied.
    unsafe {
        let e = raw::git_error_last();
        if e.is_null() || (*e).message.is_null() {
            return "unknown error".into();
        }
        CStr::from_ptr((*e).message).to_string_lossy().into_owned()
    }
}

/// Sets libgit2's error message for this thread and returns `code`.
fn fail(code: c_int, message: &str) -> c_int {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: libgit2 copies the string.
    unsafe { raw::git_error_set_str(raw::GIT_ERROR_SSL as c_int, message.as_ptr()) };
    code
}

/// Reads a C string argument libgit2 gives (host, port).
///
/// # Safety
/// `s` is null or a NUL-terminated string.
unsafe fn arg(s: *const c_char) -> Option<String> {
    // SAFETY: the caller's promise.
    (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
}

unsafe extern "C" fn init(
    out: *mut *mut GitStream,
    host: *const c_char,
    port: *const c_char,
) -> c_int {
    // SAFETY: libgit2 passes NUL-terminated strings.
    let (Some(host), Some(port)) = (unsafe { arg(host) }, unsafe { arg(port) }) else {
        return fail(-1, "TLS stream: no host or port");
    };
    // SAFETY: `out` is where libgit2 wants the new stream.
    unsafe { *out = Tls::boxed(&host, Io::Pending { port }) };
    0
}

unsafe extern "C" fn wrap(
    out: *mut *mut GitStream,
    inner: *mut GitStream,
    host: *const c_char,
) -> c_int {
    // SAFETY: as for init.
    let Some(host) = (unsafe { arg(host) }) else {
        return fail(-1, "TLS stream: no host");
    };
    if inner.is_null() {
        return fail(-1, "TLS stream: nothing to wrap");
    }
    // SAFETY: as for init; `inner` outlives the new stream (libgit2 frees
    // the proxy stream after the server stream).
    unsafe { *out = Tls::boxed(&host, Io::Wrapped(inner)) };
    0
}

/// # Safety
/// `s` was made by [`Tls::boxed`] and not freed.
unsafe fn this<'a>(s: *mut GitStream) -> &'a mut Tls {
    // SAFETY: the caller's promise; `parent` is the first field.
    unsafe { &mut *s.cast::<Tls>() }
}

unsafe extern "C" fn connect(s: *mut GitStream) -> c_int {
    // SAFETY: libgit2 calls this with a stream of ours.
    match unsafe { this(s) }.connect() {
        Ok(()) => 0,
        Err(Failure::Certificate(m)) => fail(raw::GIT_ECERTIFICATE, &m),
        Err(Failure::Other(m)) => fail(-1, &m),
    }
}

unsafe extern "C" fn certificate(out: *mut *mut raw::git_cert, s: *mut GitStream) -> c_int {
    // SAFETY: as for connect.
    let t = unsafe { this(s) };
    // After a failed handshake there is no verified certificate: the
    // callback gets an empty one (and `valid = false`).
    t.cert.data = t.peer.as_mut_ptr().cast();
    t.cert.len = t.peer.len();
    // SAFETY: the certificate lives in the stream, which outlives the call.
    unsafe { *out = (&raw mut t.cert).cast() };
    0
}

unsafe extern "C" fn read(s: *mut GitStream, buf: *mut c_void, len: usize) -> isize {
    // SAFETY: as for connect; libgit2 gives a buffer of `len` bytes.
    let (t, buf) = unsafe {
        (
            this(s),
            std::slice::from_raw_parts_mut(buf.cast::<u8>(), len),
        )
    };
    let Some(tls) = t.tls.as_mut() else {
        return fail(-1, "TLS stream read before connect") as isize;
    };
    match tls.read(buf) {
        Ok(n) => n as isize,
        // A peer that closes without close_notify: the HTTP framing and the
        // pack's own checksum tell a cut-short transfer.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
        Err(e) => fail(-1, &io_message(&t.host, "read from", &e)) as isize,
    }
}

unsafe extern "C" fn write(
    s: *mut GitStream,
    data: *const c_char,
    len: usize,
    _flags: c_int,
) -> isize {
    // SAFETY: as for read.
    let (t, data) = unsafe { (this(s), std::slice::from_raw_parts(data.cast::<u8>(), len)) };
    let Some(tls) = t.tls.as_mut() else {
        return fail(-1, "TLS stream write before connect") as isize;
    };
    match tls.write(data).and_then(|n| tls.flush().map(|()| n)) {
        Ok(n) => n as isize,
        Err(e) => fail(-1, &io_message(&t.host, "write to", &e)) as isize,
    }
}

fn io_message(host: &str, verb: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("{verb} {host} timed out")
        }
        _ => format!("{verb} {host} failed: {e}"),
    }
}

unsafe extern "C" fn close(s: *mut GitStream) -> c_int {
    // SAFETY: as for connect.
    let t = unsafe { this(s) };
    if let Some(mut tls) = t.tls.take() {
        tls.conn.send_close_notify();
        let _ = tls.flush();
        if let Io::Tcp(tcp) = &tls.sock {
            let _ = tcp.shutdown(Shutdown::Both);
        }
    }
    0
}

unsafe extern "C" fn free(s: *mut GitStream) {
    // SAFETY: made by Tls::boxed, freed once by libgit2; a wrapped stream
    // is libgit2's to free.
    drop(unsafe { Box::from_raw(s.cast::<Tls>()) });
}
