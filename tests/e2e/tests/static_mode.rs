//! The seed's `static` mode against real processes: three nodes agree that the lowest id
//! leads and replicate its writes; a `kill -9` of the leader moves leadership to the next id
//! within `failure_threshold + heartbeat_interval + 2 s`, and the restarted node leads again
//! with every write made without it; a partition splits the brain under the seed's rules
//! (`require_majority = false`) and is refused on the minority side with `require_majority`,
//! and either way the replicas converge to the same values once it heals.

use std::time::{Duration, Instant};

use muster_control_plane::static_mode::peer_http::PeerClient;
use muster_e2e::kv::{read_at_node, write_acked_at_node};
use muster_e2e::netns::NamespaceNetwork;
use muster_e2e::probe::admin_get;
use muster_e2e::process::run_musterctl;
use muster_e2e::{Cluster, Options, ReadConsistency, StaticPolicy, eventually_msg, v1};
use muster_proto::v1::cluster_management_service_client::ClusterManagementServiceClient;
use muster_proto::v1::token_service_client::TokenServiceClient;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);
const CALL: Duration = Duration::from_secs(3);
/// `StaticPolicy::fast`: 1 s threshold + 200 ms interval + the 2 s the acceptance allows.
const FAILOVER_BOUND: Duration = Duration::from_millis(3200);

fn options(require_majority: bool) -> Options {
    Options { static_mode: Some(StaticPolicy::fast(require_majority)), ..Options::tls() }
}

fn isolated(require_majority: bool) -> Options {
    assert!(
        NamespaceNetwork::available(),
        "partition tests need root and the ip and nft commands (iproute2, nftables)"
    );
    Options { isolated_network: true, ..options(require_majority) }
}

/// Fails unless every node in `ids` names `leader` (0: none) in its metadata.
async fn expect_leader(cluster: &Cluster, ids: &[u64], leader: u64) -> anyhow::Result<()> {
    for id in ids {
        let meta = cluster.metadata_of(*id).await?;
        anyhow::ensure!(meta.leader_id == leader, "node {id} names leader {} (want {leader})", meta.leader_id);
        anyhow::ensure!(meta.mode == "static", "node {id} runs mode {:?}", meta.mode);
    }
    Ok(())
}

async fn wait_leader(cluster: &Cluster, ids: &[u64], leader: u64, within: Duration) {
    eventually_msg(format!("nodes {ids:?} agreeing that node {leader} leads"), within, || {
        expect_leader(cluster, ids, leader)
    })
    .await;
}

/// A local (stale) read of `key` on node `id`, which static mode serves from its own replica.
async fn local_value(cluster: &Cluster, id: u64, key: &str) -> Option<String> {
    read_at_node(cluster, id, key, ReadConsistency::Stale, CALL).await.flatten()
}

async fn wait_value(cluster: &Cluster, ids: &[u64], key: &str, want: &str) {
    eventually_msg(format!("{key} = {want} on nodes {ids:?}"), WAIT, || async {
        for id in ids {
            let value = local_value(cluster, *id, key).await;
            anyhow::ensure!(value.as_deref() == Some(want), "node {id} holds {value:?}");
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_static_nodes_agree_fail_over_on_kill_and_converge_after_restart() {
    let mut cluster = Cluster::start(3, options(true)).await;
    wait_leader(&cluster, &[1, 2, 3], 1, WAIT).await;
    let meta = cluster.metadata_of(2).await.unwrap();
    assert_eq!(meta.state, "follower");
    assert!(
        meta.members.iter().all(|m| m.health == v1::PeerHealth::Healthy as i32),
        "every member healthy in node 2's view: {:?}",
        meta.members
    );
    assert!(meta.members.iter().any(|m| m.node_id == 1 && m.is_leader && m.last_heartbeat_unix_ms > 0));

    assert!(write_acked_at_node(&cluster, 1, "k", "v1", CALL).await, "node 1 takes a write");
    wait_value(&cluster, &[1, 2, 3], "k", "v1").await;
    let epoch_before = cluster.metadata_of(1).await.unwrap().term;

    // A follower relays a write to the leader (the shared forwarding layer follows the hint).
    assert!(write_acked_at_node(&cluster, 3, "via-follower", "x", CALL).await);
    wait_value(&cluster, &[1, 2, 3], "via-follower", "x").await;

    // The worker tier is not here, and says so.
    let refused = TokenServiceClient::new(cluster.api_channel(1))
        .list_tokens(v1::ListTokensRequest::default())
        .await
        .expect_err("static mode has no tokens");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("worker-tier"), "{}", refused.message());
    let join = ClusterManagementServiceClient::new(cluster.api_channel(1))
        .join_cluster(v1::JoinRequest {
            node_id: 9,
            raft_addr: "x:1".into(),
            api_addr: "x:2".into(),
            ..Default::default()
        })
        .await
        .expect_err("membership is the config");
    assert_eq!(join.code(), Code::FailedPrecondition);

    cluster.kill(1);
    let killed = Instant::now();
    wait_leader(&cluster, &[2, 3], 2, WAIT).await;
    let failover = killed.elapsed();
    assert!(failover <= FAILOVER_BOUND, "nodes 2 and 3 agreed on node 2 after {failover:?} (bound {FAILOVER_BOUND:?})");
    assert!(write_acked_at_node(&cluster, 3, "k", "v2", CALL).await, "writes go to node 2");
    wait_value(&cluster, &[2, 3], "k", "v2").await;
    let meta = cluster.metadata_of(3).await.unwrap();
    let node1 = meta.members.iter().find(|m| m.node_id == 1).unwrap();
    assert_eq!(node1.health, v1::PeerHealth::Unreachable as i32);
    let epoch_of_2 = cluster.metadata_of(2).await.unwrap().term;
    assert!(epoch_of_2 > epoch_before, "node 2 leads a newer epoch ({epoch_of_2} > {epoch_before})");

    cluster.restart(1);
    wait_leader(&cluster, &[1, 2, 3], 1, WAIT).await;
    // Node 1 pulled what was written without it before taking writes again.
    wait_value(&cluster, &[1, 2, 3], "k", "v2").await;
    assert!(write_acked_at_node(&cluster, 1, "k", "v3", CALL).await);
    wait_value(&cluster, &[1, 2, 3], "k", "v3").await;
    let epoch_after = cluster.metadata_of(1).await.unwrap().term;
    assert!(epoch_after > epoch_of_2, "node 1 leads above node 2's epoch ({epoch_after} > {epoch_of_2})");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_require_majority_the_minority_side_refuses_writes_and_catches_up() {
    let mut cluster = Cluster::start(3, isolated(true)).await;
    wait_leader(&cluster, &[1, 2, 3], 1, WAIT).await;
    assert!(write_acked_at_node(&cluster, 1, "k", "before", CALL).await);
    wait_value(&cluster, &[1, 2, 3], "k", "before").await;

    cluster.network().partition(&[vec![1], vec![2, 3]]).expect("cutting node 1 off");
    wait_leader(&cluster, &[1], 0, WAIT).await;
    wait_leader(&cluster, &[2, 3], 2, WAIT).await;
    assert!(!write_acked_at_node(&cluster, 1, "k", "minority", CALL).await, "the minority side took a write");
    assert!(write_acked_at_node(&cluster, 2, "k", "majority", CALL).await, "the majority side takes writes");
    assert_eq!(local_value(&cluster, 1, "k").await.as_deref(), Some("before"), "stale reads still served");
    let refused = read_at_node(&cluster, 1, "k", ReadConsistency::Linearizable, CALL).await;
    assert_eq!(refused, None, "a linearizable read on the minority side is refused");

    cluster.network().heal().expect("healing");
    wait_leader(&cluster, &[1, 2, 3], 1, WAIT).await;
    wait_value(&cluster, &[1, 2, 3], "k", "majority").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_require_majority_both_sides_lead_and_converge_after_healing() {
    let mut cluster = Cluster::start(3, isolated(false)).await;
    wait_leader(&cluster, &[1, 2, 3], 1, WAIT).await;

    cluster.network().partition(&[vec![1], vec![2, 3]]).expect("cutting node 1 off");
    wait_leader(&cluster, &[2, 3], 2, WAIT).await;
    expect_leader(&cluster, &[1], 1).await.expect("node 1 still leads its side (the seed's split brain)");
    assert!(write_acked_at_node(&cluster, 1, "k", "minority", CALL).await, "both sides take writes");
    assert!(write_acked_at_node(&cluster, 2, "k", "majority", CALL).await);
    assert!(write_acked_at_node(&cluster, 1, "only-minority", "kept", CALL).await);

    cluster.network().heal().expect("healing");
    wait_leader(&cluster, &[1, 2, 3], 1, WAIT).await;
    // Per key, the write of the higher epoch wins everywhere: node 2's epoch began after node
    // 1's. A key written on one side only survives.
    wait_value(&cluster, &[1, 2, 3], "k", "majority").await;
    wait_value(&cluster, &[1, 2, 3], "only-minority", "kept").await;
    // Node 1 has seen node 2's epoch and leads above it: its next write wins.
    assert!(write_acked_at_node(&cluster, 1, "k", "healed", CALL).await);
    wait_value(&cluster, &[1, 2, 3], "k", "healed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_cluster_reports_itself_and_its_peer_port_admits_only_control_plane_nodes() {
    let cluster = Cluster::start(3, options(true)).await;
    wait_leader(&cluster, &[1, 2, 3], 1, WAIT).await;
    let pki = cluster.pki().expect("a TLS cluster");
    let operator = pki.operator();
    let (ca, cert, key) =
        (operator.ca.display().to_string(), operator.cert.display().to_string(), operator.key.display().to_string());
    let musterctl = |args: &'static [&'static str]| {
        let flags = ["--ca", &ca, "--cert", &cert, "--key", &key, "--endpoints", &cluster.addrs(2).api];
        let flags: Vec<String> = flags.iter().chain(args).map(|s| s.to_string()).collect();
        async move { run_musterctl(flags.iter(), Duration::from_secs(30)).await }
    };
    let (ok, stdout, stderr) = musterctl(&["cluster", "status"]).await;
    assert!(ok, "cluster status failed: {stderr}");
    assert!(stdout.contains("mode:        static") && stdout.contains("leader:      1 "), "{stdout}");
    let healthy_rows = stdout.lines().filter(|line| line.split_whitespace().nth(1) == Some("healthy")).count();
    assert_eq!(healthy_rows, 3, "three healthy members: {stdout}");
    let (ok, stdout, stderr) = musterctl(&["cluster", "members", "-o", "json"]).await;
    assert!(ok, "cluster members failed: {stderr}");
    let members: serde_json::Value = serde_json::from_str(&stdout).expect("members as JSON");
    let members = members.as_array().expect("a list");
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["health"] == "healthy"), "{stdout}");
    assert!(members.iter().any(|m| m["node_id"] == 1 && m["leader"] == true), "{stdout}");

    let response = admin_get(&cluster.addrs(1).admin, "/metrics").await.expect("/metrics");
    let (_, metrics) = response.split_once("\r\n\r\n").expect("an HTTP response with a body");
    for line in [
        "muster_static_is_leader{node_id=\"1\"} 1",
        "muster_static_leader_id{node_id=\"1\"} 1",
        "muster_static_peer_healthy{node_id=\"1\",peer=\"2\"} 1",
        "muster_static_peer_healthy{node_id=\"1\",peer=\"3\"} 1",
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");
    }
    muster_e2e::prometheus::promtool_check(metrics).expect("promtool accepts /metrics");

    // The peer port: an operator's or a gateway's certificate, or no TLS at all, gets nothing.
    let peer = cluster.addrs(1).raft.clone();
    let hello = v1::StaticHeartbeat { node_id: 2, epoch: 99, epoch_leader_id: 2, ..Default::default() };
    let gateway = pki.component_client_tls(muster_tls::Role::Gateway, "gw");
    for (who, tls) in [
        ("an operator certificate", Some(pki.operator_client_tls().rustls_config())),
        ("a gateway certificate", Some(gateway.rustls_config())),
        ("plaintext", None),
    ] {
        let client = PeerClient::new(peer.clone(), tls, CALL, 1 << 20);
        let answer = client.heartbeat(&hello).await;
        assert!(answer.is_err(), "{who} got a heartbeat answer from the peer port: {answer:?}");
    }
    assert_eq!(cluster.metadata_of(1).await.unwrap().term, 1, "no stranger moved node 1's epoch");
    let response = admin_get(&cluster.addrs(1).admin, "/metrics").await.expect("/metrics");
    let refused = response
        .lines()
        .find(|line| line.starts_with("muster_listener_handshake_failures_total{listener=\"static-peer\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no static-peer handshake failure counter:\n{response}"));
    assert!(refused >= 3, "the three strangers are counted as refused connections: {refused}");
    // The same request with a control-plane certificate is answered: the refusals above are the
    // role check, not a broken client.
    let node_tls = pki.component_client_tls(muster_tls::Role::ControlPlane, "cp-check");
    let client = PeerClient::new(peer, Some(node_tls.rustls_config()), CALL, 1 << 20);
    let quiet = v1::StaticHeartbeat { node_id: 2, ..Default::default() };
    let answer = client.heartbeat(&quiet).await.expect("a control-plane certificate is answered");
    assert_eq!((answer.node_id, answer.leader_id), (1, 1));
}
