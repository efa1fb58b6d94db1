//! Muster's registrar: stateless, run any number of replicas. A worker presents a bootstrap
//! token and a CSR over server-authenticated TLS (it pins the cluster CA key from its token);
//! the control plane consumes the token and allocates the worker id in one Raft command; the
//! registrar signs the worker's key with the cluster's one worker CA (agreed through the
//! control plane, so every replica signs with the same CA). Later the worker renews over mTLS
//! with that certificate: the TLS server asks for a client certificate from the worker CA but
//! does not require one, so Register keeps working for workers that have none yet.
//!
//! - [`config`]: settings; [`service`]: the gRPC service; [`metrics`]: its counters;
//! - [`register`] and [`renew`]: the two calls; [`signing`]: certifying a worker's key, shared
//!   by both; [`rate_limit`]: per-IP buckets.

pub mod config;
pub mod metrics;
pub mod rate_limit;
pub mod register;
pub mod renew;
pub mod service;
pub mod signing;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use muster_client::{ClientOptions, ControlPlaneClient};
use muster_proto::v1;
use muster_proto::v1::worker_registration_service_server::WorkerRegistrationServiceServer;
use muster_tls::{CertificateAuthority, TlsFiles};
use tokio::net::TcpListener;

pub use config::RegistrarConfig;
use rate_limit::RateLimiter;
use service::Registrar;
use signing::Signer;

/// Lifetime of a worker CA this registrar proposes (only the first proposal is kept).
const WORKER_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn tls_files(config: &RegistrarConfig) -> Option<TlsFiles> {
    (!config.tls.insecure).then(|| TlsFiles {
        ca: config.tls.ca_file.clone().unwrap_or_default(),
        cert: config.tls.cert_file.clone().unwrap_or_default(),
        key: config.tls.key_file.clone().unwrap_or_default(),
    })
}

/// Gets the cluster's worker CA, proposing a fresh one in case there is none; retries until
/// the control plane answers.
async fn worker_authority(client: &ControlPlaneClient) -> anyhow::Result<(CertificateAuthority, String)> {
    let proposed = CertificateAuthority::generate("muster worker CA", WORKER_CA_VALIDITY)?;
    let mut backoff = Duration::from_millis(200);
    loop {
        let init = v1::InitWorkerCa { cert_pem: proposed.cert_pem().into(), key_pem: proposed.key_pem().into() };
        match client.ensure_worker_ca(init).await {
            Ok(response) => {
                let ca = response.worker_ca.context("the control plane returned no worker CA")?;
                let authority = CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem)
                    .context("the cluster's worker CA does not load")?;
                return Ok((authority, response.cluster_id));
            }
            Err(err) => {
                tracing::warn!(error = %err, "waiting for the control plane to agree on the worker CA");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Serves Register and Renew on `listener` (and the admin endpoints on `admin`) until
/// `shutdown` resolves.
pub async fn run(
    config: RegistrarConfig,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let files = tls_files(&config);
    let mut options = ClientOptions::new(config.control_plane.clone());
    if let Some(files) = &files {
        options.tls = Some(files.client_for(muster_tls::ServerCheck::RoleAndHost(muster_tls::Role::ControlPlane))?);
    } else {
        tracing::warn!("INSECURE MODE: Register is served in plaintext; workers cannot pin the registrar");
    }
    let client = Arc::new(ControlPlaneClient::new(options)?);
    let (worker_ca, cluster_id) = worker_authority(&client).await?;
    tracing::info!(%cluster_id, "worker CA ready");

    let ca_bundle_pem = match &files {
        Some(files) => std::fs::read_to_string(&files.ca).with_context(|| format!("reading {}", files.ca.display()))?,
        None => String::new(),
    };
    let worker_ca_pem = worker_ca.cert_pem().to_string();
    let registrar = Arc::new(Registrar {
        client,
        signer: Signer { worker_ca, cluster_id, validity: config.worker_cert_validity },
        ca_bundle_pem: ca_bundle_pem.clone(),
        limiter: RateLimiter::new(config.register_per_second, config.register_burst),
        stats: Default::default(),
    });
    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_task =
        tokio::spawn(muster_admin::serve(admin, registrar.clone(), config.admin_limits.clone(), admin_stopped));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<WorkerRegistrationServiceServer<Registrar>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(muster_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("muster.v1.WorkerRegistrationService")
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let limits = muster_middleware::ServerLimits::default();
    let tls = match &files {
        Some(files) => {
            // Present the chain up to the cluster CA: the worker checks it against its token's pin.
            let cert =
                std::fs::read_to_string(&files.cert).with_context(|| format!("reading {}", files.cert.display()))?;
            let key =
                std::fs::read_to_string(&files.key).with_context(|| format!("reading {}", files.key.display()))?;
            // Ask for a worker certificate (Renew) without requiring one (Register). Only the
            // worker CA is trusted for clients: a certificate from anywhere else fails the handshake.
            let chain = cert + &ca_bundle_pem;
            Some(muster_tls::server_config(&chain, &key, &worker_ca_pem, muster_tls::ClientAuth::Optional)?)
        }
        None => None,
    };
    // Who may call what is the cluster's one table: Register is open (the token is the
    // credential), Renew needs a worker certificate of this cluster.
    let authorize = files.is_some().then(|| {
        let cluster_id = registrar.signer.cluster_id.clone();
        muster_middleware::AuthorizeLayer::new(move |der: &[u8]| muster_tls::worker_identity(der, &cluster_id))
    });
    let router = muster_middleware::server_builder(&limits)
        .layer(muster_middleware::GrpcTraceLayer::new())
        .layer(muster_middleware::overload_layer(&limits))
        .layer(tower::util::option_layer(authorize))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(WorkerRegistrationServiceServer::from_arc(registrar));
    // The listener bounds handshakes, the HTTP/2 preface and connections (see muster-listener).
    let listener_limits = &config.listener_limits;
    match tls {
        Some(tls) => {
            let incoming = muster_listener::tls(listener, tls, listener_limits, "register");
            router.serve_with_incoming_shutdown(incoming, shutdown).await?;
        }
        None => {
            let incoming = muster_listener::plain(listener, listener_limits, "register");
            router.serve_with_incoming_shutdown(incoming, shutdown).await?;
        }
    }
    stop_admin.send_replace(true);
    let _ = admin_task.await;
    Ok(())
}
