//! The live gateways and the TTL policy every Register and Renew answer carries, asked of the
//! control plane at most once per [`FRESH_FOR`] however many workers register at once.
//!
//! In a registration storm (a whole rack or autoscaling group starting together) every
//! Register used to make its own `ListGateways` call: a third of the registrar's calls to the
//! leader, each answering the same thing. The list changes when a gateway joins or leaves
//! and the policy when an operator edits it; a worker handed a list a second old learns any
//! change from its first ack (`gateways_epoch`), so a second of staleness costs nothing.
//! Concurrent callers wait for the one call in flight rather than each making their own.

use std::time::{Duration, Instant};

use muster_middleware::ApiError;
use muster_proto::v1;
use tokio::sync::Mutex;

use crate::upstream::ControlPlane;

/// How long an answer is handed out again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct GatewayList {
    latest: Mutex<Option<(Instant, v1::ListGatewaysResponse)>>,
}

impl GatewayList {
    /// The control plane's answer from the last [`FRESH_FOR`], or a new one. A failed call
    /// is not remembered: the next caller asks again.
    pub async fn get<C: ControlPlane>(&self, control_plane: &C) -> Result<v1::ListGatewaysResponse, ApiError> {
        let mut latest = self.latest.lock().await;
        if let Some((asked_at, listing)) = latest.as_ref()
            && asked_at.elapsed() < FRESH_FOR
        {
            return Ok(listing.clone());
        }
        let listing = control_plane.list_gateways().await?;
        *latest = Some((Instant::now(), listing.clone()));
        Ok(listing)
    }
}
