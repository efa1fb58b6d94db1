//! What the last batch answer said about the cluster: the TTL policy, N, the live gateways and
//! their epoch. Every ack is computed from one immutable snapshot of it, swapped whole after
//! each successful batch, so report handlers never see half an update.

use muster_proto::v1;

use crate::ttl::{self, Policy};

#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub policy: Policy,
    /// N: workers that count toward the heartbeat budget.
    pub worker_count: u64,
    /// G: live gateways, at least 1 (this one).
    pub live_gateways: u32,
    pub gateways_epoch: u64,
    pub gateways: Vec<v1::GatewayEndpoint>,
    /// The TTL before stagger, from the fields above.
    pub base_ttl_ms: u32,
    /// This gateway's budget (`max_heartbeats_per_second`, see [`ttl::budget_per_second`]).
    pub budget_per_second: f64,
}

impl View {
    /// Before the first batch answer: the seed's policy, no workers, this gateway alone.
    pub fn initial() -> Self {
        Self::compute(Policy::default(), 0, Vec::new(), 0)
    }

    /// The view a batch answer describes. An answer without a policy keeps the previous one
    /// (the control plane always sends it; this only guards against a half-built peer).
    pub fn from_response(response: &v1::ReportLivenessResponse, previous: &View) -> Self {
        let policy = response.policy.as_ref().map_or(previous.policy, ttl::policy_from_wire);
        Self::compute(policy, response.worker_count, response.gateways.clone(), response.gateways_epoch)
    }

    fn compute(policy: Policy, worker_count: u64, gateways: Vec<v1::GatewayEndpoint>, gateways_epoch: u64) -> Self {
        let live_gateways = u32::try_from(gateways.len()).unwrap_or(u32::MAX).max(1);
        Self {
            base_ttl_ms: ttl::base_ttl_ms(&policy, worker_count, live_gateways),
            budget_per_second: ttl::budget_per_second(&policy),
            policy,
            worker_count,
            live_gateways,
            gateways_epoch,
            gateways,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str) -> v1::GatewayEndpoint {
        v1::GatewayEndpoint { gateway_id: id.into(), addr: format!("{id}:3671") }
    }

    #[test]
    fn a_response_sets_n_g_and_the_derived_ttl_and_budget() {
        let policy = v1::TtlPolicy {
            min_ttl_ms: 1_000,
            max_ttl_ms: 60_000,
            grace_ms: 500,
            max_heartbeats_per_second: 100,
            failover_ttl_ms: 90_000,
        };
        let response = v1::ReportLivenessResponse {
            policy: Some(policy),
            worker_count: 4_000,
            gateways: vec![endpoint("a"), endpoint("b")],
            gateways_epoch: 17,
            ..Default::default()
        };
        let view = View::from_response(&response, &View::initial());
        assert_eq!((view.worker_count, view.live_gateways, view.gateways_epoch), (4_000, 2, 17));
        assert_eq!(view.base_ttl_ms, 20_000);
        assert_eq!(view.budget_per_second, 100.0);
        assert_eq!(view.policy.grace, std::time::Duration::from_millis(500));

        // No gateways listed still counts this one; no policy keeps the previous policy.
        let bare = View::from_response(&v1::ReportLivenessResponse::default(), &view);
        assert_eq!((bare.live_gateways, bare.policy, bare.base_ttl_ms), (1, view.policy, 1_000));
    }
}
