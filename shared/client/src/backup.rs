//! Backups: the cluster's state as one snapshot, from the leader
//! (`MaintenanceService/SaveSnapshot`), checked against the size and checksum its header gives.

use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::maintenance_service_client::MaintenanceServiceClient;

use crate::{ClientError, ControlPlaneClient};

impl ControlPlaneClient {
    /// The header and the snapshot of a backup, from the leader. The snapshot holds every write
    /// acknowledged before the call.
    pub async fn save_snapshot(&self) -> Result<(v1::BackupHeader, Vec<u8>), ClientError> {
        self.on_leader(|channel| async move {
            let mut stream =
                MaintenanceServiceClient::new(channel).save_snapshot(v1::SaveSnapshotRequest {}).await?.into_inner();
            let mut header = None;
            let mut snapshot = Vec::new();
            while let Some(chunk) = stream.message().await? {
                if let Some(first) = chunk.header {
                    snapshot.reserve(usize::try_from(first.snapshot_bytes).unwrap_or(0));
                    header = Some(first);
                }
                snapshot.extend_from_slice(&chunk.data);
            }
            let header = header.ok_or_else(|| ApiError::DataLoss("the snapshot stream carried no header".into()))?;
            check(&header, &snapshot)?;
            Ok((header, snapshot))
        })
        .await
    }
}

/// The snapshot is what the header says it is.
fn check(header: &v1::BackupHeader, snapshot: &[u8]) -> Result<(), ApiError> {
    use sha2::Digest;
    if snapshot.len() as u64 != header.snapshot_bytes {
        return Err(ApiError::DataLoss(format!(
            "the snapshot stream ended after {} of {} bytes",
            snapshot.len(),
            header.snapshot_bytes
        )));
    }
    if sha2::Sha256::digest(snapshot).as_slice() != header.snapshot_sha256.as_slice() {
        return Err(ApiError::DataLoss("the snapshot received does not match its checksum".into()));
    }
    Ok(())
}
