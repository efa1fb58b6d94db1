//! Load check for one gateway: how many heartbeats per second it absorbs over many concurrent
//! streams, and the ack latency workers see. Two processes, so each side has its own file
//! descriptors and the numbers are the gateway's:
//!
//! ```sh
//! cargo build --release -p muster-heartbeat-gateway --example load
//! target/release/examples/load serve 127.0.0.1:3671          # fake leader + insecure gateway
//! target/release/examples/load drive 127.0.0.1:3671 10000 20000 20   # streams, reports/s, seconds
//! ```
//!
//! `serve` runs the gateway in insecure mode (workers named by metadata) against an in-process
//! fake LivenessService; every stream is its own HTTP/2 connection, as real workers are.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use muster_heartbeat_gateway::GatewayConfig;
use muster_proto::v1;
use muster_proto::v1::heartbeat_service_client::HeartbeatServiceClient;
use muster_proto::v1::liveness_service_server::{LivenessService, LivenessServiceServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

struct FakeLeader {
    beats: AtomicU64,
}

struct Leader(Arc<FakeLeader>);

#[tonic::async_trait]
impl LivenessService for Leader {
    async fn report_liveness(
        &self,
        request: Request<v1::ReportLivenessRequest>,
    ) -> Result<Response<v1::ReportLivenessResponse>, Status> {
        let request = request.into_inner();
        self.0.beats.fetch_add(request.beats.len() as u64, Ordering::Relaxed);
        Ok(Response::new(v1::ReportLivenessResponse {
            policy: Some(v1::TtlPolicy {
                min_ttl_ms: 10_000,
                max_ttl_ms: 600_000,
                grace_ms: 10_000,
                max_heartbeats_per_second: 50,
                failover_ttl_ms: 300_000,
            }),
            worker_count: 10_000,
            gateways: vec![v1::GatewayEndpoint { gateway_id: request.gateway_id, addr: request.gateway_addr }],
            gateways_epoch: 1,
            refused: Vec::new(),
            leader_term: 1,
            notices_through: 0,
            scheduling: Vec::new(),
        }))
    }

    async fn list_gateways(
        &self,
        _: Request<v1::ListGatewaysRequest>,
    ) -> Result<Response<v1::ListGatewaysResponse>, Status> {
        Err(Status::unimplemented("load test"))
    }

    async fn get_worker_ca_cert(
        &self,
        _: Request<v1::GetWorkerCaCertRequest>,
    ) -> Result<Response<v1::GetWorkerCaCertResponse>, Status> {
        Err(Status::unimplemented("load test runs insecure"))
    }
}

async fn serve(addr: &str) -> anyhow::Result<()> {
    let leader = Arc::new(FakeLeader { beats: AtomicU64::new(0) });
    let cp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cp_addr = cp.local_addr()?;
    let service = LivenessServiceServer::new(Leader(leader.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(cp)),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("gateway on {addr}, admin on {}", admin.local_addr()?);
    let mut config = GatewayConfig {
        listen_addr: listener.local_addr()?,
        admin_addr: admin.local_addr()?,
        control_plane: vec![cp_addr.to_string()],
        ..GatewayConfig::default()
    };
    config.tls.insecure = true;
    let reporter = leader.clone();
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = reporter.beats.load(Ordering::Relaxed);
            println!("leader received {} beats/s (deduplicated per batch)", (now - last) / 5);
            last = now;
        }
    });
    muster_heartbeat_gateway::run(config, listener, admin, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

async fn drive(addr: &str, streams: u64, rate: f64, secs: u64) -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(streams as f64 / rate);
    println!("{streams} streams, one report per {interval:?} each ({rate}/s), {secs}s");
    let opened = Instant::now();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<u32>>();
    // Warm-up: every stream connects and gets its first (held) ack before measuring starts.
    let start_at = tokio::time::Instant::now() + Duration::from_secs(3) + Duration::from_millis(streams);
    let open = Arc::new(AtomicU64::new(0));
    let stop_at = start_at + Duration::from_secs(secs);
    let sent = Arc::new(AtomicU64::new(0));
    for worker in 1..=streams {
        let (addr, done_tx, sent, open) = (format!("http://{addr}"), done_tx.clone(), sent.clone(), open.clone());
        tokio::spawn(async move {
            let latencies = match one_worker(&addr, worker, interval, start_at, stop_at, &sent, &open).await {
                Ok(latencies) => latencies,
                Err(err) => {
                    eprintln!("worker {worker}: {err:#}");
                    Vec::new()
                }
            };
            let _ = done_tx.send(latencies);
        });
        if worker.is_multiple_of(1_000) {
            // Let the connections of this thousand settle before opening more.
            tokio::task::yield_now().await;
        }
    }
    drop(done_tx);
    let mut all = Vec::new();
    let mut finished = 0;
    while let Some(latencies) = done_rx.recv().await {
        all.extend(latencies);
        finished += 1;
    }
    all.sort_unstable();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied();
    println!(
        "{finished} streams done after {:?}; {} acks in {secs}s = {:.0}/s; latency p50 {:?}us p99 {:?}us p99.9 {:?}us max {:?}us",
        opened.elapsed(),
        all.len(),
        all.len() as f64 / secs as f64,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        all.last()
    );
    Ok(())
}

async fn one_worker(
    addr: &str,
    worker: u64,
    interval: Duration,
    start_at: tokio::time::Instant,
    stop_at: tokio::time::Instant,
    sent: &AtomicU64,
    open: &AtomicU64,
) -> anyhow::Result<Vec<u32>> {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())?.connect().await?;
    let (reports, rx) = mpsc::channel(4);
    let mut request = Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert("x-muster-worker-id", worker.to_string().parse()?);
    reports
        .send(v1::StatusReport { sequence: 1, state: 1, full: true, profile: None, gateways_epoch: 0, drained: false })
        .await?;
    let mut acks = HeartbeatServiceClient::new(channel).report_status(request).await?.into_inner();
    acks.message().await?;
    let opened = open.fetch_add(1, Ordering::Relaxed) + 1;
    if opened.is_multiple_of(2_000) {
        println!(
            "{opened} streams open ({:?} before measuring starts)",
            start_at.saturating_duration_since(tokio::time::Instant::now())
        );
    }
    // Spread the workers over one interval, as staggered TTLs would.
    let offset = interval.mul_f64((worker % 997) as f64 / 997.0);
    let mut next = start_at + offset;
    let mut latencies = Vec::with_capacity(64);
    let mut sequence = 1;
    while next < stop_at {
        tokio::time::sleep_until(next).await;
        sequence += 1;
        let sent_at = Instant::now();
        reports
            .send(v1::StatusReport {
                sequence,
                state: 1,
                full: false,
                profile: None,
                gateways_epoch: 1,
                drained: false,
            })
            .await?;
        sent.fetch_add(1, Ordering::Relaxed);
        anyhow::ensure!(acks.message().await?.is_some(), "stream ended");
        latencies.push(u32::try_from(sent_at.elapsed().as_micros()).unwrap_or(u32::MAX));
        next += interval;
    }
    Ok(latencies)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    match arg(1, "").as_str() {
        "serve" => serve(&arg(2, "127.0.0.1:3671")).await,
        "drive" => {
            drive(&arg(2, "127.0.0.1:3671"), arg(3, "10000").parse()?, arg(4, "20000").parse()?, arg(5, "20").parse()?)
                .await
        }
        _ => anyhow::bail!("usage: load serve [ADDR] | load drive [ADDR] [STREAMS] [REPORTS_PER_SEC] [SECS]"),
    }
}
