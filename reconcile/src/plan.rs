//! A plan: what must change on the host, as plain data, each action with its reason.

use std::fmt;
use std::time::Duration;

use moor_spec::Kind;
use serde::{Deserialize, Serialize};

use crate::reason::Reason;

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Fetch an image.
    Pull,
    /// Build an image from its Dockerfile.
    Build,
    /// Create (and, for a container, start) something that is missing.
    Create,
    /// Remove and create again, because its spec changed or it is broken.
    Replace,
    /// Start a stopped container.
    Start,
    /// Stop a running container.
    Stop,
    /// Remove something the manifests no longer declare.
    Remove,
}

impl Verb {
    /// The verb as a word.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Pull => "pull",
            Verb::Build => "build",
            Verb::Create => "create",
            Verb::Replace => "replace",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Remove => "remove",
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Verb::Pull => "↓",
            Verb::Build => "*",
            Verb::Create => "+",
            Verb::Replace => "-/+",
            Verb::Start => "▶",
            Verb::Stop => "■",
            Verb::Remove => "-",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// The kind of resource.
    pub kind: Kind,
    /// The resource's name on the host: an image reference, a network or
    /// volume name, or a container instance name (`web`, `web-2`).
    pub name: String,
    /// What to do.
    pub verb: Verb,
    /// Why: shown as "spec changed: env.GREETING", "not in manifests"
    /// (a string in JSON).
    pub reason: Reason,
    /// For a replaced container: start the new instance, wait until it runs
    /// (and is healthy, when it has a health check), then remove the old one
    /// (`update_order = "start-first"`). Otherwise the old one goes first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_first: bool,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let symbol = if self.start_first {
            "+/-"
        } else {
            self.verb.symbol()
        };
        write!(
            f,
            "{:>3} {} {} ({})",
            symbol, self.kind, self.name, self.reason
        )
    }
}

/// A resource the plan cannot change, and why (the resource's condition is `Failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// The kind of resource.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Why nothing can be done.
    pub reason: Reason,
}

/// The result of a diff: the actions to take, in no particular order (apply
/// orders them by dependency), what is blocked, and when to look again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The changes.
    pub actions: Vec<Action>,
    /// Resources that cannot be reconciled as things stand.
    pub blocked: Vec<Blocked>,
    /// A change that is due later (a restart waiting out its crash-loop backoff).
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// True when nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Actions of one verb.
    pub fn count(&self, verb: Verb) -> usize {
        self.actions.iter().filter(|a| a.verb == verb).count()
    }

    /// Finds the action on one resource.
    pub fn find(&self, kind: Kind, name: &str) -> Option<&Action> {
        self.actions
            .iter()
            .find(|a| a.kind == kind && a.name == name)
    }

    pub(crate) fn push(&mut self, kind: Kind, name: impl Into<String>, verb: Verb, reason: Reason) {
        self.actions.push(Action {
            kind,
            name: name.into(),
            verb,
            reason,
            start_first: false,
        });
    }

    /// Adds the start-first replacement of container instance `name`.
    pub(crate) fn push_start_first(&mut self, name: impl Into<String>, reason: Reason) {
        self.push(Kind::Container, name, Verb::Replace, reason);
        if let Some(a) = self.actions.last_mut() {
            a.start_first = true;
        }
    }

    pub(crate) fn block(&mut self, kind: Kind, name: impl Into<String>, reason: Reason) {
        self.blocked.push(Blocked {
            kind,
            name: name.into(),
            reason,
        });
    }

    pub(crate) fn requeue(&mut self, after: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(after, |d| d.min(after)));
    }

    /// Sorts actions for display: by kind in creation order, then name.
    pub(crate) fn sort(&mut self) {
        self.actions
            .sort_by(|a, b| (a.kind, &a.name, a.verb).cmp(&(b.kind, &b.name, b.verb)));
        self.blocked
            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.actions.is_empty() && self.blocked.is_empty() {
            return writeln!(f, "No changes. The host matches the manifests.");
        }
        for a in &self.actions {
            writeln!(f, "{a}")?;
        }
        for b in &self.blocked {
            writeln!(f, "  ! {} {} (blocked: {})", b.kind, b.name, b.reason)?;
        }
        let n = |v| self.count(v);
        let built = match n(Verb::Build) {
            0 => String::new(),
            b => format!("{b} to build, "),
        };
        writeln!(
            f,
            "\nPlan: {built}{} to pull, {} to create, {} to replace, {} to start, {} to stop, {} to remove.",
            n(Verb::Pull),
            n(Verb::Create),
            n(Verb::Replace),
            n(Verb::Start),
            n(Verb::Stop),
            n(Verb::Remove)
        )
    }
}
