//! The adaptive TTL: how long a worker waits before its next report, so that the fleet's
//! heartbeat rate stays within the cluster's budget however many workers there are.
//!
//! `ttl = clamp(N / (max_heartbeats_per_second × G), min_ttl, max_ttl)`, N the authoritative
//! worker count and G the number of live gateways (both from the leader's batch response);
//! G = 1 is the seed's (and Nomad's) formula. Every ack adds a random stagger of up to 10% so
//! workers that joined together drift apart instead of beating in lockstep. Pure functions:
//! the randomness comes in as a parameter.
//!
//! The budget follows from the same formula: G gateways share N workers, so each one sees
//! `(N / G) / ttl = max_heartbeats_per_second` reports per second when the TTL is not clamped.
//! That is each gateway's budget; the leader, which only sees batches, is not what the rate
//! protects. (A budget of `max_heartbeats_per_second / G` would throttle half the fleet of
//! every gateway as soon as a second one joined, undoing the shorter TTL.)

use std::time::Duration;

use muster_proto::v1;

/// The heartbeat policy as the leader runs it: the seed's worker-tier server fields.
pub use muster_config::AdaptiveTtlConfig as Policy;

/// The share of the base TTL a stagger may add (the stagger is uniform in `[0, STAGGER)`).
pub const STAGGER: f64 = Policy::STAGGER_FRACTION;

/// The policy as the leader sent it. A zero rate (never sent) means no limit.
pub fn policy_from_wire(policy: &v1::TtlPolicy) -> Policy {
    let ms = |ms: u32| Duration::from_millis(u64::from(ms));
    Policy {
        min_ttl: ms(policy.min_ttl_ms),
        max_ttl: ms(policy.max_ttl_ms),
        grace: ms(policy.grace_ms),
        max_heartbeats_per_second: policy.max_heartbeats_per_second,
        failover_ttl: ms(policy.failover_ttl_ms),
    }
}

/// The TTL before stagger, in ms: [`Policy::base_ttl`], the one formula the leader's failover
/// bound uses too. No rate limit gives `min_ttl`.
pub fn base_ttl_ms(policy: &Policy, worker_count: u64, live_gateways: u32) -> u32 {
    if policy.max_heartbeats_per_second == 0 {
        return millis(policy.min_ttl);
    }
    millis(policy.base_ttl(worker_count, live_gateways))
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// `base_ms` plus a stagger of `unit × STAGGER × base_ms`, where `unit` is uniform in `[0, 1)`.
pub fn staggered(base_ms: u32, unit: f64) -> u32 {
    let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
    let extra = (f64::from(base_ms) * STAGGER * unit).floor() as u32;
    // The stagger stays strictly below 10% of the base.
    let extra =
        if base_ms > 0 && u64::from(extra) * 10 >= u64::from(base_ms) { extra.saturating_sub(1) } else { extra };
    base_ms.saturating_add(extra)
}

/// This gateway's heartbeat budget per second: `max_heartbeats_per_second`, the rate the TTL
/// formula gives each of the G gateways (see the module comment). `f64::INFINITY` when the
/// policy sets no limit.
pub fn budget_per_second(policy: &Policy) -> f64 {
    match policy.max_heartbeats_per_second {
        0 => f64::INFINITY,
        rate => f64::from(rate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::default()
    }

    #[test]
    fn one_gateway_reproduces_the_seed_formula() {
        // 10,000 workers at 50/s: one beat per 200s each.
        assert_eq!(base_ttl_ms(&policy(), 10_000, 1), 200_000);
        // 1,000 workers: 20s.
        assert_eq!(base_ttl_ms(&policy(), 1_000, 1), 20_000);
        // G = 0 is read as 1.
        assert_eq!(base_ttl_ms(&policy(), 1_000, 0), 20_000);
    }

    #[test]
    fn two_gateways_halve_an_unclamped_ttl() {
        assert_eq!(base_ttl_ms(&policy(), 10_000, 2), 100_000);
        assert_eq!(base_ttl_ms(&policy(), 2_000, 2), 20_000);
    }

    #[test]
    fn clamps_at_both_ends() {
        assert_eq!(base_ttl_ms(&policy(), 0, 1), 10_000, "N = 0 gives min_ttl");
        assert_eq!(base_ttl_ms(&policy(), 10, 1), 10_000, "small fleets get min_ttl");
        assert_eq!(base_ttl_ms(&policy(), 10_000_000, 1), 600_000, "huge fleets get max_ttl");
        assert_eq!(base_ttl_ms(&policy(), u64::MAX, 1), 600_000);
        assert_eq!(base_ttl_ms(&policy(), 1_000, 4), 10_000, "more gateways stop at min_ttl");
    }

    #[test]
    fn odd_policies_do_not_panic() {
        let unlimited = Policy { max_heartbeats_per_second: 0, ..policy() };
        assert_eq!(base_ttl_ms(&unlimited, 1_000_000, 1), 10_000);
        assert_eq!(budget_per_second(&unlimited), f64::INFINITY);
        let inverted = Policy { min_ttl: Duration::from_secs(20), max_ttl: Duration::from_secs(5), ..policy() };
        assert_eq!(base_ttl_ms(&inverted, 0, 1), 20_000);
        assert_eq!(base_ttl_ms(&inverted, 1_000_000, 1), 20_000);
    }

    #[test]
    fn stagger_stays_below_ten_percent() {
        assert_eq!(staggered(10_000, 0.0), 10_000);
        assert_eq!(staggered(10_000, 0.5), 10_500);
        assert!(staggered(10_000, 0.999_999) < 11_000);
        assert!(staggered(10_000, 1.0) < 11_000, "unit is clamped below the bound");
        assert_eq!(staggered(10_000, f64::NAN), 10_000);
        assert_eq!(staggered(0, 0.7), 0);
        assert_eq!(staggered(u32::MAX, 0.9), u32::MAX);
    }

    #[test]
    fn each_gateway_absorbs_the_rate_its_ttl_produces() {
        // 10,000 workers over 2 gateways at TTL 100s: 5,000 workers per gateway beat 50 times
        // a second on each, which is exactly the budget.
        let (n, g) = (10_000u64, 2u32);
        let ttl_secs = f64::from(base_ttl_ms(&policy(), n, g)) / 1000.0;
        let per_gateway_rate = (n as f64 / f64::from(g)) / ttl_secs;
        assert_eq!(per_gateway_rate, budget_per_second(&policy()));
        assert_eq!(budget_per_second(&policy()), 50.0);
    }
}
