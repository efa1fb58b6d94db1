//! Key-value helpers shared by the tests: numbered keys, writing a batch, checking values.

use std::time::Duration;

use anyhow::{Context, ensure};
use muster_client::{ControlPlaneClient, ReadConsistency};
use muster_proto::v1;
use muster_proto::v1::raft_client_service_client::RaftClientServiceClient;

use crate::Cluster;

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

/// A read of `key` answered by node `id` itself (no following of leader hints): the value,
/// or `None` when the node refuses, hints elsewhere, or does not answer `within`.
pub async fn read_at_node(
    cluster: &Cluster,
    id: u64,
    key: &str,
    consistency: ReadConsistency,
    within: Duration,
) -> Option<Option<String>> {
    let mut client = RaftClientServiceClient::new(cluster.api_channel(id));
    let request = v1::ClientReadRequest {
        consistency: consistency as i32,
        query: Some(v1::client_read_request::Query::Get(v1::KvGet { key: key.to_string() })),
    };
    let response = tokio::time::timeout(within, client.handle_client_read(request)).await.ok()?.ok()?.into_inner();
    Some(match response.result {
        Some(v1::client_response::Result::Value(kv)) if response.found => {
            Some(String::from_utf8_lossy(&kv.value).into_owned())
        }
        _ => None,
    })
}

/// A put of `key` sent to node `id` itself, bounded by `within`: whether it was acknowledged.
pub async fn write_acked_at_node(cluster: &Cluster, id: u64, key: &str, value: &str, within: Duration) -> bool {
    let mut client = RaftClientServiceClient::new(cluster.api_channel(id));
    let request = v1::ClientWriteRequest {
        op: Some(v1::client_write_request::Op::Put(v1::KvPut {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
        })),
        ..Default::default()
    };
    let answer = tokio::time::timeout(within, client.handle_client_write(request)).await;
    matches!(answer, Ok(Ok(response)) if response.get_ref().result.is_some())
}
