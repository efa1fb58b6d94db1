//! What the stack shows an operator: one worker's Register as one trace across the
//! worker-agent, the registrar and the control plane (exported over OTLP to the test's
//! collector on the host, where users point Jaeger), and every container's `/metrics` scraped
//! by a real Prometheus server.

use std::time::Duration;

use muster_e2e::compose::ComposeStack;
use muster_e2e::otlp::{OtlpReceiver, is_the_register_trace};
use muster_e2e::prometheus::{Prometheus, Target, show};

const WAIT: Duration = Duration::from_secs(60);

/// The OTLP collector the stack exports to: on every host interface, so containers reach it
/// as `host.docker.internal` (compose.yaml maps that name to the Docker host).
pub async fn collector() -> (OtlpReceiver, Vec<(String, String)>) {
    let receiver = OtlpReceiver::start_on("0.0.0.0:0").await;
    let endpoint = format!("http://host.docker.internal:{}", receiver.port());
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
    ];
    (receiver, env)
}

/// The compose workers registered while the collector listened: one of them must show as
/// the complete Register trace, Raft apply on all three nodes included.
pub async fn register_is_one_trace(receiver: &OtlpReceiver) {
    let trace = receiver
        .wait_for_trace("a compose worker's Register reached raft.apply on all 3 nodes", WAIT, |trace| {
            is_the_register_trace(trace, 3)
        })
        .await;
    eprintln!("a compose worker's Register:\n{}", trace.render());
}

/// Every deployable's admin port, by container address on the project network.
async fn targets(stack: &ComposeStack) -> Vec<Target> {
    let mut targets = Vec::new();
    let services = [
        ("control-plane-1", 3680),
        ("control-plane-2", 3680),
        ("control-plane-3", 3680),
        ("registrar", 3681),
        ("heartbeat-gateway", 3682),
        ("worker-agent", 3683),
    ];
    for (service, port) in services {
        for container in stack.containers(service).await {
            let ip = stack.ip(&container).await.unwrap_or_else(|e| panic!("{e:#}"));
            let job = service.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
            targets.push(Target::new(job, format!("{ip}:{port}")));
        }
    }
    targets
}

/// A real Prometheus scrapes all 8 containers and answers the queries an operator's
/// dashboard would run.
pub async fn prometheus_scrapes_every_container(stack: &ComposeStack) {
    let targets = targets(stack).await;
    assert_eq!(targets.len(), 8, "{targets:?}");
    let prometheus = Prometheus::start(targets.clone()).await;
    let expect = |expr: &'static str, ok: fn(&[muster_e2e::prometheus::Sample]) -> bool| {
        let prometheus = &prometheus;
        async move {
            prometheus.wait_for(expr, ok, WAIT).await.unwrap_or_else(|e| panic!("{e:#}\n{}", prometheus.log_tail(20)))
        }
    };
    expect("up == 1", |s| s.len() == 8).await;
    expect("sum(muster_raft_state{state=\"leader\"})", |s| s.len() == 1 && s[0].value == 1.0).await;
    expect("muster_workers{state=\"ready\"}", |s| s.len() == 3 && s.iter().all(|s| s.value == 3.0)).await;
    expect("sum(rate(muster_gateway_heartbeats_total[10s]))", |s| s.len() == 1 && s[0].value > 0.0).await;
    expect("sum(muster_gateway_ttl_issued_seconds_count)", |s| s.len() == 1 && s[0].value > 0.0).await;
    expect("sum(muster_registrar_register_duration_seconds_count{outcome=\"ok\"})", |s| {
        s.len() == 1 && s[0].value >= 3.0
    })
    .await;
    expect("count(muster_registrar_token_failures_total)", |s| s.len() == 1 && s[0].value >= 1.0).await;
    expect("count(muster_leases_expiries_total)", |s| s.len() == 1 && s[0].value == 3.0).await;
    let agents = expect("muster_worker_heartbeats_total", |s| s.len() == 3 && s.iter().all(|s| s.value > 0.0)).await;
    eprintln!("agents' heartbeats: {}", show(&agents));
}
