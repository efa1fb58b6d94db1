//! A writer that keeps writing while a test does something to the cluster: numbered keys
//! (`kv::key(prefix, i)` holding `kv::value_of`), one after another, each with a deadline, and
//! a record of which were acknowledged and what failed. Tests then check that no write failed
//! (a renewal, a rotation) or that every acknowledged write survived (a recovery).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_client::ControlPlaneClient;

use crate::kv::{key, value_of};
use crate::wait::eventually_msg;

/// What a stopped writer did.
#[derive(Debug)]
pub struct Written {
    /// The numbers of the acknowledged keys, in order.
    pub acked: Vec<usize>,
    pub failures: u64,
    pub first_error: Option<String>,
}

pub struct Writer {
    acked: Arc<Mutex<Vec<usize>>>,
    failures: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<String>>,
}

impl Writer {
    /// Writes `prefix-0000`, `prefix-0001`, ... through `client`, each put given `deadline`
    /// (a put past it counts as failed: its outcome is unknown) and followed by `pause`.
    pub fn start(client: ControlPlaneClient, prefix: &str, deadline: Duration, pause: Duration) -> Self {
        let (acked, failures, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicU64::new(0)), Arc::default());
        let task = tokio::spawn({
            let (acked, failures, stop, prefix): (_, _, Arc<AtomicBool>, _) =
                (acked.clone(), failures.clone(), Arc::clone(&stop), prefix.to_string());
            async move {
                let mut first_error = None;
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = key(&prefix, i);
                    match tokio::time::timeout(deadline, client.put(&key, value_of(&key))).await {
                        Ok(Ok(result)) if result.succeeded => acked.lock().unwrap_or_else(|p| p.into_inner()).push(i),
                        outcome => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            first_error.get_or_insert_with(|| match outcome {
                                Ok(Ok(result)) => format!("{key}: not applied: {result:?}"),
                                Ok(Err(err)) => format!("{key}: {err}"),
                                Err(_) => format!("{key}: no answer within {deadline:?}"),
                            });
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
                first_error
            }
        });
        Self { acked, failures, stop, task }
    }

    /// How many writes were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until `more` writes past the ones acknowledged now are acknowledged.
    pub async fn wait_for_more(&self, more: usize, why: &str, within: Duration) {
        let target = self.acked() + more;
        eventually_msg(why, within, || async {
            let acked = self.acked();
            anyhow::ensure!(acked >= target, "{acked} of {target} writes acknowledged");
            Ok(())
        })
        .await;
    }

    /// Stops after the write in flight.
    pub async fn stop(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        let first_error = self.task.await.expect("the writer ends");
        let acked = std::mem::take(&mut *self.acked.lock().unwrap_or_else(|p| p.into_inner()));
        Written { acked, failures: self.failures.load(Ordering::Relaxed), first_error }
    }
}
