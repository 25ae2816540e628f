//! Command-line arguments: clap types only, one file per verb (as youki's
//! `liboci-cli`), groups several verbs share in `common`. What a verb does
//! is in `cmd/`, which takes these types as its input; nothing here names
//! it.

mod agent;
mod apply;
mod build;
mod commit;
mod common;
mod convert;
mod cp;
mod dev;
mod down;
mod exec;
mod export;
mod history;
mod image;
mod image_history;
mod image_inspect;
mod image_save;
mod image_tag;
mod images;
mod inspect;
mod lifecycle;
mod lists;
mod logs;
mod plan;
mod ps;
mod reconcile;
mod rollback;
mod stats;
mod status;
mod suspend;
mod top;
mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use agent::AgentArgs;
pub use apply::ApplyArgs;
pub use build::{BuildArgs, BuildNetwork, BuildProgress, BuilderArgs, BuilderCommand};
pub use commit::{CommitArgs, DiffArgs};
pub use common::{HostArgs, ProjectArgs};
pub use convert::{ConvertArgs, ConvertTo};
pub use cp::CpArgs;
pub use dev::{DevCommand, DevRunArgs};
pub use down::DownArgs;
pub use exec::ExecArgs;
pub use export::{ExportArgs, ExportCommand, KubernetesArgs, ServiceTypeArg};
pub use history::HistoryArgs;
pub use image::{ImageArgs, ImageCommand, LimitArgs};
pub use image_history::ImageHistoryArgs;
pub use image_inspect::ImageInspectArgs;
pub use image_save::ImageSaveArgs;
pub use image_tag::ImageTagArgs;
pub use images::ImagesArgs;
pub use inspect::InspectArgs;
pub use lifecycle::{NamesArgs, StopArgs};
pub use lists::ListArgs;
pub use logs::LogsArgs;
pub use plan::PlanArgs;
pub use ps::PsArgs;
pub use reconcile::ReconcileArgs;
pub use rollback::RollbackArgs;
pub use stats::StatsArgs;
pub use status::StatusArgs;
pub use suspend::SuspendArgs;
pub use top::TopArgs;
pub use validate::ValidateArgs;

/// A declarative, GitOps-style agent and container engine: keeps a host's
/// images, networks, volumes and containers exactly as its manifests say.
#[derive(Debug, Parser)]
#[command(name = "moor", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Where moor keeps its state (images, containers, leases).
    #[arg(
        long,
        global = true,
        env = "MOOR_STATE_DIR",
        default_value = "/var/lib/moor",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,

    /// How diagnostics are written to stderr (`MOOR_LOG` sets the level).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "MOOR_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: crate::logging::LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the agent's arguments does not matter.
#[allow(clippy::large_enum_variant)]
//
// `defer`: only the subcommand given is built (its arguments, and any
// subcommands under it), not all of them: a fifth of the time clap took in
// a no-op `moor apply`. A deferred subcommand's argument struct is built
// after the variant, so a doc comment on the struct would replace the
// variant's in `--help`: the structs and nested subcommand enums carry
// `//` comments, and `cli::tests` holds every help text to its variant.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Check manifests: exit 0 when valid, 1 with a diagnostic per problem.
    Validate(ValidateArgs),
    /// Show what apply would change: exit 0 no changes, 2 changes, 1 error.
    Plan(PlanArgs),
    /// Make the host match the manifests once, and wait until it does.
    Apply(ApplyArgs),
    /// Print the manifests as one manifest in moor's TOML or YAML, or as a Compose file.
    Convert(ConvertArgs),
    /// Write the manifests as objects of another system (Kubernetes).
    Export(ExportArgs),
    /// Remove what a project created (volumes only with --volumes).
    Down(DownArgs),
    /// Run the agent: watch a manifest directory and reconcile forever.
    Agent(AgentArgs),
    /// Ask the running agent: sources, revisions, desired against observed state.
    Status(StatusArgs),
    /// Ask the running agent to stop applying a source: neither its changes
    /// nor drift correction, until `moor resume` (survives agent restarts).
    Suspend(SuspendArgs),
    /// Ask the running agent to apply a suspended source again.
    Resume(SuspendArgs),
    /// Ask the running agent to reconcile a source now (`--fetch`: fetch it
    /// first) and wait for the pass; corrects drift `drift = "report"` left.
    Reconcile(ReconcileArgs),
    /// Ask the running agent to put an earlier healthy revision of a source
    /// back in force (the one in force is not applied again until the
    /// source moves).
    Rollback(RollbackArgs),
    /// List a source's revisions with their outcome, time and what changed.
    History(HistoryArgs),
    /// List containers: running ones, or all with `--all`.
    Ps(PsArgs),
    /// Show a container's logs.
    Logs(LogsArgs),
    /// List images.
    Images(ImagesArgs),
    /// List networks.
    Networks(ListArgs),
    /// List volumes.
    Volumes(ListArgs),
    /// Show a container in detail, as JSON.
    Inspect(InspectArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Show the processes of a container.
    Top(TopArgs),
    /// Show containers' CPU, memory, network and disk use, live.
    Stats(StatsArgs),
    /// Copy files between a container and the host (`NAME:PATH` names the
    /// container's side; `-` is a tar stream on stdin or stdout).
    Cp(CpArgs),
    /// Stop containers on purpose: the agent leaves them stopped until
    /// `moor start` or a change of their spec.
    Stop(StopArgs),
    /// Start stopped containers.
    Start(NamesArgs),
    /// Stop and start containers.
    Restart(StopArgs),
    /// Freeze every process of containers.
    Pause(NamesArgs),
    /// Thaw paused containers.
    Unpause(NamesArgs),
    /// The state dir's DNS resolver (started by moor itself).
    #[command(hide = true)]
    Dns,
    /// Developer commands that drive the container engine directly.
    #[command(hide = true, subcommand)]
    Dev(DevCommand),
    /// Manage images: pull, import, tag, inspect, history, save, rm, prune.
    Image(ImageArgs),
    /// Build an image from a Dockerfile on moor's own engine.
    Build(BuildArgs),
    /// Manage the build cache: prune.
    Builder(BuilderArgs),
    /// Make an image of a container's changes (its image's layers and one
    /// more), as `docker commit`.
    Commit(CommitArgs),
    /// List what a container changed in its root filesystem: `A` added,
    /// `C` changed, `D` deleted, as `docker diff`.
    Diff(DiffArgs),
}

impl Command {
    /// Commands that print a listing or a document and exit, whose reader
    /// may stop early (`| head`, `| grep -q`).
    pub fn prints_for_a_pipe(&self) -> bool {
        matches!(
            self,
            Command::Validate(_)
                | Command::Plan(_)
                | Command::Convert(_)
                | Command::Export(_)
                | Command::Status(_)
                | Command::Ps(_)
                | Command::Logs(_)
                | Command::Images(_)
                | Command::Networks(_)
                | Command::Volumes(_)
                | Command::Inspect(_)
                | Command::Top(_)
                | Command::Stats(_)
                | Command::Diff(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory, Parser};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("moor").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Subcommands are deferred (see [`Command`]): what `--help` says of
    /// one once it is built is what its variant says, not the doc comment
    /// of its argument struct.
    #[test]
    fn a_built_subcommand_says_what_its_variant_says() {
        let abouts = |cmd: &clap::Command| -> Vec<(String, Option<String>)> {
            cmd.get_subcommands()
                .filter(|c| c.get_name() != "help")
                .map(|c| (c.get_name().into(), c.get_about().map(|a| a.to_string())))
                .collect()
        };
        let unbuilt = abouts(&Cli::command());
        let mut built = Cli::command();
        built.build();
        assert_eq!(abouts(&built), unbuilt);
        assert!(unbuilt.len() > 30 && unbuilt.iter().all(|(_, about)| about.is_some()));
    }

    #[test]
    fn every_verb_parses_values_with_moor_spec() {
        let cli = parse(&["image", "import", "f.tar", "--max-layer-size", "64m"]).expect("valid");
        let Command::Image(ImageArgs {
            command: ImageCommand::Import { limits, .. },
        }) = cli.command
        else {
            panic!("not image import: {:?}", cli.command);
        };
        assert_eq!(limits.max_layer_size, Some(64 << 20));
        assert!(parse(&["image", "import", "f.tar", "--max-layer-size", "lots"]).is_err());

        let cli =
            parse(&["agent", "--resync", "1m30s", "--max-manifest-size", "8m"]).expect("valid");
        let Command::Agent(a) = cli.command else {
            panic!("not agent");
        };
        assert_eq!(a.resync, Some(Duration::from_secs(90)));
        assert_eq!(a.host.max_manifest_size, Some(8 << 20));

        // The agent takes the host flags of validate, plan and apply, with
        // the same parsers.
        for verb in [
            &["validate", "d"][..],
            &["plan", "d"],
            &["apply", "d"],
            &["agent"],
        ] {
            for (flag, value, says) in [
                ("--host-label", "role", "must look like KEY=VALUE"),
                ("--host-label", "ro le=db", "label key \"ro le\""),
                ("--host-name", "edge-*", "contains '*'"),
                ("--max-manifest-size", "lots", "size \"lots\""),
            ] {
                let mut args = verb.to_vec();
                args.extend([flag, value]);
                let e = parse(&args).expect_err(value).to_string();
                assert!(e.contains(says), "{args:?}: {e}");
            }
            let mut args = verb.to_vec();
            args.extend(["--host-name", "db-1", "--host-label", "role=db"]);
            assert!(parse(&args).is_ok(), "{args:?}");
            // --age-key-file: the keys of SOPS-encrypted files.
            let mut args = verb.to_vec();
            args.extend(["--age-key-file", "/etc/moor/age.key"]);
            let host = match parse(&args).expect("valid").command {
                Command::Validate(a) => a.host,
                Command::Plan(a) => a.host,
                Command::Apply(a) => a.host,
                Command::Agent(a) => a.host,
                other => panic!("{other:?}"),
            };
            assert_eq!(
                host.age_key_file.as_deref(),
                Some(std::path::Path::new("/etc/moor/age.key"))
            );
        }
    }
}
