//! `moor commit` and `moor diff`

use clap::{ArgAction, Args};

// Arguments of `moor commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The container.
    #[arg(value_name = "CONTAINER")]
    pub name: String,
    /// The new image's name, `[registry/]repository[:tag]`; none: known by
    /// its digest only.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
    /// A Dockerfile instruction for the image's config, as `docker commit
    /// --change` takes it: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD,
    /// STOPSIGNAL, USER, VOLUME, WORKDIR; repeatable, applied in order.
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// The comment of the new history entry.
    #[arg(short, long)]
    pub message: Option<String>,
    /// The image's author.
    #[arg(short, long)]
    pub author: Option<String>,
    /// Freeze the container while its changes are read (`--pause=false`
    /// reads them while it runs).
    #[arg(short, long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub pause: bool,
}

// Arguments of `moor diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The container.
    #[arg(value_name = "CONTAINER")]
    pub name: String,
}
