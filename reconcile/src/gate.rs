//! Which of a plan's actions a source may carry out: [`gate`]. Pure data in,
//! pure data out; the controller calls it between `diff` and `apply`.
//!
//! - `drift = "correct"` (the default) applies everything.
//! - `drift = "report"` holds back *drift*: an action on a resource that was
//!   in place and whose spec did not change (a container removed or its
//!   supervisor killed by hand, a deleted network). Restarts under a
//!   container's `restart` policy are its spec, not drift, and still happen;
//!   so does every change that comes from the source.
//! - `mode = "plan"` applies nothing: every action is held and shown.

use std::collections::BTreeSet;

use moor_spec::Kind;
use serde::Serialize;

use crate::plan::{Action, Verb};
use crate::reason::Reason;

/// What a source does with drift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Put the host back as the manifests say.
    #[default]
    Correct,
    /// Report drift (status, metrics) and leave it.
    Report,
}

/// Whether a source changes the host at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// Apply its plans.
    #[default]
    Apply,
    /// Only plan: never change the host, show what would be done.
    Plan,
}

/// A plan's actions, sorted by what happens to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gated {
    /// Carried out now.
    pub apply: Vec<Action>,
    /// Drift left alone (`drift = "report"`), also listed in `held` in plan mode.
    pub drifted: Vec<Action>,
    /// Not carried out because the source only plans (`mode = "plan"`).
    pub held: Vec<Action>,
}

/// Whether `action` corrects drift: the resource was in place (`in_place`
/// holds `(kind, name)` of what a pass found matching its spec), the action
/// is not a removal, and neither the spec nor a restart policy asks for it.
pub fn is_drift(action: &Action, in_place: &BTreeSet<(Kind, String)>) -> bool {
    action.verb != Verb::Remove
        && !action.reason.is_spec_change()
        && !matches!(
            action.reason,
            Reason::Exited { .. }
                | Reason::ImageChanged { .. }
                | Reason::TagMoved { .. }
                | Reason::Superseded { .. }
        )
        && in_place.contains(&(action.kind, action.name.clone()))
}

/// Sorts `actions` into what runs, what is drift left alone and what is
/// only planned.
pub fn gate(
    actions: Vec<Action>,
    in_place: &BTreeSet<(Kind, String)>,
    drift: DriftMode,
    mode: SourceMode,
) -> Gated {
    let mut out = Gated::default();
    for a in actions {
        let drifted = is_drift(&a, in_place);
        if drifted && (drift == DriftMode::Report || mode == SourceMode::Plan) {
            out.drifted.push(a.clone());
        }
        match mode {
            SourceMode::Plan => out.held.push(a),
            SourceMode::Apply if drifted && drift == DriftMode::Report => {}
            SourceMode::Apply => out.apply.push(a),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(kind: Kind, name: &str, verb: Verb, reason: Reason) -> Action {
        Action {
            kind,
            name: name.into(),
            verb,
            reason,
            start_first: false,
        }
    }

    fn in_place(keys: &[(Kind, &str)]) -> BTreeSet<(Kind, String)> {
        keys.iter().map(|(k, n)| (*k, n.to_string())).collect()
    }

    #[test]
    fn report_holds_drift_and_applies_source_changes() {
        let known = in_place(&[
            (Kind::Container, "web"),
            (Kind::Container, "db"),
            (Kind::Network, "front"),
            (Kind::Container, "worker"),
        ]);
        let removed_by_hand = action(Kind::Container, "web", Verb::Create, Reason::NotOnHost);
        let bridge_gone = action(
            Kind::Network,
            "front",
            Verb::Replace,
            Reason::Fault {
                message: "bridge missing".into(),
            },
        );
        let changed = action(
            Kind::Container,
            "db",
            Verb::Replace,
            Reason::SpecChanged {
                fields: vec!["env.A".into()],
            },
        );
        let new = action(Kind::Container, "cache", Verb::Create, Reason::NotOnHost);
        let restart = action(
            Kind::Container,
            "worker",
            Verb::Start,
            Reason::Exited {
                code: 1,
                restart: moor_spec::RestartPolicy::Always,
            },
        );
        let all = vec![
            removed_by_hand.clone(),
            bridge_gone.clone(),
            changed.clone(),
            new.clone(),
            restart.clone(),
        ];
        let g = gate(all.clone(), &known, DriftMode::Report, SourceMode::Apply);
        assert_eq!(g.apply, vec![changed, new, restart]);
        assert_eq!(g.drifted, vec![removed_by_hand, bridge_gone]);
        assert!(g.held.is_empty());

        // Correct mode applies all of it and reports nothing.
        let g = gate(all.clone(), &known, DriftMode::Correct, SourceMode::Apply);
        assert_eq!(g.apply, all);
        assert!(g.drifted.is_empty() && g.held.is_empty());
    }

    #[test]
    fn plan_mode_applies_nothing() {
        let known = in_place(&[(Kind::Network, "front")]);
        let all = vec![
            action(Kind::Container, "web", Verb::Create, Reason::NotOnHost),
            action(
                Kind::Network,
                "front",
                Verb::Replace,
                Reason::Fault {
                    message: "bridge missing".into(),
                },
            ),
            action(Kind::Volume, "old", Verb::Remove, Reason::Pruned),
        ];
        for drift in [DriftMode::Correct, DriftMode::Report] {
            let g = gate(all.clone(), &known, drift, SourceMode::Plan);
            assert!(g.apply.is_empty(), "{drift:?}");
            assert_eq!(g.held, all);
            assert_eq!(g.drifted, vec![all[1].clone()]);
        }
    }

    #[test]
    fn a_resource_never_in_place_is_not_drift() {
        let a = action(Kind::Container, "web", Verb::Create, Reason::NotOnHost);
        assert!(!is_drift(&a, &BTreeSet::new()));
        assert!(is_drift(&a, &in_place(&[(Kind::Container, "web")])));
        // Removing what the manifests dropped is never drift.
        let r = action(Kind::Container, "web", Verb::Remove, Reason::NotInManifests);
        assert!(!is_drift(&r, &in_place(&[(Kind::Container, "web")])));
    }
}
