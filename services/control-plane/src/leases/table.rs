//! The leader's lease table: one lease per live worker, the live gateways, and a mirror of each
//! worker's FSM state. Pure data with the clock passed in, so every rule is unit-tested without
//! sleeping; the sweeper task and the liveness service share it behind a mutex.
//!
//! A lease is `deadline = beat + TTL + grace`. Beats never touch Raft: only state changes do,
//! and they are queued here as pending transitions that the sweeper proposes in one batch.
//! Each beat's certificate serial is judged against the worker's recorded ones
//! ([`super::serials`]); revocations and retired certificates go out to every gateway as
//! [`super::notices`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_proto::v1;
use muster_proto::v1::WorkerState;

use super::notices::Notices;
use super::scheduling::Scheduling;
use super::serials::{self, Serials, Standing};

/// One worker's lease.
#[derive(Clone, Debug)]
pub struct Lease {
    pub deadline: Instant,
    /// When the beat that set it was received by its gateway (None: a lease the leader granted
    /// on its own, at registration or after an election).
    pub last_beat: Option<Instant>,
    pub ttl: Duration,
    pub gateway_id: Arc<str>,
    /// The worker was leased when this term began: until the failover window ends, its
    /// lease ends no earlier than the window (see [`LeaseTable::record_beat`]).
    pub inherited: bool,
}

#[derive(Clone, Debug)]
struct GatewaySeen {
    addr: String,
    last_batch: Instant,
}

/// The fleet as read from the FSM: each worker's state and certificate serials, and which
/// workers are draining or cordoned.
#[derive(Debug, Default)]
pub struct FleetRead {
    pub states: HashMap<u64, i32>,
    pub serials: HashMap<u64, Serials>,
    pub scheduling: Scheduling,
}

impl FleetRead {
    pub fn from_records(records: impl IntoIterator<Item = v1::WorkerRecord>) -> Self {
        let mut fleet = Self::default();
        for record in records {
            fleet.serials.insert(record.worker_id, Serials::of(&record));
            fleet.states.insert(record.worker_id, record.state);
            fleet.scheduling.learn(&record);
        }
        fleet
    }
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    /// The leader term the leases belong to (0: not leading).
    term: u64,
    leases: HashMap<u64, Lease>,
    /// Worker id → `WorkerState` as last read from the FSM (plus transitions applied since).
    fleet: HashMap<u64, i32>,
    /// Each worker's recorded certificate serials, read with the states.
    serials: HashMap<u64, Serials>,
    /// The draining and cordoned workers, read with the states.
    scheduling: Scheduling,
    /// Transitions waiting for the next sweep, at most one per worker.
    pending: HashMap<u64, v1::WorkerTransition>,
    gateways: HashMap<String, GatewaySeen>,
    notices: Notices,
    /// The end of this term's failover window: until then a beat extends a lease but never
    /// shortens it (see [`LeaseTable::record_beat`]).
    failover_until: Option<Instant>,
}

/// States whose workers hold a lease that can expire.
fn is_leased(state: i32) -> bool {
    state == WorkerState::Ready as i32 || state == WorkerState::Draining as i32
}

/// States that count toward N, the fleet size the TTL is computed from.
fn counts_toward_fleet(state: i32) -> bool {
    is_leased(state) || state == WorkerState::Unreachable as i32
}

fn transition(worker_id: u64, to: WorkerState, from: &[WorkerState]) -> v1::WorkerTransition {
    v1::WorkerTransition {
        worker_id,
        to: to as i32,
        from: from.iter().map(|state| *state as i32).collect(),
        profile: None,
        retire_serial: String::new(),
        drain_outcome: 0,
    }
}

impl LeaseTable {
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Starts leading `term`: every leased worker gets a fresh lease ending at `now + failover`
    /// (it may be beating to a gateway that has not reached this leader yet).
    pub fn begin_term(&mut self, term: u64, now: Instant, fleet: FleetRead, failover: Duration) {
        self.term = term;
        self.pending.clear();
        self.gateways.clear();
        self.notices = Notices::default();
        self.serials = fleet.serials;
        self.scheduling = fleet.scheduling;
        let fleet = fleet.states;
        self.leases = fleet
            .iter()
            .filter(|(_, state)| is_leased(**state))
            .map(|(id, _)| {
                let lease = Lease {
                    deadline: now + failover,
                    last_beat: None,
                    ttl: failover,
                    gateway_id: Arc::from(""),
                    inherited: true,
                };
                (*id, lease)
            })
            .collect();
        self.fleet = fleet;
        self.failover_until = Some(now + failover);
    }

    /// Stops leading: forget every lease (the next leader starts its own at the failover TTL).
    pub fn end_term(&mut self) {
        *self = Self::default();
    }

    /// Replaces the FSM mirror with a fresh read. A leased worker without a lease (registered
    /// since, or made Ready by an operator) gets one ending at `now + first_lease`; workers that
    /// left or were revoked lose theirs.
    pub fn refresh_fleet(&mut self, fleet: FleetRead, now: Instant, first_lease: Duration) {
        self.serials = fleet.serials;
        self.scheduling = fleet.scheduling;
        let fleet = fleet.states;
        for (id, state) in &fleet {
            if is_leased(*state) {
                self.leases.entry(*id).or_insert_with(|| Lease {
                    deadline: now + first_lease,
                    last_beat: None,
                    ttl: first_lease,
                    gateway_id: Arc::from(""),
                    inherited: false,
                });
            }
        }
        self.leases.retain(|id, _| fleet.get(id).is_some_and(|state| counts_toward_fleet(*state)));
        self.fleet = fleet;
    }

    /// N: workers registered and neither left nor revoked.
    pub fn worker_count(&self) -> u64 {
        self.fleet.values().filter(|state| counts_toward_fleet(**state)).count() as u64
    }

    /// Workers whose lease can expire right now (for the mass-silence share).
    /// Workers already silent: Unreachable, or queued to be marked so. With the expired
    /// leases, what the mass-silence check weighs against [`Self::worker_count`]: a silence
    /// arrives over a whole TTL (each worker's last beat fell somewhere in it), so counting
    /// only what expired in one sweep would never see it whole.
    pub fn silent_count(&self) -> usize {
        let unreachable = self.fleet.values().filter(|state| **state == WorkerState::Unreachable as i32).count();
        let queued = self.pending.values().filter(|t| t.to == WorkerState::Unreachable as i32).count();
        unreachable + queued
    }

    /// How long this term's failover window still holds the inherited leases (zero once it
    /// has ended, or when not leading).
    pub fn failover_remaining(&self, now: Instant) -> Duration {
        self.failover_until.map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    pub fn leased_count(&self) -> usize {
        self.fleet.values().filter(|state| is_leased(**state)).count()
    }

    pub fn lease(&self, worker_id: u64) -> Option<&Lease> {
        self.leases.get(&worker_id)
    }

    pub fn state(&self, worker_id: u64) -> Option<i32> {
        self.fleet.get(&worker_id).copied()
    }

    /// Notes a worker as the FSM has it now (registered or renewed since the last refresh).
    pub fn learn_worker(&mut self, record: &v1::WorkerRecord) {
        self.fleet.insert(record.worker_id, record.state);
        self.serials.insert(record.worker_id, Serials::of(record));
        self.scheduling.learn(record);
    }

    /// The worker reports its drain finished: queued, if its drain is in progress.
    pub fn report_drained(&mut self, worker_id: u64) {
        let Some(state) = self.fleet.get(&worker_id).copied() else { return };
        if self.scheduling.in_progress(worker_id) {
            self.queued_in_state(worker_id, state).drain_outcome = v1::DrainOutcome::Drained as i32;
        }
    }

    /// Queues the end of every drain in progress whose deadline passed by `now_unix`.
    pub fn queue_passed_deadlines(&mut self, now_unix: i64) {
        for worker_id in self.scheduling.past_deadline(now_unix) {
            let Some(state) = self.fleet.get(&worker_id).copied() else { continue };
            let queued = self.queued_in_state(worker_id, state);
            if queued.drain_outcome == 0 {
                queued.drain_outcome = v1::DrainOutcome::DeadlinePassed as i32;
            }
        }
    }

    /// What the acks of a batch's workers say about their drains and cordons.
    pub fn scheduling_notices(&self, worker_ids: impl IntoIterator<Item = u64>) -> Vec<v1::SchedulingNotice> {
        self.scheduling.notices(worker_ids)
    }

    /// The operator revoked `worker_id` (committed): no lease, nothing queued, and every
    /// gateway is told. Returns the notice's sequence number.
    pub fn revoke(&mut self, worker_id: u64) -> u64 {
        self.fleet.insert(worker_id, WorkerState::Revoked as i32);
        self.leases.remove(&worker_id);
        self.pending.remove(&worker_id);
        self.notices.push(v1::WorkerRefusal {
            worker_id,
            state: WorkerState::Revoked as i32,
            reason: format!("worker {worker_id} is revoked; register it again with a new token"),
            cert_serial: String::new(),
        })
    }

    /// `gateway` has applied every notice up to `seen` (0 if it comes from another term); the
    /// ones after it, and the sequence number of the last.
    pub fn exchange_notices(&mut self, gateway: &str, seen: u64) -> (Vec<v1::WorkerRefusal>, u64) {
        self.notices.exchange(gateway, seen)
    }

    /// Of the live gateways, those that have not applied notice `seq` yet.
    pub fn gateways_behind(&self, seq: u64, now: Instant, gateway_lease: Duration) -> Vec<String> {
        let live = self.live_gateways(now, gateway_lease);
        self.notices.behind(seq, live.iter().map(|g| g.gateway_id.as_str())).into_iter().map(String::from).collect()
    }

    /// Applies one beat from `gateway_id`, received at `received`. Returns why the worker must
    /// be disconnected, if it must. The caller has made sure the worker is in the mirror.
    pub fn record_beat(
        &mut self,
        gateway_id: &Arc<str>,
        beat: &v1::WorkerBeat,
        received: Instant,
        grace: Duration,
    ) -> Option<v1::WorkerRefusal> {
        let id = beat.worker_id;
        let Some(state) = self.fleet.get(&id).copied() else {
            return Some(v1::WorkerRefusal {
                worker_id: id,
                state: WorkerState::Unspecified as i32,
                reason: format!("worker {id} is not registered in this cluster"),
                cert_serial: String::new(),
            });
        };
        if state == WorkerState::Revoked as i32 {
            return Some(v1::WorkerRefusal {
                worker_id: id,
                state,
                reason: format!("worker {id} is revoked; register it again with a new token"),
                cert_serial: String::new(),
            });
        }
        let retire = match self.serials.get(&id).map(|serials| serials.judge(&beat.cert_serial)) {
            Some(Standing::Refused) => {
                let why = "not this worker's current certificate (replaced, or never issued by this cluster)";
                return Some(serials::refusal(id, &beat.cert_serial, why));
            }
            Some(Standing::RetiresPrevious(previous)) => Some(previous),
            Some(Standing::Accepted) | None => None,
        };
        self.record_state_beat(gateway_id, beat, state, received, grace);
        if let Some(previous) = retire {
            self.retire_serial(id, state, &previous);
        }
        None
    }

    /// The worker beat with its current certificate: the one it replaced is refused from now
    /// on, by this table at once, by every gateway on its next batch, and by the FSM (queued).
    fn retire_serial(&mut self, worker_id: u64, state: i32, previous: &str) {
        if let Some(serials) = self.serials.get_mut(&worker_id) {
            serials.retire_previous();
        }
        tracing::info!(
            worker_id,
            serial = previous,
            "the worker beats with its renewed certificate; retiring the old one"
        );
        let why = "replaced by this worker's renewed certificate";
        self.notices.push(serials::refusal(worker_id, previous, why));
        self.queued_in_state(worker_id, state).retire_serial = previous.to_string();
    }

    /// A beat's effect on the lease and the state (its serial is accepted).
    fn record_state_beat(
        &mut self,
        gateway_id: &Arc<str>,
        beat: &v1::WorkerBeat,
        state: i32,
        received: Instant,
        grace: Duration,
    ) {
        let id = beat.worker_id;
        if beat.reported_state == WorkerState::Left as i32 {
            // A worker leaves through the gateway its stream is on: another gateway (a stolen
            // gateway certificate) cannot make it leave.
            if let Some(lease) = self.leases.get(&id)
                && !lease.gateway_id.is_empty()
                && lease.gateway_id != *gateway_id
            {
                tracing::warn!(
                    worker_id = id,
                    gateway = %gateway_id,
                    holder = %lease.gateway_id,
                    "ignored a graceful leave reported by a gateway the worker does not beat through"
                );
                return;
            }
            self.leases.remove(&id);
            if state != WorkerState::Left as i32 {
                let from = [WorkerState::Ready, WorkerState::Unreachable, WorkerState::Draining];
                self.pending.insert(id, transition(id, WorkerState::Left, &from));
            }
            return;
        }
        let ttl = Duration::from_millis(u64::from(beat.ttl_ms));
        // A worker the term inherited keeps its lease to the end of the failover window. An
        // election delays beats: the gateways' batches wait for the new leader and retry, and
        // the workers of a gateway that died with it reconnect to the others all at once. A
        // worker whose first beat reached the new leader promptly and whose next one was held
        // up past grace would otherwise be marked Unreachable while alive (at 100,000 workers, about
        // 1,700 were, each Ready again a moment later). Workers registered in this term are
        // not covered: nothing about an election delays them.
        let new_lease = |inherited: bool| {
            let window_end = self.failover_until.filter(|_| inherited).unwrap_or(received);
            let deadline = (received + ttl + grace).max(window_end);
            Lease { deadline, last_beat: Some(received), ttl, gateway_id: gateway_id.clone(), inherited }
        };
        // One lookup per beat: this runs for every beat of the fleet.
        match self.leases.entry(id) {
            // Batches can arrive out of order across gateways: keep the later deadline.
            Entry::Occupied(existing) if existing.get().last_beat.is_some_and(|last| last > received) => {}
            Entry::Occupied(mut existing) => {
                let inherited = existing.get().inherited;
                existing.insert(new_lease(inherited));
            }
            Entry::Vacant(vacant) => {
                vacant.insert(new_lease(false));
            }
        }
        if state == WorkerState::Unreachable as i32 || state == WorkerState::Left as i32 {
            let from = [WorkerState::Unreachable, WorkerState::Left];
            let queued = self.pending.entry(id).or_insert_with(|| transition(id, WorkerState::Ready, &from));
            if queued.to != WorkerState::Ready as i32 {
                // What rides along (a profile, a retired serial, a drain's end) is kept.
                let riding = std::mem::replace(queued, transition(id, WorkerState::Ready, &from));
                queued.profile = riding.profile;
                queued.retire_serial = riding.retire_serial;
                queued.drain_outcome = riding.drain_outcome;
            }
        }
    }

    /// Queues a profile update for a worker whose full report carried a changed profile.
    pub fn queue_profile(&mut self, worker_id: u64, state: i32, profile: v1::WorkerProfile) {
        self.queued_in_state(worker_id, state).profile = Some(profile);
    }

    /// The worker's queued transition, or a new one that keeps it in `state` (for changes
    /// that ride along with whatever else is queued: a profile, a retired certificate).
    fn queued_in_state(&mut self, worker_id: u64, state: i32) -> &mut v1::WorkerTransition {
        let state = WorkerState::try_from(state).unwrap_or_default();
        self.pending.entry(worker_id).or_insert_with(|| transition(worker_id, state, &[state]))
    }

    /// Leased workers whose deadline passed and that have no transition queued.
    pub fn expired(&self, now: Instant) -> Vec<u64> {
        let mut expired: Vec<u64> = self
            .leases
            .iter()
            .filter(|(id, lease)| {
                lease.deadline < now
                    && !self.pending.contains_key(id)
                    && self.fleet.get(id).is_some_and(|state| is_leased(*state))
            })
            .map(|(id, _)| *id)
            .collect();
        // Oldest deadline first (then by id, for a stable order), so rate-limited expiry is fair.
        expired.sort_by_key(|id| (self.leases[id].deadline, *id));
        expired
    }

    /// Queues `ids` to be marked Unreachable.
    pub fn queue_expiry(&mut self, ids: &[u64]) {
        for id in ids {
            self.pending
                .insert(*id, transition(*id, WorkerState::Unreachable, &[WorkerState::Ready, WorkerState::Draining]));
        }
    }

    /// Pushes the deadlines of `ids` to `deadline` (a paused mass expiry).
    pub fn extend(&mut self, ids: &[u64], deadline: Instant) {
        for id in ids {
            if let Some(lease) = self.leases.get_mut(id) {
                lease.deadline = lease.deadline.max(deadline);
            }
        }
    }

    pub fn take_pending(&mut self) -> Vec<v1::WorkerTransition> {
        let mut pending: Vec<v1::WorkerTransition> = self.pending.drain().map(|(_, t)| t).collect();
        pending.sort_by_key(|t| t.worker_id);
        pending
    }

    /// Records that `transitions` were committed: the mirror follows them at once (the next
    /// refresh confirms), and a worker marked Unreachable whose lease was renewed meanwhile (a
    /// beat raced the sweep) is queued straight back to Ready.
    pub fn applied(&mut self, transitions: &[v1::WorkerTransition], now: Instant, now_unix: i64) {
        for t in transitions {
            if t.drain_outcome != 0 {
                self.scheduling.ended(t.worker_id, t.drain_outcome, now_unix);
            }
            let Some(state) = self.fleet.get_mut(&t.worker_id) else { continue };
            if !t.from.contains(state) {
                continue;
            }
            *state = t.to;
            if t.to == WorkerState::Unreachable as i32
                && self.leases.get(&t.worker_id).is_some_and(|lease| lease.deadline > now)
            {
                let from = [WorkerState::Unreachable];
                self.pending.insert(t.worker_id, transition(t.worker_id, WorkerState::Ready, &from));
            }
        }
    }

    /// Transitions that could not be proposed go back in the queue (unless newer ones exist).
    pub fn requeue(&mut self, transitions: Vec<v1::WorkerTransition>) {
        for t in transitions {
            self.pending.entry(t.worker_id).or_insert(t);
        }
    }

    /// How many live gateways report under the certificate name of gateway `id` (`<name>` and
    /// every `<name>/<instance>`), not counting `id` itself.
    pub fn other_instances(&self, id: &str, now: Instant, gateway_lease: Duration) -> usize {
        let name = muster_tls::gateway_cert_name(id);
        self.gateways
            .iter()
            .filter(|(other, seen)| {
                other.as_str() != id
                    && muster_tls::gateway_cert_name(other) == name
                    && now.saturating_duration_since(seen.last_batch) <= gateway_lease
            })
            .count()
    }

    /// A gateway's batch arrived: it is live until `gateway_lease` after `now`.
    pub fn record_gateway(&mut self, id: &str, addr: &str, now: Instant) {
        let seen = GatewaySeen { addr: addr.to_string(), last_batch: now };
        self.gateways.insert(id.to_string(), seen);
    }

    /// The gateways heard from within `gateway_lease`, by id.
    pub fn live_gateways(&self, now: Instant, gateway_lease: Duration) -> Vec<v1::GatewayEndpoint> {
        let mut live: Vec<v1::GatewayEndpoint> = self
            .gateways
            .iter()
            .filter(|(_, seen)| now.saturating_duration_since(seen.last_batch) <= gateway_lease)
            .map(|(id, seen)| v1::GatewayEndpoint { gateway_id: id.clone(), addr: seen.addr.clone() })
            .collect();
        live.sort_by(|a, b| a.gateway_id.cmp(&b.gateway_id));
        live
    }

    /// Forgets gateways silent for more than `forget_after`.
    pub fn forget_gateways(&mut self, now: Instant, forget_after: Duration) {
        self.gateways.retain(|_, seen| now.saturating_duration_since(seen.last_batch) <= forget_after);
        let gateways = &self.gateways;
        self.notices.retain_gateways(|id| gateways.contains_key(id));
    }
}

/// A stable hash of the gateway list: workers compare it to know when their list is stale.
pub fn gateways_epoch(gateways: &[v1::GatewayEndpoint]) -> u64 {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for gateway in gateways {
        hasher.update(gateway.gateway_id.as_bytes());
        hasher.update([0]);
        hasher.update(gateway.addr.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"))
}

#[cfg(test)]
mod tests;
