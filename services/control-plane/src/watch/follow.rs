//! The watcher task: from a starting revision, every record of the history in order, through
//! the watch's selector, into its outbound queue; a progress message when idle.

use std::sync::Arc;
use std::time::Duration;

use muster_middleware::{ApiError, WatchEnd};
use muster_proto::v1;
use prost::Message;
use tokio::time::Instant;

use super::feed::{Batch, HistoryFeed};
use super::outbound::{Closed, Outbound, WatchMessage};

/// Records read from the feed at a time.
const READ_BATCH: usize = 256;
/// A message's events stay under this many encoded bytes (one event may exceed it alone).
pub const MAX_MESSAGE_EVENTS_BYTES: usize = 1024 * 1024;

/// What one watch wants from the history, and how it says it.
pub trait Selector: Send + 'static {
    type Message: WatchMessage;
    /// The messages carrying `record`'s events this watch wants (none when it wants none); all
    /// but the last are fragments.
    fn messages(&self, record: &v1::HistoryRecord) -> Vec<Self::Message>;
    /// "Everything up to `revision` has been sent."
    fn progress(&self, revision: u64) -> Self::Message;
}

/// How a watch ended, for the node's counters.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The consumer left (or the node is stopping).
    Gone,
    Lagging,
    Compacted,
    Failed,
}

/// Follows the history after `position` until the consumer goes, falls behind, or the history
/// no longer reaches back to where the watch is.
pub async fn follow<S: Selector>(
    feed: Arc<HistoryFeed>,
    selector: S,
    mut position: u64,
    out: Outbound<S::Message>,
    progress_every: Duration,
    sent: impl Fn(usize),
) -> Ending {
    let mut applied = feed.applied();
    let mut last_sent = Instant::now();
    loop {
        let target = *applied.borrow_and_update();
        while position < target {
            let batch = match feed.between(position, target, READ_BATCH) {
                Ok(batch) => batch,
                Err(err) => {
                    out.fail(ApiError::Internal(format!("reading the watch history: {err}"))).await;
                    return Ending::Failed;
                }
            };
            let (records, complete) = match batch {
                Batch::Records { records, complete } => (records, complete),
                Batch::Compacted { from } => {
                    out.fail(compacted(position, from)).await;
                    return Ending::Compacted;
                }
            };
            for record in records {
                for message in selector.messages(&record) {
                    if let Err(closed) = out.send(message).await {
                        return ending(closed);
                    }
                    sent(1);
                    last_sent = Instant::now();
                }
                position = record.revision;
            }
            if complete {
                position = target;
            }
        }
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    return Ending::Gone;
                }
            }
            _ = tokio::time::sleep_until(last_sent + progress_every) => {
                if let Err(closed) = out.send(selector.progress(position)).await {
                    return ending(closed);
                }
                last_sent = Instant::now();
            }
            _ = out.closed() => return Ending::Gone,
        }
    }
}

fn ending(closed: Closed) -> Ending {
    match closed {
        Closed::Gone => Ending::Gone,
        Closed::Lagging => Ending::Lagging,
    }
}

/// The answer to a watch that asks for changes the history no longer holds.
pub fn compacted(asked: u64, from: u64) -> ApiError {
    ApiError::WatchEnded {
        end: WatchEnd::Compacted,
        revision: from,
        message: format!(
            "revision {asked} is older than this node's watch history, which holds the changes after revision \
             {from}: list again and watch from the listing's revision (or resume with since_revision >= {from})"
        ),
    }
}

/// One record's `events` as messages built by `message(events, fragment)`: split under
/// [`MAX_MESSAGE_EVENTS_BYTES`], all but the last marked as fragments; none without events.
pub fn messages<E: Message, M>(events: Vec<E>, message: impl Fn(Vec<E>, bool) -> M) -> Vec<M> {
    let chunks = split(events);
    let last = chunks.len().saturating_sub(1);
    chunks.into_iter().enumerate().map(|(n, events)| message(events, n != last)).collect()
}

/// `events` in messages of at most [`MAX_MESSAGE_EVENTS_BYTES`] (at least one event each).
fn split<E: Message>(events: Vec<E>) -> Vec<Vec<E>> {
    let mut chunks: Vec<Vec<E>> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let len = event.encoded_len();
        match chunks.last_mut() {
            Some(chunk) if bytes + len <= MAX_MESSAGE_EVENTS_BYTES => {
                bytes += len;
                chunk.push(event);
            }
            _ => {
                bytes = len;
                chunks.push(vec![event]);
            }
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_under_the_message_bound() {
        let event = |n: usize| v1::KvEvent {
            kv: Some(v1::KeyValue { value: vec![0; n], ..Default::default() }),
            ..Default::default()
        };
        let chunks = split(vec![event(600_000), event(600_000), event(10), event(2_000_000)]);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2, 1]);
        assert!(split::<v1::KvEvent>(Vec::new()).is_empty());
    }
}
