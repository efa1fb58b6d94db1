//! Wiring: storage → Raft → gRPC servers (peer port and API port) → admin HTTP →
//! lifecycle. `start` returns a handle so tests can run a node in-process; `run` is what
//! the binary calls.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use muster_config::{ClusterMode, ControlPlaneConfig, WorkerTierRole};
use muster_proto::v1::cluster_management_service_server::ClusterManagementServiceServer;
use muster_proto::v1::liveness_service_server::LivenessServiceServer;
use muster_proto::v1::maintenance_service_server::MaintenanceServiceServer;
use muster_proto::v1::raft_election_service_server::RaftElectionServiceServer;
use muster_proto::v1::raft_replication_service_server::RaftReplicationServiceServer;
use muster_proto::v1::snapshot_service_server::SnapshotServiceServer;
use muster_proto::v1::token_service_server::TokenServiceServer;
use muster_proto::v1::worker_admin_service_server::WorkerAdminServiceServer;
use muster_proto::v1::worker_registry_service_server::WorkerRegistryServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::grpc::{
    ClusterApi, LivenessApi, MaintenanceApi, RaftPeerApi, RegistryApi, SnapshotApi, TokenApi, WorkerAdminApi, kv_server,
};
use crate::lifecycle::{self, Membership};
use crate::network::PeerChannels;
use crate::node::{NodeHandle, Restored};
use crate::raft_config;
use crate::server::{GrpcServer, Port};
use crate::store::{LogStore, StateMachineStore, open_database};
use crate::types::{NodeAddr, NodeId, Raft};
use crate::write_batch::WriteBatcher;

/// The three listeners a node serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub raft: TcpListener,
    pub api: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &ControlPlaneConfig) -> anyhow::Result<Self> {
        use muster_listener::bind;
        Ok(Self {
            raft: bind("listen.raft_addr", config.listen.raft_addr).await?,
            api: bind("listen.api_addr", config.listen.api_addr).await?,
            admin: bind("listen.admin_addr", config.listen.admin_addr).await?,
        })
    }
}

/// A started node; dropping it does not stop it, [`ControlPlane::shutdown`] does.
pub struct ControlPlane {
    pub node: Arc<NodeHandle>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Reloads the TLS files while the node runs.
    _tls_reloader: Option<muster_tls::Reloader>,
}

/// What this node is and whom it starts with, from the cluster mode.
fn identity(config: &ControlPlaneConfig) -> anyhow::Result<(NodeId, NodeAddr, Membership)> {
    let own_addr = NodeAddr { raft_addr: config.advertised_raft_addr(), api_addr: config.advertised_api_addr() };
    match &config.cluster {
        ClusterMode::SingleNode => Ok((1, own_addr.clone(), Membership::Bootstrap(BTreeMap::from([(1, own_addr)])))),
        ClusterMode::Raft { node_id, peers }
        | ClusterMode::WorkerTier { role: WorkerTierRole::Server, node_id: Some(node_id), peers, .. } => {
            let members: BTreeMap<NodeId, NodeAddr> = peers
                .iter()
                .map(|peer| (peer.id, NodeAddr { raft_addr: peer.raft_addr.clone(), api_addr: peer.api_addr.clone() }))
                .collect();
            let own = members.get(node_id).cloned().unwrap_or(own_addr);
            let membership = if config.join.is_empty() {
                Membership::Bootstrap(members)
            } else {
                Membership::Join(config.join.clone())
            };
            Ok((*node_id, own, membership))
        }
        ClusterMode::Static { .. } => {
            anyhow::bail!("mode = \"static\" runs without Raft: start it with `static_mode::StaticControlPlane`")
        }
        ClusterMode::WorkerTier { .. } => anyhow::bail!(
            "a control-plane node runs mode = \"worker-tier\" with role = \"server\" and a node_id; \
             role = \"worker\" is the worker agent's"
        ),
    }
}

impl ControlPlane {
    pub async fn start(config: ControlPlaneConfig, listeners: Listeners) -> anyhow::Result<Self> {
        config.validate()?;
        let (id, addr, membership) = identity(&config)?;
        let tls = crate::server::TlsSetup::from_config(&config)?;
        let config = Arc::new(config);

        crate::data_dir::secure(&config.data_dir)?;
        crate::write_profile::enable(config.raft.profile_write_path);
        crate::data_dir::refuse_other_mode(&config.data_dir, config.cluster.name())?;
        crate::store::scrub_worker_ca_key(&config.data_dir).context("removing a stored worker CA key")?;
        let log_meta = open_database(&config.data_dir.join("raft-meta.redb"))?;
        let log_store = LogStore::open(&config.data_dir.join("raft-log"), log_meta, config.limits.max_message_bytes)?;
        let restored = Restored { last_log_index: log_store.last_index(), had_vote: log_store.has_saved_vote()? };
        let fsm_db = open_database(&config.data_dir.join("fsm.redb"))?;
        let state_machine =
            StateMachineStore::new(fsm_db, config.data_dir.join("snapshots"), retention(&config.watch))?;
        let channels =
            PeerChannels::new(tls.client.clone(), config.limits.max_message_bytes, config.raft.snapshot_chunk_bytes);
        let raft = Raft::new(id, Arc::new(raft_config(&config)?), channels.clone(), log_store, state_machine.clone())
            .await
            .context("starting the Raft node")?;
        let node = NodeHandle::new(id, addr, raft, state_machine, channels, config.clone(), restored);
        tracing::info!(node = id, raft = %node.addr.raft_addr, api = %node.addr.api_addr, mode = config.cluster.name(), "control-plane node starting");

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let limits = &config.limits;

        let peer_server = GrpcServer::new(Port::Raft, limits, &tls, node.subscribe_ready())?
            .with_service(
                RaftReplicationServiceServer::new(RaftPeerApi::new(node.clone()))
                    .max_decoding_message_size(limits.max_message_bytes)
                    .max_encoding_message_size(limits.max_message_bytes),
            )
            .with_service(RaftElectionServiceServer::new(RaftPeerApi::new(node.clone())))
            .with_service(SnapshotServiceServer::new(SnapshotApi::new(node.clone())).max_decoding_message_size(
                config.raft.snapshot_chunk_bytes.saturating_mul(2).max(limits.max_message_bytes),
            ));
        tasks.spawn(peer_server.serve(listeners.raft, shutdown_rx.clone()));

        let api_server = GrpcServer::new(Port::Api, limits, &tls, node.subscribe_ready())?
            .forwarding_to_leader(id, &tls)
            .with_service(kv_server(node.clone(), limits, Some(WriteBatcher::start(node.clone()))))
            .with_service(ClusterManagementServiceServer::new(ClusterApi::new(node.clone()).with_tls(tls.live.clone())))
            .with_service(TokenServiceServer::new(TokenApi::new(node.clone(), tls.live.clone())))
            .with_service(WorkerRegistryServiceServer::new(RegistryApi::new(node.clone())))
            .with_service(WorkerAdminServiceServer::new(WorkerAdminApi::new(node.clone())))
            .with_service(LivenessServiceServer::new(LivenessApi::new(node.clone())))
            .with_service(MaintenanceServiceServer::new(MaintenanceApi::new(node.clone())));
        tasks.spawn(api_server.serve(listeners.api, shutdown_rx.clone()));

        tasks.spawn(muster_admin::serve(
            listeners.admin,
            muster_admin::with_tls(node.clone(), tls.live.clone()),
            config.limits.admin.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(crate::leases::sweeper::run(node.clone(), shutdown_rx.clone()));
        tasks.spawn(crate::worker_ca_export::run(node.clone(), shutdown_rx.clone()));
        tasks.spawn(crate::worker_gc::run(node.clone(), config.worker_gc.clone(), shutdown_rx.clone()));
        tasks.spawn(lifecycle::run(node.clone(), membership, shutdown_rx));
        Ok(Self { node, shutdown, tasks, _tls_reloader: tls.reloader(&config) })
    }

    /// Stops serving, then stops Raft (flushing nothing: every acknowledged write is durable).
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
        if let Err(err) = self.node.raft.shutdown().await {
            tracing::warn!(error = %err, "raft shutdown");
        }
    }
}

/// How much watch history the node keeps.
fn retention(watch: &muster_config::WatchTuning) -> crate::store::Retention {
    crate::store::Retention { max_revisions: watch.history_max_revisions, max_age: watch.history_max_age }
}

/// Runs a node of the configured mode until `signal` resolves.
pub async fn run(config: ControlPlaneConfig, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    if matches!(config.cluster, ClusterMode::Static { .. }) {
        let node = crate::static_mode::StaticControlPlane::start(config, listeners).await?;
        signal.await;
        tracing::info!("shutting down");
        node.shutdown().await;
        return Ok(());
    }
    let node = ControlPlane::start(config, listeners).await?;
    signal.await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
