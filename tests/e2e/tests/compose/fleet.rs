//! The stack's fleet as the operator sees it (`musterctl -o json workers list` from the host),
//! and scaling it out: more gateways share the workers and each issues a shorter TTL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use muster_e2e::compose::ComposeStack;
use muster_e2e::eventually_msg;

/// One row of `workers list -o json`.
#[derive(Debug, Clone)]
pub struct Worker {
    pub id: u64,
    pub name: String,
    pub state: String,
    pub gateway: String,
    pub ttl_ms: u64,
}

pub async fn workers(stack: &ComposeStack) -> anyhow::Result<Vec<Worker>> {
    let out = stack.musterctl_ok(&["-o", "json", "workers", "list"]).await?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).with_context(|| format!("workers list: {out}"))?;
    rows.iter()
        .map(|row| {
            let lease = &row["lease"];
            Ok(Worker {
                id: row["id"].as_u64().with_context(|| format!("no id in {row}"))?,
                name: row["name"].as_str().unwrap_or_default().to_owned(),
                state: row["state"].as_str().unwrap_or_default().to_owned(),
                gateway: lease["gateway"].as_str().unwrap_or_default().to_owned(),
                ttl_ms: lease["ttl_ms"].as_u64().unwrap_or_default(),
            })
        })
        .collect()
}

/// Waits until exactly `count` workers are listed, all Ready.
pub async fn wait_all_ready(stack: &ComposeStack, count: usize, timeout: Duration) -> Vec<Worker> {
    eventually_msg(format!("{count} Ready workers"), timeout, || async {
        let workers = workers(stack).await?;
        let ready = workers.iter().filter(|w| w.state == "ready").count();
        ensure!(workers.len() == count && ready == count, "{ready} of {} Ready: {workers:?}", workers.len());
        Ok(workers)
    })
    .await
}

pub async fn three_workers_ready(stack: &ComposeStack) {
    wait_all_ready(stack, 3, Duration::from_secs(60)).await;
}

/// Workers per gateway, and the median TTL the workers hold (throttled acks stretch a few
/// TTLs beyond the base, so the largest says little about the policy).
fn spread(workers: &[Worker]) -> (BTreeMap<String, usize>, u64) {
    let mut by_gateway = BTreeMap::new();
    for worker in workers {
        *by_gateway.entry(worker.gateway.clone()).or_insert(0) += 1;
    }
    let mut ttls: Vec<u64> = workers.iter().map(|w| w.ttl_ms).collect();
    ttls.sort_unstable();
    (by_gateway, ttls.get(ttls.len() / 2).copied().unwrap_or_default())
}

/// 20 workers on one gateway, then on three: every worker stays Ready, all three gateways get
/// workers, and the TTL falls by about the gateway count (compose's budget is 1 heartbeat per
/// second per gateway, so TTL = N / G seconds above the 5 s floor).
pub async fn scale_out_spreads_and_shrinks_ttl(stack: &ComposeStack) {
    stack
        .compose(&["up", "-d", "--no-recreate", "--scale", "worker-agent=20"])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let one_gateway_ttl =
        eventually_msg("20 Ready workers on one gateway, TTL ≈ 20 s", Duration::from_secs(120), || async {
            let workers = workers(stack).await?;
            let (by_gateway, _) = spread(&workers);
            let ready = workers.iter().filter(|w| w.state == "ready").count();
            ensure!(workers.len() == 20 && ready == 20, "{ready} of {} Ready", workers.len());
            ensure!(by_gateway.len() == 1, "one gateway expected: {by_gateway:?}");
            // Each worker picks the new TTL up with its next ack; all have once every TTL ≥ 18 s.
            let min_ttl = workers.iter().map(|w| w.ttl_ms).min().unwrap_or_default();
            ensure!(min_ttl >= 18_000, "TTLs not yet N / budget: min {min_ttl} ms");
            Ok(min_ttl)
        })
        .await;

    stack
        .compose(&["up", "-d", "--no-recreate", "--scale", "worker-agent=20", "--scale", "heartbeat-gateway=3"])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    eventually_msg("20 Ready workers spread over 3 gateways, TTL ≈ 20/3 s", Duration::from_secs(120), || async {
        let workers = workers(stack).await?;
        let not_ready: Vec<_> = workers.iter().filter(|w| w.state != "ready").collect();
        if !not_ready.is_empty() {
            panic!(
                "a worker left Ready while gateways were added (a live worker must never be marked dead): {not_ready:?}"
            );
        }
        let (by_gateway, median_ttl) = spread(&workers);
        let gateways: BTreeSet<_> = by_gateway.keys().filter(|g| !g.is_empty()).collect();
        ensure!(gateways.len() == 3, "workers on {} gateways: {by_gateway:?}", gateways.len());
        // 20 / 3 = 6.7 s plus a stagger under 10%: well under half the one-gateway TTL.
        ensure!(
            median_ttl * 2 < one_gateway_ttl,
            "median TTL {median_ttl} ms is not about a third of {one_gateway_ttl} ms yet: {workers:?}"
        );
        Ok(())
    })
    .await;
}
