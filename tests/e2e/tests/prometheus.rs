//! The metrics as an operator sees them: a real Prometheus server scrapes every deployable of
//! a running tier (3 control-plane nodes, a registrar, a gateway, worker agents) and PromQL
//! finds what DESIGN §6 promises: Raft state, workers by state, heartbeats/s, TTLs issued,
//! expiries, Register latency and token failures by reason.

use std::time::Duration;

use muster_e2e::agent::Agent;
use muster_e2e::gateway::Gateway;
use muster_e2e::probe::admin_get;
use muster_e2e::prometheus::{Prometheus, Sample, Target, promtool_check};
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, v1};

const WAIT: Duration = Duration::from_secs(60);
const AGENTS: usize = 3;
const NODES: u64 = 3;

fn values(samples: &[Sample]) -> Vec<f64> {
    samples.iter().map(|sample| sample.value).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_deployable_and_finds_the_required_families() {
    muster_e2e::prometheus::require_binary();
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), ..Options::tls() };
    let cluster = Cluster::start(NODES, options).await;
    let registrar = Registrar::start(&cluster);
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    gateway.wait_ready().await;
    let registrars = vec![registrar.addr.clone()];
    let client = cluster.client();

    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: AGENTS as u32, ..Default::default() };
    let token = client.create_token(request).await.expect("token").token;
    let mut agents: Vec<Agent> = (0..AGENTS).map(|_| Agent::new(&registrars, &token)).collect();
    for agent in &mut agents {
        agent.start();
    }
    for agent in &agents {
        agent.wait_beating(WAIT).await;
    }

    // A revoked token: the agent is refused (reason "revoked") and stops.
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() };
    let revoked = client.create_token(request).await.expect("token");
    let token_id = revoked.record.expect("a token record").token_id;
    client.revoke_token(&token_id).await.expect("revoke");
    let mut refused = Agent::new(&registrars, &revoked.token);
    refused.start();
    let status = refused.wait_exit(WAIT).await;
    assert!(!status.success(), "an agent with a revoked token stops with an error");

    let mut targets: Vec<Target> =
        cluster.ids().into_iter().map(|id| Target::new("control-plane", &cluster.addrs(id).admin)).collect();
    targets.push(Target::new("registrar", &registrar.admin));
    targets.push(Target::new("heartbeat-gateway", &gateway.admin));
    targets.extend(agents.iter().map(|agent| Target::new("worker-agent", &agent.admin)));
    let total = targets.len();
    let target_list = targets.clone();
    let prometheus = Prometheus::start(targets).await;

    // Every target scraped, and every exposition parsed.
    let up = prometheus
        .wait_for("up", |s| s.len() == total && s.iter().all(|s| s.value == 1.0), WAIT)
        .await
        .expect("every target is up");
    for job in ["control-plane", "registrar", "heartbeat-gateway", "worker-agent"] {
        assert!(up.iter().any(|s| s.label("job") == job), "no {job} target in {up:?}");
    }
    // And every exposition follows Prometheus' naming conventions.
    for target in &target_list {
        let response = admin_get(&target.addr, "/metrics").await.expect("scraping /metrics");
        let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        promtool_check(body).unwrap_or_else(|err| panic!("{} at {}: {err:#}", target.job, target.addr));
    }

    // Raft: exactly one leader, and each node in exactly one state.
    let leaders = prometheus
        .wait_for(r#"muster_raft_state{state="leader"} == 1"#, |s| s.len() == 1, WAIT)
        .await
        .expect("exactly one node reports leader");
    let leader_node = leaders[0].label("node_id").to_string();
    prometheus
        .wait_for("sum by (node_id) (muster_raft_state)", |s| s.len() == NODES as usize && values(s) == [1.0; 3], WAIT)
        .await
        .expect("each node is in exactly one Raft state");
    prometheus
        .wait_for(&format!("muster_raft_leader_id != {leader_node}"), |s| s.is_empty(), WAIT)
        .await
        .expect("every node names the same leader");

    // Workers by state, from each node's applied FSM.
    let ready = AGENTS as f64;
    prometheus
        .wait_for(
            r#"muster_workers{state="ready"}"#,
            |s| s.len() == NODES as usize && s.iter().all(|s| s.value == ready),
            WAIT,
        )
        .await
        .expect("every node counts the agents as ready");
    prometheus
        .wait_for(r#"count by (node_id) (muster_workers)"#, |s| s.len() == 3 && values(s) == [5.0; 3], WAIT)
        .await
        .expect("one series per worker state on every node");

    // Heartbeats per second, at the gateway and at the leader.
    prometheus
        .wait_for("rate(muster_gateway_heartbeats_total[5s]) > 0", |s| s.len() == 1, WAIT)
        .await
        .expect("the gateway receives heartbeats");
    prometheus
        .wait_for("sum(rate(muster_leases_beats_total[5s])) > 0", |s| s.len() == 1, WAIT)
        .await
        .expect("the leader receives beats in batches");

    // TTLs issued: a histogram with samples, the fast policy's 1 s TTL plus stagger in range.
    prometheus
        .wait_for("muster_gateway_ttl_issued_seconds_count > 0", |s| s.len() == 1, WAIT)
        .await
        .expect("the gateway counts the TTLs it issues");
    prometheus
        .wait_for(
            "histogram_quantile(0.5, rate(muster_gateway_ttl_issued_seconds_bucket[5s]))",
            |s| s.len() == 1 && (0.5..=10.0).contains(&s[0].value),
            WAIT,
        )
        .await
        .expect("the median TTL issued is within the policy");

    // Expiries: exported (zero here: nobody went silent).
    prometheus
        .wait_for("muster_leases_expiries_total", |s| s.len() == NODES as usize, WAIT)
        .await
        .expect("every node exports the expiry counter");

    // Register latency and token failures by reason.
    prometheus
        .wait_for(
            r#"muster_registrar_register_duration_seconds_count{outcome="ok"}"#,
            |s| s.len() == 1 && s[0].value >= ready,
            WAIT,
        )
        .await
        .expect("every registration is timed");
    prometheus
        .wait_for(r#"muster_registrar_token_failures_total{reason="revoked"} >= 1"#, |s| s.len() == 1, WAIT)
        .await
        .expect("the revoked token is counted by reason");
    prometheus
        .wait_for("count(muster_registrar_token_failures_total)", |s| s.len() == 1 && s[0].value == 8.0, WAIT)
        .await
        .expect("every token failure reason has a series");

    // The agents' own metrics.
    prometheus
        .wait_for("muster_worker_heartbeats_total > 0", |s| s.len() == AGENTS, WAIT)
        .await
        .expect("every agent counts its acknowledged heartbeats");
    prometheus
        .wait_for(r#"muster_worker_gateway_info{gateway_id="gw-1"}"#, |s| s.len() == AGENTS, WAIT)
        .await
        .expect("every agent names its gateway");
    prometheus
        .wait_for("muster_worker_id", |s| s.len() == AGENTS && s.iter().all(|s| s.value > 0.0), WAIT)
        .await
        .expect("every agent exports its worker id");
}
