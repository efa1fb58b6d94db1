//! The FSM's bootstrap-token commands: create and revoke. Verification and consumption
//! (which need the presented secret) live with registration.

use std::io;

use muster_proto::v1;
use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use super::db::{TOKENS, decode, io_err};

pub(crate) fn create(txn: &WriteTransaction, index: u64, create: &v1::CreateToken) -> io::Result<v1::CommandResult> {
    let Some(record) = &create.record else {
        return Ok(v1::CommandResult::refusing(index, v1::Refusal::IncompleteCommand, "create-token without a record"));
    };
    let mut tokens = txn.open_table(TOKENS).map_err(io_err)?;
    if tokens.get(record.token_id.as_str()).map_err(io_err)?.is_some() {
        return Ok(v1::CommandResult::refusing(
            index,
            v1::Refusal::TokenExists,
            format!("token {} already exists", record.token_id),
        ));
    }
    tokens.insert(record.token_id.as_str(), record.encode_to_vec().as_slice()).map_err(io_err)?;
    Ok(v1::CommandResult { index, succeeded: true, token: Some(record.clone()), ..Default::default() })
}

pub(crate) fn revoke(txn: &WriteTransaction, index: u64, revoke: &v1::RevokeToken) -> io::Result<v1::CommandResult> {
    let mut tokens = txn.open_table(TOKENS).map_err(io_err)?;
    let current = tokens.get(revoke.token_id.as_str()).map_err(io_err)?.map(|v| decode(v.value(), "token"));
    let Some(mut record): Option<v1::TokenRecord> = current.transpose()? else {
        return Ok(v1::CommandResult::refusing(
            index,
            v1::Refusal::TokenNotFound,
            format!("no token {}", revoke.token_id),
        ));
    };
    if !record.revoked {
        record.revoked = true;
        record.revoked_at_unix = revoke.revoked_at_unix;
        tokens.insert(record.token_id.as_str(), record.encode_to_vec().as_slice()).map_err(io_err)?;
    }
    Ok(v1::CommandResult { index, succeeded: true, token: Some(record), ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FsmReader, open_database};

    fn record(id: &str) -> v1::TokenRecord {
        v1::TokenRecord { token_id: id.into(), remaining_uses: 1, total_uses: 1, ..Default::default() }
    }

    #[test]
    fn create_is_once_per_id_and_revoke_needs_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        let first = create(&txn, 1, &v1::CreateToken { record: Some(record("t1")) }).unwrap();
        assert!(first.succeeded && first.token.is_some());
        let again = create(&txn, 2, &v1::CreateToken { record: Some(record("t1")) }).unwrap();
        assert!(!again.succeeded && again.error.contains("already exists"), "{again:?}");
        let missing = revoke(&txn, 3, &v1::RevokeToken { token_id: "nope".into(), revoked_at_unix: 5 }).unwrap();
        assert!(!missing.succeeded && missing.error.contains("no token nope"));
        let revoked = revoke(&txn, 4, &v1::RevokeToken { token_id: "t1".into(), revoked_at_unix: 5 }).unwrap();
        assert!(revoked.succeeded && revoked.token.as_ref().is_some_and(|t| t.revoked && t.revoked_at_unix == 5));
        txn.commit().unwrap();
        let stored = FsmReader::new(db).token("t1").unwrap().unwrap();
        assert!(stored.revoked);
    }
}
