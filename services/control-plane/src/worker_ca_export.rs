//! The seed's `worker_ca_dir` (worker-tier servers): where an operator finds the cluster's
//! worker CA certificate. The state machine records which certificate the registrars sign
//! with (they alone hold the key, in a file); once it exists, every control-plane node writes
//! the certificate, never a key, to `<worker_ca_dir>/worker-ca.pem` (default
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

/// Waits for the worker CA to exist and writes its certificate; writes it again when the
/// cluster switches CA (a retired legacy CA). Inside the data directory the file is 0600 like
/// everything else there; elsewhere 0644, for operators.
pub async fn run(node: Arc<NodeHandle>, mut shutdown: watch::Receiver<bool>) {
    let Some(path) = export_path(&node) else { return };
    let private = path.starts_with(&node.config.data_dir);
    let mut written = String::new();
    loop {
        if let Ok(Some(ca)) = node.reader.worker_ca()
            && ca.cert_pem != written
        {
            let dir = path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
            let made = if private { crate::data_dir::create_private_dir(&dir) } else { std::fs::create_dir_all(&dir) };
            let mode = if private { crate::data_dir::FILE_MODE } else { 0o644 };
            let result = match made {
                Ok(()) => muster_tls::write_atomic(&path, ca.cert_pem.as_bytes(), mode).map_err(|err| err.to_string()),
                Err(err) => Err(format!("creating the directory: {err}")),
            };
            match result {
                Ok(()) => tracing::info!(path = %path.display(), "wrote the worker CA certificate"),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "could not write the worker CA certificate")
                }
            }
            written = ca.cert_pem;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}
