//! The leader's garbage collection of gone workers (`[worker_gc]`): every `interval` it
//! removes, in one `RemoveWorkers` command, up to `max_per_round` workers that have been left,
//! revoked or unreachable for `threshold`. The command carries the cut-off, and the state
//! machine checks each worker against it again, so a worker that came back meanwhile stays.
//! Followers do nothing; a new leader simply carries on.

use std::sync::Arc;

use muster_config::WorkerGc;
use muster_proto::clock::unix_now;
use muster_proto::v1;
use tokio::sync::watch;

use crate::leadership::Leadership;
use crate::store::FsmReader;

/// Collects until `shutdown` changes (returns at once when collection is off).
pub async fn run<N>(node: Arc<N>, gc: WorkerGc, mut shutdown: watch::Receiver<bool>)
where
    N: Leadership<Applied = FsmReader>,
{
    if !gc.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(gc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !node.standing().leading {
            continue;
        }
        match collect(&*node, &gc).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed the records of workers gone for the GC threshold"),
            Err(error) => tracing::warn!(%error, "worker garbage collection failed; retrying next round"),
        }
    }
}

/// One round: how many records were removed.
async fn collect(node: &impl Leadership<Applied = FsmReader>, gc: &WorkerGc) -> Result<u32, String> {
    let threshold = i64::try_from(gc.threshold.as_secs()).unwrap_or(i64::MAX);
    let changed_before_unix = unix_now().saturating_sub(threshold);
    let limit = usize::try_from(gc.max_per_round).unwrap_or(usize::MAX);
    let worker_ids = node.applied().gone_workers(changed_before_unix, limit).map_err(|err| err.to_string())?;
    if worker_ids.is_empty() {
        return Ok(0);
    }
    let remove = v1::RemoveWorkers { worker_ids, changed_before_unix };
    let result = node.propose(v1::command::Op::RemoveWorkers(remove)).await.map_err(|err| err.to_string())?;
    match result.refused() {
        None => Ok(result.transitions_applied),
        Some(_) => Err(result.error),
    }
}
