//! `moor export kubernetes`: the manifests at PATH as Kubernetes objects
//! (see `moor_convert::kube`).

use std::process::ExitCode;

use anyhow::Context;
use moor_convert::kube::{Options, ServiceType};

use crate::cli::{ExportArgs, ExportCommand, KubernetesArgs, ProjectArgs, ServiceTypeArg};

pub fn run(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ExportCommand::Kubernetes(k) => kubernetes(k),
    }
}

fn kubernetes(args: &KubernetesArgs) -> anyhow::Result<ExitCode> {
    // Offline, like validate: no state dir, so nothing seen written is skipped.
    let written = crate::source::written::Written::default();
    let state = super::project::load(
        std::slice::from_ref(&args.path),
        &args.host,
        &written,
        super::project::HostKey::None,
    )?;
    let project = super::project::project_name(&ProjectArgs {
        paths: vec![args.path.clone()],
        project: args.project.clone(),
    })?;
    let opts = Options {
        namespace: args.namespace.clone(),
        project: moor_convert::kube::dns_name(&project, 63),
        service_type: match args.service_type {
            ServiceTypeArg::ClusterIp => ServiceType::ClusterIp,
            ServiceTypeArg::NodePort => ServiceType::NodePort,
            ServiceTypeArg::LoadBalancer => ServiceType::LoadBalancer,
        },
        base: super::convert::base_of(&args.path),
        strict: args.strict,
    };
    let export = match moor_convert::kube::export(&state, &opts) {
        Ok(e) => e,
        Err(moor_convert::kube::ExportError::Strict(notes)) => {
            for n in &notes {
                eprintln!("error: {n}");
            }
            eprintln!(
                "{} field(s) have no faithful Kubernetes mapping (--strict); nothing was written",
                notes.len()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => anyhow::bail!("{e}"),
    };
    for n in &export.warnings {
        eprintln!("warning: {n}");
    }
    match &args.output {
        None => print!("{}", export.stream()),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for o in &export.objects {
                let path = dir.join(&o.file);
                let tmp = dir.join(format!(".{}.tmp", o.file));
                std::fs::write(&tmp, o.doc.to_yaml())
                    .with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            }
            eprintln!(
                "wrote {} object(s) to {}",
                export.objects.len(),
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
