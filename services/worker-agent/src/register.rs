//! First contact: read the bootstrap token, discover and pin the registrar's CA, generate a
//! P-256 key and CSR, Register, and persist the identity. Registrars in `servers` are tried
//! round-robin until one answers.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use muster_proto::v1;
use muster_proto::v1::worker_registration_service_client::WorkerRegistrationServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::identity::{Identity, IdentityMeta};
use crate::pin::discover_ca;

/// Registers once with the first registrar that accepts, using the token in `token_file`.
pub async fn register(servers: &[String], token_file: &Path, profile: v1::WorkerProfile) -> anyhow::Result<Identity> {
    let text = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading the bootstrap token file {}", token_file.display()))?;
    let token = muster_token::decode(&text).with_context(|| format!("the token in {}", token_file.display()))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating the worker key")?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(&key))
        .and_then(|csr| csr.pem())
        .context("building the certificate signing request")?;
    let mut last_error = None;
    for server in servers {
        match register_with(server, &text, &token.ca_pin_sha256, &csr, &profile).await {
            Ok(response) => {
                let meta = IdentityMeta {
                    worker_id: response.worker_id,
                    cluster_id: response.cluster_id,
                    cert_expires_at_unix: response.cert_expires_at_unix,
                };
                return Ok(Identity {
                    meta,
                    cert_chain_pem: response.certificate_chain_pem,
                    key_pem: key.serialize_pem(),
                    ca_bundle_pem: response.ca_bundle_pem,
                });
            }
            Err(err) => {
                tracing::warn!(registrar = %server, error = %format!("{err:#}"), "registration attempt failed");
                last_error = Some(err);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no registrar addresses configured (cluster.servers)")))
}

async fn register_with(
    server: &str,
    token: &str,
    pin: &[u8],
    csr_pem: &str,
    profile: &v1::WorkerProfile,
) -> anyhow::Result<v1::RegisterResponse> {
    let ca = discover_ca(server, pin).await?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let channel = Endpoint::from_shared(format!("https://{server}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tls_config(tls)?
        .connect()
        .await
        .with_context(|| format!("connecting to registrar {server}"))?;
    let request = v1::RegisterRequest {
        token: token.trim().to_string(),
        csr_pem: csr_pem.to_string(),
        profile: Some(profile.clone()),
    };
    let response = WorkerRegistrationServiceClient::new(channel)
        .register(request)
        .await
        .map_err(|status| anyhow::anyhow!("{} ({:?})", status.message(), status.code()))?;
    Ok(response.into_inner())
}
