//! `moor exec [-u USER] [-w DIR] [-e KEY=VALUE] NAME -- CMD…`: a command in
//! a running container, as the container's own user unless `-u` says
//! otherwise (see `moor_runtime::container::ExecOptions`).

use std::path::Path;
use std::process::ExitCode;

use moor_runtime::container::ExecOptions;

use crate::cli::ExecArgs;

/// Runs the command with this terminal's stdio; exits with its code.
pub fn run(state_dir: &Path, args: &ExecArgs) -> anyhow::Result<ExitCode> {
    let engine = super::common::engine(state_dir)?;
    // The instance's current container (see moor_runtime::host::instances).
    let name = moor_runtime::host::instances::resolve(&engine, &args.name)?;
    let opts = ExecOptions {
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        env: env_args(&args.env, |k| std::env::var(k).ok()),
        tty: args.tty,
    };
    let code = engine.exec_with(&name, &args.command, &opts)?;
    Ok(ExitCode::from((code & 0xff) as u8))
}

/// `-e` arguments as `KEY=VALUE`: `KEY` alone takes this process's value
/// of KEY and is dropped when it has none (as `docker exec -e KEY` does).
fn env_args(args: &[String], lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    args.iter()
        .filter_map(|a| {
            if a.contains('=') {
                Some(a.clone())
            } else {
                lookup(a).map(|v| format!("{a}={v}"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_keys_come_from_the_environment() {
        let args = [
            "A=1".to_string(),
            "HOME".into(),
            "UNSET".into(),
            "B=".into(),
        ];
        let got = env_args(&args, |k| (k == "HOME").then(|| "/root".to_string()));
        assert_eq!(got, ["A=1", "HOME=/root", "B="]);
    }
}
