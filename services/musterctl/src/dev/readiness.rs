//! What "up" means, checked through the public API with the operator's certificate (the path a
//! user's first command takes) rather than by peeking at in-process state: the summary is
//! printed only once the commands it suggests will work and every worker is heartbeating.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use muster_client::{ClientOptions, ControlPlaneClient};
use muster_proto::v1;

use super::configs::AGENT_LABEL;

/// Pause between two looks at the cluster.
const POLL: Duration = Duration::from_millis(200);
/// How long the bootstrap token stays usable.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A client for `endpoint` with the operator's certificate; one call gives up after 5 s.
pub fn operator_client(endpoint: String, tls: muster_tls::ClientTls) -> anyhow::Result<ControlPlaneClient> {
    let mut options = ClientOptions::new(vec![endpoint]);
    options.tls = Some(tls);
    options.timeout = Duration::from_secs(5);
    Ok(ControlPlaneClient::new(options)?)
}

/// Waits until the control plane answers with a leader (it elects itself: it is alone).
pub async fn leader(client: &ControlPlaneClient) -> anyhow::Result<v1::ClusterMembership> {
    loop {
        match client.metadata().await {
            Ok(meta) if meta.leader_id != 0 => return Ok(meta),
            Ok(_) => tracing::debug!("no leader yet"),
            Err(err) => tracing::debug!(error = %err, "control plane not answering yet"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the registrar has agreed the cluster's worker CA with the control plane (the
/// gateway needs it to verify workers, and the registrar serves right after).
pub async fn worker_ca(client: &ControlPlaneClient) -> anyhow::Result<()> {
    loop {
        match client.worker_ca_cert().await {
            Ok(ca) if !ca.cert_pem.is_empty() => return Ok(()),
            Ok(_) => tracing::debug!("no worker CA yet"),
            Err(err) => tracing::debug!(error = %err, "asking for the worker CA"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The ids of the workers the cluster has revoked (their identities are useless).
pub async fn revoked(client: &ControlPlaneClient) -> anyhow::Result<HashSet<u64>> {
    let filter = v1::ListWorkersRequest { state: v1::WorkerState::Revoked as i32, ..Default::default() };
    let workers = client.list_workers(filter).await.context("listing revoked workers")?;
    Ok(workers.into_iter().map(|worker| worker.worker_id).collect())
}

/// Creates a token for `uses` registrations and writes it to `path` (0600).
pub async fn bootstrap_token(client: &ControlPlaneClient, path: &Path, uses: u32) -> anyhow::Result<()> {
    let request = v1::CreateTokenRequest {
        ttl_seconds: TOKEN_TTL.as_secs(),
        uses,
        labels: Default::default(),
        description: "musterctl dev".to_string(),
    };
    let response = client.create_token(request).await.context("creating the bootstrap token")?;
    muster_tls::write_atomic(path, format!("{}\n", response.token).as_bytes(), 0o600)?;
    Ok(())
}

/// Waits until, for every agent `1..=agents`, a worker labelled `dev-agent=<n>` is Ready and
/// its lease shows a beat through the gateway; returns those workers by agent number.
pub async fn workers(client: &ControlPlaneClient, agents: usize) -> anyhow::Result<Vec<v1::WorkerRecord>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let last = match client.list_workers_with_leases(v1::ListWorkersRequest::default()).await {
            Ok(listed) => match ready_agents(&listed, agents) {
                Ok(ready) => return Ok(ready),
                Err(missing) => format!("not yet Ready and heartbeating: {missing}"),
            },
            Err(err) => format!("listing workers: {err}"),
        };
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the worker agents did not come up within 60s ({last})"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until every worker in `ids` is recorded as Left (the agents' graceful leave), or
/// Revoked (an operator's doing: it will never leave).
pub async fn left(client: &ControlPlaneClient, ids: &[u64]) {
    let done = [v1::WorkerState::Left as i32, v1::WorkerState::Revoked as i32];
    loop {
        if let Ok(workers) = client.list_workers(v1::ListWorkersRequest::default()).await
            && ids.iter().all(|id| workers.iter().any(|w| w.worker_id == *id && done.contains(&w.state)))
        {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The Ready, heartbeating worker of each agent, or which agents have none.
fn ready_agents(listed: &v1::ListWorkersResponse, agents: usize) -> Result<Vec<v1::WorkerRecord>, String> {
    let mut ready = Vec::with_capacity(agents);
    let mut missing = Vec::new();
    for n in 1..=agents {
        let label = n.to_string();
        let found = listed.workers.iter().find(|worker| {
            worker.labels.get(AGENT_LABEL) == Some(&label)
                && worker.state == v1::WorkerState::Ready as i32
                && listed.leases.contains_key(&worker.worker_id)
        });
        match found {
            Some(worker) => ready.push(worker.clone()),
            None => missing.push(format!("agent {n}")),
        }
    }
    if missing.is_empty() { Ok(ready) } else { Err(missing.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: u64, agent: &str, state: v1::WorkerState) -> v1::WorkerRecord {
        v1::WorkerRecord {
            worker_id: id,
            labels: [(AGENT_LABEL.to_string(), agent.to_string())].into(),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn each_agent_needs_a_ready_worker_with_a_lease() {
        let mut listed = v1::ListWorkersResponse {
            workers: vec![
                worker(1, "1", v1::WorkerState::Left), // an earlier run's identity
                worker(2, "1", v1::WorkerState::Ready),
                worker(3, "2", v1::WorkerState::Ready),
            ],
            leases: Default::default(),
            next_page_token: String::new(),
            revision: 0,
        };
        assert_eq!(ready_agents(&listed, 2).unwrap_err(), "agent 1, agent 2");
        listed.leases.insert(2, v1::WorkerLease::default());
        listed.leases.insert(3, v1::WorkerLease::default());
        let ready = ready_agents(&listed, 2).unwrap();
        assert_eq!(ready.iter().map(|w| w.worker_id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(ready_agents(&listed, 3).unwrap_err(), "agent 3");
    }
}
