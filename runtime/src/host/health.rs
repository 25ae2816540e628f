//! Health checks: `cmd` runs inside the container (`runc exec`), `http` and
//! `tcp` connect from the host to the container's address (its first
//! network's, or loopback for `network_mode = "host"`), so no tool is needed
//! in the image. One thread per checked container; results are kept in memory
//! and restart from `starting` when the agent restarts.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use moor_reconcile::Health;
use moor_spec::{HealthTest, Healthcheck};

/// What a checker needs from the host.
pub trait Probe: Send + Sync + 'static {
    /// Runs `cmd` in container `name`; returns its exit code.
    fn exec(&self, name: &str, cmd: &[String], timeout: Duration) -> Result<i32, String>;
    /// The address at which the host reaches container `name`.
    fn address(&self, name: &str) -> Option<IpAddr>;
    /// True when container `name` is paused: it is not checked then.
    fn paused(&self, _name: &str) -> bool {
        false
    }
}

#[derive(Debug)]
struct Checker {
    health: Arc<Mutex<Health>>,
    stop: Arc<AtomicBool>,
    /// Dropped with the checker: wakes its thread at once to end.
    _wake: mpsc::Sender<()>,
}

/// The health of every checked container. Each change is also written to
/// `<dir>/<container>` (`starting`, `healthy` or `unhealthy`), so that
/// `moor ps` in another process shows it.
#[derive(Debug, Default)]
pub struct Monitor {
    checkers: Mutex<HashMap<String, Checker>>,
    dir: Option<std::path::PathBuf>,
    /// Runs no checks: reports what another process recorded in `dir`.
    reader: bool,
}

/// The word written to a container's health file.
pub fn health_word(h: Health) -> &'static str {
    match h {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

/// Reads the health another process recorded for `name` under `dir`.
pub fn read_health(dir: &std::path::Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

impl Monitor {
    /// A monitor that records health files under `dir`.
    pub fn with_dir(dir: std::path::PathBuf) -> Self {
        let _ = std::fs::create_dir_all(&dir);
        Self {
            checkers: Mutex::default(),
            dir: Some(dir),
            reader: false,
        }
    }

    /// A monitor that runs no checks and reports the health that another
    /// process's monitor records under `dir` (a command beside the agent).
    pub fn reader(dir: std::path::PathBuf) -> Self {
        Self {
            checkers: Mutex::default(),
            dir: Some(dir),
            reader: true,
        }
    }

    /// The container's health (`None` when it has no check).
    pub fn health(&self, name: &str) -> Health {
        if self.reader {
            return self
                .dir
                .as_deref()
                .map_or(Health::None, |d| super::instances::recorded_health(d, name));
        }
        self.checkers
            .lock()
            .expect("health monitor poisoned")
            .get(name)
            .map_or(Health::None, |c| *c.health.lock().expect("health poisoned"))
    }

    /// Starts checking `name` (restarting the check from `starting`).
    pub fn watch(&self, name: &str, check: Healthcheck, probe: Arc<dyn Probe>) {
        if self.reader {
            return;
        }
        self.forget(name);
        let health = Arc::new(Mutex::new(Health::Starting));
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, woken) = mpsc::channel();
        let (h, s, n) = (health.clone(), stop.clone(), name.to_string());
        let file = self.dir.as_ref().map(|d| d.join(name));
        if let Some(f) = &file {
            let _ = crate::container::state::write_atomic(f, b"starting\n");
        }
        std::thread::Builder::new()
            .name(format!("health-{name}"))
            .spawn(move || run(&n, &check, probe.as_ref(), &h, &s, &woken, file.as_deref()))
            .expect("spawn health thread");
        self.checkers
            .lock()
            .expect("health monitor poisoned")
            .insert(
                name.to_string(),
                Checker {
                    health,
                    stop,
                    _wake: wake,
                },
            );
    }

    /// True when `name` is being checked.
    pub fn watching(&self, name: &str) -> bool {
        self.checkers
            .lock()
            .expect("health monitor poisoned")
            .contains_key(name)
    }

    /// Stops checking `name`.
    pub fn forget(&self, name: &str) {
        if let Some(c) = self
            .checkers
            .lock()
            .expect("health monitor poisoned")
            .remove(name)
        {
            c.stop.store(true, Ordering::SeqCst);
        }
    }
}

fn run(
    name: &str,
    check: &Healthcheck,
    probe: &dyn Probe,
    health: &Mutex<Health>,
    stop: &AtomicBool,
    woken: &mpsc::Receiver<()>,
    file: Option<&std::path::Path>,
) {
    let started = Instant::now();
    let mut failures = 0u32;
    while !stop.load(Ordering::SeqCst) {
        if probe.paused(name) {
            // Frozen: an exec would hang, a connection time out. The
            // health stays what it was until the container is unpaused.
            if !matches!(
                woken.recv_timeout(check.interval),
                Err(mpsc::RecvTimeoutError::Timeout)
            ) {
                break;
            }
            continue;
        }
        let ok = once(name, &check.test, check.timeout, probe);
        let mut h = health.lock().expect("health poisoned");
        let before = *h;
        if ok {
            failures = 0;
            *h = Health::Healthy;
        } else if started.elapsed() >= check.start_period {
            failures += 1;
            if failures >= check.retries {
                *h = Health::Unhealthy;
            }
        }
        if *h != before
            && !stop.load(Ordering::SeqCst)
            && let Some(f) = file
        {
            let _ = crate::container::state::write_atomic(
                f,
                format!("{}\n", health_word(*h)).as_bytes(),
            );
        }
        drop(h);
        // Until the next check, asleep: `forget` drops the sender, which
        // ends the wait at once (no waking up to look in between).
        if !matches!(
            woken.recv_timeout(check.interval),
            Err(mpsc::RecvTimeoutError::Timeout)
        ) {
            break;
        }
    }
}

/// Runs one check; true when it passed.
pub fn once(name: &str, test: &HealthTest, timeout: Duration, probe: &dyn Probe) -> bool {
    match test {
        HealthTest::Cmd(cmd) => probe.exec(name, cmd, timeout) == Ok(0),
        HealthTest::Tcp(target) => target_addr(name, target, probe)
            .is_some_and(|a| TcpStream::connect_timeout(&a, timeout).is_ok()),
        HealthTest::Http(url) => http(name, url, timeout, probe),
    }
}

/// `localhost` and loopback mean the container itself.
fn resolve_host(name: &str, host: &str, port: u16, probe: &dyn Probe) -> Option<SocketAddr> {
    let is_self = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if is_self {
        let ip = probe
            .address(name)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        return Some(SocketAddr::new(ip, port));
    }
    (host, port).to_socket_addrs().ok()?.next()
}

fn target_addr(name: &str, target: &str, probe: &dyn Probe) -> Option<SocketAddr> {
    let (host, port) = target.rsplit_once(':')?;
    resolve_host(name, host, port.parse().ok()?, probe)
}

fn http(name: &str, url: &str, timeout: Duration, probe: &dyn Probe) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        // https checks would need TLS; a TCP connect is the honest subset.
        let Some(rest) = url.strip_prefix("https://") else {
            return false;
        };
        let authority = rest.split('/').next().unwrap_or("");
        let target = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:443")
        };
        return target_addr(name, &target, probe)
            .is_some_and(|a| TcpStream::connect_timeout(&a, timeout).is_ok());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(80)),
        None => (authority, 80),
    };
    let Some(addr) = resolve_host(name, host, port, probe) else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: moor-healthcheck\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    // "HTTP/1.x 2xx" or 3xx.
    let text = String::from_utf8_lossy(&head[..n]);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    code.is_some_and(|c| (200..400).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    struct Local;
    impl Probe for Local {
        fn exec(&self, _: &str, cmd: &[String], _: Duration) -> Result<i32, String> {
            Ok(if cmd[0] == "true" { 0 } else { 1 })
        }
        fn address(&self, _: &str) -> Option<IpAddr> {
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
    }

    fn serve(status: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for s in l.incoming().take(4) {
                let mut s = s.expect("accept");
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(format!("HTTP/1.0 {status}\r\n\r\nok").as_bytes());
            }
        });
        port
    }

    #[test]
    fn checks() {
        let t = Duration::from_secs(2);
        let ok = serve("200 OK");
        let bad = serve("500 Internal Server Error");
        assert!(once(
            "c",
            &HealthTest::Http(format!("http://localhost:{ok}/")),
            t,
            &Local
        ));
        assert!(!once(
            "c",
            &HealthTest::Http(format!("http://localhost:{bad}/")),
            t,
            &Local
        ));
        assert!(once(
            "c",
            &HealthTest::Tcp(format!("localhost:{ok}")),
            t,
            &Local
        ));
        let closed = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        assert!(!once(
            "c",
            &HealthTest::Tcp(format!("localhost:{closed}")),
            Duration::from_millis(300),
            &Local
        ));
        assert!(once("c", &HealthTest::Cmd(vec!["true".into()]), t, &Local));
        assert!(!once(
            "c",
            &HealthTest::Cmd(vec!["false".into()]),
            t,
            &Local
        ));
    }

    #[test]
    fn monitor_goes_healthy_then_unhealthy_after_retries() {
        let port = serve("200 OK");
        let m = Monitor::default();
        let check = Healthcheck {
            test: HealthTest::Http(format!("http://localhost:{port}/")),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            retries: 2,
            start_period: Duration::ZERO,
        };
        m.watch("web", check, Arc::new(Local));
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.health("web") != Health::Healthy {
            assert!(
                Instant::now() < deadline,
                "test timeout expired, never healthy"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The server answers four requests; after that checks fail.
        while m.health("web") != Health::Unhealthy {
            assert!(
                Instant::now() < deadline,
                "test timeout expired, never unhealthy"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m.forget("web");
        assert_eq!(m.health("web"), Health::None);
    }
}
