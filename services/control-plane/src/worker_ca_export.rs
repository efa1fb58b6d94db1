//! The seed's `worker_ca_dir` (worker-tier servers): where an operator finds the cluster's
//! worker CA certificate. The CA itself lives in the replicated state machine (registrars
//! agree on it there and hold its key); once it exists, every control-plane node writes the
//! certificate, never the key, to `<worker_ca_dir>/worker-ca.pem` (default
//! `<data_dir>/cluster/`), for gateways or tooling configured from files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use muster_config::ClusterMode;
use tokio::sync::watch;

use crate::node::NodeHandle;

const POLL: Duration = Duration::from_secs(2);

/// Where the certificate goes, in worker-tier mode only.
pub fn export_path(node: &NodeHandle) -> Option<PathBuf> {
    let ClusterMode::WorkerTier { worker_ca_dir, .. } = &node.config.cluster else { return None };
    let dir = worker_ca_dir.as_ref().map_or_else(|| node.config.data_dir.join("cluster"), PathBuf::from);
    Some(dir.join("worker-ca.pem"))
}

/// Waits for the worker CA to exist, writes its certificate, and stops.
pub async fn run(node: Arc<NodeHandle>, mut shutdown: watch::Receiver<bool>) {
    let Some(path) = export_path(&node) else { return };
    loop {
        if let Ok(Some(ca)) = node.reader.worker_ca() {
            let written = match path.parent().map_or(Ok(()), std::fs::create_dir_all) {
                Ok(()) => muster_tls::write_atomic(&path, ca.cert_pem.as_bytes(), 0o644).map_err(|err| err.to_string()),
                Err(err) => Err(format!("creating the directory: {err}")),
            };
            match written {
                Ok(()) => tracing::info!(path = %path.display(), "wrote the worker CA certificate"),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "could not write the worker CA certificate")
                }
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}
