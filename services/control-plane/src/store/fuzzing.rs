//! The storage entry points the fuzz targets in `fuzz/` drive, and nothing else uses: the WAL,
//! the FSM's apply, snapshot loading and writing, and an in-memory FSM database so each input
//! starts from a fresh state without touching the disk. Thin wrappers: the logic fuzzed is the
//! node's own.

use std::io;
use std::path::Path;
use std::sync::Arc;

use muster_proto::v1;
use redb::{Database, WriteTransaction};

pub use super::wal::Wal;
use super::{SnapshotFile, StorageError};

/// A database with every table the node uses, in memory.
pub fn memory_database() -> Result<Arc<Database>, StorageError> {
    let db =
        Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).map_err(redb::Error::from)?;
    super::db::create_tables(&db)?;
    Ok(Arc::new(db))
}

/// Applies one command as the state machine does for the entry at `index` of `term`.
pub fn apply_command(
    txn: &WriteTransaction,
    index: u64,
    term: u64,
    command: &v1::Command,
) -> io::Result<v1::CommandResult> {
    super::fsm::apply_command(txn, index, term, command, &mut Default::default())
}

/// Whether this release applies `command` at all (its format and kind); `apply_command`
/// refuses the others.
pub fn readable(command: &v1::Command) -> bool {
    super::fsm::readable(command).is_ok()
}

/// Replaces the FSM tables' contents with a snapshot's records, as installing a snapshot does.
pub fn load_records(txn: &WriteTransaction, records: Vec<v1::SnapshotRecord>) -> io::Result<()> {
    super::snapshot::load_records(txn, records)
}

/// Dumps the FSM state of `db` into a new snapshot file in `dir`.
pub fn write_snapshot(db: &Database, dir: &Path) -> io::Result<SnapshotFile> {
    super::snapshot::write_snapshot(db, dir).map(|(_, file)| file)
}
