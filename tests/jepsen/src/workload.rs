//! The clients of a run: each is one logical process with its own Muster client (its own
//! session id), issuing one operation at a time as fast as the cluster answers, and
//! recording each with its invoke and complete times.
//!
//! Keys rotate, as Jepsen's independent keys do: a handful of keys is live at a time and
//! every `ops_per_key × keys` operations a new generation of keys takes over, so no one
//! key's history grows too long to check while the run as a whole can last hours.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use muster_client::{ClientError, ControlPlaneClient, ReadConsistency};
use muster_proto::v1;
use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;

use crate::history::{Command, Nanos, Op, Outcome, Reply, Value};

/// What the clients do.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys live at a time.
    pub keys: u64,
    /// Operations per key before its generation is retired.
    pub ops_per_key: u64,
    /// Share of reads served under the leader lease instead of ReadIndex.
    pub lease_reads: f64,
    /// How long one operation may take before it is recorded as indeterminate (a write) or
    /// failed (a read).
    pub op_timeout: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Self { clients: 8, keys: 4, ops_per_key: 250, lease_reads: 0.25, op_timeout: Duration::from_secs(5) }
    }
}

/// What every client of a run shares: the clock origin, the key rotation and the counter
/// that makes every written value unique.
#[derive(Debug)]
pub struct Shared {
    pub epoch: Instant,
    pub prefix: String,
    ops: AtomicU64,
    values: AtomicU64,
    workload: Workload,
}

impl Shared {
    pub fn new(prefix: String, workload: Workload) -> Arc<Self> {
        Arc::new(Self { epoch: Instant::now(), prefix, ops: AtomicU64::new(0), values: AtomicU64::new(1), workload })
    }

    /// Nanoseconds since the run began (monotonic).
    pub fn now(&self) -> Nanos {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn key(&self, rng: &mut StdRng) -> String {
        let w = &self.workload;
        let generation = self.ops.fetch_add(1, Ordering::Relaxed) / (w.ops_per_key * w.keys).max(1);
        format!("{}/{generation}/{}", self.prefix, rng.random_range(0..w.keys))
    }

    fn value(&self) -> Value {
        self.values.fetch_add(1, Ordering::Relaxed)
    }
}

/// A value as stored: its decimal text.
pub fn encode(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// A stored value back to a number. Anything else (no client of the run writes it) becomes
/// `Value::MAX`, which no write wrote, so the checker reports the read that saw it.
pub fn decode(bytes: &[u8]) -> Value {
    std::str::from_utf8(bytes).ok().and_then(|text| text.parse().ok()).unwrap_or(Value::MAX)
}

/// Whether a write error proves the write was not applied: only refusals of the request
/// itself, which every retry of it met too. Anything else (a timeout, a lost connection, a
/// leadership change, "unavailable") leaves the outcome unknown.
pub fn definitely_refused(err: &ClientError) -> bool {
    match err {
        ClientError::NoEndpoints | ClientError::InvalidEndpoint { .. } => true,
        ClientError::Status(status) => {
            matches!(status.code(), Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated)
        }
        // A transport mismatch never carried a request, but nothing here needs to know that.
        ClientError::Exhausted { .. } | ClientError::Transport { .. } => false,
    }
}

fn write_reply(result: &v1::CommandResult) -> Reply {
    Reply::Write { succeeded: result.succeeded, previous: result.previous.as_ref().map(|kv| decode(&kv.value)) }
}

/// One client: operations until `stop` turns true. Returns its history.
pub async fn client_loop(
    process: usize,
    client: ControlPlaneClient,
    shared: Arc<Shared>,
    mut rng: StdRng,
    stop: watch::Receiver<bool>,
) -> Vec<Op> {
    let w = shared.workload.clone();
    let mut ops = Vec::new();
    // The last value this client saw per key: what its compare-and-swaps expect.
    let mut seen: HashMap<String, Option<Value>> = HashMap::new();
    while !*stop.borrow() {
        let key = shared.key(&mut rng);
        let command = match rng.random_range(0..20) {
            0..=8 => Command::Read { lease: rng.random_bool(w.lease_reads) },
            9..=12 => Command::Put(shared.value()),
            13..=14 => Command::Delete,
            _ => {
                let expected = seen.get(&key).copied().unwrap_or(None);
                Command::Cas { expected, new: shared.value() }
            }
        };
        let invoke = shared.now();
        let outcome = match tokio::time::timeout(w.op_timeout, execute(&client, &key, &command)).await {
            Ok(outcome) => outcome,
            // A read cut off changed nothing; a write cut off may still apply.
            Err(_) if command.is_write() => Outcome::Indeterminate,
            Err(_) => Outcome::Fail,
        };
        let complete = shared.now();
        match &outcome {
            Outcome::Ok(Reply::Read(value)) => {
                seen.insert(key.clone(), *value);
            }
            Outcome::Ok(Reply::Write { succeeded, previous }) => {
                let now = match (&command, succeeded) {
                    (Command::Put(v), _) | (Command::Cas { new: v, .. }, true) => Some(*v),
                    (Command::Delete, _) => None,
                    _ => *previous,
                };
                seen.insert(key.clone(), now);
            }
            _ => {}
        }
        ops.push(Op { process, key, command, invoke, complete, outcome });
    }
    ops
}

async fn execute(client: &ControlPlaneClient, key: &str, command: &Command) -> Outcome {
    let written = match *command {
        Command::Read { lease } => {
            let consistency = if lease { ReadConsistency::Lease } else { ReadConsistency::Linearizable };
            return match client.get(key, consistency).await {
                Ok(found) => Outcome::Ok(Reply::Read(found.map(|kv| decode(&kv.value)))),
                Err(_) => Outcome::Fail,
            };
        }
        Command::Put(value) => client.put(key, encode(value)).await,
        Command::Delete => client.delete(key).await,
        Command::Cas { expected, new } => client.compare_and_swap(key, expected.map(encode), encode(new)).await,
    };
    match written {
        Ok(result) => Outcome::Ok(write_reply(&result)),
        Err(err) if definitely_refused(&err) => Outcome::Fail,
        Err(_) => Outcome::Indeterminate,
    }
}
