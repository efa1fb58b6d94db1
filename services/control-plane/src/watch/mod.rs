//! Watches: every change to the KV and to worker records, in revision order, resumable.
//!
//! A revision is the log index of the entry that made a change. Applying an entry writes its
//! changes to the history (`store::history`) in the same transaction, then hands them to the
//! [`HistoryFeed`]; each watch is a task that reads the feed from its own position through its
//! selector ([`kv`], [`workers`]) into a bounded queue ([`outbound`]). Every node serves
//! watches from its own applied state, so watchers spread across the control plane, and a
//! client that loses its node resumes on another from the last revision it got.
//!
//! What bounds a node: the history by count and age (`watch.history_*`), each watch's queue,
//! a consumer that takes nothing for `watch.slow_consumer_timeout` (ended with the revision to
//! resume from), and caps on watches per node and per connection.

pub mod feed;
pub mod follow;
pub mod kv;
pub mod outbound;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use feed::HistoryFeed;
use follow::{Ending, compacted, follow};
use muster_admin::metrics::{join, label};
use muster_admin::{counter, gauge};
use muster_config::WatchTuning;
use muster_middleware::ApiError;
use muster_proto::v1;
use outbound::WatchStream;

use crate::errors::storage_error;
use crate::store::page_size;

/// What a watch follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kv,
    Workers,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Kv, Kind::Workers];

    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Kv => "kv",
            Kind::Workers => "workers",
        }
    }
}

#[derive(Default)]
struct Places {
    total: u32,
    by_kind: [u32; 2],
    per_connection: HashMap<SocketAddr, u32>,
}

#[derive(Default)]
struct Counters {
    messages_sent: [AtomicU64; 2],
    ended_lagging: [AtomicU64; 2],
    ended_compacted: [AtomicU64; 2],
}

/// This node's watches: admission, the tasks, and their counters.
pub struct WatchHub {
    feed: Arc<HistoryFeed>,
    tuning: WatchTuning,
    node_id: u64,
    places: Mutex<Places>,
    counters: Counters,
}

/// A watch's place under the node's caps, given back when its stream is dropped.
pub struct Place {
    hub: Arc<WatchHub>,
    kind: Kind,
    connection: Option<SocketAddr>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut places = self.hub.places.lock().unwrap_or_else(|p| p.into_inner());
        places.total -= 1;
        places.by_kind[self.kind.index()] -= 1;
        if let Some(connection) = self.connection
            && let Some(count) = places.per_connection.get_mut(&connection)
        {
            *count -= 1;
            if *count == 0 {
                places.per_connection.remove(&connection);
            }
        }
    }
}

pub type KvWatchStream = WatchStream<v1::WatchResponse, Place>;
pub type WorkerWatchStream = WatchStream<v1::WatchWorkersResponse, Place>;

impl WatchHub {
    pub fn new(feed: Arc<HistoryFeed>, tuning: WatchTuning, node_id: u64) -> Arc<Self> {
        Arc::new(Self { feed, tuning, node_id, places: Mutex::default(), counters: Counters::default() })
    }

    fn admit(self: &Arc<Self>, kind: Kind, connection: Option<SocketAddr>) -> Result<Place, ApiError> {
        let mut places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        if places.total >= self.tuning.max_watchers {
            return Err(ApiError::ResourceExhausted(format!(
                "node {} serves {} watches, its limit (watch.max_watchers); watch through another node",
                self.node_id, places.total
            )));
        }
        if let Some(connection) = connection {
            let count = places.per_connection.entry(connection).or_default();
            if *count >= self.tuning.max_watchers_per_connection {
                return Err(ApiError::ResourceExhausted(format!(
                    "this connection holds {count} watches, the limit (watch.max_watchers_per_connection); open \
                     another connection or end a watch"
                )));
            }
            *count += 1;
        }
        places.total += 1;
        places.by_kind[kind.index()] += 1;
        Ok(Place { hub: self.clone(), kind, connection })
    }

    /// Refuses a start older than the history, before the stream opens.
    fn check_start(&self, since: u64) -> Result<(), ApiError> {
        let (from, _) = self.feed.reader().history_extent().map_err(storage_error)?;
        if since < from {
            return Err(compacted(since, from));
        }
        Ok(())
    }

    /// The revision this node has applied.
    pub fn applied(&self) -> u64 {
        *self.feed.applied().borrow()
    }

    /// Starts a KV watch.
    pub fn watch_kv(
        self: &Arc<Self>,
        request: v1::WatchRequest,
        connection: Option<SocketAddr>,
    ) -> Result<KvWatchStream, ApiError> {
        if request.key.is_empty() && !request.prefix {
            return Err(ApiError::InvalidArgument(
                "key is empty: name a key, or set prefix (an empty prefix watches every key)".into(),
            ));
        }
        if request.key.len() > crate::grpc::MAX_KEY_BYTES {
            return Err(ApiError::InvalidArgument(format!(
                "key is {} bytes; the limit is {}",
                request.key.len(),
                crate::grpc::MAX_KEY_BYTES
            )));
        }
        let place = self.admit(Kind::Kv, connection)?;
        let start = match request.since_revision {
            Some(since) => {
                self.check_start(since)?;
                since
            }
            None => self.applied(),
        };
        let selector = kv::KvSelector {
            key: request.key,
            prefix: request.prefix,
            prev_kv: request.prev_kv,
            node_id: self.node_id,
        };
        let (out, stream) = outbound::channel(start, self.tuning.slow_consumer_timeout, place);
        let hub = self.clone();
        tokio::spawn(async move {
            if out.send(selector.created(start)).await.is_err() {
                return;
            }
            let ending = hub.follow(Kind::Kv, selector, start, out).await;
            hub.count_ending(Kind::Kv, ending);
        });
        Ok(stream)
    }

    /// Starts a worker watch: with no `since_revision`, the matching workers first.
    pub fn watch_workers(
        self: &Arc<Self>,
        request: v1::WatchWorkersRequest,
        connection: Option<SocketAddr>,
    ) -> Result<WorkerWatchStream, ApiError> {
        let place = self.admit(Kind::Workers, connection)?;
        let selector = workers::WorkerSelector { state: request.state, labels: request.labels, node_id: self.node_id };
        let listing = match request.since_revision {
            Some(since) => {
                self.check_start(since)?;
                None
            }
            None => Some(self.feed.reader().state_at_now().map_err(storage_error)?),
        };
        let start = listing.as_ref().map_or(request.since_revision.unwrap_or(0), |state| state.revision());
        let size = page_size(request.page_size);
        let (out, stream) =
            outbound::channel(if listing.is_some() { 0 } else { start }, self.tuning.slow_consumer_timeout, place);
        let hub = self.clone();
        tokio::spawn(async move {
            if let Some(state) = listing {
                let mut after = None;
                loop {
                    let (workers, more) = match state.workers_page(after, size, |w| selector.matches_record(w)) {
                        Ok(page) => page,
                        Err(err) => return out.fail(storage_error(err)).await,
                    };
                    after = workers.last().map(|w| w.worker_id);
                    if !workers.is_empty() && out.send(selector.listing(workers, start)).await.is_err() {
                        return;
                    }
                    if !more {
                        break;
                    }
                }
                drop(state);
                if out.send(selector.synced(start)).await.is_err() {
                    return;
                }
            }
            let ending = hub.follow(Kind::Workers, selector, start, out).await;
            hub.count_ending(Kind::Workers, ending);
        });
        Ok(stream)
    }

    async fn follow<S: follow::Selector>(
        &self,
        kind: Kind,
        selector: S,
        start: u64,
        out: outbound::Outbound<S::Message>,
    ) -> Ending {
        let sent = |n: usize| {
            self.counters.messages_sent[kind.index()].fetch_add(n as u64, Ordering::Relaxed);
        };
        follow(self.feed.clone(), selector, start, out, self.tuning.progress_interval, sent).await
    }

    fn count_ending(&self, kind: Kind, ending: Ending) {
        let counter = match ending {
            Ending::Lagging => &self.counters.ended_lagging,
            Ending::Compacted => &self.counters.ended_compacted,
            Ending::Gone | Ending::Failed => return,
        };
        counter[kind.index()].fetch_add(1, Ordering::Relaxed);
        if ending == Ending::Lagging {
            tracing::info!(node = self.node_id, kind = kind.as_str(), "ended a watch whose consumer fell behind");
        }
    }

    /// The watch lines of `/metrics`.
    pub fn render_metrics(&self, out: &mut String, node: &str) {
        let by_kind = self.places.lock().unwrap_or_else(|p| p.into_inner()).by_kind.map(u64::from);
        let load = |counters: &[AtomicU64; 2]| counters.each_ref().map(|counter| counter.load(Ordering::Relaxed));
        let counters = &self.counters;
        let rows = [
            ("muster_watchers", "Watches this node serves.", by_kind, false),
            (
                "muster_watch_messages_sent_total",
                "Watch messages (events, listing pages, progress) queued to consumers.",
                load(&counters.messages_sent),
                true,
            ),
            (
                "muster_watchers_ended_lagging_total",
                "Watches ended because their consumer fell behind.",
                load(&counters.ended_lagging),
                true,
            ),
            (
                "muster_watchers_ended_compacted_total",
                "Watches refused or ended because they asked for changes older than the history.",
                load(&counters.ended_compacted),
                true,
            ),
        ];
        for (name, help, values, is_counter) in rows {
            for kind in Kind::ALL {
                let labels = join(&[node, &label("kind", kind.as_str())]);
                let value = values[kind.index()];
                match (kind, is_counter) {
                    (Kind::Kv, true) => counter(out, name, help, &labels, value),
                    (Kind::Kv, false) => gauge(out, name, help, &labels, value),
                    _ => muster_admin::metrics::sample(out, name, &labels, value),
                }
            }
        }
        if let Ok((from, revisions)) = self.feed.reader().history_extent() {
            gauge(
                out,
                "muster_watch_history_revisions",
                "Revisions held in this node's watch history.",
                node,
                revisions,
            );
            gauge(
                out,
                "muster_watch_history_oldest_revision",
                "Watches resume from this revision or later on this node (the history holds every change after it).",
                node,
                from,
            );
        }
    }
}
