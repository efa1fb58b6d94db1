//! The compose suite: `compose.yaml` started the README's way (`deploy/scripts/compose-up.sh`),
//! then, on that one stack, in an order where each step leaves the cluster healthy for the
//! next: traces and metrics, the README's grpcurl and musterctl lines, a worker killed and
//! started, gateways and workers scaled out, the certificates renewed the compose way, a
//! rolling restart of the control plane, the Raft leader killed, and a node cut off from the
//! network. One stack for all of it because a start costs half a minute; each step says what
//! it checks when it fails, and the stack is removed (`down -v`) however the test ends.
//!
//! Needs Docker, the images (`deploy/scripts/build-images.sh`; `tests/run.sh` builds them),
//! `grpcurl` and `prometheus` on the PATH (`.ci/run` installs both).

mod compose {
    pub mod faults;
    pub mod fleet;
    pub mod fleet_watch;
    pub mod observability;
    pub mod readme;
    pub mod renewal;
    pub mod rolling;
}

use compose::{faults, fleet, observability, readme, renewal, rolling};
use muster_e2e::compose::ComposeStack;

#[tokio::test(flavor = "multi_thread")]
async fn compose_stack_serves_scales_and_survives_faults() {
    let (collector, otlp_env) = observability::collector().await;
    let env: Vec<(&str, &str)> = otlp_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stack = ComposeStack::up(&[], &env).await;
    step("3 workers Ready", fleet::three_workers_ready(&stack)).await;
    step("one Register is one trace across three services", observability::register_is_one_trace(&collector)).await;
    step("Prometheus scrapes every container", observability::prometheus_scrapes_every_container(&stack)).await;
    step("README grpcurl lines", readme::grpcurl_lines_work(&stack)).await;
    step("README musterctl lines", readme::musterctl_lines_work(&stack)).await;
    step("killed worker: Unreachable in time, back Ready with its id", faults::killed_worker_comes_back(&stack)).await;
    step("scale out: gateways share the fleet, TTL shrinks", fleet::scale_out_spreads_and_shrinks_ttl(&stack)).await;
    step(
        "compose certificate renewal: reloaded without restarts",
        renewal::compose_renewal_reloads_without_restart(&stack),
    )
    .await;
    step(
        "rolling restart: followers then leader, writes and workers go on",
        rolling::rolling_restart_keeps_writes_and_workers(&stack),
    )
    .await;
    step("leader killed: writes and heartbeats go on", faults::leader_kill_loses_nothing(&stack)).await;
    step(
        "node cut off: majority serves, isolated refuses, rejoins",
        faults::partitioned_node_refuses_then_rejoins(&stack),
    )
    .await;
}

/// Runs one step, printing its name first so a failure's output says where it was.
async fn step(name: &str, future: impl std::future::Future<Output = ()>) {
    eprintln!("== compose step: {name}");
    let started = std::time::Instant::now();
    future.await;
    eprintln!("== compose step done in {:.1?}: {name}", started.elapsed());
}
