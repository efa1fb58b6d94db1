//! The newest log entries, kept as openraft values beside the segments.
//!
//! Every entry is read back right after it is appended: on a leader once per follower by
//! replication and once by the apply, on a follower once by the apply. Each read was a `pread`,
//! a protobuf decode and a conversion; the profile of a put counted three on the leader. The
//! tail answers those reads from memory.
//!
//! The tail is always a suffix of the log in the segments (same indexes, same entries): the log
//! store changes both under the segments' write lock, appending to, cutting and purging the
//! tail exactly as the segments. A read the tail cannot answer whole goes to the segments.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::types::Entry;

/// Most entries kept.
const MAX_ENTRIES: usize = 4096;
/// Most encoded bytes kept (registration batches are up to 512 KiB an entry).
const MAX_BYTES: usize = 32 * 1024 * 1024;

/// The tail shared by the log store's clones; changed and read under the segments' lock.
#[derive(Clone, Debug, Default)]
pub struct SharedLogTail(Arc<Mutex<LogTail>>);

impl SharedLogTail {
    /// Runs `f` on the tail, holding its lock.
    pub fn with<T>(&self, f: impl FnOnce(&mut LogTail) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Consecutive entries ending at the log's last one, with their encoded sizes.
#[derive(Debug, Default)]
pub struct LogTail {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl LogTail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(entry, _)| entry.log_id.index)
    }

    /// Entries just appended to the segments (consecutive, each with its encoded size). If they
    /// do not continue the tail, the tail starts again from them.
    pub fn appended(&mut self, entries: impl IntoIterator<Item = (Entry, usize)>) {
        for (entry, size) in entries {
            if self.last_index().is_some_and(|last| last + 1 != entry.log_id.index) {
                self.clear();
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > MAX_ENTRIES || (self.bytes > MAX_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    /// Forgets everything (what was appended could not be kept as it is on disk).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    /// The segments dropped every entry after `last_kept` (all for `None`).
    pub fn truncated_after(&mut self, last_kept: Option<u64>) {
        while self.last_index().is_some_and(|last| last_kept.is_none_or(|kept| last > kept)) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// The segments forgot every entry up to `upto`.
    pub fn purged(&mut self, upto: u64) {
        while self.first_index().is_some_and(|first| first <= upto) {
            self.pop_front();
        }
    }

    /// The entries `start..end` (end exclusive; `u64::MAX` for "to the last"), as many as fit
    /// `max_bytes` encoded (at least one), if the tail holds all of them that the log does: the
    /// range starts inside the tail (the tail ends where the log ends).
    pub fn read(&self, start: u64, end: u64, max_bytes: usize) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let count = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
        let range = || self.entries.iter().skip(skip).take(count);
        let count = count_within(range().map(|(_, size)| *size), max_bytes);
        Some(range().take(count).map(|(entry, _)| entry.clone()).collect())
    }
}

/// How many of the leading `sizes` add up to at most `max_bytes`: at least one (an entry larger
/// than the limit goes alone), none only when there are none.
pub fn count_within(sizes: impl IntoIterator<Item = usize>, max_bytes: usize) -> usize {
    let mut total = 0usize;
    let mut count = 0;
    for size in sizes {
        total = total.saturating_add(size);
        if count > 0 && total > max_bytes {
            break;
        }
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry as _;

    use super::*;
    use crate::types::LogId;

    fn entry(index: u64) -> (Entry, usize) {
        (Entry::new_blank(LogId::new(openraft::vote::leader_id_adv::LeaderId { term: 1, node_id: 1 }, index)), 10)
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn reads_inside_the_tail_only() {
        let mut tail = LogTail::default();
        assert_eq!(tail.read(1, u64::MAX, usize::MAX), None, "empty: the segments answer");
        tail.appended((5..=8).map(entry));
        assert_eq!(indexes(tail.read(5, u64::MAX, usize::MAX)), Some(vec![5, 6, 7, 8]));
        assert_eq!(indexes(tail.read(6, 8, usize::MAX)), Some(vec![6, 7]));
        assert_eq!(indexes(tail.read(8, 20, usize::MAX)), Some(vec![8]), "the tail ends where the log ends");
        assert_eq!(indexes(tail.read(9, 20, usize::MAX)), Some(vec![]), "past the end, as the segments");
        assert_eq!(tail.read(4, 7, usize::MAX), None, "starts before the tail");
    }

    #[test]
    fn follows_truncation_purge_and_gaps() {
        let mut tail = LogTail::default();
        tail.appended((1..=5).map(entry));
        tail.truncated_after(Some(3));
        assert_eq!(indexes(tail.read(1, u64::MAX, usize::MAX)), Some(vec![1, 2, 3]));
        tail.appended([entry(4)]);
        tail.purged(2);
        assert_eq!(tail.read(2, u64::MAX, usize::MAX), None);
        assert_eq!(indexes(tail.read(3, u64::MAX, usize::MAX)), Some(vec![3, 4]));
        tail.appended([entry(10)]);
        assert_eq!(tail.read(3, u64::MAX, usize::MAX), None, "a jump starts the tail again");
        assert_eq!(indexes(tail.read(10, u64::MAX, usize::MAX)), Some(vec![10]));
        tail.truncated_after(None);
        assert_eq!(tail.read(10, u64::MAX, usize::MAX), None);
        assert_eq!(tail.bytes, 0);
    }

    #[test]
    fn a_limited_read_takes_what_fits_and_never_nothing() {
        let mut tail = LogTail::default();
        // Entries of 10 bytes each.
        tail.appended((1..=8).map(entry));
        assert_eq!(indexes(tail.read(2, u64::MAX, 35)), Some(vec![2, 3, 4]));
        assert_eq!(indexes(tail.read(2, u64::MAX, 5)), Some(vec![2]), "one entry larger than the limit goes alone");
        assert_eq!(indexes(tail.read(9, u64::MAX, 5)), Some(vec![]), "past the end: none");
        assert_eq!(count_within([3, 3, 3], 6), 2);
        assert_eq!(count_within([7, 1], 6), 1);
        assert_eq!(count_within([], 6), 0);
    }

    #[test]
    fn is_bounded() {
        let mut tail = LogTail::default();
        tail.appended((1..=(MAX_ENTRIES as u64 + 10)).map(entry));
        assert_eq!(tail.entries.len(), MAX_ENTRIES);
        assert_eq!(tail.first_index(), Some(11));
        tail.appended([(entry(MAX_ENTRIES as u64 + 11).0, MAX_BYTES + 1)]);
        assert_eq!(tail.entries.len(), 1, "one huge entry is kept alone");
    }
}
