//! TLS on both sides of the gateway.
//!
//! Towards workers it presents its own `gateway` certificate (workers trust the cluster CA)
//! and REQUIRES a client certificate signed by the worker CA, and only by it: a plaintext
//! connection, a certificate-less one or one from any other CA (including the cluster CA's
//! component certificates) fails the handshake. The worker CA certificate comes from the
//! control plane, which has it once a registrar has recorded it; while the cluster moves off
//! a retired worker CA (one whose key an older release stored) it sends both certificates,
//! and both are trusted. The gateway loads them when it starts. Towards the control plane the
//! gateway is a normal component client (its certificate, the cluster CA).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use muster_client::ControlPlaneClient;
use muster_tls::{ClientAuth, LiveTls, SwappableClientVerifier};

/// The worker CA and the cluster id, as the control plane knows them.
#[derive(Clone, Debug)]
pub struct WorkerTrust {
    pub cert_pem: String,
    pub cluster_id: String,
}

/// Asks the control plane for the worker CA certificate until there is one (a registrar
/// creates it on its first start).
pub async fn fetch_worker_ca(client: &ControlPlaneClient) -> WorkerTrust {
    let mut backoff = Duration::from_millis(200);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let problem = match client.worker_ca_cert().await {
            Ok(response) if !response.cert_pem.trim().is_empty() => {
                return WorkerTrust { cert_pem: response.cert_pem, cluster_id: response.cluster_id };
            }
            Ok(_) => "the cluster has no worker CA yet".to_string(),
            Err(err) => format!("the control plane did not answer: {err}"),
        };
        // Loud at first, then only now and then.
        if attempts == 1 || attempts.is_power_of_two() {
            tracing::warn!(attempts, problem = %problem, "waiting for a registrar to create the worker CA");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How often the gateway asks the control plane which worker CAs to trust: a rotation's next
/// CA is trusted within this long of `musterctl workers rotate-ca begin`, a dropped one
/// refused within this long of `finish`.
pub const WORKER_CA_REFRESH: Duration = Duration::from_secs(5);

/// Checks the worker CA bundle from the control plane: PEM, at least one certificate, each
/// one parses.
fn check_worker_ca(worker_ca_pem: &str) -> anyhow::Result<()> {
    let blocks = x509_parser::pem::Pem::iter_from_buffer(worker_ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the worker CA certificate from the control plane is not valid PEM")?;
    let cert_blocks = blocks.iter().filter(|block| block.label == "CERTIFICATE").count();
    anyhow::ensure!(cert_blocks > 0, "the worker CA from the control plane holds no CERTIFICATE block");
    for block in &blocks {
        block.parse_x509().context("the worker CA certificate from the control plane does not parse")?;
    }
    Ok(())
}

/// What the heartbeat port trusts for worker certificates: `worker_ca_pem` for now, replaced
/// by [`follow_worker_ca`].
pub fn worker_trust(worker_ca_pem: &str) -> anyhow::Result<Arc<SwappableClientVerifier>> {
    check_worker_ca(worker_ca_pem)?;
    SwappableClientVerifier::new(worker_ca_pem, ClientAuth::Required, "the worker CA")
        .context("the worker CA certificate from the control plane")
}

/// Server TLS for the heartbeat port: our certificate (as `live` holds it at each handshake),
/// worker certificates required and verified against the worker CAs `trust` holds then.
/// The handshake deadline is `listener_limits.tls_handshake_timeout`, applied by the listener.
pub fn server_tls(
    live: &Arc<LiveTls>,
    trust: Arc<SwappableClientVerifier>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    live.server_config_with(trust.verifier(), false).context("the gateway's TLS settings")
}

/// Every [`WORKER_CA_REFRESH`], makes `trust` follow the worker CAs the control plane lists
/// (a rotation's next CA added, a retired one dropped). Runs until dropped.
pub async fn follow_worker_ca(client: Arc<ControlPlaneClient>, trust: Arc<SwappableClientVerifier>) {
    loop {
        tokio::time::sleep(WORKER_CA_REFRESH).await;
        match client.refresh_worker_trust(&trust).await {
            Ok(true) => tracing::info!("the worker CAs trusted changed (a worker CA rotation)"),
            Ok(false) => {}
            Err(err) => tracing::debug!(error = %err, "worker CAs not refreshed; trusting the ones known"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use muster_tls::{CertSpec, CertificateAuthority, PkiInit, Role};

    use super::*;

    #[test]
    fn trusts_every_certificate_of_the_bundle_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let validity = Duration::from_secs(3600);
        muster_tls::init_pki(&PkiInit {
            dir: dir.path().to_owned(),
            cluster_name: "test".into(),
            nodes: vec![CertSpec::node("gw", Role::Gateway, validity)],
            operator: false,
            force: false,
            validity,
            ca_validity: validity,
        })
        .unwrap();
        let live = LiveTls::load(muster_tls::TlsFiles::in_dir(dir.path(), "gw")).unwrap();
        let (current, retired) = (
            CertificateAuthority::generate("current", validity).unwrap(),
            CertificateAuthority::generate("retired", validity).unwrap(),
        );
        let trust = worker_trust(&format!("{}{}", current.cert_pem(), retired.cert_pem())).unwrap();
        server_tls(&live, trust.clone()).unwrap();
        assert!(worker_trust("not a certificate").is_err());
        assert!(trust.replace(current.cert_pem()).unwrap(), "a new bundle is taken");
        assert!(!trust.replace(current.cert_pem()).unwrap(), "the same one changes nothing");
        assert!(trust.replace("garbage").is_err());
        assert_eq!(trust.ca_pem(), current.cert_pem(), "a refused bundle leaves the one in use");
    }
}
