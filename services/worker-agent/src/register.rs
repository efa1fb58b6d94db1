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
use crate::pin::{PinMismatch, discover_ca};

/// Why one registration attempt failed.
#[derive(Debug)]
enum Attempt {
    /// Worth retrying: the registrar was unreachable or overloaded.
    Retry(anyhow::Error),
    /// Retrying cannot help (the token was refused, the pin did not match): stop loudly.
    Fatal(anyhow::Error),
}

/// Registers with the first registrar that accepts, using the token in `token_file`.
/// Unreachable registrars are retried round-robin with jittered backoff (capped at 30 s) until
/// one answers; a refusal (bad token, pin mismatch) ends the attempt at once.
pub async fn register(servers: &[String], token_file: &Path, profile: v1::WorkerProfile) -> anyhow::Result<Identity> {
    anyhow::ensure!(!servers.is_empty(), "no registrar addresses configured (cluster.servers)");
    let text = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading the bootstrap token file {}", token_file.display()))?;
    let token = muster_token::decode(&text).with_context(|| format!("the token in {}", token_file.display()))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating the worker key")?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(&key))
        .and_then(|csr| csr.pem())
        .context("building the certificate signing request")?;
    let mut backoff = Duration::from_millis(250);
    for server in servers.iter().cycle() {
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
            Err(Attempt::Fatal(err)) => return Err(err.context(format!("registrar {server} refused this worker"))),
            Err(Attempt::Retry(err)) => {
                let pause = jitter(backoff);
                tracing::warn!(registrar = %server, error = %format!("{err:#}"), retry_in = ?pause, "registrar not reachable");
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    unreachable!("cycling a non-empty list never ends")
}

/// A random point in [d/2, d], so a fleet restarted together does not retry in lockstep.
fn jitter(duration: Duration) -> Duration {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    Duration::from_nanos(nanos / 2 + u64::from(seed) % (nanos / 2).max(1))
}

async fn register_with(
    server: &str,
    token: &str,
    pin: &[u8],
    csr_pem: &str,
    profile: &v1::WorkerProfile,
) -> Result<v1::RegisterResponse, Attempt> {
    let ca = discover_ca(server, pin).await.map_err(|err| match err.downcast_ref::<PinMismatch>() {
        Some(_) => Attempt::Fatal(err),
        None => Attempt::Retry(err),
    })?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let endpoint = Endpoint::from_shared(format!("https://{server}"))
        .and_then(|e| e.tls_config(tls))
        .map_err(|err| Attempt::Fatal(anyhow::anyhow!("registrar address {server}: {err}")))?;
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|err| Attempt::Retry(anyhow::anyhow!("connecting to registrar {server}: {err}")))?;
    let request = v1::RegisterRequest {
        token: token.trim().to_string(),
        csr_pem: csr_pem.to_string(),
        profile: Some(profile.clone()),
    };
    match WorkerRegistrationServiceClient::new(channel).register(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => {
            let err = anyhow::anyhow!("{} ({:?})", status.message(), status.code());
            let transient = matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
            );
            Err(if transient { Attempt::Retry(err) } else { Attempt::Fatal(err) })
        }
    }
}
