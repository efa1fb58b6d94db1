//! A fleet of simulated workers in one process, for tests and the fleet benchmark that need
//! hundreds or thousands of workers: each has its own P-256 key, its own certificate from the
//! registrar and its own mTLS connection to a gateway, and beats the way the agent does (full
//! report first, then one report per issued TTL, failing over down its rendezvous ranking).
//! Registration and beating are the real protocol; only the process per worker is saved, and
//! the streams use the lean client of [`crate::grpc_stream`] so that the fleet costs its host
//! as little CPU as it can.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use muster_proto::v1;
use muster_proto::v1::worker_registration_service_client::WorkerRegistrationServiceClient;
use muster_worker_agent::gateways::{Gateway, rank};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::beat_clock::BeatClock;
use crate::client_threads::ClientThreads;
use crate::grpc_stream::BidiStream;

/// The heartbeat stream's method path.
const REPORT_STATUS: &str = "/muster.v1.HeartbeatService/ReportStatus";
/// How long a TCP connect to a gateway may take (its backlog full in a reconnect storm).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One registered simulated worker.
#[derive(Clone)]
pub struct SimIdentity {
    pub worker_id: u64,
    pub chain_pem: String,
    pub key_pem: String,
    pub gateways: Vec<v1::GatewayEndpoint>,
}

/// What the fleet has seen so far, shared by every worker task.
#[derive(Default)]
pub struct FleetStats {
    pub acks: AtomicU64,
    pub throttled: AtomicU64,
    pub stream_errors: AtomicU64,
    /// Ack latencies in microseconds (reports sent → ack received).
    pub latencies_us: std::sync::Mutex<Vec<u32>>,
    /// The gateway each worker beats to now, by worker index.
    pub current_gateway: std::sync::Mutex<Vec<String>>,
    /// The TTL in each worker's last ack, by worker index.
    pub last_ttl_ms: std::sync::Mutex<Vec<u32>>,
}

impl FleetStats {
    /// (p50, p99) ack latency since the last call, in milliseconds; clears the samples.
    pub fn take_latency_percentiles(&self) -> (f64, f64, usize) {
        let mut samples = std::mem::take(&mut *self.latencies_us.lock().unwrap_or_else(|p| p.into_inner()));
        if samples.is_empty() {
            return (0.0, 0.0, 0);
        }
        samples.sort_unstable();
        let at = |q: f64| f64::from(samples[((samples.len() - 1) as f64 * q) as usize]) / 1000.0;
        (at(0.50), at(0.99), samples.len())
    }

    /// How many workers beat to each gateway now.
    pub fn spread(&self) -> std::collections::BTreeMap<String, usize> {
        let mut spread = std::collections::BTreeMap::new();
        for gateway in self.current_gateway.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            *spread.entry(gateway.clone()).or_insert(0) += 1;
        }
        spread
    }
}

/// One worker registered through `registrar` with a fresh one-use token of `cluster` (a TLS
/// cluster): what a test needs to call the gateway as a worker.
pub async fn register_one(cluster: &crate::Cluster, registrar: &crate::registrar::Registrar) -> SimIdentity {
    let pki = cluster.pki().expect("registering a worker needs a TLS cluster");
    let token = cluster
        .client()
        .create_token(v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() })
        .await
        .expect("a token")
        .token;
    register_all(&registrar.addr, &pki.ca_pem(), &token, 1, 1).await.expect("a worker").remove(0)
}

/// A token for `uses` registrations, made by the operator.
pub async fn token_for(cluster: &crate::Cluster, uses: u32) -> String {
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses, ..Default::default() };
    cluster.client().create_token(request).await.expect("a token").token
}

/// Waits until exactly `count` workers are Ready.
pub async fn wait_ready_workers(cluster: &crate::Cluster, count: usize, within: Duration) {
    let ready = v1::ListWorkersRequest { state: v1::WorkerState::Ready as i32, ..Default::default() };
    crate::eventually_msg(format!("{count} workers Ready"), within, || async {
        let ready = cluster.client().list_workers(ready.clone()).await?.len();
        anyhow::ensure!(ready == count, "{ready} Ready");
        Ok(())
    })
    .await;
}

/// Registers `count` workers through `registrar` with one operator token for all of them, 32
/// at a time.
pub async fn register_fleet(
    cluster: &crate::Cluster,
    registrar: &crate::registrar::Registrar,
    count: usize,
) -> Vec<SimIdentity> {
    let token = token_for(cluster, u32::try_from(count).expect("a fleet fits a token's uses")).await;
    let ca_pem = cluster.pki().expect("registering workers needs a TLS cluster").ca_pem();
    register_all(&registrar.addr, &ca_pem, &token, count, 32).await.expect("registering the fleet")
}

/// Waits until all `count` workers are Ready and hold a lease from a gateway's beat.
pub async fn wait_all_beating(cluster: &crate::Cluster, count: usize, within: Duration) {
    crate::eventually_msg(format!("all {count} workers Ready and beating"), within, || async move {
        let listed = cluster.client().list_workers_with_leases(v1::ListWorkersRequest::default()).await?;
        let ready = listed.workers.iter().filter(|w| w.state == v1::WorkerState::Ready as i32).count();
        let beating = listed.leases.values().filter(|l| l.last_beat_unix_ms > 0).count();
        anyhow::ensure!(ready == count && beating == count, "{ready} Ready, {beating} beating of {count}");
        Ok(())
    })
    .await;
}

/// How many workers the cluster holds Unreachable now.
pub async fn unreachable_count(cluster: &crate::Cluster) -> anyhow::Result<usize> {
    let filter = v1::ListWorkersRequest { state: v1::WorkerState::Unreachable as i32, ..Default::default() };
    Ok(cluster.client().list_workers(filter).await?.len())
}

/// Registers `count` workers through the registrar at `registrar` with one multi-use token,
/// at most `parallel` at a time. `ca_pem` is the cluster CA (the registrar's chain ends there).
pub async fn register_all(
    registrar: &str,
    ca_pem: &str,
    token: &str,
    count: usize,
    parallel: usize,
) -> anyhow::Result<Vec<SimIdentity>> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{registrar}"))?.tls_config(tls)?.connect().await?;
    let limit = Arc::new(Semaphore::new(parallel));
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let channel = channel.clone();
        let limit = limit.clone();
        let token = token.to_string();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let request = v1::RegisterRequest {
                token,
                csr_pem: muster_worker_agent::register::csr_pem(&key)?,
                profile: Some(v1::WorkerProfile { hostname: format!("sim-{index}"), ..Default::default() }),
                replaces_cert_pem: String::new(),
            };
            let response = WorkerRegistrationServiceClient::new(channel)
                .register(request)
                .await
                .with_context(|| format!("registering simulated worker {index}"))?
                .into_inner();
            anyhow::Ok((
                index,
                SimIdentity {
                    worker_id: response.worker_id,
                    chain_pem: response.certificate_chain_pem,
                    key_pem: key.serialize_pem(),
                    gateways: response.gateways,
                },
            ))
        });
    }
    let mut identities: Vec<Option<SimIdentity>> = vec![None; count];
    while let Some(joined) = tasks.join_next().await {
        let (index, identity) = joined??;
        identities[index] = Some(identity);
    }
    Ok(identities.into_iter().map(|identity| identity.expect("every index registered")).collect())
}

/// How simulated workers beat.
#[derive(Clone, Debug)]
pub struct BeatPlan {
    /// Beat every this long, each worker on its own grid at a random phase ([`BeatClock`]:
    /// slow acks do not lower the rate, and the load arrives evenly; zero: as soon as the ack
    /// arrives) instead of after the TTL in each ack (load generation).
    /// [`Fleet::set_fixed_interval`] changes it while the fleet runs.
    pub fixed_interval: Option<Duration>,
}

/// [`BeatPlan::fixed_interval`] shared by every worker task, in microseconds (`u64::MAX`: none).
#[derive(Debug)]
struct SharedInterval(AtomicU64);

impl SharedInterval {
    fn new(interval: Option<Duration>) -> Self {
        let shared = Self(AtomicU64::new(u64::MAX));
        shared.set(interval);
        shared
    }

    fn set(&self, interval: Option<Duration>) {
        let micros = interval.map_or(u64::MAX, |i| u64::try_from(i.as_micros()).unwrap_or(u64::MAX - 1));
        self.0.store(micros, Ordering::Relaxed);
    }

    fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            u64::MAX => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

/// A running fleet; dropping it stops every worker.
pub struct Fleet {
    pub stats: Arc<FleetStats>,
    interval: Arc<SharedInterval>,
    threads: ClientThreads,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Fleet {
    /// Starts one beating task per identity, on the fleet's own threads ([`ClientThreads`]).
    /// `ca_pem` verifies the gateways.
    pub fn start(identities: &[SimIdentity], ca_pem: &str, plan: BeatPlan) -> anyhow::Result<Self> {
        Self::start_from(identities, ca_pem, plan, &[])
    }

    /// [`start`](Self::start), each worker connecting from one of `sources` in turn (none:
    /// the system picks): a fleet larger than one address's ephemeral ports spreads over
    /// several loopback addresses.
    pub fn start_from(
        identities: &[SimIdentity],
        ca_pem: &str,
        plan: BeatPlan,
        sources: &[IpAddr],
    ) -> anyhow::Result<Self> {
        let stats = Arc::new(FleetStats::default());
        *stats.current_gateway.lock().unwrap_or_else(|p| p.into_inner()) = vec![String::new(); identities.len()];
        *stats.last_ttl_ms.lock().unwrap_or_else(|p| p.into_inner()) = vec![0; identities.len()];
        let interval = Arc::new(SharedInterval::new(plan.fixed_interval));
        let mut workers = Vec::with_capacity(identities.len());
        for (index, identity) in identities.iter().enumerate() {
            let worker = SimWorker {
                index,
                identity: identity.clone(),
                gateways: Arc::new(Mutex::new(identity.gateways.clone())),
                tls: gateway_tls(identity, ca_pem)?,
                stats: stats.clone(),
                interval: interval.clone(),
                source: (!sources.is_empty()).then(|| sources[index % sources.len()]),
            };
            workers.push(worker.run());
        }
        let threads = ClientThreads::spawn("sim-worker", workers)?;
        Ok(Self { stats, interval, threads })
    }

    /// Changes [`BeatPlan::fixed_interval`] for every worker, from its next report on.
    pub fn set_fixed_interval(&self, interval: Option<Duration>) {
        self.interval.set(interval);
    }

    /// Stops every worker (their streams end without a LEFT report, like a crash).
    pub fn stop(&mut self) {
        self.threads.stop();
    }
}

/// The worker agent's own TLS for gateways, presenting `identity` and trusting `ca_pem` (the
/// cluster CA): a gateway is accepted for its role, as real workers accept it.
pub fn gateway_tls(identity: &SimIdentity, ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let agent_identity = muster_worker_agent::identity::Identity {
        meta: muster_worker_agent::identity::IdentityMeta {
            worker_id: identity.worker_id,
            cluster_id: String::new(),
            cert_expires_at_unix: 0,
            cert_issued_at_unix: 0,
        },
        cert_chain_pem: identity.chain_pem.clone(),
        key_pem: identity.key_pem.clone(),
        ca_bundle_pem: ca_pem.to_string(),
    };
    muster_worker_agent::tls::gateway_tls(&agent_identity)
}

struct SimWorker {
    index: usize,
    identity: SimIdentity,
    gateways: Arc<Mutex<Vec<v1::GatewayEndpoint>>>,
    tls: Arc<rustls::ClientConfig>,
    stats: Arc<FleetStats>,
    interval: Arc<SharedInterval>,
    /// The local address to connect from (`None`: the system's choice).
    source: Option<IpAddr>,
}

/// Why a stream ended.
enum StreamEnd {
    /// The gateway list changed and this worker's top choice is another gateway.
    Moved,
    Failed,
}

type ReportStream = BidiStream<v1::StatusReport, v1::StatusAck>;

impl SimWorker {
    async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        let mut epoch = 0u64;
        loop {
            let list: Vec<Gateway> = self
                .gateways
                .lock()
                .await
                .iter()
                .map(|g| Gateway { id: g.gateway_id.clone(), addr: g.addr.clone() })
                .collect();
            let ranked = rank(self.identity.worker_id, &list);
            if ranked.is_empty() {
                tokio::time::sleep(backoff).await;
                continue;
            }
            for gateway in ranked {
                match self.beat_to(&gateway, &mut epoch).await {
                    StreamEnd::Moved => {
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    StreamEnd::Failed => {
                        self.stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                        let jitter = rand::random_range(0.5..1.0);
                        tokio::time::sleep(backoff.mul_f64(jitter)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }

    async fn beat_to(&self, gateway: &Gateway, epoch: &mut u64) -> StreamEnd {
        let opened =
            ReportStream::open_from(self.source, &gateway.addr, self.tls.clone(), REPORT_STATUS, CONNECT_TIMEOUT).await;
        let Ok(mut stream) = opened else { return StreamEnd::Failed };
        let first = v1::StatusReport {
            sequence: 1,
            state: v1::WorkerState::Ready as i32,
            full: true,
            profile: Some(v1::WorkerProfile { hostname: format!("sim-{}", self.index), ..Default::default() }),
            gateways_epoch: *epoch,
            drained: false,
        };
        if stream.send(&first).is_err() {
            return StreamEnd::Failed;
        }
        let mut sent_at = Instant::now();
        let mut clock = BeatClock::new();
        let mut sequence = 1;
        self.stats.current_gateway.lock().unwrap_or_else(|p| p.into_inner())[self.index] = gateway.id.clone();
        loop {
            let ack = match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
                Ok(Ok(Some(ack))) => ack,
                _ => return StreamEnd::Failed,
            };
            let latency = u32::try_from(sent_at.elapsed().as_micros()).unwrap_or(u32::MAX);
            self.stats.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).push(latency);
            self.stats.acks.fetch_add(1, Ordering::Relaxed);
            if ack.throttled {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.last_ttl_ms.lock().unwrap_or_else(|p| p.into_inner())[self.index] = ack.ttl_ms;
            if !ack.gateways.is_empty() && ack.gateways_epoch != *epoch {
                *epoch = ack.gateways_epoch;
                *self.gateways.lock().await = ack.gateways.clone();
                let list: Vec<Gateway> =
                    ack.gateways.iter().map(|g| Gateway { id: g.gateway_id.clone(), addr: g.addr.clone() }).collect();
                if rank(self.identity.worker_id, &list).first().is_some_and(|top| top.id != gateway.id) {
                    return StreamEnd::Moved;
                }
            }
            let next = match (self.interval.get(), ack.throttled) {
                (Some(interval), false) => clock.next(interval, Instant::now()),
                // As the agent does: one TTL after the report was sent, whatever the ack took.
                _ => sent_at + Duration::from_millis(u64::from(ack.ttl_ms)),
            };
            if next > Instant::now() && stream.idle_until(next).await.is_err() {
                return StreamEnd::Failed;
            }
            sequence += 1;
            let report = v1::StatusReport {
                sequence,
                state: v1::WorkerState::Ready as i32,
                full: false,
                profile: None,
                gateways_epoch: *epoch,
                drained: false,
            };
            sent_at = Instant::now();
            if stream.send(&report).is_err() {
                return StreamEnd::Failed;
            }
        }
    }
}
