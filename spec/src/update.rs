//! Image updates (`[images.NAME] update = { interval, policy }`): the policy
//! as data and the pure decisions the agent makes with it — which tag a
//! `semver:` policy picks from a registry's tag list, and what a check
//! found. No I/O: the agent asks the registry, this decides.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The shortest interval between two checks of one image: a registry is
/// not to be hammered by a typo (`interval = "1ms"` is refused).
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// The longest interval accepted (a week).
pub const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The interval when `update` does not give one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// `update = { interval, policy }`: how the agent keeps an image current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSpec {
    /// Between two checks.
    pub interval: Duration,
    /// What a check looks for and does.
    pub policy: UpdatePolicy,
}

/// What an image update follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "range")]
pub enum UpdatePolicy {
    /// The tag's digest: a re-push (a new index for a multi-arch tag
    /// included) is pulled and the containers using it replaced.
    Digest,
    /// The highest tag in this semver range (`^1.4`), pulled and put in
    /// place of the written tag.
    Semver(String),
    /// Like `digest`, but only reported (`update_available`): nothing changes.
    Notify,
}

impl std::fmt::Display for UpdatePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdatePolicy::Digest => f.write_str("digest"),
            UpdatePolicy::Semver(r) => write!(f, "semver:{r}"),
            UpdatePolicy::Notify => f.write_str("notify"),
        }
    }
}

/// Parses `digest`, `notify` or `semver:RANGE` (the range as Cargo and
/// npm write it: `^1.4`, `~2.1`, `>=1.2, <2`).
pub fn parse_policy(s: &str) -> Result<UpdatePolicy, String> {
    match s.trim() {
        "digest" => Ok(UpdatePolicy::Digest),
        "notify" => Ok(UpdatePolicy::Notify),
        other => match other.strip_prefix("semver:") {
            Some(range) => {
                let range = range.trim();
                if range.is_empty() {
                    return Err("\"semver:\" needs a range, such as \"semver:^1.4\"".into());
                }
                semver::VersionReq::parse(range)
                    .map_err(|e| format!("\"{range}\" is not a semver range: {e}"))?;
                Ok(UpdatePolicy::Semver(range.to_string()))
            }
            None => Err(format!(
                "\"{other}\" is not one of digest, notify, semver:RANGE"
            )),
        },
    }
}

/// Checks an interval against [`MIN_INTERVAL`] and [`MAX_INTERVAL`].
pub fn check_interval(d: Duration) -> Result<Duration, String> {
    if d < MIN_INTERVAL {
        return Err(format!(
            "{d:?} is shorter than the shortest update interval, {MIN_INTERVAL:?} (a registry is not to be hammered)"
        ));
    }
    if d > MAX_INTERVAL {
        return Err(format!(
            "{d:?} is longer than the longest update interval, 7 days"
        ));
    }
    Ok(d)
}

/// A tag read as a version: `1.4.2`, or `v1.4.2` as Flux accepts it;
/// `1.4.2-alpine` reads as a pre-release. Anything else (`latest`, `1.4`,
/// build metadata, more than 128 characters) is `None`.
pub fn tag_version(tag: &str) -> Option<semver::Version> {
    // A tag is at most 128 characters; a registry listing a longer one is
    // not to be believed.
    if tag.len() > 128 {
        return None;
    }
    let t = tag.strip_prefix('v').unwrap_or(tag);
    // Build metadata cannot be written in a tag (`+` is not allowed there),
    // but a registry could still list one: it orders nothing, refuse it.
    if t.contains('+') {
        return None;
    }
    semver::Version::parse(t).ok()
}

/// The tag in `tags` with the highest version inside `range` (a range
/// [`parse_policy`] accepted); `None` when none is. Tags that are not
/// versions are ignored; of two tags naming the same version (`1.4.2` and
/// `v1.4.2`) the one without `v` wins. Pre-releases match only as the
/// range allows them (a range naming `1.5.0-rc.1` admits `1.5.0-rc.2`).
pub fn pick_tag<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    range: &str,
) -> Result<Option<&'a str>, String> {
    let req = semver::VersionReq::parse(range)
        .map_err(|e| format!("\"{range}\" is not a semver range: {e}"))?;
    let mut best: Option<(semver::Version, &'a str)> = None;
    for tag in tags {
        let Some(v) = tag_version(tag) else { continue };
        if !req.matches(&v) {
            continue;
        }
        let better = match &best {
            None => true,
            Some((bv, bt)) => v > *bv || (v == *bv && bt.starts_with('v') && !tag.starts_with('v')),
        };
        if better {
            best = Some((v, tag));
        }
    }
    Ok(best.map(|(_, t)| t))
}

/// What an image update should do, given what the last check recorded and
/// what the registry says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing moved.
    Unchanged,
    /// The first check: record the digest in place (no container changes).
    Adopt,
    /// A new digest (or tag): pin it and replace the containers.
    Update,
    /// A new digest (or tag) under `notify`: report, change nothing.
    Notify,
}

/// Decides from the digest in force (`current`: the pinned digest, or the
/// local image's when nothing is pinned yet; `None` when neither is known)
/// and the one the registry resolved now.
pub fn decide(policy: &UpdatePolicy, current: Option<&str>, remote: &str) -> Decision {
    match current {
        Some(c) if c == remote => Decision::Unchanged,
        None if *policy != UpdatePolicy::Notify => Decision::Adopt,
        None => Decision::Unchanged,
        Some(_) if *policy == UpdatePolicy::Notify => Decision::Notify,
        Some(_) => Decision::Update,
    }
}

/// What one check of an image means, and the `tag@digest` in force it was
/// judged against (`None`: none known). `pinned` is the pin in force
/// (`tag@digest`), `local` the digest of the image in the store under the
/// reference as written, `written` the tag as written, and the registry
/// offers `tag@digest`. With nothing pinned, the image in the store being
/// the very one the registry offers is adopted as it is (pinned, nothing
/// replaced), whether the check came before the first pull or after it:
/// the first check adopts what runs, even when the tag it was found under
/// is not the one written (`1` written, `1.4.2` picked). `notify` adopts
/// nothing.
pub fn judge(
    policy: &UpdatePolicy,
    pinned: Option<&str>,
    local: Option<&str>,
    written: &str,
    tag: &str,
    digest: &str,
) -> (Decision, Option<String>) {
    let current = match pinned {
        Some(p) => Some(p.to_string()),
        None => local.map(|d| format!("{written}@{d}")),
    };
    let adopt = pinned.is_none() && *policy != UpdatePolicy::Notify && local == Some(digest);
    let decision = if adopt {
        Decision::Adopt
    } else {
        decide(policy, current.as_deref(), &format!("{tag}@{digest}"))
    };
    (decision, current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_check_adopts_what_runs_and_later_ones_update() {
        let semver = UpdatePolicy::Semver("^1".into());
        let judged = |policy: &UpdatePolicy, pinned, local| {
            judge(policy, pinned, local, "1", "1.4.2", "sha256:b").0
        };
        // Nothing pinned, and the store holds what the registry offers
        // (under another tag than the one written): adopted.
        assert_eq!(judged(&semver, None, Some("sha256:b")), Decision::Adopt);
        assert_eq!(
            judged(&UpdatePolicy::Digest, None, Some("sha256:b")),
            Decision::Adopt
        );
        // Nothing pinned and nothing in the store yet: adopted too.
        assert_eq!(judged(&semver, None, None), Decision::Adopt);
        // Nothing pinned, but the store holds another image: updated.
        assert_eq!(judged(&semver, None, Some("sha256:a")), Decision::Update);
        // A pin: kept while the registry offers it, replaced after.
        assert_eq!(
            judged(&semver, Some("1.4.2@sha256:b"), Some("sha256:a")),
            Decision::Unchanged
        );
        assert_eq!(
            judged(&semver, Some("1.4.1@sha256:a"), Some("sha256:b")),
            Decision::Update
        );
        // notify adopts nothing and replaces nothing.
        let notify = UpdatePolicy::Notify;
        assert_eq!(judged(&notify, None, None), Decision::Unchanged);
        assert_eq!(
            judged(&notify, Some("1.4.1@sha256:a"), None),
            Decision::Notify
        );
        assert_eq!(
            judge(
                &notify,
                None,
                Some("sha256:b"),
                "1.4.2",
                "1.4.2",
                "sha256:b"
            )
            .0,
            Decision::Unchanged
        );
        // What the decision was judged against.
        assert_eq!(
            judge(&semver, None, Some("sha256:a"), "1", "1.4.2", "sha256:b")
                .1
                .as_deref(),
            Some("1@sha256:a")
        );
        assert_eq!(
            judge(
                &semver,
                Some("1.4.1@sha256:a"),
                None,
                "1",
                "1.4.2",
                "sha256:b"
            )
            .1
            .as_deref(),
            Some("1.4.1@sha256:a")
        );
    }

    #[test]
    fn policies_parse_and_bad_ones_say_why() {
        assert_eq!(parse_policy("digest"), Ok(UpdatePolicy::Digest));
        assert_eq!(parse_policy("notify"), Ok(UpdatePolicy::Notify));
        assert_eq!(
            parse_policy("semver:^1.4"),
            Ok(UpdatePolicy::Semver("^1.4".into()))
        );
        assert_eq!(
            parse_policy("semver: >=1.2, <2"),
            Ok(UpdatePolicy::Semver(">=1.2, <2".into()))
        );
        assert!(
            parse_policy("semver:")
                .unwrap_err()
                .contains("needs a range")
        );
        assert!(
            parse_policy("semver:^1.x.y.z")
                .unwrap_err()
                .contains("not a semver range")
        );
        assert!(parse_policy("latest").unwrap_err().contains("not one of"));
        assert!(parse_policy("").unwrap_err().contains("not one of"));
        assert_eq!(
            UpdatePolicy::Semver("^1.4".into()).to_string(),
            "semver:^1.4"
        );
    }

    #[test]
    fn intervals_have_a_floor_and_a_ceiling() {
        assert!(check_interval(Duration::ZERO).is_err());
        assert!(check_interval(Duration::from_millis(1)).is_err());
        assert!(check_interval(Duration::from_secs(9)).is_err());
        assert_eq!(check_interval(MIN_INTERVAL), Ok(Duration::from_secs(10)));
        assert!(check_interval(Duration::from_secs(3600)).is_ok());
        assert!(check_interval(MAX_INTERVAL).is_ok());
        assert!(check_interval(MAX_INTERVAL + Duration::from_secs(1)).is_err());
        assert!(check_interval(Duration::MAX).is_err());
    }

    #[test]
    fn semver_picks_the_highest_tag_in_range() {
        let tags = ["1.4.0", "1.4.2", "1.10.0", "2.0.0", "latest", "v1.5.0"];
        assert_eq!(pick_tag(tags, "^1.4"), Ok(Some("1.10.0")));
        assert_eq!(pick_tag(tags, "~1.4"), Ok(Some("1.4.2")));
        assert_eq!(pick_tag(tags, ">=1.5, <1.6"), Ok(Some("v1.5.0")));
        assert_eq!(pick_tag(tags, "^2"), Ok(Some("2.0.0")));
        assert_eq!(pick_tag(tags, "^3"), Ok(None));
        assert_eq!(pick_tag([], "^1"), Ok(None));
        assert!(pick_tag(tags, "not a range").is_err());
    }

    #[test]
    fn what_is_not_a_version_is_ignored() {
        let tags = [
            "latest",
            "1.4",
            "1",
            "01.4.9",
            "1.4.9.1",
            "V1.4.8",
            "vv1.4.7",
            "1.4.6+build",
            "",
            "1.4.5 ",
            "1.4.1",
        ];
        assert_eq!(pick_tag(tags, "^1.4"), Ok(Some("1.4.1")));
        assert_eq!(tag_version("v1.2.3"), Some(semver::Version::new(1, 2, 3)));
        assert_eq!(tag_version("latest"), None);
        let long = format!("1.9.9-{}", "b".repeat(200));
        assert_eq!(pick_tag([long.as_str()], ">=1.9.9-a"), Ok(None));
        assert_eq!(pick_tag(["1.9.9-b"], ">=1.9.9-a"), Ok(Some("1.9.9-b")));
    }

    #[test]
    fn pre_releases_only_when_the_range_asks() {
        let tags = ["1.4.0", "1.5.0-rc.1", "1.5.0-rc.2"];
        assert_eq!(pick_tag(tags, "^1.4"), Ok(Some("1.4.0")));
        assert_eq!(pick_tag(tags, ">=1.5.0-rc.1"), Ok(Some("1.5.0-rc.2")));
    }

    #[test]
    fn the_same_version_prefers_the_tag_without_v() {
        assert_eq!(pick_tag(["v1.4.2", "1.4.2"], "^1"), Ok(Some("1.4.2")));
        assert_eq!(pick_tag(["1.4.2", "v1.4.2"], "^1"), Ok(Some("1.4.2")));
    }

    #[test]
    fn decisions() {
        let d = UpdatePolicy::Digest;
        let n = UpdatePolicy::Notify;
        assert_eq!(
            decide(&d, Some("sha256:a"), "sha256:a"),
            Decision::Unchanged
        );
        assert_eq!(decide(&d, Some("sha256:a"), "sha256:b"), Decision::Update);
        assert_eq!(decide(&d, None, "sha256:b"), Decision::Adopt);
        assert_eq!(decide(&n, Some("sha256:a"), "sha256:b"), Decision::Notify);
        assert_eq!(
            decide(&n, Some("sha256:a"), "sha256:a"),
            Decision::Unchanged
        );
        assert_eq!(decide(&n, None, "sha256:b"), Decision::Unchanged);
        let s = UpdatePolicy::Semver("^1".into());
        assert_eq!(decide(&s, Some("sha256:a"), "sha256:b"), Decision::Update);
    }

    /// Loads `m.toml` holding `toml` from a fresh directory.
    fn load(toml: &str) -> Result<crate::DesiredState, String> {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("app")).unwrap();
        std::fs::write(tmp.path().join("app/Dockerfile"), "FROM busybox\n").unwrap();
        std::fs::write(tmp.path().join("m.toml"), toml).unwrap();
        crate::load::load(&[tmp.path()]).map_err(|d| d.to_string())
    }

    #[test]
    fn manifests_declare_updates() {
        let state = load(
            "[images.a]\nref = \"localhost:5000/app:1.4.0\"\n\
             update = { interval = \"90s\", policy = \"semver:^1.4\" }\n\
             [images.b]\nref = \"localhost:5000/b\"\nupdate = {}\n\
             [images.c]\nref = \"localhost:5000/c:x\"\n",
        )
        .unwrap();
        assert_eq!(
            state.images["a"].spec.update,
            Some(UpdateSpec {
                interval: Duration::from_secs(90),
                policy: UpdatePolicy::Semver("^1.4".into()),
            })
        );
        assert_eq!(
            state.images["b"].spec.update,
            Some(UpdateSpec {
                interval: DEFAULT_INTERVAL,
                policy: UpdatePolicy::Digest,
            })
        );
        assert_eq!(state.images["c"].spec.update, None);
        // An image without `update` hashes as it did before `update` existed.
        assert_eq!(
            serde_json::to_string(&state.images["c"].spec).unwrap(),
            "{\"reference\":\"localhost:5000/c:x\",\"pull\":\"if-not-present\"}"
        );
    }

    #[test]
    fn the_yaml_spelling_means_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("m.yaml"),
            "images:\n  a:\n    ref: localhost:5000/app:1.4.0\n    update: {interval: 2m, policy: \"semver:~1.4\"}\n",
        )
        .unwrap();
        let state = crate::load::load(&[tmp.path()]).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            state.images["a"].spec.update,
            Some(UpdateSpec {
                interval: Duration::from_secs(120),
                policy: UpdatePolicy::Semver("~1.4".into()),
            })
        );
        std::fs::write(
            tmp.path().join("m.yaml"),
            "images:\n  a:\n    ref: localhost:5000/app:1\n    update:\n      interval: 1s\n",
        )
        .unwrap();
        let err = crate::load::load(&[tmp.path()]).unwrap_err().to_string();
        assert!(
            err.contains("m.yaml:5:17: error: images.a.update.interval: 1s is shorter"),
            "{err}"
        );
    }

    #[test]
    fn hostile_and_contradictory_updates_are_refused_with_their_place() {
        let cases = [
            (
                "update = { interval = \"1ms\" }",
                "m.toml:3:23: error: images.a.update.interval: 1ms is shorter than the shortest update interval",
            ),
            (
                "update = { interval = \"0\" }",
                "images.a.update.interval: 0ns is shorter",
            ),
            (
                "update = { interval = \"9999999h\" }",
                "images.a.update.interval: ",
            ),
            (
                "update = { interval = 5 }",
                "images.a.update.interval: a duration needs a unit",
            ),
            (
                "update = { policy = \"latest\" }",
                "images.a.update.policy: \"latest\" is not one of digest, notify, semver:RANGE",
            ),
            (
                "update = { policy = \"semver:banana\" }",
                "images.a.update.policy: \"banana\" is not a semver range",
            ),
            (
                "update = { policy = \"digest\", every = \"1h\" }",
                "images.a.update.every: unknown field; did you mean \"interval\"?",
            ),
            ("update = \"1h\"", "images.a.update: expected a table"),
            (
                "update = {}\npull = \"never\"",
                "images.a.update: pull = \"never\" forbids the pulls an update makes",
            ),
            (
                "update = {}\nbuild = \"app\"",
                "images.a.update: a built image has no registry to update from",
            ),
        ];
        for (extra, want) in cases {
            let toml = format!("[images.a]\nref = \"localhost:5000/app:1\"\n{extra}\n");
            let err = load(&toml).expect_err(extra);
            assert!(err.contains(want), "{extra}: {err}");
        }
        let pinned = format!(
            "[images.a]\nref = \"localhost:5000/app:1@sha256:{}\"\nupdate = {{}}\n",
            "a".repeat(64)
        );
        let err = load(&pinned).unwrap_err();
        assert!(
            err.contains("images.a.update: ")
                && err.contains("is pinned by digest and never moves"),
            "{err}"
        );
    }
}
