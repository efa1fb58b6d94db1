//! The workload, identical for both systems: `clients` tasks, each a sequential loop of one
//! operation at a time (put to a fresh key, or linearizable get of a preloaded key), for a
//! warm-up and then a measured window. Latencies go into an HDR histogram per task, merged at
//! the end.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

/// Keys preloaded for the get rows; clients read them round-robin.
pub const GET_KEYS: usize = 1000;

/// One KV connection/session of a system under test; one per client task.
pub trait KvClient: Send + Sync + 'static {
    /// Writes `value` under `key`; resolves once the write is committed.
    fn put(&self, key: String, value: Vec<u8>) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Linearizable read of `key`; `true` if it exists.
    fn get(&self, key: String) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// What a row does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put,
    GetLinearizable,
}

/// The shape of one row's run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub op: Op,
    pub value: Vec<u8>,
    /// Namespace of this row's put keys, so rows never overwrite each other.
    pub key_prefix: String,
}

/// When a row measures: operations run from its creation, and those started at or after
/// `measure_from` and finished by `end` are recorded.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub measure_from: Instant,
    pub end: Instant,
}

impl Window {
    /// A window that opens after `warmup` from now and lasts `duration`.
    pub fn after_warmup(warmup: Duration, duration: Duration) -> Self {
        let measure_from = Instant::now() + warmup;
        Self { measure_from, end: measure_from + duration }
    }

    pub fn length(&self) -> Duration {
        self.end - self.measure_from
    }
}

/// Latencies and counts of one row.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Latencies in microseconds.
    pub histogram: Histogram<u64>,
    pub measured: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// What the report shows of a row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub ops_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub ops: u64,
    pub errors: u64,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    pub fn new(measured: Duration) -> Self {
        Self { histogram: new_histogram(), measured, errors: 0, first_error: None }
    }

    pub fn record(&mut self, latency: Duration) {
        self.histogram.saturating_record(latency.as_micros().max(1) as u64);
    }

    fn merge(&mut self, other: Stats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn percentile(&self, q: f64) -> Duration {
        Duration::from_micros(self.histogram.value_at_quantile(q))
    }

    pub fn summary(&self) -> Summary {
        let ops = self.histogram.len();
        let secs = self.measured.as_secs_f64();
        Summary {
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            p50: self.percentile(0.50),
            p99: self.percentile(0.99),
            ops,
            errors: self.errors,
        }
    }
}

/// The key a get client reads on its `seq`-th operation.
pub fn get_key(client: usize, seq: usize) -> String {
    format!("bench/get/{:04}", (client * 131 + seq) % GET_KEYS)
}

/// Writes the [`GET_KEYS`] keys the get rows read, spread over `clients`.
pub async fn preload<C: KvClient>(clients: &[C], value: &[u8]) -> anyhow::Result<()> {
    for chunk in (0..GET_KEYS).collect::<Vec<_>>().chunks(clients.len().max(1)) {
        let puts = chunk.iter().zip(clients).map(|(i, client)| client.put(format!("bench/get/{i:04}"), value.to_vec()));
        for result in futures::future::join_all(puts).await {
            result.context("preloading the keys to read")?;
        }
    }
    Ok(())
}

/// Runs `plan` with one task per client until `window` ends; returns the merged measurements.
pub async fn run<C: KvClient>(clients: Vec<C>, plan: &Plan, window: Window) -> anyhow::Result<Stats> {
    let mut tasks = JoinSet::new();
    for (id, client) in clients.into_iter().enumerate() {
        let plan = plan.clone();
        tasks.spawn(async move { client_loop(id, client, plan, window).await });
    }
    let mut total = Stats::new(window.length());
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined.context("a client task panicked")?);
    }
    Ok(total)
}

/// One client: back-to-back operations until the window ends.
async fn client_loop<C: KvClient>(id: usize, client: C, plan: Plan, window: Window) -> Stats {
    let Window { measure_from, end } = window;
    let mut stats = Stats::new(window.length());
    let mut seq = 0usize;
    loop {
        let began = Instant::now();
        if began >= end {
            return stats;
        }
        let result = match plan.op {
            Op::Put => client.put(format!("{}/{id:03}/{seq:09}", plan.key_prefix), plan.value.clone()).await,
            Op::GetLinearizable => match client.get(get_key(id, seq)).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(anyhow::anyhow!("preloaded key {} not found", get_key(id, seq))),
                Err(err) => Err(err),
            },
        };
        let finished = Instant::now();
        seq += 1;
        match result {
            Ok(()) if began >= measure_from && finished <= end => stats.record(finished - began),
            Ok(()) => {}
            Err(err) => {
                stats.errors += 1;
                stats.first_error.get_or_insert_with(|| format!("{err:#}"));
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut stats = Stats::new(Duration::from_secs(2));
        for ms in 1..=100u64 {
            stats.record(Duration::from_millis(ms));
        }
        let close = |got: Duration, want_ms: u64| {
            let want = Duration::from_millis(want_ms).as_micros() as f64;
            (got.as_micros() as f64 - want).abs() / want < 0.002
        };
        assert!(close(stats.percentile(0.50), 50), "p50 {:?}", stats.percentile(0.50));
        assert!(close(stats.percentile(0.99), 99), "p99 {:?}", stats.percentile(0.99));
        let summary = stats.summary();
        assert_eq!(summary.ops, 100);
        assert!((summary.ops_per_sec - 50.0).abs() < 1e-9);
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_first_error() {
        let mut a = Stats::new(Duration::from_secs(1));
        a.record(Duration::from_micros(10));
        let mut b = Stats::new(Duration::from_secs(1));
        b.record(Duration::from_micros(0)); // recorded as 1 µs
        b.errors = 2;
        b.first_error = Some("boom".into());
        a.merge(b);
        assert_eq!(a.histogram.len(), 2);
        assert_eq!(a.errors, 2);
        assert_eq!(a.first_error.as_deref(), Some("boom"));
        assert_eq!(a.percentile(0.0), Duration::from_micros(1));
    }

    #[test]
    fn get_keys_stay_within_the_preloaded_set() {
        for client in 0..64 {
            for seq in [0, 1, 999, 1000, 123_456] {
                let key = get_key(client, seq);
                let n: usize = key.trim_start_matches("bench/get/").parse().unwrap();
                assert!(n < GET_KEYS);
            }
        }
    }
}
