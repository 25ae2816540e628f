//! `moor exec NAME -- CMD...`

use clap::Args;

// `moor exec`
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open (it always is; accepted for `docker exec -it` habits).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Run as this user: `name`, `uid`, `name:group` or `uid:gid`, looked
    /// up in the container's /etc/passwd and /etc/group (default: the
    /// container's own user).
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Run in this directory (absolute; default: the container's own).
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Set an environment variable (repeatable); `KEY` alone passes this
    /// terminal's value of KEY, if it has one.
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The container.
    pub name: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}
