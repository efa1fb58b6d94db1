//! One gRPC server per port, built the same way for both: TLS (or the loud `--insecure`),
//! limits, tracing and client-certificate middleware, health driven by readiness, and
//! reflection (v1 and v1alpha) for `grpcurl`.

use std::sync::Arc;
use std::time::Duration;

use muster_config::{ControlPlaneConfig, ListenerLimits};
use muster_middleware::ServerLimits;
use muster_tls::{ClientAuth, ClientTls, LiveTls, Role, ServerCheck};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;

/// Which listener a server is for (who may call each of its methods is in
/// `muster_middleware::authz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// Peer RPCs: only other control-plane nodes.
    Raft,
    /// Client and membership API: operators and Muster components.
    Api,
}

impl Port {
    fn listener_name(self) -> &'static str {
        match self {
            Port::Raft => "raft",
            Port::Api => "api",
        }
    }
}

/// TLS material for serving (done by `muster-listener`, under its handshake deadline) and for
/// dialing peers; all `None` under `--insecure`. Both configs follow `live`, which reloads
/// the files when they change (see `muster_tls::LiveTls`).
#[derive(Clone)]
pub struct TlsSetup {
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// Dials only control-plane certificates (Raft peers, relays to the leader, joins).
    pub client: Option<ClientTls>,
    pub live: Option<Arc<LiveTls>>,
}

impl TlsSetup {
    pub fn from_config(config: &ControlPlaneConfig) -> anyhow::Result<Self> {
        let Some(files) = muster_tls::TlsFiles::from_config(&config.tls) else {
            tracing::warn!(
                "INSECURE MODE: TLS is off; peer and client traffic is plaintext and unauthenticated. \
                 Use only on a trusted local machine; run `musterctl tls init` for real deployments."
            );
            return Ok(Self { server: None, client: None, live: None });
        };
        let live = LiveTls::load(files)?;
        let client = ClientTls::live(&live, ServerCheck::RoleAndHost(Role::ControlPlane))?;
        let server = live.server_config(ClientAuth::Optional)?;
        Ok(Self { server: Some(server), client: Some(client), live: Some(live) })
    }

    /// Starts reloading the files (on SIGHUP and every `tls.reload_interval`) until the guard
    /// is dropped; `None` under `--insecure`.
    pub fn reloader(&self, config: &ControlPlaneConfig) -> Option<muster_tls::Reloader> {
        self.live.as_ref().map(|live| live.spawn_reloader(config.tls.reload_interval, "control-plane"))
    }
}

/// What `GetClusterMetadata` says of certificates: this node's own and its CAs, then the
/// client certificates its listeners verified.
pub fn certificate_expiries(live: Option<&LiveTls>) -> Vec<muster_proto::v1::CertificateExpiry> {
    use muster_proto::v1::{CertificateExpiry, CertificateSource};
    let Some(live) = live else { return Vec::new() };
    let mut certificates: Vec<CertificateExpiry> = live
        .expiries()
        .into_iter()
        .map(|expiry| CertificateExpiry {
            source: match expiry.source {
                muster_tls::CertSource::Own => CertificateSource::Own,
                muster_tls::CertSource::TrustedCa => CertificateSource::TrustedCa,
            } as i32,
            role: expiry.role,
            name: expiry.name,
            not_after_unix: expiry.not_after_unix,
        })
        .collect();
    certificates.extend(live.peers_seen().into_iter().map(|peer| CertificateExpiry {
        role: peer.identity.role.as_str().to_string(),
        name: peer.identity.name,
        not_after_unix: peer.not_after_unix,
        source: CertificateSource::Peer as i32,
    }));
    certificates
}

pub fn server_limits(limits: &muster_config::Limits) -> ServerLimits {
    ServerLimits {
        request_timeout: limits.request_timeout,
        max_concurrent_requests: limits.max_concurrent_requests,
        max_concurrent_streams: limits.max_concurrent_streams,
        max_message_bytes: limits.max_message_bytes,
    }
}

/// High-rate methods whose per-call log lines are debug-level (spans still exist for traces).
const QUIET_PATHS: &[&str] = &[
    "/muster.v1.RaftReplicationService/",
    "/muster.v1.RaftElectionService/",
    "/muster.v1.RaftClientService/",
    "/muster.v1.LivenessService/ReportLiveness",
    "/grpc.health.v1.Health/",
];

pub struct GrpcServer {
    port: Port,
    limits: ServerLimits,
    listener_limits: ListenerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    routes: RoutesBuilder,
    health: tonic_health::server::HealthReporter,
    service_names: Vec<&'static str>,
    ready: watch::Receiver<bool>,
    forward: Option<crate::leader_forward::LeaderForwardLayer>,
}

impl GrpcServer {
    pub fn new(
        port: Port,
        limits: &muster_config::Limits,
        tls: &TlsSetup,
        ready: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        Ok(Self {
            port,
            limits: server_limits(limits),
            listener_limits: limits.listener.clone(),
            tls: tls.server.clone(),
            routes,
            health,
            service_names: Vec::new(),
            ready,
            forward: None,
        })
    }

    /// Followers forward the operator's calls to the leader instead of answering with a hint
    /// (see `leader_forward`); for the API port.
    pub fn forwarding_to_leader(mut self, node_id: u64, tls: &TlsSetup) -> Self {
        let max_body = self.limits.max_message_bytes;
        self.forward = Some(crate::leader_forward::LeaderForwardLayer::new(node_id, tls.client.clone(), max_body));
        self
    }

    pub fn with_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Reflection (v1 and v1alpha) listing exactly the services this port serves.
    fn add_reflection(&mut self) -> anyhow::Result<()> {
        let (v1, v1alpha) = muster_middleware::reflection_services(&self.service_names)?;
        self.routes.add_service(v1);
        self.routes.add_service(v1alpha);
        Ok(())
    }

    /// Serves until `shutdown` turns true. Health reports SERVING only while the node is ready.
    pub async fn serve(mut self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        if let Err(err) = self.add_reflection() {
            tracing::error!(error = %err, port = ?self.port, "building the reflection service");
            return;
        }
        let Self { port, limits, listener_limits, tls, routes, health, service_names, mut ready, forward } = self;
        tokio::spawn(async move {
            loop {
                let status =
                    if *ready.borrow_and_update() { ServingStatus::Serving } else { ServingStatus::NotServing };
                health.set_service_status("", status).await;
                for name in &service_names {
                    health.set_service_status(*name, status).await;
                }
                if ready.changed().await.is_err() {
                    return;
                }
            }
        });

        let builder = muster_middleware::server_builder(&limits);
        let auth = tls.is_some().then(muster_middleware::AuthorizeLayer::cluster);
        let layers = tower::ServiceBuilder::new()
            .layer(muster_middleware::GrpcTraceLayer::new().with_quiet_paths(QUIET_PATHS))
            .layer(muster_middleware::overload_layer(&limits))
            .option_layer(auth)
            .option_layer(forward)
            .into_inner();
        let signal = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let router = builder
            .timeout(limits.request_timeout.max(Duration::from_millis(1)))
            .layer(layers)
            .add_routes(routes.routes());
        // The listener sets TCP_NODELAY and keepalive, and bounds handshakes, the preface
        // and connection counts (see muster-listener).
        let name = port.listener_name();
        let result = match tls {
            Some(tls) => {
                let incoming = muster_listener::tls(listener, tls, &listener_limits, name);
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            None => {
                let incoming = muster_listener::plain(listener, &listener_limits, name);
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        };
        if let Err(err) = result {
            tracing::error!(error = %err, ?port, "gRPC server stopped");
        }
    }
}
