//! Coalescing concurrent writes into one log entry. A registration storm sends the leader
//! thousands of `RegisterWorker` and `RecordWorkerCert` commands at once; written one entry
//! each, every worker costs the log two entries (two appends, two replications, two applies).
//! The [`WriteBatcher`] queues them, and each time a write slot is free it takes every queued
//! command (up to [`MAX_COMMANDS`] or [`MAX_BYTES`]) into one [`v1::CommandBatch`] entry. A lone
//! command is written as itself, so a quiet cluster's writes wait for nothing: batches form
//! only while earlier writes are in flight, which is exactly when there is a queue.
//!
//! A write that finds nothing queued and nothing in flight is proposed by its caller
//! directly: a quiet cluster's writes skip the two task hops of the queue, and a busy one's
//! still queue and share entries.
//!
//! A batch is command format 3; it is written only once every member applies format 3
//! ([`PeerFormats`]), and until then each command goes in an entry of its own, as before.

mod formats;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use muster_middleware::ApiError;
use muster_proto::v1;
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::Status;
use tracing::{Instrument as _, Span};

pub use formats::{PeerFormats, UNANNOUNCED_FORMAT};

/// The command format that has batches.
pub const BATCH_FORMAT: u32 = 3;
/// Most commands in one batch.
pub const MAX_COMMANDS: usize = 256;
/// Most encoded bytes of the commands in one batch (well inside a Raft message); a command
/// that would take a batch past it waits for the next.
pub const MAX_BYTES: usize = 512 * 1024;
/// Batches written at once: while one commits, the next fills.
const WRITES_IN_FLIGHT: usize = 4;
/// Commands that may wait for a slot; past it a caller waits to queue.
const QUEUE: usize = 8 * MAX_COMMANDS;

/// What the batcher needs from the node: a way to write one command, and the newest format
/// every member applies.
pub trait Proposer: Send + Sync + 'static {
    fn propose_command(&self, command: v1::Command)
    -> impl Future<Output = Result<v1::CommandResult, ApiError>> + Send;
    fn writable_format(&self) -> u32;
}

struct Queued {
    command: v1::Command,
    answer: oneshot::Sender<Result<v1::CommandResult, Status>>,
    /// The caller's span: its write joins the caller's trace.
    span: Span,
}

/// [`Proposer::propose_command`] of the batcher's proposer, for a caller's direct write.
type ProposeDirect =
    dyn Fn(v1::Command) -> Pin<Box<dyn Future<Output = Result<v1::CommandResult, ApiError>> + Send>> + Send + Sync;

/// The queue in front of the log for commands that may share an entry.
#[derive(Clone)]
pub struct WriteBatcher {
    queue: mpsc::Sender<Queued>,
    /// Writes in flight; the batching task holds one while it waits for the queue.
    slots: Arc<Semaphore>,
    slot_count: usize,
    direct: Arc<ProposeDirect>,
}

impl WriteBatcher {
    /// Starts the task that writes what is queued through `proposer`; it ends when every
    /// clone of the batcher is dropped.
    pub fn start<P: Proposer>(proposer: Arc<P>) -> Self {
        Self::with_slots(proposer, WRITES_IN_FLIGHT)
    }

    fn with_slots<P: Proposer>(proposer: Arc<P>, slot_count: usize) -> Self {
        let (queue, queued) = mpsc::channel(QUEUE);
        let slots = Arc::new(Semaphore::new(slot_count));
        tokio::spawn(run(proposer.clone(), queued, slots.clone()));
        let direct: Arc<ProposeDirect> = Arc::new(move |command| {
            let proposer = proposer.clone();
            Box::pin(async move { proposer.propose_command(command).await })
        });
        Self { queue, slots, slot_count, direct }
    }

    /// Writes `op` (in a batch or alone); what applying it produced, once applied here.
    pub async fn propose(&self, op: v1::command::Op) -> Result<v1::CommandResult, Status> {
        self.propose_command(v1::Command { op: Some(op), ..Default::default() }).await
    }

    /// [`Self::propose`] for a whole command: its client id and sequence go with it into the
    /// batch, where its retries are recognised as they are in an entry of its own.
    pub async fn propose_command(&self, command: v1::Command) -> Result<v1::CommandResult, Status> {
        // Nothing queued and no write in flight (the one slot taken is the batching task's,
        // waiting): no batch would form, so no hop through the queue.
        let lone =
            self.queue.capacity() == self.queue.max_capacity() && self.slots.available_permits() + 1 >= self.slot_count;
        if lone && let Ok(_slot) = self.slots.clone().try_acquire_owned() {
            return (self.direct)(command).await.map_err(Status::from);
        }
        let (answer, answered) = oneshot::channel();
        let stopped = || Status::from(ApiError::Unavailable("the node is shutting down".into()));
        self.queue.send(Queued { command, answer, span: Span::current() }).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn run<P: Proposer>(proposer: Arc<P>, mut queued: mpsc::Receiver<Queued>, slots: Arc<Semaphore>) {
    // A command that would have taken the batch past `MAX_BYTES`: it starts the next one.
    let mut carried: Option<Queued> = None;
    loop {
        // A slot first: while every slot is busy the queue grows, and the next batch takes it.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(first) => first,
            None => match queued.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut bytes = first.command.encoded_len();
        let mut batch = vec![first];
        // A batch never grows past `MAX_BYTES` (a KV value may be megabytes; a batch must stay
        // well inside a Raft message); a command larger than that is written alone.
        while batch.len() < MAX_COMMANDS {
            let Ok(next) = queued.try_recv() else { break };
            let len = next.command.encoded_len();
            if bytes + len > MAX_BYTES {
                carried = Some(next);
                break;
            }
            bytes += len;
            batch.push(next);
        }
        let proposer = proposer.clone();
        tokio::spawn(async move {
            write(&*proposer, batch).await;
            drop(slot);
        });
    }
}

/// Writes `batch` as one entry when it holds several commands and every member reads
/// batches; else each command in an entry of its own, in its caller's trace. A batch's write
/// joins the trace of its first command's caller.
async fn write<P: Proposer>(proposer: &P, batch: Vec<Queued>) {
    if batch.len() == 1 || proposer.writable_format() < BATCH_FORMAT {
        let writes = batch.into_iter().map(|Queued { command, answer, span }| async move {
            let written = proposer.propose_command(command).instrument(span).await;
            let _ = answer.send(written.map_err(Status::from));
        });
        futures::future::join_all(writes).await;
        return;
    }
    let span = batch[0].span.clone();
    let (commands, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.command, q.answer)).unzip();
    let count = commands.len();
    let entry = v1::Command { op: Some(v1::command::Op::Batch(v1::CommandBatch { commands })), ..Default::default() };
    let results = match proposer.propose_command(entry).instrument(span).await {
        Ok(result) if result.results.len() == count => Ok(result.results),
        Ok(result) => Err(Status::from(ApiError::Internal(format!(
            "a batch of {count} commands applied with {} results",
            result.results.len()
        )))),
        Err(err) => Err(Status::from(err)),
    };
    match results {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(Ok(result));
            }
        }
        // Every command of a failed batch fails with its reason.
        Err(status) => {
            for answer in answers {
                let _ = answer.send(Err(status.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
