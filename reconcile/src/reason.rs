//! Why a plan acts on a resource, or cannot: [`Reason`]. Code that needs
//! to know *why* matches the enum; people read its `Display`, which is the
//! text `moor plan`, `--json` (a string), `/status` and the logs show.

use std::fmt;

use moor_spec::{Kind, Protocol, RestartPolicy};
use serde::{Serialize, Serializer};

/// Why an [`crate::Action`] is planned, or why a resource is
/// [`crate::Blocked`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The resource is declared but not on the host.
    NotOnHost,
    /// The image is not in the image store (it is pulled).
    NotInImageStore,
    /// The image is not in the image store and may not be pulled.
    PullNever,
    /// What a built image is built from changed since it was built (or it
    /// was not built from these manifests).
    BuildChanged {
        /// What changed, for people (`build context changed: app.py`).
        changes: Vec<String>,
    },
    /// What an image is built from cannot be read (the Dockerfile does
    /// not parse, the context cannot be walked).
    BuildUnreadable {
        /// Why.
        message: String,
    },
    /// A `pull = "always"` image's tag points at another digest now.
    TagMoved {
        /// The digest the registry's tag points at.
        digest: String,
    },
    /// The spec differs from the one the resource was created from.
    SpecChanged {
        /// The fields that differ (`env.GREETING`, `ports`), when known.
        fields: Vec<String>,
    },
    /// The container's image has a new digest; its spec is unchanged.
    ImageChanged {
        /// The new digest.
        digest: String,
    },
    /// A container created but never started: an interrupted create.
    InterruptedCreate,
    /// The container's supervisor (its shim) is gone.
    SupervisorLost,
    /// What the runtime reports is wrong with the resource on the host.
    Fault {
        /// The runtime's description.
        message: String,
    },
    /// Networks the container is on are recreated.
    NetworkRecreated {
        /// Those networks.
        networks: Vec<String>,
    },
    /// A replacement that asked for `update_order = "start-first"` but is
    /// done stop-first.
    StopFirst {
        /// Why the container is replaced.
        reason: Box<Reason>,
        /// Why the two instances cannot run side by side.
        because: StopFirstCause,
    },
    /// An instance an interrupted start-first update left behind.
    Superseded {
        /// The id of the container that replaced it.
        by: String,
    },
    /// The container exited and its restart policy restarts it.
    Exited {
        /// Its exit code.
        code: i32,
        /// The policy that restarts it.
        restart: RestartPolicy,
    },
    /// The container exited non-zero and `restart = "no"` keeps it down.
    ExitedNoRestart {
        /// Its exit code.
        code: i32,
        /// The out-of-memory killer ended it.
        oom: bool,
    },
    /// The container exited and `restart = "on-failure:N"` gave up.
    GaveUp {
        /// Its exit code.
        code: i32,
        /// The policy's maximum number of restarts.
        max_retries: u32,
    },
    /// The manifests no longer declare the resource.
    NotInManifests,
    /// A volume the manifests no longer declare, removed on request
    /// (`down --volumes`).
    VolumesRemoved,
    /// A volume the manifests no longer declare, that said `prune = true`.
    Pruned,
    /// A replica beyond the resource's `replicas`.
    BeyondReplicas {
        /// The `[containers]` resource.
        resource: String,
        /// The replica's number.
        replica: u32,
        /// How many replicas the resource declares.
        replicas: u32,
    },
    /// Something else owns the name.
    NameTaken {
        /// The owning project, or `None` when moor did not create it.
        project: Option<String>,
    },
    /// An image, network or volume the container needs is blocked.
    DependencyBlocked {
        /// The kind of the dependency.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// A job the container waits for (`depends_on = "completed"`) did not
    /// complete.
    Job {
        /// The job's instance name.
        job: String,
        /// Why it holds the container back.
        state: JobState,
    },
}

/// Why a start-first replacement is done stop-first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopFirstCause {
    /// `network_mode = "host"`: both would bind the host's ports.
    HostNetwork,
    /// `network_mode = "container:NAME"`: both would bind in one namespace.
    SharedNamespace {
        /// The container whose namespace is shared.
        target: String,
    },
    /// A host port both instances publish.
    HostPort {
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
    },
    /// A fixed address both instances claim.
    Address {
        /// The address.
        ip: std::net::Ipv4Addr,
        /// On this network.
        network: String,
    },
}

/// Why a job holds back the containers that wait for it to complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// It exited non-zero.
    Exited {
        /// Its exit code.
        code: i32,
        /// Its restart policy runs it again.
        restarting: bool,
    },
    /// It is blocked itself.
    Blocked,
    /// It is not on the host.
    Missing,
}

impl Reason {
    /// True when the resource is replaced because its spec changed (rather
    /// than because the host drifted from it).
    pub fn is_spec_change(&self) -> bool {
        match self {
            Reason::SpecChanged { .. } | Reason::BuildChanged { .. } => true,
            Reason::StopFirst { reason, .. } => reason.is_spec_change(),
            _ => false,
        }
    }
}

/// The first 12 hex digits of a digest.
pub(crate) fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..12.min(hex.len())]
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotOnHost => f.write_str("not on the host"),
            Reason::NotInImageStore => f.write_str("not in the image store"),
            Reason::PullNever => f.write_str("not in the image store and pull = \"never\""),
            Reason::BuildChanged { changes } if changes.is_empty() => {
                f.write_str("build inputs changed")
            }
            Reason::BuildChanged { changes } => f.write_str(&changes.join("; ")),
            Reason::BuildUnreadable { message } => write!(f, "cannot build: {message}"),
            Reason::TagMoved { digest } => write!(f, "tag moved to {}", short(digest)),
            Reason::SpecChanged { fields } if fields.is_empty() => f.write_str("spec changed"),
            Reason::SpecChanged { fields } => write!(f, "spec changed: {}", fields.join(", ")),
            Reason::ImageChanged { digest } => write!(f, "image changed to {}", short(digest)),
            Reason::InterruptedCreate => {
                f.write_str("created but never started (an interrupted create); creating it again")
            }
            Reason::SupervisorLost => f.write_str("its supervisor is gone; state unknown"),
            Reason::Fault { message } => f.write_str(message),
            Reason::NetworkRecreated { networks } => {
                write!(f, "network {} is being recreated", networks.join(", "))
            }
            Reason::StopFirst { reason, because } => {
                write!(f, "{reason}; stop-first, as {because}")
            }
            Reason::Superseded { by } => write!(
                f,
                "superseded by {by} (left by an interrupted start-first update)"
            ),
            Reason::Exited { code, restart } => {
                let policy = match restart {
                    RestartPolicy::No => "no",
                    RestartPolicy::OnFailure { .. } => "on-failure",
                    RestartPolicy::Always => "always",
                    RestartPolicy::UnlessStopped => "unless-stopped",
                };
                write!(f, "exited {code}, restart = {policy}")
            }
            Reason::ExitedNoRestart { code, oom } => {
                let oom = if *oom { " (out of memory)" } else { "" };
                write!(f, "exited {code}{oom}; restart = \"no\"")
            }
            Reason::GaveUp { code, max_retries } => write!(
                f,
                "exited {code}; gave up after {max_retries} restarts (restart = on-failure:{max_retries})"
            ),
            Reason::NotInManifests => f.write_str("not in manifests"),
            Reason::VolumesRemoved => f.write_str("not in manifests, and volumes are removed"),
            Reason::Pruned => f.write_str("not in manifests, and it says prune = true"),
            Reason::BeyondReplicas {
                resource,
                replica,
                replicas,
            } => write!(
                f,
                "replica {replica} of {resource} is beyond replicas = {replicas}"
            ),
            Reason::NameTaken { project: Some(p) } => {
                write!(f, "the name is taken by project \"{p}\"")
            }
            Reason::NameTaken { project: None } => {
                f.write_str("the name is taken by something moor did not create")
            }
            Reason::DependencyBlocked { kind, name } => write!(f, "{kind} {name} is blocked"),
            Reason::Job { job, state } => match state {
                JobState::Exited {
                    code,
                    restarting: true,
                } => write!(f, "{job} exited {code}; waiting for its restart"),
                JobState::Exited { code, .. } => write!(f, "{job} exited {code}"),
                JobState::Blocked => write!(f, "{job} is blocked"),
                JobState::Missing => write!(f, "{job} is not on the host"),
            },
        }
    }
}

impl fmt::Display for StopFirstCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopFirstCause::HostNetwork => f.write_str(
                "network_mode = \"host\" would have both instances bind the host's ports",
            ),
            StopFirstCause::SharedNamespace { target } => write!(
                f,
                "network_mode = \"container:{target}\" would have both instances bind in one network namespace"
            ),
            StopFirstCause::HostPort { port, protocol } => write!(
                f,
                "host port {port}/{protocol} cannot be published by the old and the new instance at once"
            ),
            StopFirstCause::Address { ip, network } => write!(
                f,
                "address {ip} on network {network} cannot be held by the old and the new instance at once"
            ),
        }
    }
}

/// A reason is a string in JSON (`moor plan --json`): the text people read.
impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_what_people_read() {
        let cases: Vec<(Reason, &str)> = vec![
            (Reason::NotOnHost, "not on the host"),
            (
                Reason::TagMoved {
                    digest: format!("sha256:{}", "b".repeat(64)),
                },
                "tag moved to bbbbbbbbbbbb",
            ),
            (Reason::SpecChanged { fields: vec![] }, "spec changed"),
            (
                Reason::SpecChanged {
                    fields: vec!["env.A".into(), "ports".into()],
                },
                "spec changed: env.A, ports",
            ),
            (
                Reason::StopFirst {
                    reason: Box::new(Reason::SpecChanged {
                        fields: vec!["ports".into()],
                    }),
                    because: StopFirstCause::HostPort {
                        port: 8080,
                        protocol: Protocol::Tcp,
                    },
                },
                "spec changed: ports; stop-first, as host port 8080/tcp cannot be published by the old and the new instance at once",
            ),
            (
                Reason::Exited {
                    code: 3,
                    restart: RestartPolicy::OnFailure {
                        max_retries: Some(5),
                    },
                },
                "exited 3, restart = on-failure",
            ),
            (
                Reason::ExitedNoRestart {
                    code: 137,
                    oom: true,
                },
                "exited 137 (out of memory); restart = \"no\"",
            ),
            (
                Reason::DependencyBlocked {
                    kind: Kind::Network,
                    name: "back".into(),
                },
                "network back is blocked",
            ),
            (
                Reason::Job {
                    job: "migrate".into(),
                    state: JobState::Exited {
                        code: 1,
                        restarting: true,
                    },
                },
                "migrate exited 1; waiting for its restart",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(
                serde_json::to_value(&reason).unwrap(),
                serde_json::Value::String(text.into())
            );
        }
    }

    #[test]
    fn only_a_changed_spec_is_a_spec_change() {
        let spec = Reason::SpecChanged { fields: vec![] };
        assert!(spec.is_spec_change());
        assert!(
            Reason::StopFirst {
                reason: Box::new(spec),
                because: StopFirstCause::HostNetwork,
            }
            .is_spec_change()
        );
        let image = Reason::ImageChanged {
            digest: "sha256:ab".into(),
        };
        assert!(!image.is_spec_change());
        assert!(
            !Reason::StopFirst {
                reason: Box::new(image),
                because: StopFirstCause::HostNetwork,
            }
            .is_spec_change()
        );
        assert!(
            !Reason::Fault {
                message: "spec changed on the host".into()
            }
            .is_spec_change(),
            "a fault whose text starts like a spec change is drift"
        );
    }
}
