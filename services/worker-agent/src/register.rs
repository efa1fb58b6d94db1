//! First contact: read the bootstrap token, discover and pin the registrar's CA, generate a
//! P-256 key and CSR, Register. Registrars in `servers` are tried round-robin until one
//! answers. Besides the identity, the answer carries the live gateways and the first TTL and
//! grace, which the heartbeats start from.
//!
//! Each attempt is the root of its own trace (`worker.register`): the Register call to the
//! registrar is its child, and through the registrar and the control plane the trace reaches
//! the Raft commit and apply of the token's consumption.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use muster_proto::v1;
use muster_proto::v1::worker_registration_service_client::WorkerRegistrationServiceClient;
use muster_tls::{Role, ServerCheck};
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::backoff::Backoff;
use crate::gateways::GatewayList;
use crate::identity::{Identity, IdentityMeta};
use crate::pin::{PinMismatch, discover_ca};
use crate::tls::RegistrarConnectError;

/// What a successful Register gives the agent.
#[derive(Debug)]
pub struct Registered {
    pub identity: Identity,
    /// As of an unknown epoch (0): the first ack brings the epoch.
    pub gateways: GatewayList,
    /// The grace after a TTL, until the first ack says (the first report goes out at once, so
    /// the initial TTL itself is not needed).
    pub grace: Duration,
}

/// A PKCS#10 request for `key`; it names nothing (the registrar decides the identity).
pub fn csr_pem(key: &rcgen::KeyPair) -> anyhow::Result<String> {
    rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(key))
        .and_then(|csr| csr.pem())
        .context("building the certificate signing request")
}

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
///
/// `replacing`: the node's expired identity. The request is then for its key, with its
/// certificate, so the cluster links the new worker to the old one.
pub async fn register(
    servers: &[String],
    token_file: &Path,
    profile: v1::WorkerProfile,
    replacing: Option<&Identity>,
) -> anyhow::Result<Registered> {
    anyhow::ensure!(!servers.is_empty(), "no registrar addresses configured (cluster.servers)");
    let text = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading the bootstrap token file {}", token_file.display()))?;
    let token = muster_token::decode(&text).with_context(|| format!("the token in {}", token_file.display()))?;
    let (key, replaces_cert_pem) = match replacing {
        Some(old) => {
            let key = rcgen::KeyPair::from_pem(&old.key_pem).context("reading the expired identity's key")?;
            (key, leaf_pem(&old.cert_chain_pem).to_string())
        }
        None => {
            let key =
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating the worker key")?;
            (key, String::new())
        }
    };
    let csr = csr_pem(&key)?;
    let request = Request { token: &text, csr_pem: &csr, profile: &profile, replaces_cert_pem: &replaces_cert_pem };
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    for (attempt, server) in (1u32..).zip(servers.iter().cycle()) {
        let span = attempt_span(server, attempt, &token.token_id);
        let outcome = register_with(server, &token.ca_pin_sha256, &request).instrument(span.clone()).await;
        if let Err(Attempt::Fatal(err) | Attempt::Retry(err)) = &outcome {
            span.record("otel.status_code", "error");
            span.record("error", tracing::field::display(format!("{err:#}")));
        }
        drop(span);
        match outcome {
            Ok(response) => return Ok(registered(response, &key)),
            Err(Attempt::Fatal(err)) => return Err(err.context(format!("registrar {server} refused this worker"))),
            Err(Attempt::Retry(err)) => {
                let pause = backoff.next_pause();
                tracing::warn!(registrar = %server, error = %format!("{err:#}"), retry_in = ?pause, "registrar not reachable");
                tokio::time::sleep(pause).await;
            }
        }
    }
    unreachable!("cycling a non-empty list never ends")
}

/// The root span of one registration attempt (a new trace each time).
fn attempt_span(server: &str, attempt: u32, token_id: &str) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "worker.register",
        registrar = %server,
        attempt,
        token_id = %token_id,
        otel.status_code = Empty,
        error = Empty,
    )
}

fn registered(response: v1::RegisterResponse, key: &rcgen::KeyPair) -> Registered {
    let issued_at = muster_proto::clock::since_epoch().as_secs();
    let meta = IdentityMeta {
        worker_id: response.worker_id,
        cluster_id: response.cluster_id,
        cert_expires_at_unix: response.cert_expires_at_unix,
        cert_issued_at_unix: i64::try_from(issued_at).unwrap_or(0),
    };
    Registered {
        identity: Identity {
            meta,
            cert_chain_pem: response.certificate_chain_pem,
            key_pem: key.serialize_pem(),
            ca_bundle_pem: response.ca_bundle_pem,
        },
        gateways: GatewayList::from_endpoints(0, &response.gateways),
        grace: Duration::from_millis(if response.grace_ms == 0 { 10_000 } else { response.grace_ms.into() }),
    }
}

/// What every attempt sends.
struct Request<'a> {
    token: &'a str,
    csr_pem: &'a str,
    profile: &'a v1::WorkerProfile,
    replaces_cert_pem: &'a str,
}

/// The first certificate of a chain (the worker's own).
fn leaf_pem(chain_pem: &str) -> &str {
    const END: &str = "-----END CERTIFICATE-----";
    chain_pem.find(END).map_or(chain_pem, |at| &chain_pem[..at + END.len()])
}

async fn register_with(server: &str, pin: &[u8], request: &Request<'_>) -> Result<v1::RegisterResponse, Attempt> {
    let ca = discover_ca(server, pin).await.map_err(|err| match err.downcast_ref::<PinMismatch>() {
        Some(_) => Attempt::Fatal(err),
        None => Attempt::Retry(err),
    })?;
    // The token goes only to a server whose certificate says `registrar` (pinned CA, host).
    let tls = muster_tls::ClientTls::new(ca.as_bytes(), None, ServerCheck::RoleAndHost(Role::Registrar))
        .map_err(|err| Attempt::Fatal(anyhow::Error::new(err).context("the registrar's CA does not load")))?;
    let channel = crate::tls::registrar_channel(server, &tls).await.map_err(|err| match err {
        RegistrarConnectError::Address(err) => Attempt::Fatal(err),
        RegistrarConnectError::Connect(err) => Attempt::Retry(err),
    })?;
    let request = v1::RegisterRequest {
        token: request.token.trim().to_string(),
        csr_pem: request.csr_pem.to_string(),
        profile: Some(request.profile.clone()),
        replaces_cert_pem: request.replaces_cert_pem.to_string(),
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
