//! The image config a build writes, as JSON: what the base image had (every
//! field kept, moor's model or not), changed step by step, with a `history`
//! entry per step.

use moor_build::resolve::{BaseConfig, ConfigChange};
use serde_json::{Map, Value, json};

use super::error::BuildError;
use crate::image::oci::Platform;

/// The config of an empty (`scratch`) image on this host.
pub fn scratch() -> Value {
    let host = Platform::host();
    let mut v = json!({
        "architecture": host.architecture,
        "os": host.os,
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {},
        "history": [],
    });
    if let Some(variant) = host.variant {
        v["variant"] = json!(variant);
    }
    v
}

/// The config a `FROM scratch` stage starts from: Docker's classic builder
/// gives it the default `PATH` (and no other image), in the image too.
pub fn scratch_stage() -> Value {
    let mut v = scratch();
    v["config"]["Env"] = json!([format!("PATH={}", moor_build::resolve::DEFAULT_PATH)]);
    v
}

/// The image's `VOLUME`s so far, as paths relative to the root.
pub fn volumes(config: &Value) -> Vec<String> {
    config["config"]["Volumes"]
        .as_object()
        .map(|v| {
            v.keys()
                .map(|k| k.trim_matches('/').to_owned())
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The run section (`config`), created when missing.
fn run(config: &mut Value) -> &mut Map<String, Value> {
    if !config.get("config").is_some_and(Value::is_object) {
        config["config"] = json!({});
    }
    config["config"].as_object_mut().expect("an object")
}

/// A starting stage's config: the base's, its `OnBuild` consumed (the
/// triggers ran as the stage's first steps, as in Docker).
pub fn from_base(mut base: Value) -> Value {
    run(&mut base).remove("OnBuild");
    base
}

/// What a plan needs of an image config.
pub fn base_config(config: &Value) -> BaseConfig {
    let run = config.get("config");
    let strings = |key: &str| -> Vec<String> {
        run.and_then(|r| r.get(key))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    BaseConfig {
        env: strings("Env")
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv, String::new()),
            })
            .collect(),
        working_dir: run
            .and_then(|r| r.get("WorkingDir"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        shell: strings("Shell"),
        onbuild: strings("OnBuild"),
    }
}

/// The `USER` in effect.
pub fn user(config: &Value) -> String {
    config
        .get("config")
        .and_then(|r| r.get("User"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Sets `Env` to `env` (a full environment).
fn set_env(config: &mut Value, env: &[(String, String)]) {
    run(config).insert(
        "Env".into(),
        json!(
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        ),
    );
}

fn set_member(config: &mut Value, key: &str, names: &[String]) {
    let run = run(config);
    if !run.get(key).is_some_and(Value::is_object) {
        run.insert(key.into(), json!({}));
    }
    let set = run[key].as_object_mut().expect("an object");
    for n in names {
        set.insert(n.clone(), json!({}));
    }
}

/// Applies a config-only change.
pub fn apply(config: &mut Value, change: &ConfigChange) -> Result<(), BuildError> {
    match change {
        ConfigChange::Arg(_) => {}
        ConfigChange::Env(pairs) => {
            let mut env = base_config(config).env;
            for (k, v) in pairs {
                match env.iter_mut().find(|(ek, _)| ek == k) {
                    Some(e) => e.1 = v.clone(),
                    None => env.push((k.clone(), v.clone())),
                }
            }
            set_env(config, &env);
        }
        ConfigChange::Label(pairs) => {
            let run = run(config);
            if !run.get("Labels").is_some_and(Value::is_object) {
                run.insert("Labels".into(), json!({}));
            }
            let labels = run["Labels"].as_object_mut().expect("an object");
            for (k, v) in pairs {
                labels.insert(k.clone(), json!(v));
            }
        }
        ConfigChange::Cmd(argv) => {
            run(config).insert("Cmd".into(), json!(argv));
        }
        ConfigChange::Entrypoint { argv, keep_cmd } => {
            let run = run(config);
            run.insert("Entrypoint".into(), json!(argv));
            // A new ENTRYPOINT drops an inherited CMD, as in Docker, not
            // one the stage set before it.
            if !keep_cmd {
                run.insert("Cmd".into(), Value::Null);
            }
        }
        ConfigChange::Shell(argv) => {
            run(config).insert("Shell".into(), json!(argv));
        }
        ConfigChange::Expose(ports) => set_member(config, "ExposedPorts", ports),
        ConfigChange::Volume(paths) => set_member(config, "Volumes", paths),
        ConfigChange::User(u) => {
            run(config).insert("User".into(), json!(u));
        }
        ConfigChange::Stopsignal(s) => {
            run(config).insert("StopSignal".into(), json!(s));
        }
        ConfigChange::Healthcheck { test, options } => {
            let mut h = Map::new();
            h.insert("Test".into(), json!(test));
            for (k, v) in options {
                let key = match k.as_str() {
                    "interval" => "Interval",
                    "timeout" => "Timeout",
                    "start-period" => "StartPeriod",
                    "start-interval" => "StartInterval",
                    "retries" => {
                        let n: i64 = v.parse().map_err(|_| {
                            BuildError::Invalid(format!("HEALTHCHECK --retries={v}: not a number"))
                        })?;
                        h.insert("Retries".into(), json!(n));
                        continue;
                    }
                    _ => continue,
                };
                let d = moor_spec::units::parse_duration(v)
                    .map_err(|e| BuildError::Invalid(format!("HEALTHCHECK --{k}={v}: {e}")))?;
                h.insert(key.into(), json!(d.as_nanos() as u64));
            }
            run(config).insert("Healthcheck".into(), Value::Object(h));
        }
        ConfigChange::Onbuild(trigger) => {
            let run = run(config);
            let list = run.entry("OnBuild").or_insert_with(|| json!([]));
            if !list.is_array() {
                *list = json!([]);
            }
            list.as_array_mut().expect("an array").push(json!(trigger));
        }
        ConfigChange::Maintainer(m) => {
            config["author"] = json!(m);
        }
    }
    Ok(())
}

/// Sets `WorkingDir`.
pub fn set_workdir(config: &mut Value, dir: &str) {
    run(config).insert("WorkingDir".into(), json!(dir));
}

/// Appends a history entry; `empty_layer` for a step that added no layer.
pub fn history(config: &mut Value, created: &str, created_by: &str, empty_layer: bool) {
    if !config.get("history").is_some_and(Value::is_array) {
        config["history"] = json!([]);
    }
    let mut entry = json!({"created": created, "created_by": created_by});
    if empty_layer {
        entry["empty_layer"] = json!(true);
    }
    config["history"]
        .as_array_mut()
        .expect("an array")
        .push(entry);
}

/// Sets `rootfs.diff_ids` and `created`.
pub fn finish(config: &mut Value, diff_ids: &[String], created: &str) {
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    config["created"] = json!(created);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_land_where_docker_puts_them() {
        let mut c = scratch();
        apply(
            &mut c,
            &ConfigChange::Env(vec![("A".into(), "1".into()), ("B".into(), "2".into())]),
        )
        .unwrap();
        apply(&mut c, &ConfigChange::Env(vec![("A".into(), "3".into())])).unwrap();
        assert_eq!(c["config"]["Env"], json!(["A=3", "B=2"]));
        apply(&mut c, &ConfigChange::Expose(vec!["80/tcp".into()])).unwrap();
        apply(&mut c, &ConfigChange::Expose(vec!["53/udp".into()])).unwrap();
        assert_eq!(
            c["config"]["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}})
        );
        apply(&mut c, &ConfigChange::Cmd(vec!["a".into()])).unwrap();
        apply(
            &mut c,
            &ConfigChange::Entrypoint {
                argv: vec!["e".into()],
                keep_cmd: false,
            },
        )
        .unwrap();
        assert_eq!(c["config"]["Cmd"], Value::Null);
        apply(
            &mut c,
            &ConfigChange::Healthcheck {
                test: vec!["CMD-SHELL".into(), "true".into()],
                options: vec![
                    ("interval".into(), "5s".into()),
                    ("retries".into(), "3".into()),
                ],
            },
        )
        .unwrap();
        assert_eq!(
            c["config"]["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000u64, "Retries": 3})
        );
        apply(&mut c, &ConfigChange::Onbuild("RUN x".into())).unwrap();
        assert_eq!(from_base(c)["config"].get("OnBuild"), None);
    }
}
