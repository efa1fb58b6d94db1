//! Wiring of a static node: store → node → peer listener (the static peer protocol on the
//! peer port) → API (KV, membership, health; worker-tier services answer which mode they
//! need) → admin HTTP → the prober.

use std::sync::Arc;

use anyhow::Context;
use muster_config::ControlPlaneConfig;
use muster_proto::v1::cluster_management_service_server::ClusterManagementServiceServer;
use muster_proto::v1::liveness_service_server::LivenessServiceServer;
use muster_proto::v1::token_service_server::TokenServiceServer;
use muster_proto::v1::worker_admin_service_server::WorkerAdminServiceServer;
use muster_proto::v1::worker_registry_service_server::WorkerRegistryServiceServer;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::api::{NeedsWorkerTier, StaticClusterApi};
use super::node::{StaticNode, StaticSettings, peer_body_limit};
use super::store::StaticStore;
use crate::app::Listeners;
use crate::grpc::{LivenessApi, RegistryApi, TokenApi, WorkerAdminApi, kv_server};
use crate::server::{GrpcServer, Port, TlsSetup};

/// The file a static node keeps its KV in, under `data_dir`.
pub const STORE_FILE: &str = "static-kv.redb";

/// A started static node; [`StaticControlPlane::shutdown`] stops it.
pub struct StaticControlPlane {
    pub node: Arc<StaticNode>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Reloads the TLS files while the node runs.
    _tls_reloader: Option<muster_tls::Reloader>,
}

impl StaticControlPlane {
    pub async fn start(config: ControlPlaneConfig, listeners: Listeners) -> anyhow::Result<Self> {
        config.validate()?;
        let settings = StaticSettings::from_config(&config)
            .with_context(|| format!("cluster mode `{}` is not `static`", config.cluster.name()))?;
        let tls = TlsSetup::from_config(&config)?;
        crate::data_dir::secure(&config.data_dir)?;
        crate::data_dir::refuse_other_mode(&config.data_dir, "static")?;
        let store = StaticStore::open(&config.data_dir.join(STORE_FILE))
            .with_context(|| format!("opening {}", config.data_dir.join(STORE_FILE).display()))?;
        let config = Arc::new(config);
        let id = settings.node_id;
        let client_tls = tls.client.as_ref().map(|client| client.rustls_config());
        let node = Arc::new(StaticNode::new(settings, config.clone(), store, client_tls));
        tracing::info!(
            node = id,
            peers = node.settings.peers.len(),
            heartbeat_interval = ?node.settings.heartbeat_interval,
            failure_threshold = ?node.settings.failure_threshold,
            require_majority = node.settings.require_majority,
            "control-plane node starting in static mode: KV, membership and health; registrars and gateways \
             need mode = \"worker-tier\""
        );

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let limits = &config.limits;
        tasks.spawn(super::peer_http::serve(
            listeners.raft,
            tls.server.clone(),
            limits.listener.clone(),
            peer_body_limit(&config),
            node.clone(),
            shutdown_rx.clone(),
        ));

        let api_server = GrpcServer::new(Port::Api, limits, &tls, node.subscribe_ready())?
            .forwarding_to_leader(id, &tls)
            .with_service(kv_server(node.clone(), limits, None))
            .with_service(ClusterManagementServiceServer::new(StaticClusterApi::new(node.clone(), tls.live.clone())))
            .with_service(NeedsWorkerTier::<TokenServiceServer<TokenApi>>::new())
            .with_service(NeedsWorkerTier::<WorkerRegistryServiceServer<RegistryApi>>::new())
            .with_service(NeedsWorkerTier::<WorkerAdminServiceServer<WorkerAdminApi>>::new())
            .with_service(NeedsWorkerTier::<LivenessServiceServer<LivenessApi>>::new());
        tasks.spawn(api_server.serve(listeners.api, shutdown_rx.clone()));
        let admin_source = muster_admin::with_tls(node.clone(), tls.live.clone());
        tasks.spawn(muster_admin::serve(listeners.admin, admin_source, limits.admin.clone(), shutdown_rx.clone()));
        tasks.spawn(node.clone().run_prober(shutdown_rx));
        Ok(Self { node, shutdown, tasks, _tls_reloader: tls.reloader(&config) })
    }

    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
    }
}
