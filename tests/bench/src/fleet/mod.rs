//! `muster-bench fleet`: N simulated workers against the worker tier, and the same N as etcd
//! leases kept alive, in one command:
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p muster-bench -- fleet [--workers 10000] [--interval 450ms] [--duration 20s]
//! ```
//!
//! Muster: a 3-node worker-tier cluster, a registrar and one gateway; every worker registers
//! with its own key and certificate, then beats over its own mTLS connection. etcd: 3 members
//! with client TLS; one lease per worker, kept alive over its own stream and connection. Both
//! sides' clients run on the load generator's own runtimes (`muster_e2e::client_threads`) and
//! beat every `--interval`, each on its own grid at a random phase (`muster_e2e::beat_clock`),
//! for a steady window, then flat out (each worker again as soon as acked) for a second
//! window. Muster's workers use the lean streams of `muster_e2e::grpc_stream`, etcd's clients
//! tonic's (why: [`keepalive`]). The systems run one after the
//! other, each alone on the machine with the simulated workers, in `--rounds` alternating
//! rounds (Muster, etcd, Muster, etcd, ...), each on fresh clusters: on a shared 2-core
//! machine one round can catch someone else's burst, so the results are the medians of the
//! rounds with their ranges, and Muster is set against the etcd round that ran right after it.
//! Every window also records how much the machine itself stalled ([`crate::stalls`]).
//!
//! Modules: [`muster_side`] and [`etcd_side`] (start, register, beat, measure each system),
//! [`keepalive`] (the simulated etcd clients), [`measure`] (counters, windows, phases),
//! [`crate::stalls`] (how much the machine itself stalled), [`table`] (the printed results
//! over the rounds), [`targets`] (the issue's targets, judged on the medians).

mod etcd_side;
mod keepalive;
pub(crate) mod measure;
mod muster_side;
mod table;
mod targets;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use self::measure::SystemRun;
use crate::machine;
use crate::procs::raise_open_files;

/// Which systems to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    Muster,
    Etcd,
}

#[derive(Parser, Debug, Clone)]
pub struct FleetArgs {
    /// Simulated workers (and etcd leases).
    #[arg(long, default_value_t = 10_000)]
    pub workers: usize,
    /// How often each worker reports in the steady phase (the offered rate is workers /
    /// interval: 22,222/s for 10,000 workers at the default, 10% above the 20,000/s target).
    #[arg(long, default_value = "450ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Measured time per phase.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each phase's window.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Register (etcd: LeaseGrant) calls in flight at once; the rest wait their turn.
    #[arg(long, default_value_t = 256)]
    pub register_parallel: usize,
    /// Longest wait for every worker's first ack; the phases then run with those acked so far.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Skip the flat-out phase.
    #[arg(long)]
    pub no_max: bool,
    /// Benchmark only one system.
    #[arg(long)]
    pub only: Option<Only>,
    /// The etcd server binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Rounds of each system, alternating (Muster, etcd, Muster, etcd, ...), each on fresh
    /// clusters: the tables give the median of the rounds and their range, and the ratio of
    /// each round's Muster to the etcd that ran right after it.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

impl FleetArgs {
    /// The TTL the control plane issues (at least twice the interval, at least 1 s); leases
    /// expire `muster_side::GRACE` after it.
    fn lease_ttl(&self) -> Duration {
        (self.interval * 2).max(Duration::from_secs(1))
    }
}

pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.workers > 0, "--workers must be positive");
    anyhow::ensure!(!args.interval.is_zero() && !args.duration.is_zero(), "--interval and --duration must be positive");
    let run_muster = args.only != Some(Only::Etcd);
    let run_etcd = args.only != Some(Only::Muster);
    if run_muster {
        crate::cluster::require_harness_binaries(&muster_side::BINARIES)?;
    }
    let etcd_version = if run_etcd { Some(crate::etcd::version(&args.etcd_bin)?) } else { None };
    // One socket per worker on each side, plus everything else.
    let wanted = args.workers as u64 * 2 + 4096;
    let open_files = raise_open_files(wanted);
    anyhow::ensure!(
        open_files >= args.workers as u64 + 1024,
        "the open-file limit is {open_files}, too low for {} workers (raise `ulimit -n`)",
        args.workers
    );
    let dir = tempfile::Builder::new().prefix("muster-bench-fleet-").tempdir()?;

    machine::print_header("fleet", dir.path());
    if let Some(version) = &etcd_version {
        println!("etcd: {version} (3 members, client TLS with client certificates, default flags)");
    }
    let lease_ttl = args.lease_ttl();
    println!(
        "workload: {} workers, each on its own TLS connection; steady: a report every {} (offered {}/s), then \
         flat out (again as soon as acked); {} windows after {} warm-ups; lease TTL {} + {} grace (etcd: {} s); \
         open-file limit {open_files}",
        args.workers,
        humantime::format_duration(args.interval),
        crate::report::format_ops(args.workers as f64 / args.interval.as_secs_f64()),
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup),
        humantime::format_duration(lease_ttl),
        humantime::format_duration(muster_side::GRACE),
        etcd_side::LEASE_TTL.as_secs(),
    );
    println!();

    let (mut muster, mut etcd) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        eprintln!("round {round} of {}", args.rounds);
        if run_muster {
            muster.push(muster_side::bench(&args, lease_ttl).await?);
        }
        if run_etcd {
            etcd.push(etcd_side::bench(&args, &dir.path().join(format!("round-{round}"))).await?);
        }
    }

    println!();
    println!(
        "medians of {} rounds (lowest-highest); muster/etcd: each round's Muster over the etcd round right after it",
        args.rounds
    );
    print!("{}", table::results(&muster, &etcd));
    for (round, runs) in (1..).zip(round_pairs(&muster, &etcd)) {
        for note in runs.iter().flat_map(|run| run.notes.iter()) {
            println!("note: round {round}: {note}");
        }
    }
    let targets = targets::targets(&muster, &etcd);
    if !targets.is_empty() {
        println!();
        println!("targets (the issue's, for 10000 workers on the 2-core machine; judged on the medians):");
        for line in targets {
            println!("  {line}");
        }
    }
    Ok(())
}

/// Each round's runs, Muster's before etcd's (either missing when that system did not run).
fn round_pairs<'a>(muster: &'a [SystemRun], etcd: &'a [SystemRun]) -> impl Iterator<Item = Vec<&'a SystemRun>> {
    (0..muster.len().max(etcd.len())).map(|i| muster.get(i).into_iter().chain(etcd.get(i)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FleetArgs,
    }

    #[test]
    fn defaults_are_the_issue_scale() {
        let args = Cli::try_parse_from(["fleet"]).unwrap().args;
        assert_eq!(args.workers, 10_000);
        assert_eq!(args.interval, Duration::from_millis(450));
        assert_eq!(args.duration, Duration::from_secs(20));
        assert!(!args.no_max && args.only.is_none());
        assert_eq!(args.lease_ttl(), Duration::from_secs(1));
        assert_eq!(args.rounds, 3);
        assert!(Cli::try_parse_from(["fleet", "--rounds", "0"]).is_err(), "a run of no rounds");
        let quick = Cli::try_parse_from([
            "fleet",
            "--workers",
            "1000",
            "--interval",
            "2s",
            "--only",
            "muster",
            "--rounds",
            "1",
        ])
        .unwrap();
        assert_eq!(quick.args.workers, 1000);
        assert_eq!(quick.args.lease_ttl(), Duration::from_secs(4));
        assert_eq!(quick.args.only, Some(Only::Muster));
        assert_eq!(quick.args.rounds, 1);
    }

    #[test]
    fn notes_go_round_by_round_muster_first() {
        let note = |text: &str| SystemRun { notes: vec![text.to_string()], ..table::tests::run(12, 1, 1) };
        let (muster, etcd) = ([note("m1"), note("m2")], [note("e1"), note("e2")]);
        let notes: Vec<Vec<&str>> =
            round_pairs(&muster, &etcd).map(|runs| runs.iter().map(|r| r.notes[0].as_str()).collect()).collect();
        assert_eq!(notes, [["m1", "e1"], ["m2", "e2"]]);
        assert_eq!(round_pairs(&[], &etcd).count(), 2, "etcd alone");
    }
}
