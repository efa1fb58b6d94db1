//! Paged reads of workers and tokens. A whole-table answer grew past the message limit once
//! (4.9 MB of workers), so lists come in pages ordered by id: at most [`MAX_PAGE_SIZE`]
//! records and [`MAX_PAGE_BYTES`] encoded, resumed after the last id by an opaque token
//! (URL-safe base64 of that id, so a client never builds one by hand).

use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use muster_proto::v1;
use prost::Message;
use redb::ReadableDatabase;

use super::FsmReader;
use super::db::{TOKENS, WORKERS, decode, io_err};

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
    /// Workers after the page token's id that pass `keep`, in id order.
    pub fn workers_page(
        &self,
        page_token: &str,
        page_size: usize,
        keep: impl Fn(&v1::WorkerRecord) -> bool,
    ) -> Result<Page<v1::WorkerRecord>, PageError> {
        let after = match decode_token(page_token)? {
            None => None,
            Some(bytes) => Some(u64::from_be_bytes(
                bytes.try_into().map_err(|_| BadPageToken(page_token.chars().take(64).collect()))?,
            )),
        };
        Ok(self.scan_workers(after, page_size, keep)?)
    }

    fn scan_workers(
        &self,
        after: Option<u64>,
        page_size: usize,
        keep: impl Fn(&v1::WorkerRecord) -> bool,
    ) -> io::Result<Page<v1::WorkerRecord>> {
        let first = match after {
            None => 0,
            Some(id) => match id.checked_add(1) {
                Some(next) => next,
                None => return Ok(Page { items: Vec::new(), next_page_token: String::new() }),
            },
        };
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(WORKERS).map_err(io_err)?;
        let mut page = Collector::new(page_size);
        let mut next_page_token = String::new();
        for item in table.range(first..).map_err(io_err)? {
            let (_, value) = item.map_err(io_err)?;
            let record: v1::WorkerRecord = decode(value.value(), "worker")?;
            if !keep(&record) {
                continue;
            }
            if !page.fits(&record) {
                let last = page.items.last().map_or(0, |w: &v1::WorkerRecord| w.worker_id);
                next_page_token = encode_token(&last.to_be_bytes());
                break;
            }
            page.push(record);
        }
        Ok(Page { items: page.items, next_page_token })
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
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let page = reader.workers_page(&token, size, keep).unwrap();
            pages.push(page.items.iter().map(|w| w.worker_id).collect());
            if page.next_page_token.is_empty() {
                return pages;
            }
            token = page.next_page_token;
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
        let err = reader.workers_page("not base64!", 10, |_| true).unwrap_err();
        assert!(matches!(err, PageError::BadToken(_)), "{err}");
        assert!(err.to_string().contains("page_token"), "{err}");
        // Valid base64 but not an id.
        assert!(reader.workers_page("AAA", 10, |_| true).is_err());
        assert!(reader.tokens_page("__8", 10, |_| true).is_err(), "not UTF-8");
        let past_the_end = encode_token(&u64::MAX.to_be_bytes());
        assert!(reader.workers_page(&past_the_end, 10, |_| true).unwrap().items.is_empty());
    }
}
