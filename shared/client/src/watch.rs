//! Resumable watches: a stream of changes that survives the node serving it.
//!
//! A watch is served by one node. When that node dies, the stream breaks, or the node ends it
//! for lag, the watch reopens on the next endpoint with `since_revision` set to the last
//! revision it delivered whole, so the consumer sees every change once, in order. Events of
//! one revision are delivered together: fragments are held until their revision's last message
//! arrives, and a worker watch's initial listing is held until `synced`.
//!
//! A worker watch whose resume point is older than the new node's history (OUT_OF_RANGE) lists
//! again and delivers a fresh [`WorkerWatchItem::Listed`], as Kubernetes informers relist; a
//! KV watch has no listing to fall back on and returns the error, which names the oldest
//! revision it could resume from ([`muster_middleware::watch_end`]).

use std::time::{Duration, Instant};

use muster_middleware::{ApiError, TracedChannel, WatchEnd, watch_end};
use muster_proto::v1;
use muster_proto::v1::raft_client_service_client::RaftClientServiceClient;
use muster_proto::v1::worker_admin_service_client::WorkerAdminServiceClient;
use tonic::Streaming;

use crate::client::retryable;
use crate::{ClientError, ControlPlaneClient, TransportMismatch};

/// What a KV watch delivers.
#[derive(Clone, Debug, PartialEq)]
pub enum KvWatchItem {
    /// Every change of one revision to the keys watched.
    Events { revision: u64, events: Vec<v1::KvEvent> },
    /// Nothing changed up to `revision`.
    Progress { revision: u64 },
}

/// What a worker watch delivers.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerWatchItem {
    /// Every matching worker at `revision` (first, and again after a relist): replaces what
    /// the consumer knew.
    Listed { revision: u64, workers: Vec<v1::WorkerRecord> },
    /// Every change of one revision to the workers watched.
    Events { revision: u64, events: Vec<v1::WorkerEvent> },
    /// Nothing changed up to `revision`.
    Progress { revision: u64 },
}

/// One server message, as the resuming logic reads it.
#[doc(hidden)]
pub enum Message<E> {
    /// A page of the initial listing.
    Listing(Vec<v1::WorkerRecord>),
    /// The listing is complete at this revision.
    Synced(u64),
    /// Events of a revision; `whole` unless more of it follows.
    Events { revision: u64, events: Vec<E>, whole: bool },
    /// Nothing more up to this revision (`created`, `progress`).
    Position(u64),
}

/// The two watch methods behind one resuming loop (implemented here only).
#[doc(hidden)]
pub trait Method: Send {
    type Response: Send + 'static;
    type Event: Send;
    /// Whether a watch too old for the history lists again (a worker watch) or fails (KV).
    const RELISTS: bool;
    fn open(
        &self,
        channel: TracedChannel,
        since: Option<u64>,
        max: usize,
    ) -> impl std::future::Future<Output = Result<Streaming<Self::Response>, tonic::Status>> + Send;
    fn read(response: Self::Response) -> Message<Self::Event>;
}

#[doc(hidden)]
pub struct Kv(v1::WatchRequest);

impl Method for Kv {
    type Response = v1::WatchResponse;
    type Event = v1::KvEvent;
    const RELISTS: bool = false;

    async fn open(
        &self,
        channel: TracedChannel,
        since: Option<u64>,
        max: usize,
    ) -> Result<Streaming<Self::Response>, tonic::Status> {
        let request = v1::WatchRequest { since_revision: since.or(self.0.since_revision), ..self.0.clone() };
        let mut client = RaftClientServiceClient::new(channel).max_decoding_message_size(max);
        Ok(client.watch(request).await?.into_inner())
    }

    fn read(response: v1::WatchResponse) -> Message<v1::KvEvent> {
        if response.events.is_empty() {
            return Message::Position(response.revision);
        }
        Message::Events { revision: response.revision, events: response.events, whole: !response.fragment }
    }
}

#[doc(hidden)]
pub struct Workers(v1::WatchWorkersRequest);

impl Method for Workers {
    type Response = v1::WatchWorkersResponse;
    type Event = v1::WorkerEvent;
    const RELISTS: bool = true;

    async fn open(
        &self,
        channel: TracedChannel,
        since: Option<u64>,
        max: usize,
    ) -> Result<Streaming<Self::Response>, tonic::Status> {
        let request = v1::WatchWorkersRequest { since_revision: since, ..self.0.clone() };
        let mut client = WorkerAdminServiceClient::new(channel).max_decoding_message_size(max);
        Ok(client.watch_workers(request).await?.into_inner())
    }

    fn read(response: v1::WatchWorkersResponse) -> Message<v1::WorkerEvent> {
        if response.synced {
            return Message::Synced(response.revision);
        }
        if !response.workers.is_empty() {
            return Message::Listing(response.workers);
        }
        if response.events.is_empty() {
            return Message::Position(response.revision);
        }
        Message::Events { revision: response.revision, events: response.events, whole: !response.fragment }
    }
}

/// A watch that resumes on another node after any failure.
pub struct ResumableWatch<M: Method> {
    client: std::sync::Arc<ControlPlaneClient>,
    method: M,
    /// The last revision delivered whole; `None` until a worker watch's listing completes.
    position: Option<u64>,
    stream: Option<(String, Streaming<M::Response>)>,
    listing: Vec<v1::WorkerRecord>,
    fragments: Vec<M::Event>,
    /// Times this watch reopened on a node (after the first).
    reopened: u64,
}

pub type KvWatch = ResumableWatch<Kv>;
pub type WorkerWatch = ResumableWatch<Workers>;

/// What one step of the loop produced.
enum Step<E> {
    Listed(u64, Vec<v1::WorkerRecord>),
    Events(u64, Vec<E>),
    Progress(u64),
}

impl ControlPlaneClient {
    /// Watches a key (or, with `request.prefix`, a prefix) from any node, resuming elsewhere
    /// after a failure.
    pub fn watch_kv(self: &std::sync::Arc<Self>, request: v1::WatchRequest) -> KvWatch {
        let position = request.since_revision;
        ResumableWatch::new(self.clone(), Kv(request), position)
    }

    /// Watches workers from any node: the matching workers first (unless `since` is given),
    /// then every change, resuming elsewhere after a failure and listing again when the history
    /// no longer reaches back.
    pub fn watch_workers(self: &std::sync::Arc<Self>, request: v1::WatchWorkersRequest) -> WorkerWatch {
        let position = request.since_revision;
        ResumableWatch::new(self.clone(), Workers(request), position)
    }
}

impl<M: Method> ResumableWatch<M> {
    fn new(client: std::sync::Arc<ControlPlaneClient>, method: M, position: Option<u64>) -> Self {
        Self { client, method, position, stream: None, listing: Vec::new(), fragments: Vec::new(), reopened: 0 }
    }

    /// The last revision delivered whole.
    pub fn revision(&self) -> Option<u64> {
        self.position
    }

    /// How many times the watch moved to another node (or reopened on one).
    pub fn reopened(&self) -> u64 {
        self.reopened
    }

    /// The node serving the watch now, if one is.
    pub fn serving(&self) -> Option<&str> {
        self.stream.as_ref().map(|(target, _)| target.as_str())
    }

    /// Opens a stream on the next endpoint, retrying until the client's timeout.
    async fn open(&mut self) -> Result<(), ClientError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let (target, channel) = self.client.next_endpoint()?;
            let max = self.client.options().max_message_bytes;
            let status = match self.method.open(channel, self.position, max).await {
                Ok(stream) => {
                    self.listing.clear();
                    self.fragments.clear();
                    self.stream = Some((target, stream));
                    return Ok(());
                }
                Err(status) => status,
            };
            if let Some(mismatch) = TransportMismatch::of(&status, self.client.options().tls.is_some()) {
                return Err(ClientError::Transport { target, detail: status.message().to_string(), mismatch });
            }
            if M::RELISTS && matches!(watch_end(&status), Some((WatchEnd::Compacted, _))) {
                tracing::info!(error = %status.message(), "watch: history no longer reaches back; listing again");
                self.position = None;
                self.reopened += 1;
                continue;
            }
            if !reopenable(&status) {
                return Err(ClientError::Status(status));
            }
            if started.elapsed() >= self.client.options().timeout {
                let (elapsed, last) = (started.elapsed(), status.message().to_string());
                return Err(ClientError::Exhausted { elapsed, target, last });
            }
            tracing::debug!(%target, error = %status.message(), "watch: trying the next node");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    async fn step(&mut self) -> Result<Step<M::Event>, ClientError> {
        loop {
            if self.stream.is_none() {
                self.open().await?;
            }
            let Some((_, stream)) = self.stream.as_mut() else { continue };
            let status = match stream.message().await {
                Ok(Some(response)) => match M::read(response) {
                    Message::Listing(workers) => {
                        self.listing.extend(workers);
                        continue;
                    }
                    Message::Synced(revision) => {
                        self.position = Some(revision);
                        return Ok(Step::Listed(revision, std::mem::take(&mut self.listing)));
                    }
                    Message::Events { revision, events, whole } => {
                        self.fragments.extend(events);
                        if !whole {
                            continue;
                        }
                        self.position = Some(revision);
                        return Ok(Step::Events(revision, std::mem::take(&mut self.fragments)));
                    }
                    Message::Position(revision) => {
                        if self.position.is_none_or(|position| revision > position) {
                            self.position = Some(revision);
                        }
                        return Ok(Step::Progress(revision));
                    }
                },
                Ok(None) => ApiError::Unavailable("the node ended the watch".into()).into(),
                Err(status) => status,
            };
            self.stream = None;
            match watch_end(&status) {
                Some((WatchEnd::Lagging, _)) => {}
                Some((WatchEnd::Compacted, _)) if M::RELISTS => {
                    tracing::info!(error = %status.message(), "watch: history no longer reaches back; listing again");
                    self.position = None;
                }
                _ if reopenable(&status) => {}
                _ => return Err(ClientError::Status(status)),
            }
            self.reopened += 1;
        }
    }
}

/// A stream error that another node (or the same one, later) may not repeat.
fn reopenable(status: &tonic::Status) -> bool {
    retryable(status) || matches!(status.code(), tonic::Code::Internal | tonic::Code::DeadlineExceeded)
}

impl KvWatch {
    /// The next revision's changes, or progress; waits as long as nothing happens.
    pub async fn next(&mut self) -> Result<KvWatchItem, ClientError> {
        Ok(match self.step().await? {
            Step::Events(revision, events) => KvWatchItem::Events { revision, events },
            Step::Progress(revision) | Step::Listed(revision, _) => KvWatchItem::Progress { revision },
        })
    }
}

impl WorkerWatch {
    /// The listing, the next revision's changes, or progress; waits as long as nothing happens.
    pub async fn next(&mut self) -> Result<WorkerWatchItem, ClientError> {
        Ok(match self.step().await? {
            Step::Listed(revision, workers) => WorkerWatchItem::Listed { revision, workers },
            Step::Events(revision, events) => WorkerWatchItem::Events { revision, events },
            Step::Progress(revision) => WorkerWatchItem::Progress { revision },
        })
    }
}
