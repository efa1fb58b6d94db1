//! Bootstrap token strings, as a worker's token file or `--token` hands them over: decoding
//! must refuse anything malformed with a named error, and what it accepts must survive an
//! encode/decode round trip and verification against a record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_proto::v1;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let token = match muster_token::decode(text) {
        Ok(token) => token,
        Err(err) => {
            let _ = (err.to_string(), err.reason());
            return;
        }
    };
    let again = muster_token::decode(&muster_token::encode(&token)).expect("an accepted token re-encodes");
    assert_eq!(again, token);

    let record = v1::TokenRecord {
        token_id: token.token_id.clone(),
        secret_sha256: muster_token::secret_hash(&token),
        expires_at_unix: token.expires_at_unix,
        remaining_uses: 1,
        ..Default::default()
    };
    let verdict =
        muster_token::verify(&token, Some(&record), &token.cluster_id, token.expires_at_unix.saturating_sub(1));
    if token.expires_at_unix != i64::MIN {
        verdict.expect("a token verifies against its own record before it expires");
    }
    let _ = muster_token::state(&record, 0);
});
