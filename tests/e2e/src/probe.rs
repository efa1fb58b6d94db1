//! Asking the running nodes how they are: metadata, `/readyz`, and who the leader is.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use muster_proto::v1;
use muster_proto::v1::cluster_management_service_client::ClusterManagementServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Cluster;
use crate::wait::{POLL_INTERVAL, eventually_msg};

/// Deadline of one probe call.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET path` on an admin listener: the whole HTTP/1.1 response (status line, headers, body).
pub async fn admin_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        anyhow::Ok(response)
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(result) => result.with_context(|| format!("GET {path} on {addr}")),
        Err(_) => bail!("GET {path} on {addr} timed out"),
    }
}

/// The body of `GET /metrics` on an admin listener.
pub async fn metrics_body(admin: &str) -> anyhow::Result<String> {
    let response = admin_get(admin, "/metrics").await?;
    Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

/// Every `muster_tls_cert_expires_at_seconds{role="<role>",name="..."}` of a `/metrics` body,
/// as (name, Unix seconds): `role` is the Muster role of the certificate a process presents,
/// or `ca` for each CA it trusts.
pub fn cert_expiries(metrics: &str, role: &str) -> Vec<(String, i64)> {
    let prefix = format!("muster_tls_cert_expires_at_seconds{{role=\"{role}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| {
            let name = line.split("name=\"").nth(1)?.split('"').next()?.to_string();
            Some((name, line.rsplit(' ').next()?.parse::<f64>().ok()? as i64))
        })
        .collect()
}

/// One series of a Prometheus text body (the first whose name matches, labels or not).
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| line.split(['{', ' ']).next() == Some(name))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

impl Cluster {
    /// `GetClusterMetadata` answered by node `id` itself.
    pub async fn metadata_of(&self, id: u64) -> anyhow::Result<v1::ClusterMembership> {
        let mut client = ClusterManagementServiceClient::new(self.api_channel(id));
        let call = client.get_cluster_metadata(v1::MetadataRequest {});
        let response = tokio::time::timeout(PROBE_TIMEOUT, call)
            .await
            .with_context(|| format!("node {id}: metadata call timed out"))?
            .with_context(|| format!("node {id}: metadata"))?;
        Ok(response.into_inner())
    }

    /// The leader a majority of voters agree on, if any: every live node is asked, the most
    /// named leader must say it leads and be named by a majority of its voters.
    pub async fn current_leader(&self) -> anyhow::Result<u64> {
        let mut answers = BTreeMap::new();
        let mut errors = Vec::new();
        for id in self.live_ids() {
            match self.metadata_of(id).await {
                Ok(meta) => {
                    answers.insert(id, meta);
                }
                Err(err) => errors.push(format!("{err:#}")),
            }
        }
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for meta in answers.values().filter(|m| m.leader_id != 0) {
            *votes.entry(meta.leader_id).or_default() += 1;
        }
        let Some((&leader, &count)) = votes.iter().max_by_key(|(_, count)| **count) else {
            self.check_processes()?;
            bail!("no node knows a leader (answers from {:?}; errors: {errors:?})", answers.keys());
        };
        let meta = answers.get(&leader).with_context(|| format!("named leader {leader} does not answer"))?;
        ensure!(meta.state == "leader", "node {leader} is named leader but says it is {}", meta.state);
        let voters = meta.members.iter().filter(|m| m.role == v1::MemberRole::Voter as i32).count();
        ensure!(count > voters / 2, "only {count} of {voters} voters name node {leader} as leader");
        Ok(leader)
    }

    /// Polls until a majority agrees on a leader and every live node is ready; fails at once when
    /// a node process exits.
    pub async fn wait_started(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_processes()?;
            let attempt = async {
                self.current_leader().await?;
                for id in self.live_ids() {
                    self.readyz(id).await?;
                }
                anyhow::Ok(())
            };
            let last = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(err)) => format!("{err:#}"),
                Err(_) => "still probing at the deadline".to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("not started after {timeout:?}: {last}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until a majority agrees on a leader; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        eventually_msg("waiting for a leader", timeout, || self.current_leader()).await
    }

    /// Waits until a majority agrees on a leader other than `old`.
    pub async fn wait_for_new_leader(&self, old: u64, timeout: Duration) -> u64 {
        eventually_msg(format!("waiting for a leader other than node {old}"), timeout, || async {
            let leader = self.current_leader().await?;
            ensure!(leader != old, "node {old} still leads");
            Ok(leader)
        })
        .await
    }

    /// Whether `GET /readyz` on node `id`'s admin port answers 200.
    pub async fn readyz(&self, id: u64) -> anyhow::Result<()> {
        let response = match admin_get(&self.addrs(id).admin, "/readyz").await {
            Ok(response) => response,
            Err(err) if !self.is_running(id) => bail!("node {id} is not running: {err:#}"),
            Err(err) => return Err(err.context(format!("node {id}"))),
        };
        ensure!(response.starts_with("HTTP/1.1 200"), "node {id} not ready: {}", response.lines().last().unwrap_or(""));
        Ok(())
    }

    /// Waits until node `id` reports ready on `/readyz`.
    pub async fn wait_ready(&self, id: u64, timeout: Duration) {
        eventually_msg(format!("waiting for node {id} to be ready"), timeout, || self.readyz(id)).await
    }
}
