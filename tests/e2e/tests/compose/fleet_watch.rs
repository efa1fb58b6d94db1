//! The fleet watched while a step disturbs the cluster: renewing certificates or restarting
//! control-plane nodes must never cost a live worker its Ready state, so the worker list is
//! polled for as long as the step's work runs, not only checked before and after it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use muster_e2e::compose::ComposeStack;

use super::fleet::workers;

/// How often the fleet is listed.
const POLL: Duration = Duration::from_millis(500);

/// Runs `work` while listing the fleet every [`POLL`]: a worker not Ready, or a fleet of other
/// than `count` workers, fails the step at once. Lists that fail (a node restarting) are
/// counted, and at least one list must succeed.
pub async fn while_every_worker_ready<T>(stack: &ComposeStack, count: usize, work: impl Future<Output = T>) -> T {
    let done = AtomicBool::new(false);
    let work = async {
        let out = work.await;
        done.store(true, Ordering::SeqCst);
        out
    };
    let watch = async {
        let (mut listed, mut failed) = (0u32, 0u32);
        while !done.load(Ordering::SeqCst) {
            match workers(stack).await {
                Ok(workers) => {
                    listed += 1;
                    let down: Vec<_> = workers.iter().filter(|w| w.state != "ready").collect();
                    assert!(down.is_empty(), "a live worker left Ready: {down:?}");
                    assert_eq!(workers.len(), count, "the fleet changed size: {workers:?}");
                }
                Err(_) => failed += 1,
            }
            tokio::time::sleep(POLL).await;
        }
        (listed, failed)
    };
    let (out, (listed, failed)) = tokio::join!(work, watch);
    eprintln!("fleet listed {listed} times while the step ran, all {count} Ready ({failed} lists failed)");
    assert!(listed > 0, "the fleet could not be listed once while the step ran ({failed} attempts failed)");
    out
}
