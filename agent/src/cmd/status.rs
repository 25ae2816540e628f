//! `moor status`: what the running agent says — its sources with their
//! revisions and last sync, and each resource's desired against observed state.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::cli::StatusArgs;

/// Asks the agent at `args.addr` for `/status` and prints it.
pub fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let url = format!("http://{}/status", args.addr);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    let mut req = agent.get(&url);
    if let Some(file) = &args.token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("reading the status token {}", file.display()))?;
        req = req.header("Authorization", format!("Bearer {}", token.trim_end()));
    }
    let doc: Value = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::StatusCode(401)) => anyhow::bail!(
            "the agent on {} asks for a token: give --token-file FILE (the agent's status_token_file){}",
            args.addr,
            if args.token_file.is_some() {
                "; the one given was refused"
            } else {
                ""
            }
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "no moor agent answers on {url} (is `moor agent` running? give its --metrics-addr with --addr)"
                )
            });
        }
    }
    .body_mut()
        .read_json()
        .context("reading the agent's /status")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(&doc, crate::source::unix_now()));
    }
    let healthy = doc["ready"].as_bool() == Some(true)
        && doc["sources"].as_array().is_some_and(|s| {
            // A failed or rolled-back revision is never a success.
            s.iter().all(|s| {
                s["error"].is_null()
                    && s["last_error"].is_null()
                    && s["rolled_back"].is_null()
                    && s["outcome"] != "failed"
            })
        });
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn ago(t: &Value, now: f64) -> String {
    match t.as_f64() {
        Some(t) => {
            let s = (now - t).max(0.0);
            if s < 120.0 {
                format!("{s:.0}s ago")
            } else if s < 7200.0 {
                format!("{:.0}m ago", s / 60.0)
            } else {
                format!("{:.1}h ago", s / 3600.0)
            }
        }
        None => "never".into(),
    }
}

fn short(rev: &Value) -> String {
    let r = text(rev);
    if r.contains(moor_reconcile::IMAGES_MARK) {
        // An image update's revision: the commit's, and the pins'.
        return moor_reconcile::short(&r).into_owned();
    }
    let r = r.strip_prefix("sha256:").unwrap_or(&r);
    r.chars().take(12).collect()
}

/// The human-readable report.
pub fn render(doc: &Value, now: f64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let host = &doc["host"];
    let _ = writeln!(
        out,
        "host {}{}   {}",
        text(&host["name"]),
        host["labels"]
            .as_object()
            .filter(|l| !l.is_empty())
            .map(|l| format!(
                " ({})",
                l.iter()
                    .map(|(k, v)| format!("{k}={}", text(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .unwrap_or_default(),
        if doc["ready"].as_bool() == Some(true) {
            "ready"
        } else {
            "not ready"
        }
    );
    let _ = writeln!(out, "\nSOURCES");
    let _ = writeln!(
        out,
        "{:<16} {:<5} {:<13} {:<13} {:<12} {:<12} LOCATION",
        "NAME", "KIND", "REVISION", "APPLIED", "SYNCED", "RECONCILED"
    );
    for s in doc["sources"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:<5} {:<13} {:<13} {:<12} {:<12} {}{}",
            text(&s["name"]),
            match text(&s["kind"]).as_str() {
                "directory" => "dir".to_string(),
                k => k.to_string(),
            },
            short(&s["revision"]),
            short(&s["applied_revision"]),
            ago(&s["last_sync"], now),
            ago(&s["last_reconcile"], now),
            text(&s["location"]),
            s["reference"]
                .as_str()
                .map(|r| format!(" @ {r}"))
                .unwrap_or_default(),
        );
        if let Some(subject) = s["subject"].as_str() {
            let _ = writeln!(out, "    {subject}");
        }
        if s["suspended"] == true {
            let pending = s["pending_revision"]
                .as_str()
                .map(|r| format!("; revision {} waits", r.get(..12).unwrap_or(r)))
                .unwrap_or_default();
            let _ = writeln!(out, "    suspended (moor resume to apply){pending}");
        }
        if let Some(m) = s["rolled_back"].as_str() {
            let _ = writeln!(out, "    {m}");
        } else if s["outcome"] == "failed" {
            let _ = writeln!(
                out,
                "    {}",
                s["outcome_message"]
                    .as_str()
                    .unwrap_or("the revision in force failed")
            );
        } else if s["outcome"] == "pending" {
            let _ = writeln!(
                out,
                "    revision applied; waiting for its containers to become ready"
            );
        }
        if s["mode"] == "plan" {
            let n = s["plan"].as_array().map_or(0, Vec::len);
            let _ = writeln!(out, "    plan only: {n} pending action(s), see --json");
        }
        if let Some(d) = s["drift"].as_array().filter(|d| !d.is_empty()) {
            let _ = writeln!(out, "    drift left alone: {} resource(s)", d.len());
        }
        for key in ["error", "manifest_error", "last_error"] {
            if let Some(e) = s[key].as_str() {
                let mut lines = e.lines();
                let _ = writeln!(out, "    error: {}", lines.next().unwrap_or(""));
                for l in lines {
                    let _ = writeln!(out, "      {l}");
                }
                break;
            }
        }
    }
    let images: Vec<(&Value, &Value)> = doc["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| {
            s["images"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |i| (&s["name"], i))
        })
        .collect();
    if !images.is_empty() {
        let _ = writeln!(out, "\nIMAGES");
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:<13} {:<24} REFERENCE",
            "PROJECT", "NAME", "DIGEST", "UPDATE"
        );
        for (project, i) in images {
            let u = &i["update"];
            let update = match u["policy"].as_str() {
                Some(p) => format!("{p}, {}", ago(&u["last_check"], now)),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:<13} {:<24} {}",
                text(project),
                text(&i["name"]),
                short(&i["digest"]),
                update,
                text(&i["reference"]),
            );
            if u["update_available"] == true {
                let _ = writeln!(out, "    update available: {}", text(&u["latest"]));
            }
            if let Some(e) = u["error"].as_str() {
                let _ = writeln!(out, "    error: {e}");
            }
        }
    }
    let _ = writeln!(out, "\nRESOURCES");
    let _ = writeln!(
        out,
        "{:<16} {:<10} {:<24} {:<12} {:<12} {:<16} MESSAGE",
        "PROJECT", "KIND", "NAME", "STATUS", "REASON", "OBSERVED"
    );
    for r in doc["resources"].as_array().into_iter().flatten() {
        let observed = match &r["observed"] {
            Value::Null => "-".to_string(),
            o => match o["health"].as_str() {
                Some(h) => format!("{}/{h}", text(&o["state"])),
                None => text(&o["state"]),
            },
        };
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:<24} {:<12} {:<12} {:<16} {}",
            text(&r["project"]),
            text(&r["kind"]).to_lowercase(),
            text(&r["name"]),
            text(&r["status"]),
            text(&r["reason"]),
            observed,
            r["message"].as_str().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_updates_revision_shows_its_pins() {
        let rev = serde_json::json!(format!("sha256:{}+img:0123456789abcdef", "a".repeat(64)));
        assert_eq!(short(&rev), "aaaaaaaaaaaa+img:01234567");
        assert_eq!(
            short(&serde_json::json!("4b1d2a0e9f3c7788")),
            "4b1d2a0e9f3c"
        );
    }

    #[test]
    fn renders_sources_and_resources() {
        let doc = serde_json::json!({
            "host": {"name": "edge-1", "labels": {"role": "db"}},
            "ready": true,
            "sources": [{
                "name": "fleet", "kind": "git", "location": "https://git.example/ops/fleet.git",
                "reference": "main", "revision": "0123456789abcdef0123", "applied_revision": "0123456789abcdef0123",
                "subject": "web: greet in French", "last_sync": 990.0, "last_reconcile": 995.0,
                "error": "fetching https://git.example/ops/fleet.git: connection refused",
                "images": [
                    {"name": "app", "reference": "ghcr.io/acme/app:1.4.0", "digest": "sha256:89abcdef0123456789",
                     "update": {"policy": "notify", "last_check": 998.0, "update_available": true,
                                "latest": "1.4.0@sha256:ffff", "error": null}},
                    {"name": "db", "reference": "docker.io/library/postgres:16", "digest": null},
                ],
            }],
            "resources": [
                {"project": "fleet", "kind": "Container", "name": "web", "status": "Ready",
                 "reason": "UpToDate", "message": "", "observed": {"state": "running", "health": "healthy"}},
                {"project": "fleet", "kind": "Network", "name": "front", "status": "Failed",
                 "reason": "ActionFailed", "message": "create failed: boom"},
            ],
        });
        let out = render(&doc, 1000.0);
        assert!(out.contains("host edge-1 (role=db)   ready"), "{out}");
        assert!(
            out.contains("fleet            git   0123456789ab  0123456789ab  10s ago      5s ago"),
            "{out}"
        );
        assert!(out.contains("    web: greet in French"), "{out}");
        assert!(
            out.contains("error: fetching https://git.example/ops/fleet.git: connection refused"),
            "{out}"
        );
        assert!(
            out.contains("fleet            app              89abcdef0123  notify, 2s ago           ghcr.io/acme/app:1.4.0"),
            "{out}"
        );
        assert!(
            out.contains("    update available: 1.4.0@sha256:ffff"),
            "{out}"
        );
        assert!(
            out.contains("fleet            db               -             -                        docker.io/library/postgres:16"),
            "{out}"
        );
        assert!(out.contains("running/healthy"), "{out}");
        assert!(out.contains("create failed: boom"), "{out}");
    }

    #[test]
    fn says_what_was_rolled_back_and_why() {
        let doc = serde_json::json!({
            "host": {"name": "edge-1"},
            "ready": true,
            "sources": [{
                "name": "fleet", "kind": "git", "location": "x", "revision": "bbbb", "applied_revision": "aaaa",
                "outcome": "pending",
                "rolled_back": "rolled back from bbbb to aaaa because container web failed its health check",
            }, {
                "name": "other", "kind": "directory", "location": "/srv", "outcome": "failed",
                "outcome_message": "revision cccc failed: container api is crash-looping (rollback = \"off\": left in force)",
            }],
            "resources": [],
        });
        let out = render(&doc, 1000.0);
        assert!(
            out.contains(
                "    rolled back from bbbb to aaaa because container web failed its health check"
            ),
            "{out}"
        );
        assert!(
            out.contains("    revision cccc failed: container api is crash-looping"),
            "{out}"
        );
    }
}
