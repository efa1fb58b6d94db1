//! Muster's heartbeat gateway: stateless, run any number of replicas. Workers keep one
//! `ReportStatus` stream open over mTLS (their id comes from their certificate only); the
//! gateway answers every report with the next TTL (adaptive to N workers and G gateways,
//! staggered, stretched when over budget) and sends the leader ONE `ReportLiveness` per
//! `batch_interval` with every beat it received, so heartbeats never touch the Raft log.
//!
//! Start-up: fetch the worker CA (to verify workers), get one batch accepted (to learn the
//! policy), only then serve the heartbeat port and report ready.
//!
//! - [`config`]: settings; [`tls`]: both TLS sides and the worker CA;
//! - [`identity`]: worker id from the certificate; [`service`]: the tonic stream handler;
//! - [`session`]: one stream's reports → beats and replies, and which are traced; [`ack`]: a
//!   reply as the worker hears it; [`admission`]: admitted, refused and connected workers
//!   (one stream each);
//! - [`ttl`]: the adaptive TTL formula; [`budget`]: the token bucket;
//! - [`beats`]: pending beats; [`batch`]: the batching task; [`view`]: the last batch answer;
//! - [`state`]: what all of these share; [`readiness`]: `/readyz`; [`metrics`]: `/metrics`.

pub mod ack;
pub mod admission;
pub mod batch;
pub mod beats;
pub mod budget;
pub mod config;
pub mod identity;
pub mod metrics;
pub mod profile_updates;
pub mod readiness;
pub mod service;
pub mod session;
pub mod split;
pub mod state;
pub mod tls;
pub mod ttl;
pub mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_client::{ClientOptions, ControlPlaneClient};
use muster_proto::v1::heartbeat_service_server::HeartbeatServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::GatewayConfig;
use service::{Authentication, Heartbeats, SERVICE_NAME};
use state::GatewayState;

/// How long one batch may keep retrying inside the client (leader changes) before it counts
/// as failed and its beats wait for the next one.
const BATCH_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `StatusReport` decoded: room for the largest valid profile, and no more (a larger
/// one is refused as oversize without being buffered).
const MAX_REPORT_BYTES: usize = muster_proto::limits::MAX_STATUS_REPORT_BYTES;
/// Heartbeat spans and logs are DEBUG: they are the hot path (a sampled share of reports get
/// an INFO span of their own, see [`session::TraceSampler`]).
const QUIET_PATHS: &[&str] = &["/muster.v1.HeartbeatService/"];

/// Serves heartbeats on `listener` (and the admin endpoints on `admin`) until `shutdown`
/// resolves. The listener is bound by the caller; connections wait in its backlog until the
/// gateway is ready.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let advertise = config.advertise_addr_for(listener.local_addr()?);
    // Reloaded when the files change: the control-plane client and the heartbeat listener
    // follow renewals and CA rotations without a restart.
    let live = muster_tls::TlsFiles::from_config(&config.tls).map(muster_tls::LiveTls::load).transpose()?;
    let cert_name = match &live {
        Some(live) => Some(
            live.current()
                .identity
                .clone()
                .ok_or_else(|| anyhow::anyhow!("the gateway's certificate names no spiffe://muster/gateway/<name>"))?
                .name,
        ),
        None => None,
    };
    let gateway_id = config.gateway_id_for(&advertise, cert_name.as_deref())?;
    let state =
        Arc::new(GatewayState::new(gateway_id.clone(), advertise.clone(), config.min_report_interval, Instant::now()));
    tracing::info!(%gateway_id, %advertise, "heartbeat gateway starting");

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stop.send_replace(true);
    });
    let (stop_admin, admin_stopped) = watch::channel(false);
    let admin_task = tokio::spawn(muster_admin::serve(
        admin,
        muster_admin::with_tls(state.clone(), live.clone()),
        config.admin_limits.clone(),
        admin_stopped,
    ));
    let _reloader = live.as_ref().map(|live| live.spawn_reloader(config.tls.reload_interval, "heartbeat-gateway"));

    let result = serve(config, listener, state, live, stopped).await;
    stop_admin.send_replace(true);
    let _ = admin_task.await;
    result
}

async fn serve(
    config: GatewayConfig,
    listener: TcpListener,
    state: Arc<GatewayState>,
    live: Option<Arc<muster_tls::LiveTls>>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut options = ClientOptions::new(config.control_plane.clone());
    options.timeout = BATCH_CALL_TIMEOUT;
    if let Some(live) = &live {
        let check = muster_tls::ServerCheck::RoleAndHost(muster_tls::Role::ControlPlane);
        options.tls = Some(muster_tls::ClientTls::live(live, check)?);
    } else {
        tracing::warn!(
            "INSECURE MODE: heartbeats are served in plaintext and workers name themselves with \
             x-muster-worker-id metadata; anyone can report for any worker. Development only."
        );
    }
    let client = Arc::new(ControlPlaneClient::new(options)?);

    // Start-up: the worker CA, then one accepted batch. Either may wait for other components.
    let startup = async {
        let auth_and_tls = match &live {
            Some(live) => {
                state.readiness.set_phase("waiting for a registrar to create the worker CA");
                let trust = tls::fetch_worker_ca(&client).await;
                tracing::info!(cluster_id = %trust.cluster_id, "worker CA loaded");
                let worker_trust = tls::worker_trust(&trust.cert_pem)?;
                let server_tls = tls::server_tls(live, worker_trust.clone())?;
                (Authentication::Certificate { cluster_id: trust.cluster_id }, Some((server_tls, worker_trust)))
            }
            None => (Authentication::InsecureHeader, None),
        };
        state.readiness.set_phase("waiting for the control-plane leader to accept this gateway's first liveness batch");
        let mut batcher = batch::Batcher::new(state.clone(), client.clone(), config.batch_interval);
        batcher.until_first_success().await;
        anyhow::Ok((auth_and_tls, batcher))
    };
    let ((auth, server_tls), batcher) = tokio::select! {
        ready = startup => ready?,
        _ = stopped.wait_for(|stop| *stop) => return Ok(()),
    };
    let view = state.view();
    tracing::info!(
        workers = view.worker_count,
        gateways = view.live_gateways,
        ttl_ms = view.base_ttl_ms,
        budget_per_second = view.budget_per_second,
        "first liveness batch accepted; serving heartbeats"
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving).await;
    let (stop_batches, batches_stopped) = watch::channel(false);
    let batch_task = tokio::spawn(batcher.run(batches_stopped, Some(health.clone())));

    let (reflection_v1, reflection_v1alpha) = muster_middleware::reflection_services(&[SERVICE_NAME])?;
    // `server_builder`'s request timeout covers a handler until its response headers, not the
    // body: ReportStatus returns its stream at once, so long-lived streams are not cut.
    let limits = muster_middleware::ServerLimits::default();
    // No HTTP/2 keepalive pings on this port: every stream carries a report per TTL, a worker
    // times out its own acks, and a silent worker's lease ends at the leader whatever its
    // connection does (TCP keepalive still reaps the socket). hyper's keepalive costs a lock,
    // a clock read and a timer poll on every frame of every connection.
    let builder = muster_middleware::server_builder(&limits).http2_keepalive_interval(None);
    // Who may call what is the cluster's one table; here a caller is a worker of this cluster.
    let authorize = match &auth {
        Authentication::Certificate { cluster_id } => {
            let cluster_id = cluster_id.clone();
            Some(muster_middleware::AuthorizeLayer::new(move |der: &[u8]| {
                muster_tls::worker_identity(der, &cluster_id)
            }))
        }
        Authentication::InsecureHeader => None,
    };
    let sampler = session::TraceSampler::new(config.heartbeat_trace_ratio);
    let heartbeats = Heartbeats { state: state.clone(), auth, sampler };
    let shutdown = {
        let state = state.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
            tracing::info!("shutting down: ending every heartbeat stream");
            state.begin_close();
        }
    };
    state.readiness.set_serving();
    let router = builder
        .layer(muster_middleware::GrpcTraceLayer::new().with_quiet_paths(QUIET_PATHS))
        .layer(muster_middleware::overload_layer(&limits))
        .layer(tower::util::option_layer(authorize))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(HeartbeatServiceServer::new(heartbeats).max_decoding_message_size(MAX_REPORT_BYTES));
    // The listener sets TCP_NODELAY and keepalive and bounds handshakes, the preface and
    // connections; past the preface its reads cost one branch (see muster-listener).
    let listener_limits = &config.listener_limits;
    let served = match server_tls {
        Some((server_tls, worker_trust)) => {
            let following = tokio::spawn(tls::follow_worker_ca(client.clone(), worker_trust));
            let incoming = muster_listener::tls(listener, server_tls, listener_limits, "heartbeat");
            let served = router.serve_with_incoming_shutdown(incoming, shutdown).await;
            following.abort();
            served
        }
        None => {
            let incoming = muster_listener::plain(listener, listener_limits, "heartbeat");
            router.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    };
    // Last beats (LEFT reports of workers that stopped with us) still go to the leader.
    stop_batches.send_replace(true);
    let _ = batch_task.await;
    served?;
    Ok(())
}
