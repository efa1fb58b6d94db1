//! The floor a gateway is measured against: a bare tonic server whose `ReportStatus` answers
//! each report with an ack carrying the policy's TTL and the gateway's stagger, over the same
//! transport as a gateway (rustls with worker client certificates required, the same
//! listener, HTTP/2 without keepalive pings) and nothing else: no lease state, no batching,
//! no authorization, tracing or overload layers. The same simulated workers connect to it at
//! the same count and beat at the same TTL, so its CPU per ack and memory per connection are what the transport alone costs,
//! and the gateway's divided by them is what Muster's logic adds.
//!
//! Each floor server is its own process (`muster-bench floor-server`, hidden), so its CPU and
//! memory are read the way a gateway's are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{Stream, StreamExt};
use muster_e2e::fleet::SimIdentity;
use muster_e2e::v1;
use muster_e2e::v1::heartbeat_service_server::{HeartbeatService, HeartbeatServiceServer};
use muster_tls::{ClientAuth, LiveTls, Role, SwappableClientVerifier, TlsFiles};
use tonic::{Request, Response, Status, Streaming};

use super::grow::Fleets;
use super::tier::{PerAck, Tier, Usage};
use crate::procs::{free_ports, rss_bytes};

/// `muster-bench floor-server`: serves the echo `ReportStatus` until killed.
#[derive(clap::Parser, Debug, Clone)]
pub struct FloorServerArgs {
    #[arg(long)]
    pub listen: SocketAddr,
    /// The cluster CA, this server's certificate and key (a gateway's).
    #[arg(long)]
    pub ca: PathBuf,
    #[arg(long)]
    pub cert: PathBuf,
    #[arg(long)]
    pub key: PathBuf,
    /// The worker CA client certificates must chain to.
    #[arg(long)]
    pub worker_ca: PathBuf,
    /// The TTL every ack carries.
    #[arg(long)]
    pub ttl_ms: u32,
}

struct Echo {
    ttl_ms: u32,
}

type AckStream = Pin<Box<dyn Stream<Item = Result<v1::StatusAck, Status>> + Send>>;

#[tonic::async_trait]
impl HeartbeatService for Echo {
    type ReportStatusStream = AckStream;

    async fn report_status(
        &self,
        request: Request<Streaming<v1::StatusReport>>,
    ) -> Result<Response<Self::ReportStatusStream>, Status> {
        let ttl_ms = self.ttl_ms;
        // The response stream polls the request stream itself: no task, no channel.
        let acks = request.into_inner().map(move |report| {
            report.map(|report| {
                // The gateway's stagger, drawn per ack: the workers' beats spread over time as
                // they do against a gateway (a fixed TTL keeps the clumps of the connection
                // storm, and a clump costs fewer wake-ups per ack than the same beats spread).
                let ttl_ms = muster_heartbeat_gateway::ttl::staggered(ttl_ms, rand::random::<f64>());
                v1::StatusAck { sequence: report.sequence, ttl_ms, ..Default::default() }
            })
        });
        Ok(Response::new(Box::pin(acks)))
    }
}

pub async fn serve(args: FloorServerArgs) -> anyhow::Result<()> {
    let live = LiveTls::load(TlsFiles { ca: args.ca, cert: args.cert, key: args.key })?;
    let worker_ca = std::fs::read_to_string(&args.worker_ca).context("reading the worker CA")?;
    let trust = SwappableClientVerifier::new(&worker_ca, ClientAuth::Required, "the worker CA")?;
    let server_tls = live.server_config_with(trust.verifier(), false)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let limits = muster_middleware::ServerLimits::default();
    let incoming =
        muster_listener::tls(listener, server_tls, &muster_config::ListenerLimits::heartbeat_gateway(), "floor");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(None)
        .add_service(HeartbeatServiceServer::new(Echo { ttl_ms: args.ttl_ms }))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// The floor's figures at one fleet size.
#[derive(Clone, Debug, Default)]
pub struct Floor {
    pub per_ack: PerAck,
    pub bytes_per_connection: f64,
}

/// Floor servers, one per gateway the tier runs, killed when dropped.
struct Servers {
    children: Vec<tokio::process::Child>,
    endpoints: Vec<v1::GatewayEndpoint>,
}

impl Servers {
    async fn start(tier: &Tier, count: usize, ttl_ms: u32, dir: &std::path::Path) -> anyhow::Result<Self> {
        let pki = tier.cluster.pki().context("a TLS cluster")?;
        let files = pki.component(Role::Gateway, "floor");
        let worker_ca = dir.join("worker-ca.pem");
        std::fs::write(&worker_ca, tier.cluster.client().worker_ca_cert().await?.cert_pem)?;
        let mut servers = Self { children: Vec::new(), endpoints: Vec::new() };
        for (n, port) in free_ports(count)?.into_iter().enumerate() {
            let addr = format!("127.0.0.1:{port}");
            let child = tokio::process::Command::new(std::env::current_exe()?)
                .arg("floor-server")
                .args(["--listen", &addr, "--ttl-ms", &ttl_ms.to_string()])
                .arg("--ca")
                .arg(&files.ca)
                .arg("--cert")
                .arg(&files.cert)
                .arg("--key")
                .arg(&files.key)
                .arg("--worker-ca")
                .arg(&worker_ca)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting a floor server")?;
            servers.children.push(child);
            servers.endpoints.push(v1::GatewayEndpoint { gateway_id: format!("floor-{n}"), addr });
        }
        for endpoint in &servers.endpoints {
            let deadline = Instant::now() + Duration::from_secs(30);
            while tokio::net::TcpStream::connect(&endpoint.addr).await.is_err() {
                anyhow::ensure!(Instant::now() < deadline, "floor server {} did not listen", endpoint.addr);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(servers)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(tokio::process::Child::id).collect()
    }
}

/// Runs `identities` against floor servers acking with `ttl_ms`, as many as `gateways`, and
/// measures a window of steady beating.
pub async fn measure(
    tier: &Tier,
    identities: &[SimIdentity],
    ttl_ms: u32,
    sources: &[std::net::IpAddr],
    window: Duration,
    windows: usize,
) -> anyhow::Result<Floor> {
    let dir = tempfile::Builder::new().prefix("muster-bench-floor-").tempdir()?;
    let servers = Servers::start(tier, tier.gateways.len(), ttl_ms, dir.path()).await?;
    let idle: u64 = servers.pids().iter().map(|pid| rss_bytes(*pid)).sum();
    let floor_identities: Vec<SimIdentity> = identities
        .iter()
        .map(|identity| SimIdentity { gateways: servers.endpoints.clone(), ..identity.clone() })
        .collect();
    let mut fleet = Fleets::default();
    fleet.start(&floor_identities, &tier.ca_pem, sources)?;
    fleet.wait_acked(identities.len(), Duration::from_secs(600), || Ok(())).await?;
    // One TTL for every worker to move from its first report to its steady grid.
    tokio::time::sleep(Duration::from_millis(u64::from(ttl_ms))).await;
    let pids = servers.pids();
    let per_ack = PerAck::measure(&pids, || fleet.acks(), window, windows).await;
    let rss = Usage::of(&pids).rss;
    fleet.kill().await;
    Ok(Floor { per_ack, bytes_per_connection: rss.saturating_sub(idle) as f64 / identities.len() as f64 })
}
