//! `musterctl workers rotate-ca begin|promote|finish`: moves the cluster to a new worker CA
//! while workers beat. Each step changes the PKI directory (where registrars read the worker
//! CA key) and the cluster's record (which CAs gateways and registrars trust) together:
//!
//! 1. begin: a next worker CA beside the current one (`worker-ca-next.pem`), trusted by every
//!    gateway and registrar within seconds; nobody signs with it yet.
//! 2. promote: the next CA becomes the cluster's and takes the current one's place in the
//!    directory; registrars sign with it from their next check of the files, and workers move
//!    to it as they renew. The old CA stays trusted until the certificates it signed expire.
//! 3. finish: the old CA is no longer trusted (refused before its last certificate expires,
//!    unless --force).

use std::path::Path;

use clap::ValueEnum;
use muster_client::ControlPlaneClient;
use muster_proto::v1;
use muster_proto::v1::rotate_worker_ca::Step;

use crate::output::{Format, print_json};

/// The steps of `workers rotate-ca`, in order.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RotateStep {
    /// Make a next worker CA and have the cluster trust it beside the current one.
    Begin,
    /// Make it the cluster's worker CA and put it in worker-ca.pem / worker-ca-key.pem.
    Promote,
    /// Stop trusting the old worker CA.
    Finish,
}

pub async fn rotate(
    client: &ControlPlaneClient,
    step: RotateStep,
    dir: &Path,
    force: bool,
    format: Format,
) -> anyhow::Result<()> {
    let (step_request, next) = match step {
        RotateStep::Begin => {
            let next = muster_tls::rotate_worker::next_worker_ca(dir)?;
            (
                Step::TrustNext(next.cert_pem().to_owned()),
                "next: gateways and registrars trust the next CA within 5 s; \
              then run `workers rotate-ca promote`",
            )
        }
        RotateStep::Promote => {
            let next = muster_tls::rotate_worker::pending_worker_ca(dir)?.ok_or_else(|| {
                anyhow::anyhow!("no worker-ca-next.pem in {}: run `workers rotate-ca begin` first", dir.display())
            })?;
            (
                Step::PromoteSha256(next.cert_sha256()),
                "next: registrars sign with the new worker CA once they see the \
              files (copy worker-ca.pem and worker-ca-key.pem to them); workers move to it as they renew. Once every \
              worker has renewed, run `workers rotate-ca finish`",
            )
        }
        RotateStep::Finish => {
            (Step::DropRetired(true), "the old worker CA is refused by gateways and registrars within seconds")
        }
    };
    let request = v1::RotateWorkerCaRequest { step: Some(v1::RotateWorkerCa { step: Some(step_request) }), force };
    let response = client.rotate_worker_ca(request).await?;
    if let RotateStep::Promote = step {
        // The cluster trusts and prefers it now: registrars may switch.
        muster_tls::rotate_worker::install_next_worker_ca(dir)?;
    }
    let ca = response.worker_ca.unwrap_or_default();
    let retired: Vec<serde_json::Value> = ca
        .retired
        .iter()
        .map(|r| serde_json::json!({"sha256": r.sha256, "trusted_until_unix": r.trusted_until_unix}))
        .collect();
    match format {
        Format::Json => print_json(&serde_json::json!({
            "changed": response.changed,
            "current_sha256": ca.sha256,
            "next_sha256": ca.next_sha256,
            "retired": retired,
        })),
        Format::Table => {
            println!("current: sha256:{}", ca.sha256);
            if !ca.next_sha256.is_empty() {
                println!("next:    sha256:{}", ca.next_sha256);
            }
            for retired in &ca.retired {
                println!(
                    "retired: sha256:{} (trusted until {})",
                    retired.sha256,
                    crate::output::unix_time(retired.trusted_until_unix)
                );
            }
            if !response.changed {
                println!("(this step had been taken already)");
            }
            println!("{next}");
        }
    }
    Ok(())
}
