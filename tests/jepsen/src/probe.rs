//! The exactly-once probe: one session writes unique keys, retrying each write with the same
//! client id and sequence number (Muster's idempotency key) until it is acknowledged, across
//! timeouts, leader kills and whole-cluster restarts; every tenth acknowledged write is sent
//! once more on purpose. At the end every key is read back: a write applied twice has a
//! `mod_revision` above its `create_revision`, a lost write is missing, and each stored key
//! must sit at the log index its acknowledgement named.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use muster_client::{ControlPlaneClient, ReadConsistency};
use muster_proto::v1;
use tokio::sync::watch;

use crate::workload::{decode, encode};

/// Pause between two tries of one write (pacing, not synchronisation).
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long the probe keeps retrying its last write once the run is stopping.
const FINAL_RETRIES: Duration = Duration::from_secs(60);
/// Every this many acknowledged writes, the same request is delivered again.
const DUPLICATE_EVERY: u64 = 10;

/// What the probe wrote and heard back.
#[derive(Debug, Default)]
pub struct ProbeLog {
    pub prefix: String,
    /// Sequence numbers sent (1..=attempted).
    pub attempted: u64,
    /// Acknowledged sequence → the log index the acknowledgement named.
    pub acknowledged: BTreeMap<u64, u64>,
    /// Writes that needed more than one try.
    pub retried: u64,
    /// Deliberate duplicate deliveries, and the problems they showed.
    pub duplicates_sent: u64,
    pub problems: Vec<String>,
}

/// The probe's verdict, after reading every key back.
#[derive(Debug)]
pub struct ProbeReport {
    pub log: ProbeLog,
    pub stored: usize,
}

impl ProbeReport {
    pub fn holds(&self) -> bool {
        self.log.problems.is_empty()
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = &self.log;
        write!(
            f,
            "exactly-once probe: {} writes sent, {} acknowledged ({} after retries), {} duplicate deliveries, {} \
             keys stored: ",
            log.attempted,
            log.acknowledged.len(),
            log.retried,
            log.duplicates_sent,
            self.stored
        )?;
        if self.holds() {
            return write!(f, "every write applied exactly once, none lost");
        }
        writeln!(f, "{} problems", log.problems.len())?;
        for problem in log.problems.iter().take(20) {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// The key the probe's write number `sequence` puts.
fn probe_key(prefix: &str, sequence: u64) -> String {
    format!("{prefix}/{sequence:08}")
}

fn request(client_id: u64, prefix: &str, sequence: u64) -> v1::ClientWriteRequest {
    let put = v1::KvPut { key: probe_key(prefix, sequence), value: encode(sequence) };
    v1::ClientWriteRequest { client_id, sequence, op: Some(v1::client_write_request::Op::Put(put)) }
}

/// One write's result, if the call returned one in time.
async fn send(
    client: &ControlPlaneClient,
    request: &v1::ClientWriteRequest,
    timeout: Duration,
) -> Option<v1::CommandResult> {
    match tokio::time::timeout(timeout, client.write_raw(request.clone())).await {
        Ok(Ok(response)) => match response.result {
            Some(v1::client_response::Result::Write(result)) => Some(result),
            _ => None,
        },
        _ => None,
    }
}

/// Writes `prefix/<sequence>` for sequence 1, 2, … until `stop`; the last write is retried
/// for up to [`FINAL_RETRIES`] after it.
pub async fn probe_loop(
    client: ControlPlaneClient,
    prefix: String,
    op_timeout: Duration,
    stop: watch::Receiver<bool>,
) -> ProbeLog {
    let client_id = client.client_id();
    let mut log = ProbeLog { prefix: prefix.clone(), ..Default::default() };
    let mut stopping_since = None;
    while !*stop.borrow() {
        let sequence = log.attempted + 1;
        log.attempted = sequence;
        let request = request(client_id, &prefix, sequence);
        let mut tries = 0;
        let result = loop {
            tries += 1;
            if let Some(result) = send(&client, &request, op_timeout).await {
                break Some(result);
            }
            if *stop.borrow() && stopping_since.get_or_insert_with(tokio::time::Instant::now).elapsed() > FINAL_RETRIES
            {
                break None;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        };
        let Some(result) = result else { break };
        if tries > 1 {
            log.retried += 1;
        }
        log.acknowledged.insert(sequence, result.index);
        if (log.acknowledged.len() as u64).is_multiple_of(DUPLICATE_EVERY) {
            log.duplicates_sent += 1;
            match send(&client, &request, op_timeout).await {
                Some(again) if again.deduplicated && again.index == result.index => {}
                Some(again) => log.problems.push(format!(
                    "sequence {sequence}: delivered again, answered {again:?} (first answer: index {})",
                    result.index
                )),
                // Unanswered: the final read-back still shows whether it applied twice.
                None => {}
            }
        }
    }
    log
}

/// Reads every probe key back (linearizably) and adds what is wrong to the log's problems.
pub async fn verify(client: &ControlPlaneClient, mut log: ProbeLog) -> anyhow::Result<ProbeReport> {
    let list = client.list(&format!("{}/", log.prefix), 0, ReadConsistency::Linearizable).await?;
    anyhow::ensure!(!list.truncated, "the probe's keys did not fit one list");
    let mut stored = BTreeMap::new();
    for kv in &list.items {
        let sequence = decode(&kv.value);
        if kv.key != probe_key(&log.prefix, sequence) {
            log.problems.push(format!(
                "{} holds {:?}, not its own sequence",
                kv.key,
                String::from_utf8_lossy(&kv.value)
            ));
        }
        if kv.mod_revision != kv.create_revision {
            log.problems.push(format!(
                "{} applied more than once: created at index {}, written again at {}",
                kv.key, kv.create_revision, kv.mod_revision
            ));
        }
        if sequence > log.attempted {
            log.problems.push(format!("{} was never sent", kv.key));
        }
        stored.insert(sequence, kv.mod_revision);
    }
    for (sequence, index) in &log.acknowledged {
        match stored.get(sequence) {
            None => log.problems.push(format!("sequence {sequence} acknowledged at index {index} but lost")),
            Some(at) if at != index => {
                log.problems.push(format!("sequence {sequence} acknowledged at index {index} but stored at {at}"))
            }
            Some(_) => {}
        }
    }
    Ok(ProbeReport { stored: stored.len(), log })
}
