//! One worker Register is one trace across three processes: the worker-agent's attempt is the
//! root, its Register call reaches the registrar (server span), the registrar's calls reach
//! the control plane (client and server spans), and the token's consumption shows up as the
//! leader's `raft.client_write` with a `raft.apply` on every node, joined through the
//! `traceparent` the command carries in the Raft log. Heartbeats are the opposite: the
//! stream and the liveness batches stay quiet, and only the sampled share of reports
//! (`heartbeat_trace_ratio`) is traced. Everything is exported over OTLP to a fake collector
//! in the test.

use std::time::Duration;

use anyhow::ensure;
use muster_e2e::agent::Agent;
use muster_e2e::gateway::Gateway;
use muster_e2e::otlp::{OtlpReceiver, is_the_register_trace};
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, v1};

const WAIT: Duration = Duration::from_secs(60);
const NODES: u64 = 3;

const AGENT: &str = "muster-worker-agent";
const GATEWAY: &str = "muster-heartbeat-gateway";

#[tokio::test(flavor = "multi_thread")]
async fn one_register_is_one_trace_from_the_worker_agent_to_raft_apply() {
    let receiver = OtlpReceiver::start().await;
    let options = Options { env: receiver.env(), ..Options::tls() };
    let cluster = Cluster::start(NODES, options).await;
    let registrar = Registrar::start(&cluster);
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() };
    let token = cluster.client().create_token(request).await.expect("token").token;

    let mut agent = Agent::new(std::slice::from_ref(&registrar.addr), &token);
    agent.env = receiver.env();
    agent.start();
    let worker_id = agent.wait_identity(WAIT).await;

    let trace = receiver
        .wait_for_trace("a worker's Register reached raft.apply on every node", WAIT, |trace| {
            is_the_register_trace(trace, NODES)
        })
        .await;
    eprintln!("worker {worker_id} registered in one trace:\n{}", trace.render());
}

#[tokio::test(flavor = "multi_thread")]
async fn sampled_heartbeats_are_traced_and_the_stream_and_batches_stay_quiet() {
    let receiver = OtlpReceiver::start().await;
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), env: receiver.env(), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let registrar = Registrar::start(&cluster);
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\nheartbeat_trace_ratio = 1\n");
    gateway.wait_ready().await;
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() };
    let token = cluster.client().create_token(request).await.expect("token").token;
    let mut agent = Agent::new(std::slice::from_ref(&registrar.addr), &token);
    agent.env = receiver.env();
    agent.start();
    let worker_id = agent.wait_beating(WAIT).await.to_string();

    let sampled = receiver
        .wait_for_trace("the gateway traced a report of the worker", WAIT, |trace| {
            let reports = trace.find(GATEWAY, "heartbeat.report");
            ensure!(reports.iter().any(|span| span.attribute("worker.id") == Some(worker_id.as_str())), "no report");
            Ok(())
        })
        .await;
    let report = sampled.find(GATEWAY, "heartbeat.report")[0];
    assert!(report.attribute("heartbeat.ttl_ms").is_some(), "{report:?}");

    // By now the gateway has sent many batches (one was accepted before it served at all), and
    // spans leave in the order they end: had they been INFO, they would have arrived too.
    let loud: Vec<String> = receiver
        .spans()
        .into_iter()
        .filter(|span| span.service == GATEWAY || span.service == AGENT)
        .filter(|span| span.name.starts_with("muster.v1.HeartbeatService/") || span.name.ends_with("/ReportLiveness"))
        .map(|span| format!("{}: {}", span.service, span.name))
        .collect();
    assert!(loud.is_empty(), "heartbeat traffic exported at info: {loud:?}");
}
