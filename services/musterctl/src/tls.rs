//! `musterctl tls init`: the cluster CA and certificates for nodes and the operator, and the
//! worker CA whose key only registrars are given.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use muster_tls::{CertSpec, PkiInit, Role};

use crate::output::{Format, print_json};

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Create (or extend) the cluster CA, the worker CA and certificates in a directory.
    Init {
        /// Where to write ca.pem, <name>.pem, <name>-key.pem.
        #[arg(long, default_value = "./tls")]
        dir: PathBuf,
        /// Cluster name (in the CA's common name).
        #[arg(long, default_value = "muster")]
        cluster_name: String,
        /// A control-plane node certificate: NAME or NAME=host1,host2 (repeatable). The name,
        /// localhost, 127.0.0.1 and ::1 are always included.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// A certificate for another role: ROLE:NAME[=hosts] with ROLE one of registrar, gateway, worker, watcher (read-only: KV reads and watches, worker lists and watches).
        #[arg(long = "component")]
        components: Vec<String>,
        /// Skip the operator client certificate.
        #[arg(long)]
        no_operator: bool,
        /// Replace an existing CA and certificates.
        #[arg(long)]
        force: bool,
        /// Validity of the cluster CA and certificates (a new worker CA gets 10 years).
        #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
        validity: Duration,
    },
}

fn parse_spec(text: &str, role: Role, validity: Duration) -> anyhow::Result<CertSpec> {
    let (name, hosts) = match text.split_once('=') {
        Some((name, hosts)) => (name, hosts.split(',').filter(|h| !h.is_empty()).map(str::to_string).collect()),
        None => (text, Vec::new()),
    };
    anyhow::ensure!(!name.is_empty(), "empty certificate name in {text:?}");
    let mut spec = CertSpec::node(name, role, validity);
    for host in hosts {
        if !spec.hosts.contains(&host) {
            spec.hosts.push(host);
        }
    }
    Ok(spec)
}

pub fn run(command: TlsCommand, format: Format) -> anyhow::Result<()> {
    let TlsCommand::Init { dir, cluster_name, nodes, components, no_operator, force, validity } = command;
    let mut specs = Vec::new();
    for node in &nodes {
        specs.push(parse_spec(node, Role::ControlPlane, validity)?);
    }
    for component in &components {
        let (role, rest) = component
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--component {component:?}: expected ROLE:NAME[=hosts]"))?;
        specs.push(parse_spec(rest, role.parse()?, validity)?);
    }
    let report = muster_tls::init_pki(&PkiInit {
        dir: dir.clone(),
        cluster_name,
        nodes: specs,
        operator: !no_operator,
        force,
        validity,
    })?;
    match format {
        Format::Json => print_json(&serde_json::json!({
            "dir": dir,
            "written": report.files,
            "ca_public_key_sha256": report.ca_public_key_sha256,
            "worker_ca_sha256": report.worker_ca_sha256,
        })),
        Format::Table => {
            if report.files.is_empty() {
                println!("nothing to write: every requested certificate already exists in {}", dir.display());
            }
            for file in &report.files {
                println!("wrote {}", file.display());
            }
            println!("CA public key sha256: {}", report.ca_public_key_sha256);
            println!("worker CA certificate sha256: {}", report.worker_ca_sha256);
        }
    }
    Ok(())
}
