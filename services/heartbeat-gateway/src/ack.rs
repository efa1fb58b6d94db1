//! What a worker hears back for each report. The [`Session`](crate::session::Session) decides
//! the numbers (a [`Reply`]: which report, what TTL, throttled or not); the ack adds the
//! cluster as the gateway's current [`View`] sees it, and the gateway list only when the
//! worker's copy is stale.

use muster_proto::v1;

use crate::view::View;

/// The numbers of one ack (the rest comes from the view when it is sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub worker_id: u64,
    pub sequence: u64,
    /// The gateway-list epoch the worker holds.
    pub reported_epoch: u64,
    pub ttl_ms: u32,
    pub throttled: bool,
}

impl Reply {
    /// The ack gateway `gateway_id` sends for this reply under `view`, with the worker's drain
    /// and cordon as the leader last told them.
    pub fn ack(&self, view: &View, gateway_id: &str, scheduling: Option<&v1::SchedulingNotice>) -> v1::StatusAck {
        let stale = self.reported_epoch != view.gateways_epoch;
        v1::StatusAck {
            sequence: self.sequence,
            ttl_ms: self.ttl_ms,
            grace_ms: u32::try_from(view.policy.grace.as_millis()).unwrap_or(u32::MAX),
            throttled: self.throttled,
            gateways_epoch: view.gateways_epoch,
            gateways: if stale { view.gateways.clone() } else { Vec::new() },
            gateway_id: gateway_id.to_owned(),
            worker_count: view.worker_count,
            live_gateways: view.live_gateways,
            drain: scheduling.and_then(|notice| notice.drain),
            ineligible: scheduling.is_some_and(|notice| notice.ineligible),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_carry_the_view_and_the_gateway_list_only_when_stale() {
        let response = v1::ReportLivenessResponse {
            policy: Some(v1::TtlPolicy {
                min_ttl_ms: 10_000,
                max_ttl_ms: 600_000,
                grace_ms: 10_000,
                ..Default::default()
            }),
            worker_count: 1_000,
            gateways: vec![v1::GatewayEndpoint { gateway_id: "gw-1".into(), addr: "x:1".into() }],
            gateways_epoch: 3,
            ..Default::default()
        };
        let view = View::from_response(&response, &View::initial());
        let reply = Reply { worker_id: 4, sequence: 9, reported_epoch: 3, ttl_ms: 12_345, throttled: true };
        let ack = reply.ack(&view, "gw-1", None);
        assert_eq!((ack.sequence, ack.ttl_ms, ack.grace_ms, ack.throttled), (9, 12_345, 10_000, true));
        assert_eq!((ack.gateways_epoch, ack.worker_count, ack.live_gateways), (3, 1_000, 1));
        assert_eq!(ack.gateway_id, "gw-1");
        assert!(ack.gateways.is_empty());
        let drain = v1::WorkerDrain { started_at_unix: 5, ..Default::default() };
        let notice = v1::SchedulingNotice { worker_id: 4, drain: Some(drain), ineligible: true };
        let stale = Reply { reported_epoch: 0, ..reply }.ack(&view, "gw-1", Some(&notice));
        assert_eq!(stale.gateways.len(), 1);
        assert_eq!((stale.drain, stale.ineligible), (Some(drain), true));
        assert!(!ack.ineligible);
    }
}
