//! One `ReportStatus` stream to one gateway: reports go out through a channel feeding the
//! request stream, acks come back on the response stream. Reports are numbered from 1 on
//! every stream; an ack answers the report with its sequence number.

use std::sync::Arc;
use std::time::Duration;

use muster_proto::v1;
use muster_proto::v1::heartbeat_service_client::HeartbeatServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::tls;

/// Why a stream stopped working.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0:#}")]
    Connect(anyhow::Error),
    #[error("the gateway answered {:?}: {}", .0.code(), .0.message())]
    Status(Status),
    #[error("the gateway closed the stream")]
    Closed,
    #[error("no ack within {0:?}")]
    NoAck(Duration),
}

impl StreamError {
    /// A refusal no other gateway would answer differently: this worker is revoked, the
    /// cluster does not know it, or it no longer accepts this worker's certificate.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StreamError::Status(s) if matches!(
                s.code(),
                tonic::Code::PermissionDenied | tonic::Code::NotFound | tonic::Code::Unauthenticated
            )
        )
    }
}

pub struct ReportStream {
    reports: mpsc::Sender<v1::StatusReport>,
    acks: Streaming<v1::StatusAck>,
    sequence: u64,
}

impl ReportStream {
    /// Connects and opens the stream with `first` (which gets sequence 1) already queued, so
    /// the gateway sees it as soon as the stream exists.
    pub async fn open(
        addr: &str,
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        mut first: v1::StatusReport,
    ) -> Result<Self, StreamError> {
        let channel = tls::gateway_channel(addr, tls, connect_timeout).await.map_err(StreamError::Connect)?;
        let (reports, outbound) = mpsc::channel(4);
        first.sequence = 1;
        reports.try_send(first).map_err(|_| StreamError::Closed)?;
        let response = HeartbeatServiceClient::new(channel)
            .report_status(ReceiverStream::new(outbound))
            .await
            .map_err(StreamError::Status)?;
        Ok(Self { reports, acks: response.into_inner(), sequence: 1 })
    }

    /// Sends `report` as the next in sequence; returns its sequence number.
    pub async fn send(&mut self, mut report: v1::StatusReport) -> Result<u64, StreamError> {
        self.sequence += 1;
        report.sequence = self.sequence;
        self.reports.send(report).await.map_err(|_| StreamError::Closed)?;
        Ok(self.sequence)
    }

    /// The sequence number of the last report sent.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The ack for report `sequence` (older acks are skipped), within `wait`.
    pub async fn ack(&mut self, sequence: u64, wait: Duration) -> Result<v1::StatusAck, StreamError> {
        let receive = async {
            loop {
                match self.acks.message().await {
                    Ok(Some(ack)) if ack.sequence >= sequence => return Ok(ack),
                    Ok(Some(stale)) => {
                        tracing::debug!(ack = stale.sequence, waiting_for = sequence, "skipping an older ack")
                    }
                    Ok(None) => return Err(StreamError::Closed),
                    Err(status) => return Err(StreamError::Status(status)),
                }
            }
        };
        tokio::time::timeout(wait, receive).await.map_err(|_| StreamError::NoAck(wait))?
    }
}
