//! A registration storm shares log entries: the leader coalesces the `RegisterWorker` and
//! `RecordWorkerCert` commands that queue behind its writes into batch entries (command
//! format 3), so registering a worker costs the log well under the two entries it took one
//! command per entry, and every worker still gets its own id, token use and certificate record.

use std::collections::BTreeSet;
use std::time::Duration;

use muster_e2e::fleet::{register_all, token_for};
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, Options, eventually_msg, v1};

const WORKERS: usize = 300;

#[tokio::test(flavor = "multi_thread")]
async fn a_registration_storm_costs_the_log_less_than_an_entry_per_worker() {
    let cluster = Cluster::start(3, Options::tls()).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    registrar.wait_ready().await;
    let token = token_for(&cluster, WORKERS as u32).await;
    let leader = cluster.current_leader().await.expect("a leader");
    let before = cluster.metadata_of(leader).await.expect("the leader's metadata").last_log_index;

    let ca_pem = cluster.pki().expect("a TLS cluster").ca_pem();
    let identities = register_all(&registrar.addr, &ca_pem, &token, WORKERS, 128).await.expect("registering");

    let after = cluster.metadata_of(leader).await.expect("the leader's metadata").last_log_index;
    let entries = after - before;
    eprintln!("{WORKERS} registrations took {entries} log entries");
    assert!(
        entries < WORKERS as u64,
        "{WORKERS} registrations took {entries} entries: batching would take well under one per worker"
    );
    let ids: BTreeSet<u64> = identities.iter().map(|identity| identity.worker_id).collect();
    assert_eq!(ids.len(), WORKERS, "every worker has an id of its own");

    // Every worker's record names the certificate it was issued, on every node.
    for node in cluster.live_ids() {
        eventually_msg(format!("node {node} holds every certificate record"), Duration::from_secs(30), || async {
            let workers = cluster.client_for(node).list_workers(v1::ListWorkersRequest::default()).await?;
            let recorded = workers.iter().filter(|w| ids.contains(&w.worker_id) && !w.cert_serial.is_empty()).count();
            anyhow::ensure!(recorded == WORKERS, "{recorded} of {WORKERS} recorded");
            Ok(())
        })
        .await;
    }
    let tokens = cluster.client().list_tokens(true).await.expect("the tokens");
    let used: u32 = tokens.iter().map(|t| t.total_uses - t.remaining_uses).sum();
    assert_eq!(used, WORKERS as u32, "one token use per worker");
}
