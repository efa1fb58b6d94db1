//! Key-value helpers shared by the tests: numbered keys, writing a batch, checking values.

use anyhow::{Context, ensure};
use muster_client::{ControlPlaneClient, ReadConsistency};

/// `prefix-0007`: numbered keys sort in write order.
pub fn key(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:04}")
}

/// The value the helpers write under `key`.
pub fn value_of(key: &str) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

/// Puts `key(prefix, i)` for every `i` in `range`, one acknowledged write after another.
pub async fn put_many(client: &ControlPlaneClient, prefix: &str, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    for i in range {
        let key = key(prefix, i);
        let result = client.put(&key, value_of(&key)).await.with_context(|| format!("put {key}"))?;
        ensure!(result.succeeded, "put {key} did not succeed: {result:?}");
    }
    Ok(())
}

/// The value of `key` at `consistency`, `None` when absent.
pub async fn get(
    client: &ControlPlaneClient,
    key: &str,
    consistency: ReadConsistency,
) -> anyhow::Result<Option<Vec<u8>>> {
    let found = client.get(key, consistency).await.with_context(|| format!("get {key} ({consistency:?})"))?;
    Ok(found.map(|kv| kv.value))
}

/// Fails unless `key` holds `expected` when read at `consistency`.
pub async fn expect_value(
    client: &ControlPlaneClient,
    key: &str,
    expected: &[u8],
    consistency: ReadConsistency,
) -> anyhow::Result<()> {
    let value = get(client, key, consistency).await?;
    ensure!(
        value.as_deref() == Some(expected),
        "{key} ({consistency:?}) holds {:?}, expected {:?}",
        value.as_deref().map(String::from_utf8_lossy),
        String::from_utf8_lossy(expected)
    );
    Ok(())
}

/// Fails unless every key `put_many(prefix, range)` wrote holds its value at `consistency`.
pub async fn expect_all(
    client: &ControlPlaneClient,
    prefix: &str,
    range: std::ops::Range<usize>,
    consistency: ReadConsistency,
) -> anyhow::Result<()> {
    for i in range {
        let key = key(prefix, i);
        expect_value(client, &key, &value_of(&key), consistency).await?;
    }
    Ok(())
}
