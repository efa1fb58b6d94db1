//! A watch's way out: a bounded queue between the watcher task and the gRPC response stream,
//! which ends a consumer that stops taking messages.
//!
//! Why bounded, and why end it: a watcher reads events from the shared history, so a slow
//! consumer costs nothing but its queue while it keeps up; one that takes nothing for
//! `slow_consumer_timeout` would otherwise hold its place (and make the node keep its queue
//! and the transport's buffers) for ever. Ending it is safe because the stream knows the last
//! revision it handed to the transport completely: the consumer gets RESOURCE_EXHAUSTED naming
//! that revision, and messages queued after it are dropped, so resuming from it repeats
//! nothing and misses nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use muster_middleware::{ApiError, WatchEnd};
use tokio::sync::mpsc;
use tonic::Status;

/// Messages a watch queues: how far each lets a consumer resume from.
pub trait WatchMessage: Send + 'static {
    /// The revision a consumer that got this message (and all before it) can resume after;
    /// `None` for part of a revision (a fragment, or the initial listing before `synced`).
    fn resume_point(&self) -> Option<u64>;
}

/// Messages queued per watch.
const QUEUE: usize = 16;

struct Shared {
    /// The last resume point handed to the transport.
    delivered: AtomicU64,
    lagging: AtomicBool,
}

/// Why a send failed: the consumer is gone, or was ended for lag.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Gone,
    Lagging,
}

/// The watcher task's end.
pub struct Outbound<M> {
    tx: mpsc::Sender<Result<M, Status>>,
    shared: Arc<Shared>,
    slow_consumer_timeout: Duration,
}

/// The response stream's end; holds `guard` (the watcher's place in the node's caps) for as
/// long as the transport keeps the stream.
pub struct WatchStream<M, G> {
    rx: mpsc::Receiver<Result<M, Status>>,
    shared: Arc<Shared>,
    ended: bool,
    _guard: G,
}

/// A queue for one watch starting at `start` (the revision it has delivered up to).
pub fn channel<M: WatchMessage, G>(
    start: u64,
    slow_consumer_timeout: Duration,
    guard: G,
) -> (Outbound<M>, WatchStream<M, G>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let shared = Arc::new(Shared { delivered: AtomicU64::new(start), lagging: AtomicBool::new(false) });
    (
        Outbound { tx, shared: shared.clone(), slow_consumer_timeout },
        WatchStream { rx, shared, ended: false, _guard: guard },
    )
}

impl<M: WatchMessage> Outbound<M> {
    /// Queues `message`; a consumer that leaves the queue full for the slow-consumer timeout is
    /// ended for lag.
    pub async fn send(&self, message: M) -> Result<(), Closed> {
        match tokio::time::timeout(self.slow_consumer_timeout, self.tx.send(Ok(message))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Closed::Gone),
            Err(_) => {
                self.shared.lagging.store(true, Ordering::Release);
                Err(Closed::Lagging)
            }
        }
    }

    /// Ends the stream with `err` after what is queued.
    pub async fn fail(&self, err: ApiError) {
        let _ = self.tx.send(Err(err.into())).await;
    }

    /// Resolves when the consumer has gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl<M: WatchMessage, G: Unpin> Stream for WatchStream<M, G> {
    type Item = Result<M, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.shared.lagging.load(Ordering::Acquire) {
            self.ended = true;
            let revision = self.shared.delivered.load(Ordering::Acquire);
            let message = format!(
                "this watch fell behind (it took no message for the node's watch.slow_consumer_timeout); resume with \
                 since_revision = {revision}{}",
                if revision == 0 { " or, before the listing completed, list again" } else { "" }
            );
            return Poll::Ready(Some(Err(ApiError::WatchEnded { end: WatchEnd::Lagging, revision, message }.into())));
        }
        let polled = self.rx.poll_recv(cx);
        match &polled {
            Poll::Ready(Some(Ok(message))) => {
                if let Some(revision) = message.resume_point() {
                    self.shared.delivered.store(revision, Ordering::Release);
                }
            }
            Poll::Ready(Some(Err(_))) => self.ended = true,
            Poll::Ready(None) if self.shared.lagging.load(Ordering::Acquire) => {
                // The task gave up while this poll waited: report the lag, not a clean end.
                return self.poll_next(cx);
            }
            _ => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Message(u64, bool);

    impl WatchMessage for Message {
        fn resume_point(&self) -> Option<u64> {
            (!self.1).then_some(self.0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_that_takes_nothing_is_ended_with_the_last_revision_it_got_whole() {
        let (out, mut stream) = channel::<Message, ()>(5, Duration::from_secs(10), ());
        out.send(Message(6, false)).await.unwrap();
        out.send(Message(7, true)).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), Message(6, false));
        assert_eq!(stream.next().await.unwrap().unwrap(), Message(7, true));
        // The queue fills; the next send waits out the timeout and ends the watch.
        for revision in 8..8 + QUEUE as u64 {
            out.send(Message(revision, false)).await.unwrap();
        }
        assert_eq!(out.send(Message(100, false)).await, Err(Closed::Lagging));
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(
            muster_middleware::watch_end(&status),
            Some((WatchEnd::Lagging, 6)),
            "queued messages are dropped; the fragment of 7 does not count: {status:?}"
        );
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_consumer_that_leaves_is_noticed() {
        let (out, stream) = channel::<Message, ()>(0, Duration::from_secs(10), ());
        drop(stream);
        assert_eq!(out.send(Message(1, false)).await, Err(Closed::Gone));
        out.closed().await;
    }
}
