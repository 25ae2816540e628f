//! Notifications (`[[notify]]`): a source's controller status, pass after
//! pass, becomes events (`events`), which go to webhooks, Slack, Discord
//! or ntfy. Start at [`Notifier::start`].
//!
//! Nothing here can slow a deploy: each target has its own bounded queue
//! (a full queue drops the event and counts it) and its own worker, which
//! sends with a timeout and retries with backoff; the controller is only
//! ever watched, never waited on.

mod events;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moor_metrics::Metrics;
use moor_reconcile::Status;
use tokio::sync::{mpsc, watch};

use crate::config::{NotifyConfig, NotifyKind};
use events::{Admit, Event, Suppressor, Tracker};

/// Events waiting per target; more are dropped.
const QUEUE: usize = 64;
/// One attempt's time limit.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per event.
const ATTEMPTS: u32 = 4;
/// The wait before the first retry; doubled for each next one.
const RETRY_BASE: Duration = Duration::from_secs(1);

struct Target {
    config: NotifyConfig,
    suppressor: Mutex<Suppressor>,
    queue: mpsc::Sender<Event>,
}

/// The notification targets; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    targets: Arc<Vec<Target>>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Starts a worker per target.
    pub fn start(configs: &[NotifyConfig], host: &str, metrics: &Arc<Metrics>) -> Self {
        let mut targets = Vec::new();
        for config in configs {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(worker(
                config.clone(),
                host.to_string(),
                rx,
                metrics.clone(),
            ));
            targets.push(Target {
                suppressor: Mutex::new(Suppressor::new(config.repeat_interval)),
                config: config.clone(),
                queue: tx,
            });
        }
        Self {
            targets: Arc::new(targets),
            metrics: metrics.clone(),
        }
    }

    /// Whether any target is configured.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Hands `ev` to every target that wants it; never waits.
    fn notify(&self, ev: &Event) {
        for t in self.targets.iter() {
            let wanted = t.config.events.iter().any(|e| e == ev.event.as_str())
                && (t.config.sources.is_empty() || t.config.sources.contains(&ev.source));
            if !wanted {
                continue;
            }
            let admit = t
                .suppressor
                .lock()
                .expect("suppressor poisoned")
                .admit(ev.clone(), Instant::now());
            match admit {
                Admit::Suppressed => self.metrics.notification("suppressed"),
                Admit::Send(ev) => {
                    if t.queue.try_send(ev).is_err() {
                        self.metrics.notification_dropped();
                    }
                }
            }
        }
    }

    /// Announces that `image` of `source` has an update (`message` says
    /// which); never waits.
    pub fn update_available(&self, source: &str, image: &str, message: String) {
        self.notify(&Event {
            event: events::EventKind::UpdateAvailable,
            source: source.to_string(),
            resource: Some(format!("image/{image}")),
            revision: None,
            message,
        });
    }

    /// Follows `source`'s controller until it stops.
    pub async fn watch(self, source: String, mut rx: watch::Receiver<Status>) {
        let mut tracker = Tracker::default();
        let mut prev = rx.borrow_and_update().clone();
        while rx.changed().await.is_ok() {
            let cur = rx.borrow_and_update().clone();
            for ev in tracker.step(&source, &prev, &cur) {
                self.notify(&ev);
            }
            prev = cur;
        }
    }
}

/// Sends what a target's queue holds, one event at a time.
async fn worker(
    config: NotifyConfig,
    host: String,
    mut rx: mpsc::Receiver<Event>,
    metrics: Arc<Metrics>,
) {
    while let Some(ev) = rx.recv().await {
        let mut wait = RETRY_BASE;
        let mut result = "failure";
        for attempt in 1..=ATTEMPTS {
            let (c, h, e) = (config.clone(), host.clone(), ev.clone());
            let sent = tokio::task::spawn_blocking(move || send(&c, &h, &e))
                .await
                .unwrap_or_else(|e| Err(Failure::Final(format!("the sender panicked: {e}"))));
            match sent {
                Ok(()) => {
                    result = "success";
                    break;
                }
                Err(Failure::Final(why)) => {
                    tracing::warn!(kind = ?config.kind, event = ev.event.as_str(), "notification refused: {why}");
                    break;
                }
                Err(Failure::Retry(why)) => {
                    tracing::warn!(kind = ?config.kind, event = ev.event.as_str(), attempt, "notification failed: {why}");
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        }
        metrics.notification(result);
    }
}

/// Why a send failed, and whether trying again may help.
enum Failure {
    Retry(String),
    Final(String),
}

/// Reads a secret file: its first line, trimmed.
fn read_secret(path: &std::path::Path, what: &str) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Final(format!("reading the {what} file {}: {e}", path.display())))?;
    let value = text.lines().next().unwrap_or("").trim().to_string();
    if value.is_empty() {
        return Err(Failure::Final(format!(
            "the {what} file {} is empty",
            path.display()
        )));
    }
    Ok(value)
}

/// One attempt. The URL is a secret: errors name the file, never the URL.
fn send(config: &NotifyConfig, host: &str, ev: &Event) -> Result<(), Failure> {
    let url = read_secret(&config.url_file, "url")?;
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .max_redirects(0)
            .build(),
    );
    let text = events::line(host, ev);
    let json = |v: serde_json::Value| serde_json::to_vec(&v).expect("plain data");
    let (body, content_type, mut headers) = match config.kind {
        NotifyKind::Webhook => (
            events::webhook_body(host, ev, crate::source::unix_now()),
            "application/json",
            Vec::new(),
        ),
        NotifyKind::Slack => (
            json(serde_json::json!({ "text": text })),
            "application/json",
            Vec::new(),
        ),
        NotifyKind::Discord => (
            json(serde_json::json!({ "content": text })),
            "application/json",
            Vec::new(),
        ),
        NotifyKind::Ntfy => (
            ev.message.clone().into_bytes(),
            "text/plain",
            vec![(
                "Title",
                format!("moor {host}: {} {}", ev.source, ev.event.as_str()),
            )],
        ),
    };
    if let Some(file) = &config.secret_file {
        let secret = read_secret(file, "secret")?;
        headers.push((
            "X-Moor-Signature-256",
            events::signature(secret.as_bytes(), &body),
        ));
    }
    let mut req = agent
        .post(&url)
        .header("Content-Type", content_type)
        .header("User-Agent", concat!("moor/", env!("CARGO_PKG_VERSION")));
    for (k, v) in &headers {
        req = req.header(*k, v);
    }
    match req.send(&body[..]) {
        Ok(_) => Ok(()),
        Err(ureq::Error::StatusCode(code)) if code == 429 || code >= 500 => {
            Err(Failure::Retry(format!(
                "the receiver ({}) answered {code}",
                config.url_file.display()
            )))
        }
        Err(ureq::Error::StatusCode(code)) => Err(Failure::Final(format!(
            "the receiver ({}) answered {code}",
            config.url_file.display()
        ))),
        Err(e) => Err(Failure::Retry(format!(
            "posting to the URL in {}: {}",
            config.url_file.display(),
            redact(&e.to_string(), &url)
        ))),
    }
}

/// `message` without `url` in it.
fn redact(message: &str, url: &str) -> String {
    message.replace(url, "<url>")
}
