//! The leader's lease table: one lease per live worker, the live gateways, and a mirror of each
//! worker's FSM state. Pure data with the clock passed in, so every rule is unit-tested without
//! sleeping; the sweeper task and the liveness service share it behind a mutex.
//!
//! A lease is `deadline = beat + TTL + grace`. Beats never touch Raft: only state changes do,
//! and they are queued here as pending transitions that the sweeper proposes in one batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_proto::v1;
use muster_proto::v1::WorkerState;

/// One worker's lease.
#[derive(Clone, Debug)]
pub struct Lease {
    pub deadline: Instant,
    /// When the beat that set it was received by its gateway (None: a lease the leader granted
    /// on its own, at registration or after an election).
    pub last_beat: Option<Instant>,
    pub ttl: Duration,
    pub gateway_id: Arc<str>,
}

#[derive(Clone, Debug)]
struct GatewaySeen {
    addr: String,
    last_batch: Instant,
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    /// The leader term the leases belong to (0: not leading).
    term: u64,
    leases: HashMap<u64, Lease>,
    /// Worker id → `WorkerState` as last read from the FSM (plus transitions applied since).
    fleet: HashMap<u64, i32>,
    /// Transitions waiting for the next sweep, at most one per worker.
    pending: HashMap<u64, v1::WorkerTransition>,
    gateways: HashMap<String, GatewaySeen>,
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
    }
}

impl LeaseTable {
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Starts leading `term`: every leased worker gets a fresh lease ending at `now + failover`
    /// (it may be beating to a gateway that has not reached this leader yet).
    pub fn begin_term(&mut self, term: u64, now: Instant, fleet: HashMap<u64, i32>, failover: Duration) {
        self.term = term;
        self.pending.clear();
        self.gateways.clear();
        self.leases = fleet
            .iter()
            .filter(|(_, state)| is_leased(**state))
            .map(|(id, _)| {
                (*id, Lease { deadline: now + failover, last_beat: None, ttl: failover, gateway_id: Arc::from("") })
            })
            .collect();
        self.fleet = fleet;
    }

    /// Stops leading: forget every lease (the next leader starts its own at the failover TTL).
    pub fn end_term(&mut self) {
        *self = Self::default();
    }

    /// Replaces the FSM mirror with a fresh read. A leased worker without a lease (registered
    /// since, or made Ready by an operator) gets one ending at `now + first_lease`; workers that
    /// left or were revoked lose theirs.
    pub fn refresh_fleet(&mut self, fleet: HashMap<u64, i32>, now: Instant, first_lease: Duration) {
        for (id, state) in &fleet {
            if is_leased(*state) {
                self.leases.entry(*id).or_insert_with(|| Lease {
                    deadline: now + first_lease,
                    last_beat: None,
                    ttl: first_lease,
                    gateway_id: Arc::from(""),
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

    pub fn leased_count(&self) -> usize {
        self.fleet.values().filter(|state| is_leased(**state)).count()
    }

    pub fn lease(&self, worker_id: u64) -> Option<&Lease> {
        self.leases.get(&worker_id)
    }

    pub fn state(&self, worker_id: u64) -> Option<i32> {
        self.fleet.get(&worker_id).copied()
    }

    /// Notes a worker the mirror did not know yet (registered since the last refresh).
    pub fn learn_worker(&mut self, worker_id: u64, state: i32) {
        self.fleet.insert(worker_id, state);
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
            });
        };
        if state == WorkerState::Revoked as i32 {
            return Some(v1::WorkerRefusal {
                worker_id: id,
                state,
                reason: format!("worker {id} is revoked; register it again with a new token"),
            });
        }
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
                return None;
            }
            self.leases.remove(&id);
            if state != WorkerState::Left as i32 {
                let from = [WorkerState::Ready, WorkerState::Unreachable, WorkerState::Draining];
                self.pending.insert(id, transition(id, WorkerState::Left, &from));
            }
            return None;
        }
        let ttl = Duration::from_millis(u64::from(beat.ttl_ms));
        let deadline = received + ttl + grace;
        let lease = Lease { deadline, last_beat: Some(received), ttl, gateway_id: gateway_id.clone() };
        match self.leases.get_mut(&id) {
            // Batches can arrive out of order across gateways: keep the later deadline.
            Some(existing) if existing.last_beat.is_some_and(|last| last > received) => {}
            Some(existing) => *existing = lease,
            None => {
                self.leases.insert(id, lease);
            }
        }
        if state == WorkerState::Unreachable as i32 || state == WorkerState::Left as i32 {
            let from = [WorkerState::Unreachable, WorkerState::Left];
            let queued = self.pending.entry(id).or_insert_with(|| transition(id, WorkerState::Ready, &from));
            if queued.to != WorkerState::Ready as i32 {
                *queued = transition(id, WorkerState::Ready, &from);
            }
        }
        None
    }

    /// Queues a profile update for a worker whose full report carried a changed profile.
    pub fn queue_profile(&mut self, worker_id: u64, state: i32, profile: v1::WorkerProfile) {
        let entry = self.pending.entry(worker_id).or_insert_with(|| v1::WorkerTransition {
            worker_id,
            to: state,
            from: vec![state],
            profile: None,
        });
        entry.profile = Some(profile);
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
    pub fn applied(&mut self, transitions: &[v1::WorkerTransition], now: Instant) {
        for t in transitions {
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
