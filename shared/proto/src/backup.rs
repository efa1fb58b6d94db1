//! The backup file `musterctl snapshot save` writes and `snapshot inspect` and restore read.
//!
//! Layout: the line `MUSTER-BACKUP 1\n`; a length-delimited [`v1::BackupHeader`]; the snapshot
//! exactly as a control-plane node stores it (`MUSTER-SNAPSHOT <version>\n`, then
//! length-delimited `v1::SnapshotRecord`s); then the SHA-256 of everything before it (32
//! bytes). [`Backup::parse`] checks all of it before anything reads a record, so a truncated,
//! corrupted or foreign file is refused with what is wrong, never half-used.

use prost::Message;

use crate::v1;

/// The first line of a backup file.
pub const BACKUP_MAGIC: &[u8] = b"MUSTER-BACKUP 1\n";
/// `BackupHeader.format_version` of the files this release writes and reads.
pub const BACKUP_FORMAT_VERSION: u32 = 1;
/// How a snapshot body starts; the version follows.
pub const SNAPSHOT_MAGIC_PREFIX: &[u8] = b"MUSTER-SNAPSHOT ";

const CHECKSUM_BYTES: usize = 32;

/// Why a backup file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    #[error("not a Muster backup (it does not start with `MUSTER-BACKUP 1`)")]
    NotABackup,
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("corrupt: the file's checksum does not match its contents")]
    ChecksumMismatch,
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error(
        "backup format {found} is not one this release reads (it reads {BACKUP_FORMAT_VERSION}); use a matching release"
    )]
    UnknownFormat { found: u32 },
}

/// A backup file, checked.
#[derive(Debug)]
pub struct Backup<'a> {
    pub header: v1::BackupHeader,
    /// The snapshot, as a node stores it.
    pub snapshot: &'a [u8],
}

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    pub kv_keys: u64,
    pub workers: u64,
    pub tokens: u64,
}

/// Decodes every record of a snapshot body (after its magic line), counting what it holds.
pub fn count_snapshot(snapshot: &[u8]) -> Result<SnapshotCounts, BackupError> {
    let rest = snapshot
        .strip_prefix(SNAPSHOT_MAGIC_PREFIX)
        .ok_or_else(|| BackupError::Corrupt("the snapshot inside does not start with `MUSTER-SNAPSHOT`".into()))?;
    let newline =
        rest.iter().position(|b| *b == b'\n').ok_or_else(|| BackupError::Corrupt("no snapshot header line".into()))?;
    let mut records = &rest[newline + 1..];
    let mut counts = SnapshotCounts::default();
    while !records.is_empty() {
        let record = v1::SnapshotRecord::decode_length_delimited(&mut records)
            .map_err(|err| BackupError::Corrupt(format!("a snapshot record does not decode: {err}")))?;
        match record.record {
            Some(v1::snapshot_record::Record::Kv(_)) => counts.kv_keys += 1,
            Some(v1::snapshot_record::Record::Worker(_)) => counts.workers += 1,
            Some(v1::snapshot_record::Record::Token(_)) => counts.tokens += 1,
            _ => {}
        }
    }
    Ok(counts)
}

/// The version in a snapshot body's first line (`MUSTER-SNAPSHOT 1` → 1).
pub fn snapshot_format(snapshot: &[u8]) -> Option<u32> {
    let rest = snapshot.strip_prefix(SNAPSHOT_MAGIC_PREFIX)?;
    let line = &rest[..rest.iter().position(|b| *b == b'\n')?];
    std::str::from_utf8(line).ok()?.trim().parse().ok()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The bytes of a backup file holding `snapshot` under `header` (whose size and checksum
/// fields are set here).
pub fn encode(mut header: v1::BackupHeader, snapshot: &[u8]) -> Vec<u8> {
    header.format_version = BACKUP_FORMAT_VERSION;
    header.snapshot_bytes = snapshot.len() as u64;
    header.snapshot_sha256 = sha256(snapshot).to_vec();
    let mut out = Vec::with_capacity(BACKUP_MAGIC.len() + 256 + snapshot.len() + CHECKSUM_BYTES);
    out.extend_from_slice(BACKUP_MAGIC);
    out.extend_from_slice(&header.encode_length_delimited_to_vec());
    out.extend_from_slice(snapshot);
    let checksum = sha256(&out);
    out.extend_from_slice(&checksum);
    out
}

impl<'a> Backup<'a> {
    /// Checks and splits a backup file: magic, whole-file checksum, header, format, size and
    /// checksum of the snapshot, and that every snapshot record decodes.
    pub fn parse(file: &'a [u8]) -> Result<Self, BackupError> {
        if !file.starts_with(BACKUP_MAGIC) {
            return Err(if BACKUP_MAGIC.starts_with(file) {
                BackupError::Truncated("the file ends inside its first line".into())
            } else {
                BackupError::NotABackup
            });
        }
        if file.len() < BACKUP_MAGIC.len() + CHECKSUM_BYTES {
            return Err(BackupError::Truncated(format!("{} bytes is too short for a backup", file.len())));
        }
        let (body, checksum) = file.split_at(file.len() - CHECKSUM_BYTES);
        let mut rest = &body[BACKUP_MAGIC.len()..];
        let header = v1::BackupHeader::decode_length_delimited(&mut rest);
        if sha256(body) != checksum {
            // A cut file fails the checksum too; say which when the header still tells.
            if let Ok(header) = &header
                && (rest.len() as u64) < header.snapshot_bytes
            {
                return Err(BackupError::Truncated(format!(
                    "the snapshot should be {} bytes and the file holds at most {}",
                    header.snapshot_bytes,
                    rest.len() + CHECKSUM_BYTES
                )));
            }
            return Err(BackupError::ChecksumMismatch);
        }
        let header = header.map_err(|err| BackupError::Corrupt(format!("the header does not decode: {err}")))?;
        if header.format_version != BACKUP_FORMAT_VERSION {
            return Err(BackupError::UnknownFormat { found: header.format_version });
        }
        if rest.len() as u64 != header.snapshot_bytes {
            return Err(BackupError::Corrupt(format!(
                "the header says {} snapshot bytes, the file holds {}",
                header.snapshot_bytes,
                rest.len()
            )));
        }
        if sha256(rest).as_slice() != header.snapshot_sha256.as_slice() {
            return Err(BackupError::Corrupt("the snapshot's checksum does not match the header's".into()));
        }
        count_snapshot(rest)?;
        Ok(Self { header, snapshot: rest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Vec<u8> {
        let mut body = b"MUSTER-SNAPSHOT 1\n".to_vec();
        for record in [
            v1::snapshot_record::Record::ClusterId("c-1".into()),
            v1::snapshot_record::Record::Kv(v1::KeyValue { key: "a".into(), ..Default::default() }),
            v1::snapshot_record::Record::Worker(v1::WorkerRecord { worker_id: 1, ..Default::default() }),
        ] {
            body.extend(v1::SnapshotRecord { record: Some(record) }.encode_length_delimited_to_vec());
        }
        body
    }

    fn backup() -> Vec<u8> {
        encode(v1::BackupHeader { cluster_id: "c-1".into(), revision: 42, ..Default::default() }, &snapshot())
    }

    #[test]
    fn a_backup_reads_back_with_its_header_and_counts() {
        let file = backup();
        let parsed = Backup::parse(&file).unwrap();
        assert_eq!((parsed.header.cluster_id.as_str(), parsed.header.revision), ("c-1", 42));
        assert_eq!(parsed.snapshot, snapshot().as_slice());
        assert_eq!(count_snapshot(parsed.snapshot).unwrap(), SnapshotCounts { kv_keys: 1, workers: 1, tokens: 0 });
        assert_eq!(snapshot_format(parsed.snapshot), Some(1));
    }

    #[test]
    fn truncated_corrupt_and_foreign_files_are_refused_by_what_is_wrong() {
        let file = backup();
        for cut in [5, BACKUP_MAGIC.len() + 3, file.len() / 2, file.len() - 1] {
            let err = Backup::parse(&file[..cut]).unwrap_err();
            assert!(matches!(err, BackupError::Truncated(_) | BackupError::ChecksumMismatch), "cut at {cut}: {err}");
        }
        assert!(matches!(Backup::parse(&file[..file.len() - 10]).unwrap_err(), BackupError::Truncated(_)));
        for at in [BACKUP_MAGIC.len() + 2, file.len() - 40, file.len() - 3] {
            let mut flipped = file.clone();
            flipped[at] ^= 0x01;
            assert_eq!(Backup::parse(&flipped).unwrap_err(), BackupError::ChecksumMismatch, "flipped byte {at}");
        }
        assert_eq!(Backup::parse(b"MUSTER-SNAPSHOT 1\nxxxxxxxx").unwrap_err(), BackupError::NotABackup);
        let future = encode(v1::BackupHeader::default(), &snapshot());
        let mut header = v1::BackupHeader::decode_length_delimited(&future[BACKUP_MAGIC.len()..]).unwrap();
        header.format_version = 9;
        let mut rewritten = BACKUP_MAGIC.to_vec();
        rewritten.extend(header.encode_length_delimited_to_vec());
        rewritten.extend(snapshot());
        let checksum = sha256(&rewritten);
        rewritten.extend(checksum);
        assert_eq!(Backup::parse(&rewritten).unwrap_err(), BackupError::UnknownFormat { found: 9 });
    }
}
