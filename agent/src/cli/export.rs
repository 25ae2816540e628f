//! `moor export kubernetes [-o DIR] [--namespace NS] PATH`

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::HostArgs;

// `moor export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub command: ExportCommand,
}

// What `moor export` writes.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Kubernetes objects, one YAML file per object.
    Kubernetes(KubernetesArgs),
}

/// How published ports are exposed in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceTypeArg {
    /// Only inside the cluster.
    #[value(name = "ClusterIP")]
    ClusterIp,
    /// On every node (the host port when it is a valid node port).
    #[value(name = "NodePort")]
    NodePort,
    /// Through the cluster's load balancer, on the host port.
    #[value(name = "LoadBalancer")]
    LoadBalancer,
}

// `moor export kubernetes`
#[derive(Debug, Args)]
pub struct KubernetesArgs {
    /// Write one file per object into this directory (created if needed)
    /// instead of one stream on stdout.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// The namespace of every object.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// How published ports are exposed.
    #[arg(long, value_enum, default_value = "ClusterIP")]
    pub service_type: ServiceTypeArg,
    /// Fail when anything has no faithful Kubernetes mapping (host paths,
    /// the host's network...) instead of warning.
    #[arg(long)]
    pub strict: bool,
    /// The `app.kubernetes.io/part-of` label (default: the directory's name).
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// A manifest file or directory (searched recursively).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    #[command(flatten)]
    pub host: HostArgs,
}
