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
pub mod gateway_list;
pub mod metrics;
pub mod rate_limit;
pub mod registrar;
pub mod service;
pub mod signing;
pub mod upstream;
pub mod worker_ca;

use std::sync::Arc;

use muster_admin::with_tls;
use muster_client::{ClientOptions, ControlPlaneClient};
use muster_proto::v1::worker_registration_service_server::WorkerRegistrationServiceServer;
use muster_tls::{ClientAuth, ClientTls, LiveTls, Role, ServerCheck, SwappableClientVerifier, TlsFiles};
use tokio::net::TcpListener;

pub use config::RegistrarConfig;
use rate_limit::RateLimiter;
use registrar::{CaBundle, Registrar};
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
    // The files are reloaded when they change (renewal, CA rotation): the control-plane
    // client, the Register listener and the bundle handed to workers all follow them.
    let live = TlsFiles::from_config(&config.tls).map(LiveTls::load).transpose()?;
    let mut options = ClientOptions::new(config.control_plane.clone());
    if let Some(live) = &live {
        options.tls = Some(ClientTls::live(live, ServerCheck::RoleAndHost(Role::ControlPlane))?);
    } else {
        tracing::warn!("INSECURE MODE: Register is served in plaintext; workers cannot pin the registrar");
    }
    // The files first: a missing or open key stops start-up before anything is dialled.
    let worker_ca_files = config.worker_ca_files();
    let (worker_ca, worker_ca_path) = worker_ca::from_config(worker_ca_files.clone())?;
    let client = Arc::new(ControlPlaneClient::new(options)?);
    let (recorded, cluster_id) = worker_ca::agree(&client, &worker_ca, &worker_ca_path).await?;
    tracing::info!(%cluster_id, sha256 = %recorded.sha256, retired = recorded.retired.len(), "worker CA ready");

    let ca_bundle = match &live {
        Some(live) => CaBundle::Live(live.clone()),
        None => CaBundle::Fixed(String::new()),
    };
    let now = muster_proto::clock::unix_now();
    let worker_ca_pem = recorded.trust_bundle(now);
    let service = Arc::new(RegistrationService {
        registrar: Registrar {
            control_plane: client,
            signer: Signer::new(worker_ca, cluster_id, config.worker_cert_validity),
            ca_bundle,
            gateway_list: Default::default(),
        },
        limiter: RateLimiter::new(config.register_per_second, config.register_burst),
        stats: Default::default(),
    });
    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(muster_admin::serve(
        admin,
        with_tls(service.clone(), live.clone()),
        config.admin_limits.clone(),
        admin_stopped,
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<WorkerRegistrationServiceServer<RegistrationService>>().await;
    let (reflection_v1, reflection_v1alpha) = muster_middleware::reflection_services(&[
        <WorkerRegistrationServiceServer<RegistrationService> as tonic::server::NamedService>::NAME,
    ])?;
    let limits = muster_middleware::ServerLimits::default();
    let tls = match &live {
        // Present the chain up to the cluster CA: the worker checks it against its token's pin.
        // Ask for a worker certificate (Renew) without requiring one (Register). Only the
        // worker CA (and a retired one whose workers may still hold valid certificates, so
        // they renew onto the current CA) is trusted: anything else fails the handshake.
        Some(live) => {
            let trust = SwappableClientVerifier::new(&worker_ca_pem, ClientAuth::Optional, "the worker CA")?;
            Some((live.server_config_with(trust.verifier(), true)?, trust))
        }
        None => None,
    };
    // A worker CA rotation: follow the CAs the cluster trusts, and sign with the one the files
    // hold once it changes.
    let following = tls.as_ref().map(|(_, trust)| {
        let (service, trust, client) = (service.clone(), trust.clone(), service.registrar.control_plane.clone());
        tokio::spawn(async move { worker_ca::follow(client, worker_ca_files, &service.registrar.signer, &trust).await })
    });
    let tls = tls.map(|(config, _)| config);
    let _reloader = live.as_ref().map(|live| live.spawn_reloader(config.tls.reload_interval, "registrar"));
    // Who may call what is the cluster's one table: Register is open (the token is the
    // credential), Renew needs a worker certificate of this cluster.
    let authorize = live.is_some().then(|| {
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
    if let Some(following) = following {
        following.abort();
    }
    stop_admin.send_replace(true);
    let _ = admin_task.await;
    Ok(())
}
