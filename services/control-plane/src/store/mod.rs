//! Durable storage of a control-plane node: two redb files under `data_dir`.
//!
//! - [`LogStore`] (`raft-log.redb`) keeps the Raft log and the vote; every write is fsynced
//!   before openraft is told it is done (the log is the source of truth).
//! - [`StateMachineStore`] (`fsm.redb`) applies committed entries to the FSM tables, fsyncing
//!   at most about once a second: a crash loses only applies that the log replays on start.
//!   Snapshots are files (fsynced) described by a row in the FSM database; recording one is a
//!   durable commit, so the FSM is always durable up to any point the log was purged to.
//!
//! Two files rather than one: redb has one writer at a time per file, and a log append waiting
//! behind an apply (or the reverse) serialises the two halves of the Raft pipeline.
//! - [`FsmReader`] serves API reads from a redb read transaction, concurrently with Raft.

mod db;
mod fsm;
mod log_store;
mod snapshot;
mod state_machine;

pub use db::{StorageError, open_database};
pub use fsm::FsmReader;
pub use log_store::LogStore;
pub use snapshot::{SnapshotFile, read_snapshot_records};
pub use state_machine::StateMachineStore;
