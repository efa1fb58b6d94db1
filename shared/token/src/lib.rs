//! Bootstrap tokens: what `musterctl token create` hands out and a worker presents once to
//! register.
//!
//! A token string is URL-safe base64 (no padding) of a versioned [`v1::BootstrapToken`]: a
//! public id, a secret of 256 random bits, the cluster id, the expiry and the pin of the
//! registrar CA's public key. The cluster stores only a [`v1::TokenRecord`] with the SHA-256
//! of the secret. [`verify`] decides whether a presented token may register now, and each
//! refusal is its own [`TokenError`] so operators can tell a typo from an attack.
//!
//! Nothing here touches the network or the clock: callers pass `now`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use muster_proto::v1;
use prost::Message;
use sha2::{Digest, Sha256};

/// Format version this code writes and reads.
pub const TOKEN_VERSION: u32 = 1;
/// Secret length in bytes (256 bits).
pub const SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token format version {0} is not supported (this build reads version {TOKEN_VERSION})")]
    UnsupportedVersion(u32),
    #[error("token is for cluster {token_cluster}, not this cluster ({cluster})")]
    WrongCluster { token_cluster: String, cluster: String },
    #[error("token {0} is not known to this cluster (forged, or from a wiped cluster)")]
    Unknown(String),
    #[error("token {0} does not match the stored secret (forged or corrupted)")]
    Forged(String),
    #[error("token {token_id} expired at unix time {expired_at}")]
    Expired { token_id: String, expired_at: i64 },
    #[error("token {0} has been used up")]
    UsedUp(String),
    #[error("token {0} was revoked")]
    Revoked(String),
}

impl TokenError {
    /// The typed reason, for the refusal a caller sees (see [`v1::Refusal::TOKEN`]; its
    /// [`label`](v1::Refusal::label) names it in metrics and logs).
    pub fn reason(&self) -> v1::Refusal {
        match self {
            TokenError::Malformed(_) => v1::Refusal::TokenMalformed,
            TokenError::UnsupportedVersion(_) => v1::Refusal::TokenUnsupportedVersion,
            TokenError::WrongCluster { .. } => v1::Refusal::TokenWrongCluster,
            TokenError::Unknown(_) => v1::Refusal::TokenUnknown,
            TokenError::Forged(_) => v1::Refusal::TokenForged,
            TokenError::Expired { .. } => v1::Refusal::TokenExpired,
            TokenError::UsedUp(_) => v1::Refusal::TokenUsedUp,
            TokenError::Revoked(_) => v1::Refusal::TokenRevoked,
        }
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub ttl_seconds: u64,
    pub uses: u32,
    pub labels: std::collections::HashMap<String, String>,
    pub description: String,
}

/// A freshly generated token: the string to hand out and the record to store.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub record: v1::TokenRecord,
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// Generates a token for `cluster_id`, valid from `now` (unix seconds) for the spec's TTL.
pub fn generate(spec: &TokenSpec, cluster_id: &str, ca_pin_sha256: &[u8], now: i64) -> IssuedToken {
    let token_id = format!("{:016x}", rand::random::<u64>());
    let secret: [u8; SECRET_BYTES] = rand::random();
    let ttl = if spec.ttl_seconds == 0 { 24 * 3600 } else { spec.ttl_seconds };
    let expires_at_unix = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
    let uses = spec.uses.max(1);
    let token = v1::BootstrapToken {
        version: TOKEN_VERSION,
        token_id: token_id.clone(),
        secret: secret.to_vec(),
        cluster_id: cluster_id.to_string(),
        expires_at_unix,
        ca_pin_sha256: ca_pin_sha256.to_vec(),
    };
    let record = v1::TokenRecord {
        token_id,
        secret_sha256: sha256(&secret),
        created_at_unix: now,
        expires_at_unix,
        remaining_uses: uses,
        total_uses: uses,
        labels: spec.labels.clone(),
        description: spec.description.clone(),
        revoked: false,
        revoked_at_unix: 0,
    };
    IssuedToken { token: encode(&token), record }
}

pub fn encode(token: &v1::BootstrapToken) -> String {
    URL_SAFE_NO_PAD.encode(token.encode_to_vec())
}

/// Parses a token string (surrounding whitespace, as in a token file, is ignored).
pub fn decode(text: &str) -> Result<v1::BootstrapToken, TokenError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TokenError::Malformed("the token is empty".into()));
    }
    let bytes =
        URL_SAFE_NO_PAD.decode(text).map_err(|err| TokenError::Malformed(format!("not URL-safe base64: {err}")))?;
    let token = v1::BootstrapToken::decode(bytes.as_slice())
        .map_err(|err| TokenError::Malformed(format!("not a bootstrap token: {err}")))?;
    if token.version != TOKEN_VERSION {
        return Err(TokenError::UnsupportedVersion(token.version));
    }
    if token.token_id.is_empty() || token.secret.len() < 16 {
        return Err(TokenError::Malformed("missing token id or a secret shorter than 128 bits".into()));
    }
    Ok(token)
}

/// Constant-time equality, so response timing does not leak how much of a hash matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `token` may register now against the stored `record` (looked up by the token's
/// id; `None` when there is none) in cluster `cluster_id`.
pub fn verify(
    token: &v1::BootstrapToken,
    record: Option<&v1::TokenRecord>,
    cluster_id: &str,
    now: i64,
) -> Result<(), TokenError> {
    let presented =
        Presented { token_id: &token.token_id, secret_sha256: &secret_hash(token), cluster_id: &token.cluster_id };
    verify_presented(&presented, record, cluster_id, now)
}

/// SHA-256 of a token's secret: what travels in the registration command, so the secret
/// itself never reaches the replicated log.
pub fn secret_hash(token: &v1::BootstrapToken) -> Vec<u8> {
    sha256(&token.secret)
}

/// A token as the state machine sees it at registration: id, secret hash, named cluster.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub token_id: &'a str,
    pub secret_sha256: &'a [u8],
    pub cluster_id: &'a str,
}

/// [`verify`] on an already hashed secret (what the FSM applies).
pub fn verify_presented(
    token: &Presented<'_>,
    record: Option<&v1::TokenRecord>,
    cluster_id: &str,
    now: i64,
) -> Result<(), TokenError> {
    if token.cluster_id != cluster_id {
        return Err(TokenError::WrongCluster { token_cluster: token.cluster_id.into(), cluster: cluster_id.into() });
    }
    let record = record.ok_or_else(|| TokenError::Unknown(token.token_id.into()))?;
    if !same(token.secret_sha256, &record.secret_sha256) {
        return Err(TokenError::Forged(token.token_id.into()));
    }
    if record.revoked {
        return Err(TokenError::Revoked(record.token_id.clone()));
    }
    if now >= record.expires_at_unix {
        return Err(TokenError::Expired { token_id: record.token_id.clone(), expired_at: record.expires_at_unix });
    }
    if record.remaining_uses == 0 {
        return Err(TokenError::UsedUp(record.token_id.clone()));
    }
    Ok(())
}

/// A record's state for listings: "active", "expired", "used-up" or "revoked".
pub fn state(record: &v1::TokenRecord, now: i64) -> &'static str {
    if record.revoked {
        "revoked"
    } else if now >= record.expires_at_unix {
        "expired"
    } else if record.remaining_uses == 0 {
        "used-up"
    } else {
        "active"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn every_error_has_its_own_token_refusal() {
        let errors = [
            TokenError::Malformed(String::new()),
            TokenError::UnsupportedVersion(9),
            TokenError::WrongCluster { token_cluster: "a".into(), cluster: "b".into() },
            TokenError::Unknown("t".into()),
            TokenError::Forged("t".into()),
            TokenError::Expired { token_id: "t".into(), expired_at: 1 },
            TokenError::UsedUp("t".into()),
            TokenError::Revoked("t".into()),
        ];
        assert_eq!(errors.each_ref().map(TokenError::reason), v1::Refusal::TOKEN);
    }

    fn issued() -> IssuedToken {
        generate(&TokenSpec { ttl_seconds: 60, uses: 2, ..Default::default() }, "c1", &[7; 32], NOW)
    }

    #[test]
    fn round_trip_and_verify() {
        let issued = issued();
        let token = decode(&format!("  {}\n", issued.token)).unwrap();
        assert_eq!(token.cluster_id, "c1");
        assert_eq!(token.ca_pin_sha256, vec![7; 32]);
        assert_eq!(token.secret.len(), SECRET_BYTES);
        assert!(!issued.token.contains(['+', '/', '=']), "URL-safe without padding");
        verify(&token, Some(&issued.record), "c1", NOW).unwrap();
        assert_eq!(state(&issued.record, NOW), "active");
    }

    #[test]
    fn each_refusal_is_distinct() {
        let issued = issued();
        let token = decode(&issued.token).unwrap();
        let check = |record: &v1::TokenRecord, cluster: &str, now: i64| verify(&token, Some(record), cluster, now);

        assert_eq!(check(&issued.record, "c2", NOW).unwrap_err().reason(), v1::Refusal::TokenWrongCluster);
        assert_eq!(verify(&token, None, "c1", NOW).unwrap_err().reason(), v1::Refusal::TokenUnknown);
        assert_eq!(check(&issued.record, "c1", NOW + 60).unwrap_err().reason(), v1::Refusal::TokenExpired);
        let used = v1::TokenRecord { remaining_uses: 0, ..issued.record.clone() };
        assert_eq!(check(&used, "c1", NOW).unwrap_err().reason(), v1::Refusal::TokenUsedUp);
        let revoked = v1::TokenRecord { revoked: true, ..issued.record.clone() };
        assert_eq!(check(&revoked, "c1", NOW).unwrap_err().reason(), v1::Refusal::TokenRevoked);

        let mut forged = token.clone();
        forged.secret[0] ^= 1;
        assert_eq!(verify(&forged, Some(&issued.record), "c1", NOW).unwrap_err().reason(), v1::Refusal::TokenForged);
    }

    #[test]
    fn malformed_strings_are_named() {
        assert_eq!(decode("").unwrap_err().reason(), v1::Refusal::TokenMalformed);
        assert!(decode("not base64!").unwrap_err().to_string().contains("base64"));
        let old = v1::BootstrapToken { version: 9, token_id: "x".into(), secret: vec![1; 32], ..Default::default() };
        assert_eq!(decode(&encode(&old)).unwrap_err(), TokenError::UnsupportedVersion(9));
        let short = v1::BootstrapToken { version: 1, token_id: "x".into(), secret: vec![1; 4], ..Default::default() };
        assert_eq!(decode(&encode(&short)).unwrap_err().reason(), v1::Refusal::TokenMalformed);
    }

    #[test]
    fn defaults_are_one_use_and_a_day() {
        let issued = generate(&TokenSpec::default(), "c", &[], NOW);
        assert_eq!(issued.record.remaining_uses, 1);
        assert_eq!(issued.record.expires_at_unix, NOW + 24 * 3600);
    }
}
