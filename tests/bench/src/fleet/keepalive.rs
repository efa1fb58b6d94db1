//! Simulated etcd clients for the fleet comparison, shaped like Muster's simulated workers
//! (`muster_e2e::fleet`): one lease each, kept alive over its own `LeaseKeepAlive` stream on
//! its own TLS connection, one request in flight, the next on the client's own grid at the
//! interval (`muster_e2e::beat_clock`; at once after the response at interval zero), on the
//! load generator's own runtimes (`muster_e2e::client_threads`), reconnecting with jittered
//! backoff after a failure. (etcd's own client multiplexes every lease of a process over one
//! stream; one stream per worker is what a fleet of separate machines does.)
//!
//! Unlike Muster's workers these streams are tonic's, not `muster_e2e::grpc_stream`: with the
//! leaner client the whole fleet reached etcd 3.4 faster than it could take it, its leader
//! "failed to send out heartbeat on time", and elections, failed streams and reconnection
//! storms followed (1,900-3,200 keep-alives/s against 5,200-9,100 with tonic's, whose heavier
//! connect paces the fleet; every in-flight limit on handshakes tried, 8 to 64, either stormed
//! or left a third of the fleet unconnected after two minutes). etcd keeps the client it
//! does best with; its CPU (0.3 cores) is small beside etcd's own. A client waits for its
//! response as long as its lease lives, as etcd's own client does, where a Muster worker gives
//! up after 10 s: an overloaded etcd then answers late instead of being buried under
//! reconnections and TLS handshakes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use muster_e2e::beat_clock::BeatClock;
use muster_e2e::client_threads::ClientThreads;
use tonic::transport::Endpoint;

use super::etcd_side::LEASE_TTL;
use crate::etcd_rpc::{LEASE_KEEP_ALIVE, LeaseKeepAliveRequest, LeaseKeepAliveResponse};

/// A response later than this fails the stream (the lease is gone by then anyway).
const RESPONSE_TIMEOUT: Duration = LEASE_TTL;

/// What the simulated clients have seen so far.
#[derive(Default)]
pub struct KeepAliveStats {
    pub acks: AtomicU64,
    /// Streams that failed (connect, send, timeout, server error).
    pub stream_errors: AtomicU64,
    /// Responses saying the lease is gone (TTL ≤ 0).
    pub expired: AtomicU64,
    /// Clients with at least one response.
    pub acked_once: AtomicU64,
    /// Response latencies in microseconds (request sent → response received).
    latencies_us: std::sync::Mutex<Vec<u32>>,
}

impl KeepAliveStats {
    /// The latency samples since the last call; clears them.
    pub fn take_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut *self.latencies_us.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record(&self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).push(micros);
        self.acks.fetch_add(1, Ordering::Relaxed);
    }
}

/// The running clients; dropping it stops them all.
pub struct KeepAliveFleet {
    pub stats: Arc<KeepAliveStats>,
    interval_us: Arc<AtomicU64>,
    _threads: ClientThreads,
}

impl KeepAliveFleet {
    /// Starts one client per lease, each connecting through `endpoint` on its own.
    pub fn start(endpoint: &Endpoint, leases: &[i64], interval: Duration) -> anyhow::Result<Self> {
        let stats = Arc::new(KeepAliveStats::default());
        let interval_us = Arc::new(AtomicU64::new(micros(interval)));
        let clients = leases.iter().map(|&lease| {
            Client { endpoint: endpoint.clone(), lease, stats: stats.clone(), interval_us: interval_us.clone() }.run()
        });
        let threads = ClientThreads::spawn("etcd-client", clients)?;
        Ok(Self { stats, interval_us, _threads: threads })
    }

    /// Changes every client's interval from its next request on.
    pub fn set_interval(&self, interval: Duration) {
        self.interval_us.store(micros(interval), Ordering::Relaxed);
    }
}

fn micros(interval: Duration) -> u64 {
    u64::try_from(interval.as_micros()).unwrap_or(u64::MAX)
}

struct Client {
    endpoint: Endpoint,
    lease: i64,
    stats: Arc<KeepAliveStats>,
    interval_us: Arc<AtomicU64>,
}

impl Client {
    async fn run(self) {
        let mut acked = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            // Only failures return.
            let _ = self.stream(&mut acked).await;
            self.stats.stream_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff.mul_f64(rand::random_range(0.5..1.0))).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn stream(&self, acked: &mut bool) -> anyhow::Result<()> {
        let mut grpc = tonic::client::Grpc::new(self.endpoint.connect().await?);
        grpc.ready().await?;
        let (requests, outgoing) = tokio::sync::mpsc::channel(4);
        let request = LeaseKeepAliveRequest { id: self.lease };
        requests.send(request.clone()).await?;
        let mut sent_at = Instant::now();
        let codec = tonic_prost::ProstCodec::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>::default();
        let call = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outgoing));
        let mut responses =
            grpc.streaming(call, http::uri::PathAndQuery::from_static(LEASE_KEEP_ALIVE), codec).await?.into_inner();
        let mut clock = BeatClock::new();
        loop {
            let response = tokio::time::timeout(RESPONSE_TIMEOUT, responses.message())
                .await
                .context("no keep-alive response in time")??
                .context("the keep-alive stream ended")?;
            self.stats.record(sent_at.elapsed());
            if response.ttl <= 0 {
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
            }
            if !*acked {
                *acked = true;
                self.stats.acked_once.fetch_add(1, Ordering::Relaxed);
            }
            let interval = Duration::from_micros(self.interval_us.load(Ordering::Relaxed));
            tokio::time::sleep_until(clock.next(interval, Instant::now()).into()).await;
            sent_at = Instant::now();
            requests.send(request.clone()).await?;
        }
    }
}
