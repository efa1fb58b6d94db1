//! Durable storage of a control-plane node: one redb database per node.
//!
//! - [`LogStore`] keeps the Raft log and the vote; every write is fsynced before openraft is
//!   told it is done (the log is the source of truth).
//! - [`StateMachineStore`] applies committed entries to the FSM tables in the same database
//!   without an fsync of its own: a crash loses at most applies that the log replays on start.
//!   Snapshots are files (fsynced) described by a row in the same database.
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
