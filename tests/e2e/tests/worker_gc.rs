//! Garbage collection of gone workers, against real processes: with `[worker_gc]` at a few
//! seconds, a worker that left, one that was revoked and one that went silent (SIGKILL) are
//! removed by the leader, each as a `removed` watch event, while a live worker stays. `purge`
//! of the live worker is refused without `--force` and with it revokes and removes it. A worker
//! registered afterwards gets a new id: ids are never reused.

use std::sync::Arc;

use muster_client::WorkerWatchItem;
use muster_e2e::v1;
use muster_e2e::worker_tier::{WAIT, WorkerTier};

/// Worker events of the watch until `wanted` has been seen for every id in `ids`.
async fn wait_events(watch: &mut muster_client::WorkerWatch, wanted: v1::WorkerEventType, ids: &[u64]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut missing: Vec<u64> = ids.to_vec();
    while !missing.is_empty() {
        let item = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap_or_else(|_| panic!("no {wanted:?} event for {missing:?} in time"))
            .expect("the watch");
        if let WorkerWatchItem::Events { events, .. } = item {
            for event in events.iter().filter(|event| event.r#type == wanted as i32) {
                missing.retain(|id| event.worker.as_ref().is_none_or(|w| w.worker_id != *id));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_workers_are_collected_live_ones_stay_and_ids_are_never_reused() {
    let tier = WorkerTier::start("[worker_gc]\nthreshold = \"3s\"\ninterval = \"1s\"\n", "").await;
    let (mut leaving, left_id) = tier.beating_agent().await;
    let (mut revoked, revoked_id) = tier.beating_agent().await;
    let (mut silent, silent_id) = tier.beating_agent().await;
    let (mut live, live_id) = tier.beating_agent().await;

    let client = Arc::new(tier.cluster.client());
    let mut watch = client.watch_workers(v1::WatchWorkersRequest::default());
    let listed = tokio::time::timeout(WAIT, watch.next()).await.expect("a listing in time").expect("the watch");
    assert!(matches!(&listed, WorkerWatchItem::Listed { workers, .. } if workers.len() == 4));

    assert!(leaving.terminate().await.success(), "the agent leaves cleanly");
    let (ok, _, stderr) = tier.musterctl(&["workers", "revoke", &revoked_id.to_string()]).await;
    assert!(ok, "revoke: {stderr}");
    revoked.wait_exit(WAIT).await;
    silent.kill().await;
    wait_events(&mut watch, v1::WorkerEventType::Removed, &[left_id, revoked_id, silent_id]).await;

    let live_text = live_id.to_string();
    let (ok, stdout, stderr) = tier.musterctl(&["workers", "list"]).await;
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert!(
        ok && rows.len() == 1 && rows[0].starts_with(&live_text),
        "only the live worker is left: {stdout}\n{stderr}"
    );

    let (ok, _, stderr) = tier.musterctl(&["workers", "purge", &live_text]).await;
    assert!(!ok && stderr.contains("live") && stderr.contains("force"), "purge of a live worker: {stderr}");
    let (ok, stdout, stderr) = tier.musterctl(&["workers", "purge", &live_text, "--force"]).await;
    assert!(ok && stdout.contains("removed"), "purge --force: {stdout}\n{stderr}");
    wait_events(&mut watch, v1::WorkerEventType::Removed, &[live_id]).await;
    live.wait_exit(WAIT).await;
    let (ok, _, stderr) = tier.musterctl(&["workers", "purge", &live_text]).await;
    assert!(!ok && stderr.contains(&format!("no worker {live_id}")), "purge of a removed worker: {stderr}");

    let (_newcomer, new_id) = tier.beating_agent().await;
    let highest = [left_id, revoked_id, silent_id, live_id].into_iter().max().unwrap_or_default();
    assert!(new_id > highest, "a new worker gets a new id ({new_id}, removed up to {highest})");
}
