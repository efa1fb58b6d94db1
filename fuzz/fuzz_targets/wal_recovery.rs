//! WAL recovery: a log directory whose segment files hold fuzzed bytes (torn, truncated,
//! corrupted or misnamed segments). `Wal::open` must return an error or a consistent log, and
//! a log it accepted must keep working the way the log store uses it: purge to the stored
//! purge point, read, append the next entry, and reopen to the same entries plus that one.
//!
//! Input: `[purge point: u32 LE]` then up to four `[first index: u64 LE][frame: contents]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_control_plane::store::fuzzing::Wal;
use muster_fuzz::{Input, scratch_dir};
use muster_proto::v1;

fn entry(index: u64) -> v1::Entry {
    v1::Entry {
        log_id: Some(v1::LogId { leader_id: Some(v1::LeaderId { term: 1, node_id: 1 }), index }),
        payload: Some(v1::entry::Payload::Blank(v1::Blank {})),
    }
}

fn index_of(entry: &v1::Entry) -> u64 {
    entry.log_id.map_or(0, |id| id.index)
}

/// What the log store does on start: open, then forget entries at or below the purge point.
fn open(dir: &std::path::Path, purged: u64) -> std::io::Result<Wal> {
    let mut wal = Wal::open(dir)?;
    if purged > 0 {
        wal.purge(purged)?;
    }
    Ok(wal)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let purged = u64::from(input.u32());
    let dir = scratch_dir();
    for _ in 0..4 {
        if input.is_empty() {
            break;
        }
        let first = input.u64();
        let contents = input.frame().unwrap_or_default();
        std::fs::write(dir.path().join(format!("{first:020}.wal")), contents).unwrap();
    }

    let Ok(mut wal) = open(dir.path(), purged) else { return };
    let entries = wal.read(..).expect("an opened log reads back");
    for pair in entries.windows(2) {
        assert!(index_of(&pair[0]) < index_of(&pair[1]), "entries come back in index order");
    }
    assert_eq!(wal.last_index(), entries.last().map(index_of), "the last index is the last entry's");
    assert!(purged == 0 || entries.first().is_none_or(|e| index_of(e) > purged), "nothing at or below the purge point");

    let next = wal.last_index().unwrap_or(purged).checked_add(1);
    let Some(next) = next else { return };
    wal.append_unsynced(&[entry(next)]).expect("the next entry appends to a recovered log");
    drop(wal);

    let wal = open(dir.path(), purged).expect("a recovered log reopens after an append");
    let mut expected = entries;
    expected.push(entry(next));
    assert_eq!(wal.read(..).unwrap(), expected, "reopening gives the same entries plus the appended one");
});
