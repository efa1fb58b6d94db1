//! The short Jepsen run of the suite: a 3-node mTLS cluster under clients doing put, delete,
//! compare-and-swap and linearizable and lease gets, while the leader is killed and restarted
//! (before and after a new election), paused, a random node killed, the whole cluster killed
//! with -9 and restarted, the leader cut off by a network partition and the nodes split into
//! a bridge (each node in its own network namespace). The history must be linearizable,
//! every retried write applied once, and the checker must reject the same history with a
//! stale read planted.

use std::time::Duration;

use muster_jepsen::checker::DEFAULT_BUDGET;
use muster_jepsen::nemesis::Fault;
use muster_jepsen::run::{RunConfig, Schedule, run};
use muster_jepsen::workload::Workload;

const CLIENTS: usize = 6;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_cluster_stays_linearizable_through_kills_pauses_and_partitions() {
    let pause = ms(2500);
    let script = vec![
        // Back within the election timeout (300–600 ms): the restored-leader case.
        (pause, Fault::KillLeader { restart_after: ms(100) }),
        (pause, Fault::PauseLeader { pause: ms(1500) }),
        (pause, Fault::KillLeader { restart_after: ms(1500) }),
        (pause, Fault::KillAll { restart_after: ms(300) }),
        (pause, Fault::KillLeader { restart_after: ms(100) }),
        (pause, Fault::KillRandom { restart_after: ms(500) }),
        (pause, Fault::PartitionLeader { heal_after: ms(2000) }),
        (pause, Fault::PartitionBridge { heal_after: ms(1500) }),
    ];
    let faults = script.len();
    let config = RunConfig {
        nodes: 3,
        tls: true,
        duration: Duration::from_secs(40),
        workload: Workload { clients: CLIENTS, ..Workload::default() },
        schedule: Schedule::Script(script),
        seed: 11,
        budget: DEFAULT_BUDGET,
    };
    let finished = run(config).await.expect("the run");
    let report = &finished.report;
    eprintln!("{report}");

    assert_eq!(report.faults.len(), faults, "every fault was injected: {:?}", report.nemesis_errors);
    for fault in &report.faults {
        assert!(fault.recovered_after.is_some(), "the cluster recovers from every fault: {fault}");
    }
    let ok = report.counts.all().ok;
    assert!(ok >= 200, "too few acknowledged operations ({ok}) to mean anything:\n{}", report.counts);
    assert!(report.counts.reads.ok > 0 && report.counts.cas.ok > 0, "{}", report.counts);
    assert_eq!(report.planted_rejected, Some(true), "the checker rejects a planted stale read");
    assert!(report.probe.log.acknowledged.len() >= 20, "{}", report.probe);
    assert!(report.probe.holds(), "{}", report.probe);
    assert!(report.verdict.is_linearizable(), "{}", report.verdict);
}
