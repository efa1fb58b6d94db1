//! Polling with a deadline: tests never sleep to synchronise, they poll a condition every
//! 50 ms until it holds or the deadline passes (each attempt is itself cut off at the deadline).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] retries.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Runs `attempt` until it returns `Ok`, every [`POLL_INTERVAL`], for at most `timeout`.
/// The error names the timeout and the last failure.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut tries = 0u32;
    let mut failure = String::from("none");
    loop {
        tries += 1;
        let last = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => {
                failure = format!("{err:#}");
                failure.clone()
            }
            Err(_) => {
                format!("the last attempt was still running at the deadline; the one before failed with: {failure}")
            }
        };
        if Instant::now() + POLL_INTERVAL >= deadline {
            anyhow::bail!("still failing after {timeout:?} ({tries} attempts); last error: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`eventually`], panicking with `what` when the deadline passes.
pub async fn eventually_msg<T, F, Fut>(what: impl Display, timeout: Duration, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    match eventually(timeout, attempt).await {
        Ok(value) => value,
        Err(err) => panic!("{what}: {err:#}"),
    }
}
