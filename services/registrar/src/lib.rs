//! Muster's registrar: stateless, run any number of replicas. A worker presents a bootstrap
//! token and a CSR over server-authenticated TLS (it pins the cluster CA key from its token);
//! the control plane consumes the token and allocates the worker id in one Raft command; the
//! registrar signs the worker's key with the cluster's one worker CA (a file given to every
//! replica; the control plane records only its certificate, see [`worker_ca`]). Later the worker renews over mTLS
//! with that certificate: the TLS server asks for a client certificate from the worker CA but
//! does not require one, so Register keeps working for workers that have none yet.
//!
//! - [`config`]: settings; [`registrar`]: the Register and Renew flows, free of transport,
//!   against the control plane of [`upstream`]; [`signing`]: certifying a worker's key, shared
//!   by both;
//! - [`service`]: the gRPC service (per-IP limits from [`rate_limit`], counters of
//!   [`metrics`], the wording of errors on the wire).

pub mod config;
pub mod metrics;
pub mod rate_limit;
pub mod registrar;
pub mod service;
pub mod signing;
pub mod upstream;
pub mod worker_ca;

use std::sync::Arc;

use anyhow::Context;
use muster_client::{ClientOptions, ControlPlaneClient};
use muster_proto::v1::worker_registration_service_server::WorkerRegistrationServiceServer;
use muster_tls::TlsFiles;
use tokio::net::TcpListener;

pub use config::RegistrarConfig;
use rate_limit::RateLimiter;
use registrar::Registrar;
use service::RegistrationService;
use signing::Signer;

/// Serves Register and Renew on `listener` (and the admin endpoints on `admin`) until
/// `shutdown` resolves.
pub async fn run(
    config: RegistrarConfig,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let files = TlsFiles::from_config(&config.tls);
    let mut options = ClientOptions::new(config.control_plane.clone());
    if let Some(files) = &files {
        options.tls = Some(files.client_for(muster_tls::ServerCheck::RoleAndHost(muster_tls::Role::ControlPlane))?);
    } else {
        tracing::warn!("INSECURE MODE: Register is served in plaintext; workers cannot pin the registrar");
    }
    // The files first: a missing or open key stops start-up before anything is dialled.
    let (worker_ca, worker_ca_path) = worker_ca::from_config(config.worker_ca_files())?;
    let client = Arc::new(ControlPlaneClient::new(options)?);
    let (recorded, cluster_id) = worker_ca::agree(&client, &worker_ca, &worker_ca_path).await?;
    tracing::info!(%cluster_id, sha256 = %recorded.sha256, retired = recorded.retired.len(), "worker CA ready");

    let ca_bundle_pem = match &files {
        Some(files) => std::fs::read_to_string(&files.ca).with_context(|| format!("reading {}", files.ca.display()))?,
        None => String::new(),
    };
    let now = muster_proto::clock::unix_now();
    let worker_ca_pem = worker_ca::client_trust(&recorded, now);
    let service = Arc::new(RegistrationService {
        registrar: Registrar {
            control_plane: client,
            signer: Signer { worker_ca, cluster_id, validity: config.worker_cert_validity },
            ca_bundle_pem: ca_bundle_pem.clone(),
        },
        limiter: RateLimiter::new(config.register_per_second, config.register_burst),
        stats: Default::default(),
    });
    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_task =
        tokio::spawn(muster_admin::serve(admin, service.clone(), config.admin_limits.clone(), admin_stopped));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<WorkerRegistrationServiceServer<RegistrationService>>().await;
    let (reflection_v1, reflection_v1alpha) = muster_middleware::reflection_services(&[
        <WorkerRegistrationServiceServer<RegistrationService> as tonic::server::NamedService>::NAME,
    ])?;
    let limits = muster_middleware::ServerLimits::default();
    let tls = match &files {
        Some(files) => {
            // Present the chain up to the cluster CA: the worker checks it against its token's pin.
            let cert =
                std::fs::read_to_string(&files.cert).with_context(|| format!("reading {}", files.cert.display()))?;
            let key =
                std::fs::read_to_string(&files.key).with_context(|| format!("reading {}", files.key.display()))?;
            // Ask for a worker certificate (Renew) without requiring one (Register). Only the
            // worker CA (and a retired one whose workers may still hold valid certificates, so
            // they renew onto the current CA) is trusted: anything else fails the handshake.
            let chain = cert + &ca_bundle_pem;
            Some(muster_tls::server_config(&chain, &key, &worker_ca_pem, muster_tls::ClientAuth::Optional)?)
        }
        None => None,
    };
    // Who may call what is the cluster's one table: Register is open (the token is the
    // credential), Renew needs a worker certificate of this cluster.
    let authorize = files.is_some().then(|| {
        let cluster_id = service.registrar.signer.cluster_id.clone();
        muster_middleware::AuthorizeLayer::new(move |der: &[u8]| muster_tls::worker_identity(der, &cluster_id))
    });
    let router = muster_middleware::server_builder(&limits)
        .layer(muster_middleware::GrpcTraceLayer::new())
        .layer(muster_middleware::overload_layer(&limits))
        .layer(tower::util::option_layer(authorize))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(WorkerRegistrationServiceServer::from_arc(service));
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
