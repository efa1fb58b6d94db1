//! Paged reads of workers and tokens. A whole-table answer grew past the message limit once
//! (4.9 MB of workers), so lists come in pages ordered by id: at most [`MAX_PAGE_SIZE`]
//! records and [`MAX_PAGE_BYTES`] encoded, resumed after the last id by an opaque token
//! (URL-safe base64 of that id, so a client never builds one by hand).

use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use muster_proto::v1;
use prost::Message;
use redb::{ReadableDatabase, ReadableTable};

use super::FsmReader;
use super::db::{FSM_META, META_APPLIED, TOKENS, WORKERS, decode, io_err};

/// Records in a page when the request names no size.
pub const DEFAULT_PAGE_SIZE: usize = 500;
/// Largest page size served; larger requests are clamped.
pub const MAX_PAGE_SIZE: usize = 1_000;
/// A page ends before its records pass this many encoded bytes (half the default 4 MiB message
/// limit, leaving room for leases). It always holds at least one record.
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// A `page_token` that no server handed out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("page_token {0:?} is malformed: pass the next_page_token of the previous answer unchanged")]
pub struct BadPageToken(pub String);

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    BadToken(#[from] BadPageToken),
    #[error("storage: {0}")]
    Storage(#[from] io::Error),
}

/// One page of records and, when more may follow, the token for the next.
#[derive(Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// The requested size, defaulted and clamped.
pub fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE_SIZE,
        size => size.min(MAX_PAGE_SIZE),
    }
}

fn encode_token(last: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(last)
}

fn decode_token(token: &str) -> Result<Option<Vec<u8>>, BadPageToken> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD.decode(token).map(Some).map_err(|_| BadPageToken(token.chars().take(64).collect()))
}

/// Collects matching records in key order until the page is full.
struct Collector<T> {
    size: usize,
    bytes: usize,
    items: Vec<T>,
}

impl<T: Message> Collector<T> {
    fn new(size: usize) -> Self {
        Self { size, bytes: 0, items: Vec::new() }
    }

    /// Whether `record` still fits; a full page says no and the caller stops before it.
    fn fits(&self, record: &T) -> bool {
        self.items.is_empty() || (self.items.len() < self.size && self.bytes + record.encoded_len() <= MAX_PAGE_BYTES)
    }

    fn push(&mut self, record: T) {
        self.bytes += record.encoded_len();
        self.items.push(record);
    }
}

impl FsmReader {
    /// The applied state as it is now, held open: every page read from it shows the same
    /// revision, however the state moves on meanwhile.
    pub fn state_at_now(&self) -> io::Result<StateAt> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let meta = txn.open_table(FSM_META).map_err(io_err)?;
        let applied = meta.get(META_APPLIED).map_err(io_err)?.map(|v| decode::<v1::LogId>(v.value(), "applied"));
        let revision = applied.transpose()?.map_or(0, |log_id| log_id.index);
        Ok(StateAt { revision, workers: txn.open_table(WORKERS).map_err(io_err)? })
    }

    /// Tokens after the page token's id that pass `keep`, in id order.
    pub fn tokens_page(
        &self,
        page_token: &str,
        page_size: usize,
        keep: impl Fn(&v1::TokenRecord) -> bool,
    ) -> Result<Page<v1::TokenRecord>, PageError> {
        let after = match decode_token(page_token)? {
            None => None,
            Some(bytes) => {
                Some(String::from_utf8(bytes).map_err(|_| BadPageToken(page_token.chars().take(64).collect()))?)
            }
        };
        Ok(self.scan_tokens(after.as_deref(), page_size, keep)?)
    }

    fn scan_tokens(
        &self,
        after: Option<&str>,
        page_size: usize,
        keep: impl Fn(&v1::TokenRecord) -> bool,
    ) -> io::Result<Page<v1::TokenRecord>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(TOKENS).map_err(io_err)?;
        let range = match after {
            Some(id) => table.range::<&str>((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded)),
            None => table.range::<&str>(..),
        }
        .map_err(io_err)?;
        let mut page = Collector::new(page_size);
        let mut next_page_token = String::new();
        for item in range {
            let (_, value) = item.map_err(io_err)?;
            let record: v1::TokenRecord = decode(value.value(), "token")?;
            if !keep(&record) {
                continue;
            }
            if !page.fits(&record) {
                let last = page.items.last().map_or("", |t: &v1::TokenRecord| t.token_id.as_str());
                next_page_token = encode_token(last.as_bytes());
                break;
            }
            page.push(record);
        }
        Ok(Page { items: page.items, next_page_token })
    }
}

/// Workers from id `first` on that pass `keep`, as one page, and whether more may follow.
fn workers_from(
    table: &impl ReadableTable<u64, &'static [u8]>,
    first: u64,
    page_size: usize,
    keep: impl Fn(&v1::WorkerRecord) -> bool,
) -> io::Result<(Vec<v1::WorkerRecord>, bool)> {
    let mut page = Collector::new(page_size);
    for item in table.range(first..).map_err(io_err)? {
        let (_, value) = item.map_err(io_err)?;
        let record: v1::WorkerRecord = decode(value.value(), "worker")?;
        if !keep(&record) {
            continue;
        }
        if !page.fits(&record) {
            return Ok((page.items, true));
        }
        page.push(record);
    }
    Ok((page.items, false))
}

/// The applied state at one revision, held open (a redb read transaction keeps what it sees
/// while writes go on), so all the pages of one listing show the same state.
pub struct StateAt {
    revision: u64,
    workers: redb::ReadOnlyTable<u64, &'static [u8]>,
}

impl StateAt {
    /// The revision (last applied index) this state is at.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Workers with ids above `after` (all with `None`) that pass `keep`, as one page, and
    /// whether more may follow its last worker.
    pub fn workers_page(
        &self,
        after: Option<u64>,
        page_size: usize,
        keep: impl Fn(&v1::WorkerRecord) -> bool,
    ) -> io::Result<(Vec<v1::WorkerRecord>, bool)> {
        match after.map_or(Some(0), |id| id.checked_add(1)) {
            Some(first) => workers_from(&self.workers, first, page_size, keep),
            None => Ok((Vec::new(), false)),
        }
    }
}

/// Where a worker listing's next page starts: the listing it continues (its state is held on
/// the node that began it) and the last worker id sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListingToken {
    pub listing: u64,
    pub after: u64,
}

impl ListingToken {
    pub fn encode(self) -> String {
        let mut bytes = self.listing.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.after.to_be_bytes());
        encode_token(&bytes)
    }

    /// `None` for the first page (an empty token).
    pub fn decode(page_token: &str) -> Result<Option<Self>, BadPageToken> {
        let bad = || BadPageToken(page_token.chars().take(64).collect());
        let Some(bytes) = decode_token(page_token)? else { return Ok(None) };
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| bad())?;
        let (listing, after) = bytes.split_at(8);
        Ok(Some(Self {
            listing: u64::from_be_bytes(listing.try_into().map_err(|_| bad())?),
            after: u64::from_be_bytes(after.try_into().map_err(|_| bad())?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_database;

    fn reader_with(workers: u64, tokens: usize) -> (tempfile::TempDir, FsmReader) {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(WORKERS).unwrap();
            for id in 1..=workers {
                let state = if id % 2 == 0 { v1::WorkerState::Ready } else { v1::WorkerState::Draining };
                let record = v1::WorkerRecord { worker_id: id, state: state as i32, ..Default::default() };
                table.insert(id, record.encode_to_vec().as_slice()).unwrap();
            }
            let mut table = txn.open_table(TOKENS).unwrap();
            for i in 0..tokens {
                let record = v1::TokenRecord { token_id: format!("t{i:03}"), ..Default::default() };
                table.insert(record.token_id.as_str(), record.encode_to_vec().as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        (dir, FsmReader::new(db))
    }

    fn all_workers(reader: &FsmReader, size: usize, keep: impl Fn(&v1::WorkerRecord) -> bool + Copy) -> Vec<Vec<u64>> {
        let state = reader.state_at_now().unwrap();
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let (items, more) = state.workers_page(after, size, keep).unwrap();
            pages.push(items.iter().map(|w| w.worker_id).collect());
            after = items.last().map(|w| w.worker_id);
            if !more {
                return pages;
            }
        }
    }

    #[test]
    fn sizes_default_and_clamp() {
        assert_eq!((page_size(0), page_size(7), page_size(1_000_000)), (DEFAULT_PAGE_SIZE, 7, MAX_PAGE_SIZE));
    }

    #[test]
    fn worker_pages_cover_every_worker_once_in_id_order() {
        let (_dir, reader) = reader_with(25, 0);
        let pages = all_workers(&reader, 10, |_| true);
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5]);
        assert_eq!(pages.concat(), (1..=25).collect::<Vec<_>>());
        let ready = all_workers(&reader, 5, |w| w.state == v1::WorkerState::Ready as i32);
        assert_eq!(ready.concat(), (2..=24).step_by(2).collect::<Vec<_>>());
        let exact = all_workers(&reader, 25, |_| true);
        assert_eq!(exact.len(), 1, "a page that ends with the table needs no next token");
    }

    #[test]
    fn a_page_ends_before_the_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(WORKERS).unwrap();
            for id in 1..=5 {
                let name = "n".repeat(MAX_PAGE_BYTES / 3);
                let record = v1::WorkerRecord { worker_id: id, name, ..Default::default() };
                table.insert(id, record.encode_to_vec().as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        let reader = FsmReader::new(db);
        let pages = all_workers(&reader, MAX_PAGE_SIZE, |_| true);
        assert_eq!(pages, vec![vec![1, 2], vec![3, 4], vec![5]]);
    }

    #[test]
    fn token_pages_resume_after_the_last_id() {
        let (_dir, reader) = reader_with(0, 12);
        let first = reader.tokens_page("", 5, |_| true).unwrap();
        assert_eq!(first.items.last().unwrap().token_id, "t004");
        let second = reader.tokens_page(&first.next_page_token, 5, |_| true).unwrap();
        assert_eq!(second.items.first().unwrap().token_id, "t005");
        let third = reader.tokens_page(&second.next_page_token, 5, |_| true).unwrap();
        assert_eq!((third.items.len(), third.next_page_token.as_str()), (2, ""));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let (_dir, reader) = reader_with(3, 3);
        let err = ListingToken::decode("not base64!").unwrap_err();
        assert!(err.to_string().contains("page_token"), "{err}");
        // Valid base64 but not a listing token.
        assert!(ListingToken::decode("AAA").is_err());
        assert!(reader.tokens_page("__8", 10, |_| true).is_err(), "not UTF-8");
        let token = ListingToken { listing: 7, after: u64::MAX };
        assert_eq!(ListingToken::decode(&token.encode()).unwrap(), Some(token));
        assert_eq!(ListingToken::decode("").unwrap(), None);
        let state = reader.state_at_now().unwrap();
        assert_eq!(state.workers_page(Some(u64::MAX), 10, |_| true).unwrap(), (Vec::new(), false));
    }

    #[test]
    fn a_held_state_keeps_its_revision_while_writes_go_on() {
        let (_dir, reader) = reader_with(4, 0);
        let state = reader.state_at_now().unwrap();
        let txn = reader.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(WORKERS).unwrap();
            table.remove(1).unwrap();
            let record = v1::WorkerRecord { worker_id: 9, ..Default::default() };
            table.insert(9, record.encode_to_vec().as_slice()).unwrap();
        }
        txn.commit().unwrap();
        let ids = |state: &StateAt| {
            state.workers_page(None, 100, |_| true).unwrap().0.iter().map(|w| w.worker_id).collect::<Vec<_>>()
        };
        assert_eq!(ids(&state), [1, 2, 3, 4]);
        assert_eq!(ids(&reader.state_at_now().unwrap()), [2, 3, 4, 9]);
    }
}
