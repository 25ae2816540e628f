//! What each verb does: one handler per file, taking its arguments from
//! `crate::cli`. [`run`] is the dispatcher, the only thing that names a
//! handler; handlers share helpers through `common` and `project`.

mod agent;
mod apply;
mod build;
mod build_progress;
mod commit;
mod common;
mod convert;
mod cp;
mod dev;
mod dns;
mod down;
mod exec;
mod export;
mod history;
mod image;
mod image_history;
mod image_inspect;
mod image_save;
mod image_tag;
mod inspect;
mod lifecycle;
mod lists;
mod logs;
mod plan;
mod project;
mod ps;
mod reconcile;
mod rollback;
mod stats;
mod status;
mod suspend;
mod top;
mod validate;

use std::process::ExitCode;

use crate::cli::{Cli, Command, ImageCommand};
use lifecycle::Verb;

/// Runs the chosen subcommand and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Plan(args) => plan::run(&cli.state_dir, args),
        Command::Apply(args) => apply::run(&cli.state_dir, args),
        Command::Convert(args) => convert::run(args),
        Command::Export(args) => export::run(args),
        Command::Down(args) => down::run(&cli.state_dir, args),
        Command::Agent(args) => agent::run(&cli.state_dir, args),
        Command::Status(args) => status::run(args),
        Command::Suspend(args) => suspend::run(&cli.state_dir, args, true),
        Command::Resume(args) => suspend::run(&cli.state_dir, args, false),
        Command::Reconcile(args) => reconcile::run(&cli.state_dir, args),
        Command::Rollback(args) => rollback::run(&cli.state_dir, args),
        Command::History(args) => history::run(&cli.state_dir, args),
        Command::Ps(args) => ps::run(&cli.state_dir, args),
        Command::Logs(args) => logs::run(&cli.state_dir, args),
        Command::Exec(args) => exec::run(&cli.state_dir, args),
        Command::Top(args) => top::run(&cli.state_dir, args),
        Command::Commit(args) => commit::run(&cli.state_dir, args),
        Command::Diff(args) => commit::diff(&cli.state_dir, args),
        Command::Stats(args) => stats::run(&cli.state_dir, args),
        Command::Cp(args) => cp::run(&cli.state_dir, args),
        Command::Stop(a) => lifecycle::run(&cli.state_dir, Verb::Stop, &a.names, a.timeout),
        Command::Start(a) => lifecycle::run(&cli.state_dir, Verb::Start, &a.names, None),
        Command::Restart(a) => lifecycle::run(&cli.state_dir, Verb::Restart, &a.names, a.timeout),
        Command::Pause(a) => lifecycle::run(&cli.state_dir, Verb::Pause, &a.names, None),
        Command::Unpause(a) => lifecycle::run(&cli.state_dir, Verb::Unpause, &a.names, None),
        Command::Dns => dns::run(&cli.state_dir),
        Command::Dev(cmd) => dev::run(&cli.state_dir, cmd),
        Command::Images(args) => image::list(&cli.state_dir, args),
        Command::Networks(args) => lists::networks(&cli.state_dir, args),
        Command::Volumes(args) => lists::volumes(&cli.state_dir, args),
        Command::Inspect(args) => inspect::run(&cli.state_dir, args),
        Command::Image(args) => match &args.command {
            ImageCommand::Tag(a) => image_tag::run(&cli.state_dir, a),
            ImageCommand::History(a) => image_history::run(&cli.state_dir, a),
            ImageCommand::Save(a) => image_save::run(&cli.state_dir, a),
            ImageCommand::Inspect(a) => image_inspect::run(&cli.state_dir, a),
            _ => image::run(&cli.state_dir, args),
        },
        Command::Build(args) => build::run(&cli.state_dir, args),
        Command::Builder(args) => build::builder(&cli.state_dir, args),
    }
}
