//! The benchmark corpus, shared by `benches/load.rs` and `examples/profile_load.rs`.

use std::fmt::Write as _;
use std::path::Path;

pub const FILES: usize = 100;
pub const PER_FILE: usize = 100;

/// Writes FILES manifests of PER_FILE resources each: per file 2 networks,
/// 3 volumes, 95 containers that use them, publish a unique port and depend
/// on their predecessor.
pub fn write_corpus(dir: &Path) {
    for f in 0..FILES {
        let toml = f % 2 == 0;
        let mut s = String::new();
        let nets = [format!("net-{f}-a"), format!("net-{f}-b")];
        let vols = [
            format!("vol-{f}-a"),
            format!("vol-{f}-b"),
            format!("vol-{f}-c"),
        ];
        let containers = PER_FILE - nets.len() - vols.len();
        if toml {
            for (i, n) in nets.iter().enumerate() {
                writeln!(
                    s,
                    "[networks.{n}]\nsubnet = \"10.{}.{}.0/24\"\n",
                    f / 100 + 1,
                    (f % 100) * 2 + i
                )
                .unwrap();
            }
            for v in &vols {
                writeln!(s, "[volumes.{v}]\n").unwrap();
            }
            for c in 0..containers {
                let port = 10_000 + f * PER_FILE + c;
                writeln!(
                    s,
                    "[containers.app-{f}-{c}]\nimage = \"localhost:5000/app:{c}\"\ncommand = [\"httpd\", \"-f\", \"-p\", \"80\"]\n\
                     env = {{ INDEX = \"{c}\", MODE = \"bench\" }}\nnetworks = [\"{}\"]\nports = [\"{port}:80\"]\n\
                     mounts = [\"{}:/data\", \"tmpfs:/tmp\"]\nrestart = \"on-failure:3\"\n\
                     resources = {{ memory = \"64m\", cpus = 0.5, pids = 100 }}\n\
                     healthcheck = {{ http = \"http://localhost/\", interval = \"2s\" }}",
                    nets[c % 2],
                    vols[c % 3]
                )
                .unwrap();
                if c > 0 {
                    writeln!(s, "depends_on = {{ app-{f}-{} = \"healthy\" }}", c - 1).unwrap();
                }
                s.push('\n');
            }
        } else {
            s.push_str("networks:\n");
            for (i, n) in nets.iter().enumerate() {
                writeln!(
                    s,
                    "  {n}:\n    subnet: 10.{}.{}.0/24",
                    f / 100 + 1,
                    (f % 100) * 2 + i
                )
                .unwrap();
            }
            s.push_str("volumes:\n");
            for v in &vols {
                writeln!(s, "  {v}: {{}}").unwrap();
            }
            s.push_str("containers:\n");
            for c in 0..containers {
                let port = 10_000 + f * PER_FILE + c;
                writeln!(
                    s,
                    "  app-{f}-{c}:\n    image: localhost:5000/app:{c}\n    command: [httpd, -f, -p, \"80\"]\n\
                     \x20   env: {{INDEX: \"{c}\", MODE: bench}}\n    networks: [{}]\n    ports: [\"{port}:80\"]\n\
                     \x20   mounts: [\"{}:/data\", \"tmpfs:/tmp\"]\n    restart: on-failure:3\n\
                     \x20   resources: {{memory: 64m, cpus: 0.5, pids: 100}}\n\
                     \x20   healthcheck: {{http: \"http://localhost/\", interval: 2s}}",
                    nets[c % 2],
                    vols[c % 3]
                )
                .unwrap();
                if c > 0 {
                    writeln!(s, "    depends_on: {{app-{f}-{}: healthy}}", c - 1).unwrap();
                }
            }
        }
        let ext = if toml { "toml" } else { "yaml" };
        std::fs::write(dir.join(format!("m{f:03}.{ext}")), s).unwrap();
    }
}
