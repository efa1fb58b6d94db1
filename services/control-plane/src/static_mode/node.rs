//! One static-mode node: its store, its view of the peers, the prober that keeps the view
//! current, the write path, and its answers to the leadership seam.
//!
//! **Who leads.** Every `heartbeat_interval` the node probes every peer (a loop per peer, each
//! request bounded by `failure_threshold`), marks peers silent for longer than `failure_threshold`
//! Unreachable, and takes the lowest healthy id as leader ([`PeerView`]). A node that finds
//! itself leader first waits until it has heard from, and pulled what it lacks from, every peer
//! it sees healthy (a pull follows any answer whose revision moved), then starts a new epoch
//! one above every epoch it has seen, durably; only then does it take writes. Terms are
//! ordered (epoch, leader id); a leader that learns of a newer term than its own (a healed
//! partition under `require_majority = false`, where both sides may even have picked the same
//! epoch) starts a newer one, so its next writes win over the other side's.
//!
//! **Writes** are evaluated against the leader's own values, committed (fsynced) with the tag
//! (epoch, leader id, sequence), then pushed to every peer the leader sees healthy, and
//! answered once the pushes finished or timed out. With `require_majority` the answer is
//! success only when a majority of the peer list (the leader included) stored the write.
//!
//! **Reads** are local, at every consistency: there is no quorum to confirm a read with.
//! Linearizable and lease reads are refused while this node knows no leader (under
//! `require_majority`: while it sees no majority), stale reads never are. Every answer says
//! which leader and epoch the node was following.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_config::{ClusterMode, ControlPlaneConfig, StaticPeer};
use muster_middleware::{ApiError, LeaderHint};
use muster_proto::v1;
use tokio::sync::watch;

use super::health::{Health, PeerView};
use super::peer_http::{PeerClient, PeerProtocol};
use super::store::StaticStore;
use crate::errors::storage_error;
use crate::leadership::{AppliedKv, Confirmation, Leadership, Standing};

/// The most entries one pull answer carries.
const PULL_PAGE: u32 = 512;

/// The mode's settings, from `[cluster]`.
#[derive(Clone, Debug)]
pub struct StaticSettings {
    pub node_id: u64,
    pub peers: Vec<StaticPeer>,
    pub heartbeat_interval: Duration,
    pub failure_threshold: Duration,
    pub require_majority: bool,
}

impl StaticSettings {
    pub fn from_config(config: &ControlPlaneConfig) -> Option<Self> {
        match &config.cluster {
            ClusterMode::Static { node_id, peers, heartbeat_interval, failure_threshold, require_majority } => {
                Some(Self {
                    node_id: *node_id,
                    peers: peers.clone(),
                    heartbeat_interval: *heartbeat_interval,
                    failure_threshold: *failure_threshold,
                    require_majority: *require_majority,
                })
            }
            _ => None,
        }
    }
}

/// What the node publishes about its standing after every round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Term {
    epoch: u64,
    leader: Option<u64>,
    /// Leading, caught up and in its own epoch: takes writes.
    leading: bool,
}

/// How far this node has pulled a peer's change feed.
#[derive(Clone, Copy, Debug, Default)]
struct Pulled {
    incarnation: u64,
    revision: u64,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct StaticCounters {
    pub writes: AtomicU64,
    pub writes_refused: AtomicU64,
    pub pushes_failed: AtomicU64,
    pub entries_pulled: AtomicU64,
    pub probes_failed: AtomicU64,
}

pub struct StaticNode {
    pub settings: StaticSettings,
    pub config: Arc<ControlPlaneConfig>,
    store: StaticStore,
    view: Mutex<PeerView>,
    term: watch::Sender<Term>,
    ready: watch::Sender<bool>,
    clients: BTreeMap<u64, Arc<PeerClient>>,
    /// When each peer last answered a heartbeat, Unix milliseconds.
    answered_unix_ms: Mutex<BTreeMap<u64, u64>>,
    pulled: Mutex<BTreeMap<u64, Pulled>>,
    /// Peers answered and pulled from since they were last Unreachable (or since start).
    synced: Mutex<BTreeSet<u64>>,
    pub counters: StaticCounters,
}

impl StaticNode {
    pub fn new(
        settings: StaticSettings,
        config: Arc<ControlPlaneConfig>,
        store: StaticStore,
        client_tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let view = PeerView::new(
            settings.node_id,
            &settings.peers,
            settings.failure_threshold,
            settings.require_majority,
            Instant::now(),
        );
        let max_body = peer_body_limit(&config);
        let clients = view
            .probe_targets()
            .into_iter()
            .map(|(id, addr)| {
                // A request may take up to the threshold: a slow answer still counts, and a
                // hung peer holds up only its own probe loop.
                (id, Arc::new(PeerClient::new(addr, client_tls.clone(), settings.failure_threshold, max_body)))
            })
            .collect();
        let epoch = store.newest_term().map_or(0, |(epoch, _)| epoch);
        Self {
            settings,
            config,
            store,
            view: Mutex::new(view),
            term: watch::Sender::new(Term { epoch, leader: None, leading: false }),
            ready: watch::Sender::new(false),
            clients,
            answered_unix_ms: Mutex::new(BTreeMap::new()),
            pulled: Mutex::new(BTreeMap::new()),
            synced: Mutex::new(BTreeSet::new()),
            counters: StaticCounters::default(),
        }
    }

    pub fn subscribe_ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    fn own_heartbeat(&self) -> v1::StaticHeartbeat {
        let term = *self.term.borrow();
        let (epoch, epoch_leader_id) = self.store.newest_term().unwrap_or((term.epoch, 0));
        v1::StaticHeartbeat {
            node_id: self.settings.node_id,
            epoch,
            epoch_leader_id,
            leader_id: term.leader.unwrap_or(0),
            incarnation: self.store.incarnation(),
            revision: self.store.revision(),
        }
    }

    /// Probes every peer every `heartbeat_interval` until `shutdown`: one loop per peer, so a
    /// peer that hangs delays only its own probes, and a steady tick that expires the silent
    /// and settles who leads.
    pub async fn run_prober(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut probes = tokio::task::JoinSet::new();
        for peer in self.clients.keys().copied() {
            probes.spawn(self.clone().probe_forever(peer));
        }
        let mut ticks = tokio::time::interval(self.settings.heartbeat_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = async { drop(shutdown.wait_for(|stop| *stop).await) };
            tokio::select! {
                _ = ticks.tick() => self.tick(),
                _ = stopping => return, // dropping `probes` stops the probe loops
            }
        }
    }

    async fn probe_forever(self: Arc<Self>, peer: u64) {
        let Some(client) = self.clients.get(&peer).cloned() else { return };
        let mut ticks = tokio::time::interval(self.settings.heartbeat_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match client.heartbeat(&self.own_heartbeat()).await {
                Ok(report) if report.node_id == peer => self.heard(peer, report).await,
                Ok(report) => {
                    self.counters.probes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        peer,
                        answered_as = report.node_id,
                        "a peer's address answered as another node; check `cluster.peers`"
                    );
                }
                Err(err) => {
                    self.counters.probes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer, error = %err, "heartbeat failed");
                }
            }
        }
    }

    /// Expires the silent, then settles who leads.
    fn tick(&self) {
        let changes = self.view.lock().expect("view lock").expire(Instant::now());
        for change in changes {
            self.synced.lock().expect("synced lock").remove(&change.peer);
            tracing::warn!(peer = change.peer, after = ?self.settings.failure_threshold, "peer unreachable");
        }
        self.settle();
    }

    /// `peer` answered: mark it healthy, remember what it said, pull what it has that we lack.
    async fn heard(&self, peer: u64, report: v1::StaticHeartbeat) {
        if let Some(change) = self.view.lock().expect("view lock").answered(peer, Instant::now()) {
            tracing::info!(peer = change.peer, "peer healthy");
        }
        self.answered_unix_ms.lock().expect("answers lock").insert(peer, unix_ms());
        if let Err(err) = self.store.observe_term(report.epoch, report.epoch_leader_id) {
            tracing::error!(error = %err, "recording a peer's term");
        }
        let pulled = self.pulled.lock().expect("pulled lock").get(&peer).copied().unwrap_or_default();
        let from = if pulled.incarnation == report.incarnation { pulled.revision } else { 0 };
        let caught_up = if report.revision > from || pulled.incarnation != report.incarnation {
            self.pull(peer, from).await
        } else {
            true
        };
        if caught_up {
            self.synced.lock().expect("synced lock").insert(peer);
        }
    }

    /// Pulls `peer`'s changes after `from` and merges them; whether it got to the end.
    async fn pull(&self, peer: u64, mut from: u64) -> bool {
        let Some(client) = self.clients.get(&peer) else { return false };
        loop {
            let request = v1::StaticChangesRequest { after_revision: from, limit: PULL_PAGE };
            let page = match client.changes(&request).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::debug!(peer, error = %err, "pulling changes failed");
                    return false;
                }
            };
            let last = page.entries.last().map_or(from, |entry| entry.revision);
            let count = page.entries.len() as u64;
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.merge(page.entries)).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::error!(peer, error = %err, "storing pulled changes");
                    return false;
                }
                Err(err) => {
                    tracing::error!(peer, error = %err, "storing pulled changes");
                    return false;
                }
            }
            self.counters.entries_pulled.fetch_add(count, Ordering::Relaxed);
            self.pulled
                .lock()
                .expect("pulled lock")
                .insert(peer, Pulled { incarnation: page.incarnation, revision: last });
            from = last;
            if !page.more {
                return true;
            }
        }
    }

    /// Publishes who leads; starts a new epoch when this node takes over (once it has pulled
    /// from every peer it sees healthy), or when it learns of a newer term than its own.
    fn settle(&self) {
        let (leader, majority, healthy) = {
            let view = self.view.lock().expect("view lock");
            (view.leader(), view.has_majority(), view.healthy_count())
        };
        let current = *self.term.borrow();
        let me = self.settings.node_id;
        let newest = self.store.newest_term().unwrap_or((current.epoch, 0));
        let seen = newest.0;
        let next = if leader == Some(me) && !current.leading && !self.synced_with_healthy_peers() {
            if current.leader != leader {
                tracing::info!(node = me, "leading next: pulling from every healthy peer before taking writes");
            }
            Term { epoch: seen, leader, leading: false }
        } else if leader == Some(me) {
            // Keep the epoch only while it is still the newest term anyone has told us of.
            let epoch = if current.leading && newest == (current.epoch, me) {
                current.epoch
            } else {
                match self.store.begin_epoch(me) {
                    Ok(epoch) => {
                        tracing::info!(node = me, epoch, "leading (static mode)");
                        epoch
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "starting an epoch; not leading");
                        self.term.send_replace(Term { epoch: seen, leader: None, leading: false });
                        self.ready.send_replace(false);
                        return;
                    }
                }
            };
            Term { epoch, leader, leading: true }
        } else {
            if current.leading {
                tracing::warn!(node = me, ?leader, "no longer leading (static mode)");
            }
            Term { epoch: seen, leader, leading: false }
        };
        if next.leader != current.leader && !next.leading {
            match next.leader {
                Some(id) => tracing::info!(leader = id, epoch = next.epoch, "following"),
                None => tracing::warn!(
                    healthy,
                    peers = self.settings.peers.len(),
                    majority,
                    "no leader: this node does not see a majority of its peers (require_majority)"
                ),
            }
        }
        self.term.send_replace(next);
        self.ready.send_replace(next.leader.is_some());
    }

    /// Whether this node has heard from, and pulled from, every other peer it sees healthy.
    fn synced_with_healthy_peers(&self) -> bool {
        let me = self.settings.node_id;
        let healthy: Vec<u64> = {
            let view = self.view.lock().expect("view lock");
            view.peers().into_iter().filter(|p| p.id != me && p.health == Health::Healthy).map(|p| p.id).collect()
        };
        let synced = self.synced.lock().expect("synced lock");
        healthy.iter().all(|id| synced.contains(id))
    }

    fn peer(&self, id: u64) -> Option<&StaticPeer> {
        self.settings.peers.iter().find(|peer| peer.id == id)
    }

    /// Why there is no leader, for refusals and `/readyz`.
    pub fn no_leader_reason(&self) -> String {
        let view = self.view.lock().expect("view lock");
        if self.settings.require_majority && !view.has_majority() {
            format!(
                "no leader: this node sees {} of {} peers healthy and require_majority needs {}",
                view.healthy_count(),
                self.settings.peers.len(),
                self.settings.peers.len() / 2 + 1
            )
        } else {
            "no leader yet: the first heartbeat round has not finished".to_string()
        }
    }

    /// Pushes `entry` to every peer this node sees healthy; how many stored it.
    async fn replicate(&self, entry: v1::StaticEntry) -> usize {
        let healthy: Vec<u64> = {
            let view = self.view.lock().expect("view lock");
            view.peers().into_iter().filter(|p| p.health == Health::Healthy).map(|p| p.id).collect()
        };
        let batch = v1::StaticEntries { sender_id: self.settings.node_id, entries: vec![entry] };
        let pushes = healthy.into_iter().filter_map(|id| self.clients.get(&id).map(|client| (id, client))).map(
            |(id, client)| {
                let batch = &batch;
                async move { (id, client.store(batch).await) }
            },
        );
        let mut stored = 0;
        for (peer, result) in futures::future::join_all(pushes).await {
            match result {
                Ok(_) => stored += 1,
                Err(err) => {
                    self.counters.pushes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer, error = %err, "pushing a write failed; the peer pulls it later");
                }
            }
        }
        stored
    }

    /// The seed's `GetClusterMetadata` from this node's point of view.
    pub fn cluster_metadata(&self) -> v1::ClusterMembership {
        let term = *self.term.borrow();
        let statuses = self.view.lock().expect("view lock").peers();
        let answered = self.answered_unix_ms.lock().expect("answers lock").clone();
        let members = statuses
            .iter()
            .map(|status| {
                let peer = self.peer(status.id);
                v1::Member {
                    node_id: status.id,
                    raft_addr: status.addr.clone(),
                    api_addr: peer.map(|p| p.api_addr.clone()).unwrap_or_default(),
                    role: v1::MemberRole::Voter as i32,
                    is_leader: term.leader == Some(status.id),
                    matched_index: 0,
                    health: match status.health {
                        Health::Healthy => v1::PeerHealth::Healthy,
                        Health::Unreachable => v1::PeerHealth::Unreachable,
                    } as i32,
                    last_heartbeat_unix_ms: answered.get(&status.id).copied().unwrap_or(0),
                }
            })
            .collect();
        let revision = self.store.revision();
        v1::ClusterMembership {
            cluster_id: String::new(),
            node_id: self.settings.node_id,
            leader_id: term.leader.unwrap_or(0),
            leader_api_addr: term.leader.and_then(|id| self.peer(id)).map(|p| p.api_addr.clone()).unwrap_or_default(),
            term: term.epoch,
            commit_index: revision,
            applied_index: revision,
            last_log_index: revision,
            snapshot_index: 0,
            purged_index: 0,
            state: if term.leading { "leader" } else { "follower" }.to_string(),
            joint: false,
            members,
            ready: self.is_ready(),
            not_ready_reason: if self.is_ready() { String::new() } else { self.no_leader_reason() },
            mode: "static".to_string(),
            // Filled in by the cluster service, which holds the TLS material.
            certificates: Vec::new(),
        }
    }

    /// `(peer id, healthy)` for every peer but this node, for `/metrics`.
    pub fn peer_health(&self) -> Vec<(u64, bool)> {
        let me = self.settings.node_id;
        let view = self.view.lock().expect("view lock");
        view.peers().into_iter().filter(|p| p.id != me).map(|p| (p.id, p.health == Health::Healthy)).collect()
    }
}

/// The largest peer request or answer: a pushed write (at most one client message) or a pull
/// page (bounded to one client message's size, see [`StaticStore::changes_after`]) with room
/// for the framing.
pub fn peer_body_limit(config: &ControlPlaneConfig) -> usize {
    config.limits.max_message_bytes.saturating_mul(2)
}

fn unix_ms() -> u64 {
    muster_proto::clock::since_epoch().as_millis() as u64
}

impl AppliedKv for StaticStore {
    fn get(&self, key: &str) -> io::Result<Option<v1::KeyValue>> {
        StaticStore::get(self, key)
    }
    fn list(&self, prefix: &str, limit: usize) -> io::Result<(Vec<v1::KeyValue>, bool)> {
        StaticStore::list(self, prefix, limit)
    }
}

/// Static mode's answers to the leadership seam.
impl Leadership for StaticNode {
    type Applied = StaticStore;

    fn id(&self) -> u64 {
        self.settings.node_id
    }

    fn standing(&self) -> Standing {
        let term = *self.term.borrow();
        Standing { term: term.epoch, leader: term.leader, leading: term.leading, applied_index: self.store.revision() }
    }

    /// Reads are local; a node that knows no leader refuses all but stale ones.
    async fn confirm(&self, _how: Confirmation) -> Result<(), ApiError> {
        if self.term.borrow().leader.is_some() { Ok(()) } else { Err(ApiError::Unavailable(self.no_leader_reason())) }
    }

    async fn propose_command(&self, command: v1::Command) -> Result<v1::CommandResult, ApiError> {
        use v1::command::Op;
        let op = match command.op {
            Some(Op::Cas(cas)) if cas.expected_mod_revision.is_some() => {
                return Err(ApiError::InvalidArgument(
                    "static mode has no cluster-wide revisions to compare with (each node numbers its own \
                     writes): compare the value instead"
                        .into(),
                ));
            }
            Some(op @ (Op::Put(_) | Op::Delete(_) | Op::Cas(_))) => op,
            _ => {
                return Err(ApiError::FailedPrecondition(
                    "static mode keeps the KV only; bootstrap tokens, workers and gateways need \
                     mode = \"worker-tier\""
                        .into(),
                ));
            }
        };
        let term = *self.term.borrow();
        if !term.leading {
            self.counters.writes_refused.fetch_add(1, Ordering::Relaxed);
            return Err(self.not_leader());
        }
        let store = self.store.clone();
        let (epoch, me) = (term.epoch, self.settings.node_id);
        let (result, entry) = tokio::task::spawn_blocking(move || store.write(&op, epoch, me))
            .await
            .map_err(|err| ApiError::Internal(format!("the write task failed: {err}")))?
            .map_err(storage_error)?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        let Some(entry) = entry else { return Ok(result) };
        let stored = 1 + self.replicate(entry).await;
        let needed = self.settings.peers.len() / 2 + 1;
        if self.settings.require_majority && stored < needed {
            self.counters.writes_refused.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::Unavailable(format!(
                "the write is stored on {stored} of {} nodes, fewer than the majority ({needed}) \
                 require_majority asks for; it may still reach the others",
                self.settings.peers.len()
            )));
        }
        Ok(result)
    }

    fn applied(&self) -> &StaticStore {
        &self.store
    }

    fn not_leader(&self) -> ApiError {
        let term = *self.term.borrow();
        match term.leader.filter(|id| *id != self.settings.node_id).and_then(|id| self.peer(id)) {
            Some(peer) => {
                let hint = LeaderHint { id: peer.id, addr: peer.api_addr.clone() };
                let message = format!("static mode: node {} leads epoch {} at {}", peer.id, term.epoch, peer.api_addr);
                ApiError::NotLeader { leader: Some(hint), message }
            }
            None if term.leader == Some(self.settings.node_id) => ApiError::Unavailable(
                "this node leads next but is still pulling from its peers before it takes writes; retry shortly".into(),
            ),
            None => ApiError::Unavailable(self.no_leader_reason()),
        }
    }

    fn membership(&self) -> v1::ClusterMembership {
        self.cluster_metadata()
    }
}

/// What this node answers its peers.
impl PeerProtocol for StaticNode {
    async fn heartbeat(&self, from: v1::StaticHeartbeat) -> v1::StaticHeartbeat {
        if self.peer(from.node_id).is_some()
            && let Err(err) = self.store.observe_term(from.epoch, from.epoch_leader_id)
        {
            tracing::error!(error = %err, "recording a peer's term");
        }
        self.own_heartbeat()
    }

    async fn store(&self, entries: v1::StaticEntries) -> io::Result<v1::StaticStored> {
        let store = self.store.clone();
        let revision =
            tokio::task::spawn_blocking(move || store.merge(entries.entries)).await.map_err(io::Error::other)??;
        Ok(v1::StaticStored { revision })
    }

    async fn changes(&self, request: v1::StaticChangesRequest) -> io::Result<v1::StaticChanges> {
        let limit = request.limit.clamp(1, PULL_PAGE) as usize;
        let budget = self.config.limits.max_message_bytes;
        let (entries, more) = self.store.changes_after(request.after_revision, limit, budget)?;
        Ok(v1::StaticChanges { incarnation: self.store.incarnation(), entries, more })
    }
}
