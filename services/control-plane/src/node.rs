//! A running control-plane node: the Raft handle, its FSM reader, and the seed's readiness
//! flag (`set_ready` / `server_is_ready`) that drives gRPC health and `/readyz`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use muster_config::ControlPlaneConfig;
use muster_middleware::{ApiError, LeaderHint};
use muster_proto::v1;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{LinearizableReadError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::raft::linearizable_read::ReadLogId;
use openraft::{LinearizerOption, ReadPolicy, ServerState};
use tokio::sync::watch;
use tracing::field::Empty;
use tracing::{Instrument as _, Span};

use crate::errors::read_error;
use crate::leadership::{Confirmation, Leadership, Standing};
use crate::network::PeerChannels;
use crate::store::{FsmReader, StateMachineStore};
use crate::types::{NodeAddr, NodeId, Raft, RaftMetrics, TypeConfig};
use crate::write_profile::{self, Hop};

/// What the node found on disk when it started, before Raft ran.
pub struct Restored {
    /// The last log index (see [`NodeHandle::linearize`]).
    pub last_log_index: u64,
    /// Whether it had a saved vote (see [`NodeHandle::refuse_votes_while_held`]).
    pub had_vote: bool,
}

/// The key a follower reads linearizably from the leader to learn how far to catch up (any
/// key does; the answer's applied index is what counts).
const CATCH_UP_KEY: &str = "muster/catch-up";
/// How long a follower waits for the leader's answer, and then for its own apply, before a
/// linearizable start gives up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the gRPC handlers and the lifecycle tasks share about this node.
pub struct NodeHandle {
    pub id: NodeId,
    pub addr: NodeAddr,
    pub raft: Raft,
    pub reader: FsmReader,
    pub state_machine: StateMachineStore,
    pub channels: PeerChannels,
    pub config: Arc<ControlPlaneConfig>,
    /// Worker leases (meaningful on the leader only).
    pub leases: crate::leases::Leases,
    /// The last workers-by-state count for `/metrics`.
    pub worker_states: crate::store::WorkerStateCache,
    /// The watches this node serves.
    pub watches: Arc<crate::watch::WatchHub>,
    /// Worker listings in progress (on the leader).
    pub listings: crate::store::Listings,
    ready: AtomicBool,
    ready_tx: watch::Sender<bool>,
    /// What the node waits for while not ready (`/readyz`, `GetClusterMetadata`, the log).
    not_ready_reason: std::sync::Mutex<String>,
    /// The last log index this node held when it started; reads are never served at a lower
    /// index (see [`NodeHandle::linearize`]). 0 once a read has been served past it.
    read_floor: AtomicU64,
    /// Until when this node refuses votes after a restart (see
    /// [`NodeHandle::refuse_votes_while_held`]); `None` for a node that never voted.
    votes_held_until: Option<Instant>,
}

impl NodeHandle {
    pub fn new(
        id: NodeId,
        addr: NodeAddr,
        raft: Raft,
        state_machine: StateMachineStore,
        channels: PeerChannels,
        config: Arc<ControlPlaneConfig>,
        restored: Restored,
    ) -> Arc<Self> {
        let (ready_tx, _) = watch::channel(false);
        let reader = state_machine.reader();
        state_machine.set_node_id(id);
        let watches = crate::watch::WatchHub::new(state_machine.feed().clone(), config.watch.clone(), id);
        Arc::new(Self {
            id,
            addr,
            raft,
            reader,
            state_machine,
            channels,
            leases: crate::leases::Leases::new(&config),
            worker_states: Default::default(),
            watches,
            listings: Default::default(),
            ready: AtomicBool::new(false),
            ready_tx,
            not_ready_reason: std::sync::Mutex::new("starting".to_owned()),
            read_floor: AtomicU64::new(restored.last_log_index),
            votes_held_until: restored.had_vote.then(|| Instant::now() + config.raft.election_timeout_max),
            config,
        })
    }

    /// Confirms that this node may serve a read linearizably under `policy` (it leads, as a
    /// quorum or its lease confirms) and waits until its state machine has applied through the
    /// read index. Every linearizable and lease read goes through here.
    ///
    /// openraft takes the read index as the larger of the leader's first entry in its term and
    /// the commit index it knows. A leader restored at start-up (its vote was committed, so it
    /// leads again without an election) knows only the commit index this node saved, which
    /// lags on purpose (group commit saves it at most once a second): entries after it may
    /// have been committed, and acknowledged to clients, before the crash. So until a read
    /// index reaches the last entry the node held at start-up, the leader first commits a
    /// no-op of its own past all of them, and then takes the read index again.
    pub async fn linearize(&self, policy: ReadPolicy) -> Result<(), ApiError> {
        let read = self.read_index(&policy).await?;
        let floor = self.read_floor.load(Ordering::Acquire);
        if read.log_id().index >= floor {
            self.read_floor.store(0, Ordering::Release);
            return Ok(());
        }
        tracing::info!(
            read_index = read.log_id().index,
            floor,
            "restored as leader with entries past the saved commit index: committing a no-op before serving reads"
        );
        let noop = v1::Command { op: Some(v1::command::Op::Noop(v1::Noop {})), ..Default::default() };
        let barrier = self.client_write(noop).await?;
        let read = self.read_index(&policy).await?;
        if read.log_id().index < barrier.log_id.index {
            return Err(ApiError::Unavailable(format!(
                "read index {} is behind the no-op committed at {}; leadership changed, retry",
                read.log_id().index,
                barrier.log_id.index
            )));
        }
        self.read_floor.store(0, Ordering::Release);
        Ok(())
    }

    /// The read index under `policy`. A lease read trusts a quorum's acknowledgement only
    /// while it is younger than [`RaftTuning::lease_read_max_age`] (openraft's own lease is
    /// `election_timeout_max`, with no allowance for clocks running at different rates); an
    /// older one makes the read fall back to a read index, a quorum round trip, rather than
    /// fail.
    ///
    /// [`RaftTuning::lease_read_max_age`]: muster_config::RaftTuning::lease_read_max_age
    async fn read_index(&self, policy: &ReadPolicy) -> Result<ReadLogId<TypeConfig>, ApiError> {
        if let ReadPolicy::LeaseRead = policy {
            let lease = LinearizerOption::new(Some(self.config.raft.lease_read_max_age()), false)
                .with_wait_timeout(Duration::ZERO);
            match self.raft.ensure_linearizable(lease).await {
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {}
                read => return read.map_err(read_error),
            }
        }
        self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map_err(read_error)
    }

    /// A follower's catch-up: the leader answers a linearizable read (so its applied index is
    /// at least its commit index when asked), and this node waits until it has applied as much.
    async fn catch_up_with(&self, leader: &muster_middleware::LeaderHint) -> Result<(), ApiError> {
        let channel = self
            .channels
            .channel(&leader.addr)
            .map_err(|err| ApiError::Unavailable(format!("reaching the leader {leader}: {err}")))?;
        let read = v1::ClientReadRequest {
            consistency: v1::ReadConsistency::Linearizable as i32,
            query: Some(v1::client_read_request::Query::Get(v1::KvGet { key: CATCH_UP_KEY.into() })),
        };
        let mut client = v1::raft_client_service_client::RaftClientServiceClient::new(channel);
        let answer = tokio::time::timeout(CATCH_UP_TIMEOUT, client.handle_client_read(read))
            .await
            .map_err(|_| ApiError::Unavailable(format!("the leader {leader} did not answer in {CATCH_UP_TIMEOUT:?}")))?
            .map_err(|status| ApiError::relayed(&status))?;
        let target = answer.into_inner().applied_index;
        let mut applied = self.state_machine.feed().applied();
        tokio::time::timeout(CATCH_UP_TIMEOUT, applied.wait_for(|applied| *applied >= target))
            .await
            .map_err(|_| {
                ApiError::Unavailable(format!(
                    "node {} did not apply up to the leader's revision {target} within {CATCH_UP_TIMEOUT:?}",
                    self.id
                ))
            })?
            .map_err(|_| ApiError::Unavailable("the node is shutting down".into()))?;
        Ok(())
    }

    /// Refuses a vote or pre-vote request for `election_timeout_max` after a restart.
    ///
    /// A follower promises a leader not to vote for anyone else for `election_timeout_max`
    /// after each heartbeat, and the leader's lease reads rely on that promise; but openraft
    /// keeps the promise in memory only, so a follower restarted within it would grant a vote
    /// at once, and a new leader could commit while the old one still serves lease reads.
    /// Holding votes for one whole lease on this node's own clock from start-up keeps every
    /// promise made before the crash. Nodes that never voted have promised nothing.
    pub fn refuse_votes_while_held(&self) -> Result<(), ApiError> {
        match self.votes_held_until {
            Some(until) if Instant::now() < until => Err(ApiError::Unavailable(format!(
                "node {} restarted less than raft.election_timeout_max ({:?}) ago and votes for no one \
                 until leases it may have granted before have run out",
                self.id, self.config.raft.election_timeout_max
            ))),
            _ => Ok(()),
        }
    }

    /// Marks the node ready (or not) to serve; health and `/readyz` follow it.
    pub fn set_ready(&self, is_ready: bool) {
        let was = self.ready.swap(is_ready, Ordering::SeqCst);
        if was != is_ready {
            tracing::info!(node = self.id, ready = is_ready, "readiness changed");
            self.ready_tx.send_replace(is_ready);
        }
    }

    /// Records what the node waits for while not ready; a new reason is logged once.
    pub fn set_not_ready_reason(&self, reason: String) {
        let mut current = self.not_ready_reason.lock().unwrap_or_else(|p| p.into_inner());
        if *current != reason {
            tracing::info!(node = self.id, "not ready: {reason}");
            *current = reason;
        }
    }

    /// What the node waits for, or `""` when it is ready.
    pub fn not_ready_reason(&self) -> String {
        if self.server_is_ready() {
            return String::new();
        }
        self.not_ready_reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn server_is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Follows readiness changes (for the health service).
    pub fn subscribe_ready(&self) -> watch::Receiver<bool> {
        self.ready_tx.subscribe()
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The known leader, as a hint for clients (id and API address).
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        let metrics = self.metrics();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some(LeaderHint { id: leader, addr: node.api_addr.clone() })
    }

    /// The error a node that cannot serve a leader-only request answers with.
    pub fn not_leader(&self) -> ApiError {
        let leader = self.leader_hint();
        let message = match &leader {
            Some(hint) => format!("this node is not the leader; leader is node {} at {}", hint.id, hint.addr),
            None => "this node is not the leader and no leader is known yet".to_string(),
        };
        ApiError::NotLeader { leader, message }
    }

    /// Proposes `command`; returns once it is committed and applied here (the leader). Runs in
    /// a `raft.client_write` span whose context rides in the command, so each node's apply
    /// joins the proposer's trace (see [`crate::store::StateMachineStore`]).
    ///
    /// The span takes the level of the request behind the write: INFO inside a traced call,
    /// DEBUG inside a quiet one (KV writes) or none (the lease sweeper), so a hot path stays
    /// as cheap as its RPC and untraced writes carry an empty `traceparent`.
    pub async fn client_write(&self, mut command: v1::Command) -> Result<ClientWriteResponse<TypeConfig>, ApiError> {
        macro_rules! write_span {
            ($span:ident) => {
                tracing::$span!(
                    "raft.client_write",
                    raft.node_id = self.id,
                    raft.command = %command,
                    raft.log_index = Empty,
                    otel.status_code = Empty,
                    error = Empty,
                )
            };
        }
        let span = if Span::current().is_disabled() { write_span!(debug_span) } else { write_span!(info_span) };
        command.traceparent = muster_middleware::trace::traceparent(&span);
        // Every command enters the log here, stamped with the lowest format that has its kind.
        command.format_version = muster_proto::command_format(command.op.as_ref());
        let written = self.raft.client_write(command).instrument(span.clone()).await;
        match written {
            Ok(written) => {
                span.record("raft.log_index", written.log_id.index);
                Ok(written)
            }
            Err(err) => {
                let err = crate::errors::write_error(err);
                span.record("otel.status_code", "error");
                span.record("error", tracing::field::display(&err));
                Err(err)
            }
        }
    }

    /// The seed's `GetClusterMetadata` answer from this node's point of view.
    pub fn cluster_metadata(&self) -> v1::ClusterMembership {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let matched: BTreeMap<NodeId, u64> = metrics
            .replication
            .as_ref()
            .map(|repl| repl.iter().map(|(id, log_id)| (*id, log_id.as_ref().map_or(0, |l| l.index))).collect())
            .unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| v1::Member {
                node_id: *id,
                raft_addr: node.raft_addr.clone(),
                api_addr: node.api_addr.clone(),
                role: if voters.contains(id) { v1::MemberRole::Voter } else { v1::MemberRole::Learner } as i32,
                is_leader: metrics.current_leader == Some(*id),
                matched_index: matched.get(id).copied().unwrap_or(0),
                ..Default::default()
            })
            .collect();
        let leader_api_addr = metrics
            .current_leader
            .and_then(|leader| membership.get_node(&leader).map(|node| node.api_addr.clone()))
            .unwrap_or_default();
        v1::ClusterMembership {
            cluster_id: self.reader.cluster_id().ok().flatten().unwrap_or_default(),
            node_id: self.id,
            leader_id: metrics.current_leader.unwrap_or(0),
            leader_api_addr,
            term: metrics.current_term,
            commit_index: metrics.cluster_committed.as_ref().map_or(0, |l| l.index),
            applied_index: metrics.last_applied.as_ref().map_or(0, |l| l.index),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            snapshot_index: metrics.snapshot.as_ref().map_or(0, |l| l.index),
            purged_index: metrics.purged.as_ref().map_or(0, |l| l.index),
            state: state_name(metrics.state, voters.contains(&self.id)).to_string(),
            joint: membership.get_joint_config().len() > 1,
            members,
            ready: self.server_is_ready(),
            not_ready_reason: self.not_ready_reason(),
            mode: self.config.cluster.name().to_string(),
            // Filled in by the cluster service, which holds the TLS material.
            certificates: Vec::new(),
        }
    }
}

/// The registration batcher writes through the node (the leadership seam's proposal), in the
/// newest format every member reads.
impl crate::write_batch::Proposer for NodeHandle {
    async fn propose_command(&self, command: v1::Command) -> Result<v1::CommandResult, ApiError> {
        Leadership::propose_command(self, command).await
    }

    fn writable_format(&self) -> u32 {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let members = metrics.membership_config.membership().nodes().map(|(id, _)| *id);
        self.channels.formats.writable(self.id, muster_proto::COMMAND_FORMAT_VERSION, members)
    }
}

/// openraft's answers to the leadership seam.
impl Leadership for NodeHandle {
    type Applied = FsmReader;

    fn id(&self) -> u64 {
        self.id
    }

    fn standing(&self) -> Standing {
        // Borrowed from the metrics watch, not cloned: KV answers ask on every call.
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        Standing {
            term: metrics.current_term,
            leader: metrics.current_leader,
            leading: metrics.state == ServerState::Leader,
            applied_index: metrics.last_applied.as_ref().map_or(0, |log_id| log_id.index),
        }
    }

    async fn confirm(&self, how: Confirmation) -> Result<(), ApiError> {
        let policy = match how {
            Confirmation::Quorum => ReadPolicy::ReadIndex,
            Confirmation::Lease => ReadPolicy::LeaseRead,
        };
        self.linearize(policy).await
    }

    async fn propose_command(&self, command: v1::Command) -> Result<v1::CommandResult, ApiError> {
        let started = write_profile::start();
        // Entries per call, as the other hops count: the commands the entry carries.
        let commands = match &command.op {
            Some(v1::command::Op::Batch(batch)) => batch.commands.len(),
            _ => 1,
        };
        let written = self.client_write(command).await?.data;
        write_profile::record(Hop::Propose, started, commands);
        Ok(written)
    }

    fn applied(&self) -> &FsmReader {
        &self.reader
    }

    fn not_leader(&self) -> ApiError {
        NodeHandle::not_leader(self)
    }

    fn membership(&self) -> v1::ClusterMembership {
        self.cluster_metadata()
    }

    fn watches(&self) -> Option<&Arc<crate::watch::WatchHub>> {
        Some(&self.watches)
    }

    async fn caught_up(&self) -> Result<(), ApiError> {
        match self.confirm(Confirmation::Quorum).await {
            Err(ApiError::NotLeader { leader: Some(leader), .. }) => self.catch_up_with(&leader).await,
            confirmed => confirmed,
        }
    }
}

impl AsRef<crate::leases::Leases> for NodeHandle {
    fn as_ref(&self) -> &crate::leases::Leases {
        &self.leases
    }
}

pub fn state_name(state: ServerState, is_voter: bool) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
        ServerState::Follower if is_voter => "follower",
        ServerState::Follower | ServerState::Learner => "learner",
    }
}

/// Whether this node has joined and caught up: it is a member, knows a leader, and has
/// applied everything it knows to be committed.
pub fn is_caught_up(id: NodeId, metrics: &RaftMetrics) -> bool {
    let applied = metrics.last_applied.as_ref().map(|l| l.index);
    let committed = metrics.cluster_committed.as_ref().map(|l| l.index);
    is_serving_member(id, metrics) && applied.is_some() && applied >= committed
}

/// What a node that is not ready waits for, from its Raft metrics.
pub fn waiting_for(id: NodeId, metrics: &RaftMetrics) -> String {
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    if membership.get_node(&id).is_none() {
        return if voters.is_empty() {
            "not a member yet: waiting for the initial peers to answer, or for a join to be accepted".to_owned()
        } else {
            format!("not a member of the cluster (voters {})", list(&voters))
        };
    }
    if metrics.current_leader.is_none() {
        let others: Vec<String> = voters
            .iter()
            .filter(|voter| **voter != id)
            .map(|voter| match membership.get_node(voter) {
                Some(addr) => format!("{voter} ({})", addr.raft_addr),
                None => voter.to_string(),
            })
            .collect();
        return format!(
            "no leader: a leader needs {} of the voters {}; waiting for peers {}",
            voters.len() / 2 + 1,
            list(&voters),
            others.join(", ")
        );
    }
    let applied = metrics.last_applied.as_ref().map_or(0, |l| l.index);
    let committed = metrics.cluster_committed.as_ref().map_or(0, |l| l.index);
    format!("catching up: applied {applied} of {committed} committed entries")
}

fn list(ids: &[NodeId]) -> String {
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Whether a node that has caught up once can still serve: it is a member and knows a leader.
pub fn is_serving_member(id: NodeId, metrics: &RaftMetrics) -> bool {
    metrics.membership_config.membership().get_node(&id).is_some() && metrics.current_leader.is_some()
}
