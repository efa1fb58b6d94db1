//! `musterctl tls init`: the cluster CA and certificates for nodes and the operator, and the
//! worker CA whose key only registrars are given. `musterctl tls renew`: the same certificates
//! again, with a new validity. `musterctl tls rotate-ca`: a new cluster CA in three steps
//! (see [`muster_tls::rotate`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use muster_tls::{CertSpec, PkiInit, PkiRenew, Role};

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
        /// Validity of the certificates.
        #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
        validity: Duration,
        /// Validity of a new cluster CA: longer than the certificates, so `tls renew` can
        /// extend them (a new worker CA gets 10 years).
        #[arg(long, default_value = "3650days", value_parser = humantime::parse_duration)]
        ca_validity: Duration,
    },
    /// Re-issue certificates from the cluster CA with the same names, roles, hosts and keys and
    /// a new validity. Running components load them without a restart (they watch their
    /// files; SIGHUP reloads at once).
    Renew {
        /// The directory `tls init` wrote (it must hold ca.pem and ca-key.pem).
        #[arg(long, default_value = "./tls")]
        dir: PathBuf,
        /// Only these certificates, by name (comma-separated or repeated); default: every one.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Validity of the new certificates (never past the CA's own expiry).
        #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
        validity: Duration,
    },
    /// Replace the cluster CA without downtime, one step at a time: begin (trust a new CA beside
    /// the old), reissue (every certificate from the new CA), finish (drop the old CA). Copy
    /// the directory to where components read it after each step (docs/operations.md).
    RotateCa {
        /// begin, reissue or finish.
        step: RotateStep,
        /// The directory `tls init` wrote.
        #[arg(long, default_value = "./tls")]
        dir: PathBuf,
        /// begin: validity of the new CA.
        #[arg(long, default_value = "3650days", value_parser = humantime::parse_duration)]
        ca_validity: Duration,
        /// reissue: validity of the re-issued certificates (never past the new CA's expiry).
        #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
        validity: Duration,
    },
}

/// The steps of `tls rotate-ca`, in order.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RotateStep {
    /// Trust a new CA beside the old one (ca.pem holds both).
    Begin,
    /// Re-issue every certificate from the new CA, which goes first in ca.pem.
    Reissue,
    /// Trust the new CA alone.
    Finish,
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
    match command {
        TlsCommand::Init { dir, cluster_name, nodes, components, no_operator, force, validity, ca_validity } => {
            init(InitArgs { dir, cluster_name, nodes, components, no_operator, force, validity, ca_validity }, format)
        }
        TlsCommand::Renew { dir, only, validity } => renew(&PkiRenew { dir, only, validity }, format),
        TlsCommand::RotateCa { step, dir, ca_validity, validity } => {
            rotate_ca(step, &dir, ca_validity, validity, format)
        }
    }
}

fn rotate_ca(
    step: RotateStep,
    dir: &std::path::Path,
    ca_validity: Duration,
    validity: Duration,
    format: Format,
) -> anyhow::Result<()> {
    use muster_tls::rotate;
    let rotated = match step {
        RotateStep::Begin => rotate::begin(dir, ca_validity)?,
        RotateStep::Reissue => rotate::reissue(dir, validity)?,
        RotateStep::Finish => rotate::finish(dir)?,
    };
    let next = match step {
        RotateStep::Begin => {
            "next: copy ca.pem to every component; once every component has reloaded it and every worker has \
             renewed since (it gets the bundle from the registrar), run `rotate-ca reissue`"
        }
        RotateStep::Reissue => {
            "next: copy the certificates and ca.pem to every component; bootstrap tokens made from now on pin the new \
             CA (re-create tokens made before); once every component runs its new certificate, run `rotate-ca finish`"
        }
        RotateStep::Finish => {
            "next: copy ca.pem to every component; certificates of the old CA are refused once they reload it"
        }
    };
    match format {
        Format::Json => print_json(&serde_json::json!({
            "dir": dir,
            "trusted": rotated.trusted,
            "pinned_ca_public_key_sha256": rotated.pinned_ca_public_key_sha256,
            "reissued": rotated.reissued.iter().map(|r| &r.name).collect::<Vec<_>>(),
        })),
        Format::Table => {
            println!("ca.pem trusts: {}", rotated.trusted.join(", "));
            println!("tokens pin:    sha256:{}", rotated.pinned_ca_public_key_sha256);
            if !rotated.reissued.is_empty() {
                let names: Vec<&str> = rotated.reissued.iter().map(|r| r.name.as_str()).collect();
                println!("re-issued:     {}", names.join(", "));
            }
            println!("{next}");
        }
    }
    Ok(())
}

struct InitArgs {
    dir: PathBuf,
    cluster_name: String,
    nodes: Vec<String>,
    components: Vec<String>,
    no_operator: bool,
    force: bool,
    validity: Duration,
    ca_validity: Duration,
}

fn renew(request: &PkiRenew, format: Format) -> anyhow::Result<()> {
    let renewed = muster_tls::renew_pki(request)?;
    let wanted_until = muster_proto::clock::unix_now() + request.validity.as_secs() as i64;
    // Capped at the CA's expiry (give a minute of slack for the time the renewal took).
    let capped: Vec<&str> =
        renewed.iter().filter(|r| r.new_not_after_unix + 60 < wanted_until).map(|r| r.name.as_str()).collect();
    match format {
        Format::Json => print_json(&serde_json::json!({
            "dir": request.dir,
            "renewed": renewed.iter().map(|r| serde_json::json!({
                "name": r.name, "role": r.role.as_str(), "cert": r.cert,
                "old_not_after_unix": r.old_not_after_unix, "new_not_after_unix": r.new_not_after_unix,
            })).collect::<Vec<_>>(),
            "capped_by_ca_expiry": capped,
        })),
        Format::Table => {
            let rows: Vec<Vec<String>> = renewed
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.role.as_str().to_string(),
                        crate::output::unix_time(r.old_not_after_unix),
                        crate::output::unix_time(r.new_not_after_unix),
                    ]
                })
                .collect();
            crate::output::print_table(&["NAME", "ROLE", "WAS VALID UNTIL", "NOW VALID UNTIL"], &rows);
            if !capped.is_empty() {
                println!(
                    "note: {} end with the CA itself; rotate the CA to go further (docs/operations.md)",
                    capped.join(", ")
                );
            }
            println!(
                "Components reload their files within tls.reload_interval (SIGHUP reloads at once); copy the \
                 renewed files to where each one reads them (docs/operations.md)."
            );
        }
    }
    Ok(())
}

fn init(args: InitArgs, format: Format) -> anyhow::Result<()> {
    let InitArgs { dir, cluster_name, nodes, components, no_operator, force, validity, ca_validity } = args;
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
        ca_validity,
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
