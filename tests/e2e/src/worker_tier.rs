//! The smallest whole worker tier a lifecycle test needs: a one-node cluster with a registrar
//! and a ready gateway, at the fast test heartbeat policy, plus real agents registered with
//! their own one-use tokens. And `musterctl` as the cluster's operator, as a user types it.

use std::time::Duration;

use crate::agent::Agent;
use crate::fleet::token_for;
use crate::gateway::Gateway;
use crate::registrar::Registrar;
use crate::{Cluster, HeartbeatPolicy, Options};

/// How long a lifecycle step may take.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct WorkerTier {
    pub cluster: Cluster,
    pub registrar: Registrar,
    pub gateway: Gateway,
}

impl WorkerTier {
    /// `extra_toml` goes into the control plane's config (e.g. `[worker_gc]`), `registrar_toml`
    /// into the registrar's (e.g. `worker_cert_validity`).
    pub async fn start(extra_toml: &str, registrar_toml: &str) -> Self {
        let options =
            Options { heartbeat: Some(HeartbeatPolicy::fast()), extra_toml: extra_toml.into(), ..Options::tls() };
        let cluster = Cluster::start(1, options).await;
        let registrar = Registrar::start_with(&cluster, registrar_toml);
        let gateway = Gateway::start(&cluster);
        gateway.wait_ready().await;
        Self { cluster, registrar, gateway }
    }

    /// An agent with a token of `uses` (not started), for `configure` to adjust first.
    pub async fn agent(&self, uses: u32) -> Agent {
        let token = token_for(&self.cluster, uses).await;
        Agent::new(std::slice::from_ref(&self.registrar.addr), &token)
    }

    /// An agent started with a one-use token and beating: it and its worker id.
    pub async fn beating_agent(&self) -> (Agent, u64) {
        let mut agent = self.agent(1).await;
        agent.start();
        let id = agent.wait_beating(WAIT).await;
        (agent, id)
    }

    /// `musterctl ARGS` as the operator: (succeeded, stdout, stderr).
    pub async fn musterctl(&self, args: &[&str]) -> (bool, String, String) {
        operator_musterctl(&self.cluster, args).await
    }
}

/// `musterctl --endpoints <every node> --ca/--cert/--key <operator> ARGS`: (succeeded, stdout,
/// stderr).
pub async fn operator_musterctl(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let files = cluster.pki().expect("pki").operator();
    let endpoints: Vec<String> = cluster.ids().into_iter().map(|id| cluster.addrs(id).api.clone()).collect();
    let endpoints = endpoints.join(",");
    let (ca, cert, key) =
        (files.ca.display().to_string(), files.cert.display().to_string(), files.key.display().to_string());
    let mut line = vec!["--endpoints", &endpoints, "--ca", &ca, "--cert", &cert, "--key", &key];
    line.extend_from_slice(args);
    crate::process::run_musterctl(line, Duration::from_secs(30)).await
}
