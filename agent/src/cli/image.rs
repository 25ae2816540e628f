//! `moor image pull|push|verify|import|rm|prune`; `tag`, `history`, `save` and
//! `inspect` take their arguments from files of their own.

use std::path::PathBuf;

use clap::{Args, Subcommand};

// Arguments of `moor image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

// `moor image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry (plain HTTP only for loopback and --insecure-registry).
    Pull {
        /// The reference: `[registry/]repository[:tag][@digest]`.
        reference: String,
        /// A registry (`host:port`) that may be reached over plain HTTP.
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure: Vec<String>,
        /// Registry credentials, in the `auths` format of Docker's config.json
        /// [default: /etc/moor/auth.json, when it exists].
        #[arg(long, value_name = "FILE")]
        registry_auth: Option<PathBuf>,
        /// Layers downloaded at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Push an image to the registry its reference names, as `docker push`:
    /// blobs the registry has are not sent again, blobs of the image's other
    /// repositories on that registry are mounted from there.
    Push {
        /// The reference: `[registry/]repository[:tag]`, a name the image has.
        reference: String,
        /// A registry (`host:port`) that may be reached over plain HTTP.
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure: Vec<String>,
        /// Registry credentials, in the `auths` format of Docker's config.json
        /// [default: /etc/moor/auth.json, when it exists].
        #[arg(long, value_name = "FILE")]
        registry_auth: Option<PathBuf>,
    },
    /// Check an image's cosign signature with a public key: exit 0 when the
    /// digest the reference names is signed by one of the keys, 1 when not.
    Verify {
        /// The reference: `[registry/]repository[:tag][@digest]`.
        reference: String,
        /// An ECDSA P-256 public key in PEM, as `cosign generate-key-pair`
        /// writes `cosign.pub` (repeatable: any one of them may have signed).
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "config",
            conflicts_with = "config"
        )]
        key: Vec<PathBuf>,
        /// Check as the agent would: with the keys of the first `[[verify]]`
        /// rule of this file (the agent's configuration) that covers the
        /// reference; none covering it is an error.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// A registry (`host:port`) that may be reached over plain HTTP.
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure: Vec<String>,
        /// Registry credentials, in the `auths` format of Docker's config.json
        /// [default: /etc/moor/auth.json, when it exists].
        #[arg(long, value_name = "FILE")]
        registry_auth: Option<PathBuf>,
    },
    /// Import a `docker save` tarball, an OCI archive or a root filesystem tar.
    Import {
        /// The file.
        file: PathBuf,
        /// A reference to name the image by.
        #[arg(long, value_name = "REF")]
        tag: Option<String>,
        /// A Dockerfile instruction for the image's config, as `docker import
        /// --change` takes it (`USER nobody`, `CMD ["python3","app.py"]`): CMD,
        /// ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME,
        /// WORKDIR; repeatable, applied in order; root filesystem tars only.
        #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
        changes: Vec<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Give an image another reference.
    Tag(super::ImageTagArgs),
    /// Show an image's layers and the steps that made them, newest first.
    History(super::ImageHistoryArgs),
    /// Write images to a tar that `docker load` and `moor image import` read
    /// (a `docker save` archive that is also an OCI image layout).
    Save(super::ImageSaveArgs),
    /// Show images' configs and layers as JSON, like `docker image inspect`.
    Inspect(super::ImageInspectArgs),
    /// Remove image references; an image goes with its last one.
    Rm {
        /// References, digests or digest prefixes.
        #[arg(required = true, value_name = "REF")]
        references: Vec<String>,
    },
    /// Remove unreferenced images and every blob and snapshot nothing uses.
    Prune,
}

// Caps on unpacking.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Largest uncompressed size of one layer (bytes, or with k/m/g).
    #[arg(long, value_name = "SIZE", value_parser = moor_spec::units::parse_size)]
    pub max_layer_size: Option<u64>,
}
