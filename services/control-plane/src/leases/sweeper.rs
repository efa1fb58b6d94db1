//! The leader's expiry sweeper. Every `sweep_interval` on the leader it collects expired
//! leases (through the rate limit and the mass-silence pause) and the state changes gateways
//! reported, confirms it is still the leader with a ReadIndex round, and proposes them all as
//! one `WorkerTransitions` command tagged with its term. On followers it only drops the table.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use muster_proto::v1;
use tokio::sync::watch;

use super::Leases;
use super::expiry::Verdict;
use crate::leadership::{Confirmation, Leadership};
use crate::store::FsmReader;
use muster_proto::clock::unix_now;

/// Gateways silent this many gateway leases are forgotten altogether.
const FORGET_GATEWAY_AFTER_LEASES: u32 = 20;

/// Sweeps `node`'s leases until `shutdown` changes.
pub async fn run<N>(node: Arc<N>, mut shutdown: watch::Receiver<bool>)
where
    N: Leadership<Applied = FsmReader> + AsRef<Leases>,
{
    let leases: &Leases = (*node).as_ref();
    let mut tick = tokio::time::interval(leases.tuning.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        sweep(&*node, leases).await;
    }
}

async fn sweep(node: &impl Leadership<Applied = FsmReader>, leases: &Leases) {
    if !node.standing().leading {
        let mut table = leases.table();
        if table.term() != 0 {
            tracing::info!(term = table.term(), "no longer leading: dropping the lease table");
            table.end_term();
        }
        return;
    }
    let now = Instant::now();
    let (term, pending) = {
        let Ok((mut table, term)) = leases.leading_table(node, now) else { return };
        table.forget_gateways(now, leases.tuning.gateway_lease * FORGET_GATEWAY_AFTER_LEASES);
        let expired = table.expired(now);
        if !expired.is_empty() {
            let (silent, fleet) = (table.silent_count(), table.worker_count() as usize);
            let verdict =
                leases.gate.lock().unwrap_or_else(|p| p.into_inner()).judge(expired.len(), silent, fleet, now);
            match verdict {
                Verdict::Expire(count) => table.queue_expiry(&expired[..count]),
                Verdict::PauseUntil(until) => {
                    leases.stats.mass_silence_pauses.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        expired = expired.len(),
                        already_silent = silent,
                        fleet,
                        pause_secs = until.saturating_duration_since(now).as_secs(),
                        "MASS SILENCE: a large share of the fleet stopped beating together; this looks like a \
                         gateway or network fault, not mass death. Expiry is paused; check the heartbeat \
                         gateways and the network between them and the workers"
                    );
                    table.extend(&expired, until);
                }
                Verdict::Paused => {}
            }
        }
        table.queue_passed_deadlines(unix_now());
        (term, table.take_pending())
    };
    if pending.is_empty() {
        return;
    }
    // Confirm leadership with a quorum before acting on this node's view of the leases.
    if let Err(err) = node.confirm(Confirmation::Quorum).await {
        tracing::warn!(error = %err, "cannot confirm leadership; worker state changes wait");
        leases.table().requeue(pending);
        return;
    }
    if node.standing().term != term {
        return;
    }
    let now_unix = unix_now();
    let batch = v1::WorkerTransitions { term, now_unix, transitions: pending.clone() };
    match node.propose(v1::command::Op::WorkerTransitions(batch)).await {
        Ok(result) if result.refused().is_none() => {
            log_transitions(leases, &pending);
            leases.table().applied(&pending, Instant::now(), now_unix);
        }
        Ok(result) => tracing::warn!(error = %result.error, "worker state changes refused"),
        Err(err) => {
            tracing::warn!(error = %err, "could not commit worker state changes; retrying");
            leases.table().requeue(pending);
        }
    }
}

fn log_transitions(leases: &Leases, transitions: &[v1::WorkerTransition]) {
    for transition in transitions {
        let worker_id = transition.worker_id;
        match v1::DrainOutcome::try_from(transition.drain_outcome).unwrap_or_default() {
            v1::DrainOutcome::Drained => tracing::info!(worker_id, "worker drained"),
            v1::DrainOutcome::DeadlinePassed => {
                tracing::warn!(worker_id, "the worker's drain deadline passed before it reported drained")
            }
            v1::DrainOutcome::Unspecified => {}
        }
        let to = v1::WorkerState::try_from(transition.to).unwrap_or_default();
        // A change queued in the worker's own state (a profile, a retired certificate, a drain's
        // end) is no transition.
        if transition.from == [transition.to] {
            tracing::debug!(worker_id, "worker profile, certificate or drain updated");
            continue;
        }
        let stats = &leases.stats;
        match to {
            v1::WorkerState::Unreachable => {
                stats.expiries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(worker_id, "worker unreachable: its lease expired");
            }
            v1::WorkerState::Ready if !transition.from.contains(&(v1::WorkerState::Ready as i32)) => {
                stats.returns.fetch_add(1, Ordering::Relaxed);
                tracing::info!(worker_id, "worker beating again: ready");
            }
            v1::WorkerState::Left => tracing::info!(worker_id, "worker left"),
            _ => tracing::debug!(worker_id, "worker state updated"),
        }
    }
}
