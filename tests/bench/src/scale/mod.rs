//! `muster-bench scale`: one worker tier grown through several fleet sizes in one run, with
//! what each stage costs at each size, the same fleets against the transport's floor, and a
//! failure run at the largest size:
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p muster-bench -- scale [--sizes 1000,10000,30000,100000] [--gateways 3]
//! ```
//!
//! The tier is 3 mTLS nodes, `--registrars` registrars and `--gateways` gateways (the release
//! binaries). First the registration storm, on a tier of its own with no fleet: the largest
//! size registers at once through every registrar (each worker its own P-256 key and
//! certificate). Then, on a fresh tier, the fleet grows size by size: the new workers register
//! while the others beat, then each opens its mTLS stream, from processes of their own
//! ([`parts`]: one process holds at most 20,000 descriptors here), connecting from loopback
//! addresses 127.1.0.1 upwards (`--per-source` workers each: one address has about 28,000
//! ephemeral ports). Every worker beats at the TTL its acks carry,
//! which the policy sets from the fleet size (`--beats-per-second` for the whole fleet, at
//! least `--min-ttl`). Once all beat, the stage figures are read ([`stages`]). After the
//! largest size comes the failure run ([`failure`]); then the fleet stops and the same sizes
//! run again against the floor ([`floor`]).
//!
//! Memory figures are resident-set growth over the processes' idle size before the first
//! worker, divided by the workers; CPU figures are `/proc` CPU time over a window.

mod failure;
mod floor;
mod grow;
mod parts;
mod stages;
mod table;
mod tier;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
pub use floor::{FloorServerArgs, serve as serve_floor};
pub use parts::{FleetPartArgs, run_part};

use self::grow::Fleets;
use self::tier::{Tier, Usage};
use crate::machine;
use crate::procs::raise_open_files;

#[derive(Parser, Debug, Clone)]
pub struct ScaleArgs {
    /// Fleet sizes, measured in turn; each grows from the one before.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,30000,100000")]
    pub sizes: Vec<usize>,
    /// Gateways (default: 3, or as many as it takes for each to hold its share of the largest
    /// fleet within this machine's open-file limit after one of them is killed).
    #[arg(long)]
    pub gateways: Option<usize>,
    #[arg(long, default_value_t = 2)]
    pub registrars: usize,
    /// Heartbeats per second the whole fleet may send (each gateway's budget is its share):
    /// the policy's TTL is workers / this, at least `--min-ttl`. The default keeps the 2-core
    /// machine, which also runs the fleet, short of saturation at every size.
    #[arg(long, default_value_t = 6_000)]
    pub beats_per_second: u32,
    /// The shortest TTL the policy issues.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub min_ttl: Duration,
    /// Register calls in flight at once, over all registrars.
    #[arg(long, default_value_t = 512)]
    pub register_parallel: usize,
    /// Measured time of each steady window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Steady windows measured at each size, on the gateways and on the floor: the CPU per
    /// ack reported is the median window's, with the lowest and highest beside it.
    #[arg(long, default_value_t = 3)]
    pub windows: usize,
    /// Longest wait for a size's workers to be acked and Ready.
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Workers connecting from each loopback source address.
    #[arg(long, default_value_t = 10_000)]
    pub per_source: usize,
    /// Workers killed at once in the failure run (taken from the largest size).
    #[arg(long, default_value_t = 1_000)]
    pub kill_workers: usize,
    /// Skip the failure run.
    #[arg(long)]
    pub no_failure: bool,
    /// Skip the floor.
    #[arg(long)]
    pub no_floor: bool,
    /// Skip the registration storm (the largest size at once, on a tier of its own).
    #[arg(long)]
    pub no_storm: bool,
    /// Run only the registration storm, `--storm-rounds` times, each on a fresh tier.
    #[arg(long, conflicts_with = "no_storm")]
    pub storm_only: bool,
    /// Storms run with `--storm-only`, to see their spread.
    #[arg(long, default_value_t = 3, requires = "storm_only")]
    pub storm_rounds: usize,
}

/// Open files the benchmark process wants for itself (its workers live in other processes).
const PARENT_FILES: u64 = 65_536;
/// Descriptors a gateway needs besides its workers' connections.
const GATEWAY_SPARE_FILES: u64 = 1_024;

/// Gateways enough for `workers` within `open_files` descriptors each after one is killed:
/// at least 3.
fn gateways_for(workers: usize, open_files: u64) -> usize {
    let per_gateway = open_files.saturating_sub(GATEWAY_SPARE_FILES).max(1) as usize;
    (workers.div_ceil(per_gateway) + 1).max(3)
}

/// Everything measured at one size.
#[derive(Clone, Debug, Default)]
pub struct SizeRow {
    pub workers: usize,
    pub registration: grow::Registration,
    pub ready: Duration,
    pub steady: stages::Steady,
    pub leader_bytes_per_lease: f64,
    pub gateway_bytes_per_worker: f64,
    pub state: stages::StateSize,
    pub reads: stages::Reads,
    pub restart: Duration,
    pub floor: Option<floor::Floor>,
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let largest = *sizes.last().context("--sizes names no size")?;
    anyhow::ensure!(sizes[0] > 0, "--sizes must be positive");
    let open_files = raise_open_files(PARENT_FILES);
    let gateways = args.gateways.unwrap_or_else(|| gateways_for(largest, open_files));
    anyhow::ensure!(gateways >= 2 || args.no_failure, "the failure run kills a gateway: --gateways 2 or more");
    let survivors = gateways - usize::from(!args.no_failure);
    let per_gateway = largest.div_ceil(survivors.max(1)) as u64;
    anyhow::ensure!(
        per_gateway + GATEWAY_SPARE_FILES <= open_files,
        "each gateway would hold up to {per_gateway} connections, over this machine's open-file limit of {open_files} \
         per process (a process cannot raise its hard limit without CAP_SYS_RESOURCE); use --gateways {}",
        gateways_for(largest, open_files)
    );
    anyhow::ensure!(args.kill_workers < largest || args.no_failure, "--kill-workers must be below the largest size");
    crate::cluster::require_harness_binaries(&tier::BINARIES)?;
    let sources = grow::sources(largest.div_ceil(args.per_source.max(1)));
    let scratch = tempfile::Builder::new().prefix("muster-bench-scale-").tempdir()?;
    machine::print_header("scale", scratch.path());
    println!(
        "tier: 3 nodes, {} registrars, {} gateways (mTLS); policy: {} beats/s in all ({} per gateway), TTL at least \
         {}, grace {}; workers from {} loopback addresses; open-file limit {open_files}",
        args.registrars,
        gateways,
        args.beats_per_second,
        tier::budget_per_gateway(args.beats_per_second, gateways),
        humantime::format_duration(args.min_ttl),
        humantime::format_duration(tier::GRACE),
        sources.len(),
    );
    println!();

    if args.storm_only {
        for round in 1..=args.storm_rounds {
            eprintln!("scale: registration storm {round} of {}", args.storm_rounds);
            println!("storm {round}: {}", table::storm_line(&storm(&args, gateways, largest).await?));
        }
        return Ok(());
    }
    // The registration storm first, on a tier of its own with no fleet: the largest size at once.
    let storm = if args.no_storm { None } else { Some(storm(&args, gateways, largest).await?) };

    let mut tier = Tier::start(&args, gateways).await?;
    let leader = tier.leader().await;
    let idle_leader = Usage::of(&[tier.cluster.pid(leader)]).rss;
    let idle_gateways = Usage::of(&Tier::gateway_pids()).rss;
    let mut fleets = Fleets::default();
    let mut identities = Vec::new();
    let mut rows = Vec::new();
    let mut doomed = None;
    for &size in &sizes {
        let grow_by = size - identities.len();
        eprintln!("scale: {size} workers: registering {grow_by} while the rest beat");
        let (new, registration) = grow::register(&tier, grow_by, args.register_parallel).await?;
        eprintln!("  registered in {:.1?} ({:.0}/s)", registration.took, registration.per_second());
        // At the largest size, the workers the failure run kills beat in a fleet of their own.
        let keep_apart = if size == largest && !args.no_failure { args.kill_workers.min(new.len()) } else { 0 };
        let (together, apart) = new.split_at(new.len() - keep_apart);
        fleets.start(together, &tier.ca_pem, &sources)?;
        if !apart.is_empty() {
            let mut apart_fleet = Fleets::default();
            apart_fleet.start(apart, &tier.ca_pem, &sources)?;
            doomed = Some(apart_fleet);
        }
        identities.extend(new);
        let ready = grow::wait_ready(&tier, &fleets, size - keep_apart, args.connect_timeout).await?;
        eprintln!("  all acked and Ready after {ready:.1?}");
        // One TTL for every worker to settle onto its steady grid, then the window.
        let settle = Duration::from_millis(u64::from(fleets.median_ttl_ms()));
        tokio::time::sleep(settle).await;
        let steady = stages::steady(&tier, &fleets, args.window, args.windows).await?;
        let state = stages::state_size(&tier).await?;
        let reads = stages::reads(&tier, size).await?;
        let restart = stages::restart_follower(&mut tier).await?;
        let row = SizeRow {
            workers: size,
            leader_bytes_per_lease: steady.leader_rss.saturating_sub(idle_leader) as f64 / size as f64,
            gateway_bytes_per_worker: steady.gateway_rss.saturating_sub(idle_gateways) as f64 / size as f64,
            registration,
            ready,
            steady,
            state,
            reads,
            restart,
            floor: None,
        };
        eprintln!("  {}", table::one_line(&row));
        rows.push(row);
    }

    let failure = match doomed {
        Some(doomed) => {
            eprintln!("scale: failure run at {largest} workers");
            Some(failure::run(&mut tier, &fleets, doomed, largest).await?)
        }
        None => None,
    };
    drop(fleets);

    if !args.no_floor {
        for row in &mut rows {
            eprintln!("scale: the floor at {} workers", row.workers);
            let floor = floor::measure(
                &tier,
                &identities[..row.workers],
                row.steady.ttl_ms,
                &sources,
                args.window,
                args.windows,
            )
            .await?;
            row.floor = Some(floor);
        }
    }

    println!();
    print!("{}", table::render(&rows, storm.as_ref(), failure.as_ref()));
    Ok(())
}

/// `workers` registering at once through every registrar of a fresh tier with no fleet.
async fn storm(args: &ScaleArgs, gateways: usize, workers: usize) -> anyhow::Result<grow::Registration> {
    let tier = Tier::start(args, gateways).await?;
    eprintln!("scale: registration storm: {workers} workers at once");
    let (_, storm) = grow::register(&tier, workers, args.register_parallel).await?;
    eprintln!("  {}", table::storm_line(&storm));
    Ok(storm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `muster-bench scale ARGS…` as the real command line parses it.
    fn parse(args: &[&str]) -> ScaleArgs {
        let argv = ["muster-bench", "scale"].iter().chain(args);
        match crate::Cli::try_parse_from(argv).unwrap().command {
            crate::Bench::Scale(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_issue_sizes() {
        let args = parse(&[]);
        assert_eq!(args.sizes, [1_000, 10_000, 30_000, 100_000]);
        assert_eq!((args.gateways, args.registrars, args.kill_workers), (None, 2, 1_000));
        let quick = parse(&["--sizes", "500,2000", "--no-floor"]);
        assert_eq!(quick.sizes, [500, 2_000]);
        assert!(quick.no_floor && !quick.no_failure);
        assert_eq!(args.windows, 3);
    }

    #[test]
    fn storm_rounds_go_with_a_storm_only_run() {
        let storms = parse(&["--storm-only", "--storm-rounds", "5", "--sizes", "100000"]);
        assert!(storms.storm_only);
        assert_eq!(storms.storm_rounds, 5);
        let argv = |args: &[&str]| crate::Cli::try_parse_from(["muster-bench", "scale"].iter().chain(args)).map(|_| ());
        assert!(argv(&["--storm-rounds", "5"]).is_err(), "rounds without --storm-only");
        assert!(argv(&["--storm-only", "--no-storm"]).is_err(), "a storm-only run without its storm");
    }

    #[test]
    fn gateways_are_enough_for_the_open_file_limit() {
        assert_eq!(gateways_for(1_000, 20_000), 3);
        // 100,000 workers at 18,976 connections each: 6 gateways, and one more to lose.
        assert_eq!(gateways_for(100_000, 20_000), 7);
        assert_eq!(gateways_for(100_000, 1_048_576), 3);
    }

    #[test]
    fn sources_are_consecutive_loopback_addresses() {
        let sources = grow::sources(3);
        assert_eq!(sources[0].to_string(), "127.1.0.1");
        assert_eq!(sources[2].to_string(), "127.1.0.3");
        assert!(sources.iter().all(|ip| ip.is_loopback()));
    }
}
