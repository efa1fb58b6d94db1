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
//! other, each alone on the machine with the simulated workers. Every window also records how
//! much the machine itself stalled ([`crate::stalls`]).
//!
//! Modules: [`muster_side`] and [`etcd_side`] (start, register, beat, measure each system),
//! [`keepalive`] (the simulated etcd clients), [`measure`] (counters, windows, phases),
//! [`crate::stalls`] (how much the machine itself stalled), [`table`] (the printed results and
//! targets).

mod etcd_side;
mod keepalive;
pub(crate) mod measure;
mod muster_side;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

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

    let muster = if run_muster { Some(muster_side::bench(&args, lease_ttl).await?) } else { None };
    let etcd = if run_etcd { Some(etcd_side::bench(&args, dir.path()).await?) } else { None };

    println!();
    print!("{}", table::results(muster.as_ref(), etcd.as_ref()));
    for note in muster.iter().chain(etcd.iter()).flat_map(|run| run.notes.iter()) {
        println!("note: {note}");
    }
    if let Some(muster) = &muster {
        println!();
        println!("targets (the issue's, for 10000 workers on the 2-core machine):");
        for line in table::targets(muster, etcd.as_ref()) {
            println!("  {line}");
        }
    }
    Ok(())
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
        let quick =
            Cli::try_parse_from(["fleet", "--workers", "1000", "--interval", "2s", "--only", "muster"]).unwrap();
        assert_eq!(quick.args.workers, 1000);
        assert_eq!(quick.args.lease_ttl(), Duration::from_secs(4));
        assert_eq!(quick.args.only, Some(Only::Muster));
    }
}
