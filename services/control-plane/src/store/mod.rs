//! Durable storage of a control-plane node: two redb files under `data_dir`.
//!
//! - [`LogStore`] keeps the Raft log in append-only segment files (`raft-log/`, see [`wal`])
//!   and the vote and log pointers in `raft-meta.redb`; every append is fsynced before
//!   openraft is told it is done (the log is the source of truth).
//! - [`StateMachineStore`] (`fsm.redb`) applies committed entries to the FSM tables, fsyncing
//!   at most about once a second: a crash loses only applies that the log replays on start.
//!   Snapshots are files (fsynced) described by a row in the FSM database; recording one is a
//!   durable commit, so the FSM is always durable up to any point the log was purged to.
//!
//! The log is not a redb table: a B-tree append rewrote a dozen pages per fsync, and sharing
//! a redb file with the FSM made log appends and applies queue on one writer lock.
//! - [`FsmReader`] serves API reads from a redb read transaction, concurrently with Raft
//!   ([`FsmReader::worker_states`] counts workers by state for `/metrics`).

pub(crate) mod db;
mod fleet_mirror;
mod fsm;
#[doc(hidden)]
pub mod fuzzing;
mod gone_workers;
pub(crate) mod history;
#[doc(hidden)]
pub mod legacy_fixture;
mod listings;
mod log_store;
mod log_tail;
mod pages;
mod scrub;
mod sessions;
pub(crate) mod snapshot;
mod state_machine;
mod tokens;
pub(crate) mod wal;
pub mod worker_ca;
mod worker_drain;
mod worker_states;
mod workers;

pub use db::{StorageError, open_database};
pub(crate) use db::{decode, io_err};
pub use fsm::FsmReader;
pub use history::HistoryRead;
pub use history::Retention;
pub use listings::Listings;
pub use log_store::LogStore;
pub use pages::{ListingToken, Page, PageError, StateAt, page_size};
pub use scrub::{ScrubReport, scrub_worker_ca_key};
pub use snapshot::{SNAPSHOT_FORMAT, SnapshotFile, read_snapshot_records};
pub use state_machine::StateMachineStore;
pub use worker_states::{WorkerStateCache, WorkerStates};
pub(crate) use workers::is_gone;
