//! Disaster recovery against real processes: a writer writes while the leader is killed, then
//! the next leader too, so the survivor is a follower holding writes it may not know were
//! committed. `control-plane recover --force-new-cluster` makes it a one-voter cluster with
//! its data: every acknowledged write is there, two new nodes join and are promoted, and the
//! workers beat on and are Ready; the nodes snapshot and purge their logs often, so the
//! survivor's log starts well past index 1. The command refuses to run without the flag and while the
//! node runs.

use std::time::Duration;

use anyhow::ensure;
use muster_e2e::fleet::{BeatPlan, Fleet, register_all, token_for, wait_ready_workers};
use muster_e2e::gateway::Gateway;
use muster_e2e::kv::{expect_value, key, value_of};
use muster_e2e::registrar::Registrar;
use muster_e2e::v1::cluster_conf_change_request::Change;
use muster_e2e::writer::Writer;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, ReadConsistency, eventually_msg, v1};

const WORKERS: usize = 10;
const WAIT: Duration = Duration::from_secs(60);

/// `control-plane --config <node id's config> recover ARGS`, run to its end.
fn recover(cluster: &Cluster, id: u64, args: &[&str]) -> std::process::Output {
    std::process::Command::new(muster_e2e::binaries::control_plane())
        .arg("--config")
        .arg(cluster.config_path(id))
        .arg("recover")
        .args(args)
        .output()
        .expect("control-plane recover runs")
}

fn voters(meta: &v1::ClusterMembership) -> Vec<u64> {
    meta.members.iter().filter(|m| m.role == v1::MemberRole::Voter as i32).map(|m| m.node_id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_survivor_of_a_lost_majority_recovers_every_acknowledged_write_and_new_nodes_join_it() {
    // Snapshots every 20 entries and a purged log: recovery reads a log that starts past 1.
    let options = Options {
        heartbeat: Some(HeartbeatPolicy::fast()),
        snapshot_after_logs: 20,
        max_logs_to_keep: 0,
        ..Options::tls()
    };
    let mut cluster = Cluster::start(3, options).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    gateway.wait_ready().await;
    let client = cluster.client();
    let cluster_id = client.metadata().await.expect("metadata").cluster_id;
    let ca_pem = cluster.pki().expect("pki").ca_pem();
    let token = token_for(&cluster, WORKERS as u32).await;
    let identities = register_all(&registrar.addr, &ca_pem, &token, WORKERS, 4).await.expect("workers");
    let _fleet = Fleet::start(&identities, &ca_pem, BeatPlan { fixed_interval: None }).expect("the fleet");
    let ready = v1::ListWorkersRequest { state: v1::WorkerState::Ready as i32, ..Default::default() };
    wait_ready_workers(&cluster, WORKERS, WAIT).await;

    // The leader dies mid-write; the other two go on; then the next leader dies mid-write.
    let writer = Writer::start(cluster.client(), "acked", Duration::from_secs(3), Duration::ZERO);
    writer.wait_for_more(20, "writes before the first loss", WAIT).await;
    let first = cluster.wait_for_leader(WAIT).await;
    cluster.kill(first);
    writer.wait_for_more(20, "writes on the two remaining nodes", WAIT).await;
    let second = cluster.wait_for_leader(WAIT).await;
    cluster.kill(second);
    let survivor = cluster.live_ids()[0];
    let acked = writer.stop().await.acked;

    // Refused without the flag, and while the node runs (its data is not touched).
    let unflagged = recover(&cluster, survivor, &[]);
    assert_eq!(unflagged.status.code(), Some(2), "{unflagged:?}");
    assert!(String::from_utf8_lossy(&unflagged.stderr).contains("--force-new-cluster is required"), "{unflagged:?}");
    let running = recover(&cluster, survivor, &["--force-new-cluster"]);
    assert!(!running.status.success(), "recover ran beside the live node: {running:?}");
    assert!(String::from_utf8_lossy(&running.stderr).contains("still running"), "{running:?}");

    cluster.kill(survivor);
    let recovered = recover(&cluster, survivor, &["--force-new-cluster"]);
    let stdout = String::from_utf8_lossy(&recovered.stdout);
    assert!(recovered.status.success(), "recover: {stdout}{}", String::from_utf8_lossy(&recovered.stderr));
    assert!(stdout.contains(&cluster_id) && stdout.contains("only voter"), "{stdout}");
    eprintln!("{} acknowledged writes; {stdout}", acked.len());
    cluster.restart(survivor);
    assert_eq!(cluster.wait_for_leader(WAIT).await, survivor, "the survivor leads alone");

    let client = cluster.client_for(survivor);
    assert_eq!(client.metadata().await.expect("metadata").cluster_id, cluster_id, "the cluster id is kept");
    for i in &acked {
        let key = key("acked", *i);
        expect_value(&client, &key, &value_of(&key), ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|err| panic!("an acknowledged write is lost: {err:#}"));
    }

    // Two new nodes join the one-voter cluster and are promoted.
    for new in [4, 5] {
        cluster.add_node(new, survivor);
    }
    eventually_msg("nodes 4 and 5 join as learners", WAIT, || async {
        let meta = cluster.metadata_of(survivor).await?;
        ensure!(meta.members.len() == 3, "members: {:?}", meta.members);
        Ok(())
    })
    .await;
    for new in [4, 5] {
        cluster.wait_ready(new, WAIT).await;
    }
    let promoted = client.update_conf(Change::Promote(v1::NodeIds { node_ids: vec![4, 5] })).await.expect("promote");
    let mut members = voters(&promoted.membership.expect("membership in the answer"));
    members.sort_unstable();
    let mut expected = vec![survivor, 4, 5];
    expected.sort_unstable();
    assert_eq!(members, expected, "the voters after promotion");

    // Writes go on through a new node, and the workers are Ready with their identities.
    let through_new = cluster.client_for(4);
    through_new.put("after-recovery", b"ok".to_vec()).await.expect("a write through node 4");
    expect_value(&through_new, "after-recovery", b"ok", ReadConsistency::Linearizable).await.expect("read back");
    let last = key("acked", *acked.last().expect("writes were acknowledged"));
    expect_value(&through_new, &last, &value_of(&last), ReadConsistency::Linearizable).await.expect("on node 4");
    eventually_msg("every worker Ready on the recovered cluster", WAIT, || async {
        let workers = cluster.client_for(survivor).list_workers(ready.clone()).await?;
        let ids: std::collections::BTreeSet<u64> = workers.iter().map(|w| w.worker_id).collect();
        let expected: std::collections::BTreeSet<u64> = identities.iter().map(|i| i.worker_id).collect();
        ensure!(ids == expected, "Ready: {ids:?}");
        Ok(())
    })
    .await;
}

#[test]
fn recover_refuses_a_node_without_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[cluster]\nmode = \"raft\"\nnode_id = 1\npeers = [{{ id = 1, raft_addr = \"127.0.0.1:3670\" }}]\n[tls]\ninsecure = true\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("config");
    let output = std::process::Command::new(muster_e2e::binaries::control_plane())
        .arg("--config")
        .arg(&config)
        .args(["recover", "--force-new-cluster"])
        .output()
        .expect("control-plane recover runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("holds no node data") && stderr.contains("control-plane restore"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "recover created a data dir");
}
