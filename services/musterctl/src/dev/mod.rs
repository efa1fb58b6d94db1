//! `musterctl dev`: the whole system in one process, for trying Muster on a machine that has
//! nothing but this binary. A single-node control plane (the seed's worker tier, server
//! role), a registrar, a heartbeat gateway and three worker agents run as tasks of one runtime,
//! linked from the same libraries the deployables run, with certificates generated into a
//! temporary directory; once the workers heartbeat, it prints the endpoints and the commands
//! to try, then runs until Ctrl-C or SIGTERM.
//!
//! - [`dir`]: the dev directory (temporary, or kept with `--data-dir`);
//! - [`pki`]: certificates through `init_pki`; [`ports`]: the port layout, bound up front;
//! - [`configs`]: each component's configuration; [`agents`]: the agents' identities across runs;
//! - [`supervisor`]: the component tasks, failure detection and ordered shutdown;
//! - [`readiness`]: waiting for the leader and the workers; [`summary`]: what is printed;
//! - [`signals`]: Ctrl-C and SIGTERM.

mod agents;
mod configs;
mod dir;
mod pki;
mod ports;
mod readiness;
mod signals;
mod summary;
mod supervisor;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use muster_client::ControlPlaneClient;
use muster_control_plane::ControlPlane;

use dir::DevDir;
use pki::DevPki;
use ports::{Addrs, Bound, ServiceListeners};
use signals::StopSignals;
use supervisor::Supervisor;

/// How many worker agents run.
const AGENTS: usize = 3;
/// How long the single node may take to elect itself.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the registrar may take to agree the worker CA with the control plane.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the leader may take to record the agents' leaves at shutdown.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Keep everything (certificates, Raft data, identities) in DIR, created if missing; running
    /// again with the same DIR resumes that cluster. Default: a fresh temporary directory,
    /// removed on exit.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// First port of the layout, all on 127.0.0.1: control-plane Raft N, API N+1, registrar
    /// N+2, gateway N+3, admin HTTP N+12 (control plane), N+13 (registrar), N+14 (gateway).
    /// The default is every deployable's default port. 0: every listener on an ephemeral port.
    #[arg(long, value_name = "N", default_value_t = muster_config::DEFAULT_RAFT_PORT)]
    base_port: u16,
    /// Log filter of the embedded services (stderr), e.g. `info` or `warn,muster=debug`.
    /// MUSTER_LOG or RUST_LOG, when set, take precedence.
    #[arg(long, value_name = "FILTER", default_value = "warn,openraft=error")]
    log_level: String,
}

/// Runs dev mode on its own multi-threaded runtime (the other commands need only one thread).
pub fn main(args: DevArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("musterctl dev: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry = muster_telemetry::init("musterctl-dev", muster_telemetry::LogFormat::Pretty, &args.log_level);
        match run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("musterctl dev: {err:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut signals = StopSignals::install().context("installing the Ctrl-C / SIGTERM handlers")?;
    let dir = DevDir::open(args.data_dir.as_deref())?;
    let result = run_in(&dir, args.base_port, &mut signals).await;
    let root = dir.root().to_path_buf();
    let temporary = dir.is_temporary();
    let closed = dir.close();
    result?;
    closed?;
    let what = if temporary { "removed" } else { "kept" };
    eprintln!("musterctl dev: stopped; {} {what}", root.display());
    Ok(())
}

/// Starts everything in `dir`, serves until a signal or a failure, then stops everything.
async fn run_in(dir: &DevDir, base_port: u16, signals: &mut StopSignals) -> anyhow::Result<()> {
    let pki = pki::ensure(&dir.tls())?;
    let (Bound { control_plane: listeners, services }, addrs) = ports::bind(base_port, AGENTS).await?;
    eprintln!(
        "musterctl dev: starting a control plane, a registrar, a heartbeat gateway and {AGENTS} worker agents in {}",
        dir.root().display()
    );
    let config = configs::control_plane(dir, &pki.control_plane, &addrs)?;
    let control_plane = ControlPlane::start(config, listeners).await.context("starting the control plane")?;
    let mut supervisor = Supervisor::new();
    let client = readiness::operator_client(addrs.api.to_string(), pki.operator_tls()?)?;
    let mut workers = Vec::new();
    let parts = Parts { dir, pki: &pki, addrs: &addrs, client: &client };
    let result = serve(&mut supervisor, signals, &parts, services, &mut workers).await;
    if result.is_ok() {
        eprintln!("musterctl dev: stopping (agents leave first)");
    }
    let errors = supervisor.stop_all().await;
    if errors.is_empty() && !workers.is_empty() {
        // The leaves are in the gateway's last batch; let the leader record them before it stops.
        let left = tokio::time::timeout(LEAVE_TIMEOUT, readiness::left(&client, &workers)).await;
        if left.is_err() {
            eprintln!("musterctl dev: the control plane did not record every leave within {LEAVE_TIMEOUT:?}");
        }
    }
    control_plane.shutdown().await;
    result?;
    for err in &errors {
        eprintln!("musterctl dev: {err:#}");
    }
    anyhow::ensure!(errors.is_empty(), "{} component(s) did not stop cleanly", errors.len());
    Ok(())
}

/// What every start-up step works from.
#[derive(Clone, Copy)]
struct Parts<'a> {
    dir: &'a DevDir,
    pki: &'a DevPki,
    addrs: &'a Addrs,
    /// The operator's client on the control-plane API.
    client: &'a ControlPlaneClient,
}

/// Brings the services and agents up, prints the summary, then waits for a stop signal. A
/// signal during start-up ends it early (`Ok`); a component failing is an error. `ready` gets
/// the ids of the agents' workers once they are up.
async fn serve(
    supervisor: &mut Supervisor,
    signals: &mut StopSignals,
    parts: &Parts<'_>,
    listeners: ServiceListeners,
    ready: &mut Vec<u64>,
) -> anyhow::Result<()> {
    let Parts { dir, pki, addrs, client } = *parts;
    let leader = tokio::time::timeout(LEADER_TIMEOUT, readiness::leader(client));
    let Some(leader) = step(supervisor, signals, async {
        leader.await.with_context(|| format!("the control plane elected no leader within {LEADER_TIMEOUT:?}"))?
    })
    .await?
    else {
        return Ok(());
    };

    let Some(revoked) = step(supervisor, signals, readiness::revoked(client)).await? else {
        return Ok(());
    };
    let to_register = agents::prepare(dir, AGENTS, &revoked)?;
    if to_register > 0 {
        let token_file = dir.token_file();
        let token = readiness::bootstrap_token(client, &token_file, to_register);
        if step(supervisor, signals, token).await?.is_none() {
            return Ok(());
        }
    }

    let ServiceListeners { registrar, registrar_admin, gateway, gateway_admin, agents_admin } = listeners;
    let config = configs::registrar(&pki.registrar, addrs);
    supervisor.spawn("registrar", "registrar", move |shutdown| {
        muster_registrar::run(config, registrar, registrar_admin, shutdown)
    });
    let worker_ca = async {
        let timeout = tokio::time::timeout(SERVICE_TIMEOUT, readiness::worker_ca(client)).await;
        timeout.with_context(|| format!("the registrar created no worker CA within {SERVICE_TIMEOUT:?}"))
    };
    if step(supervisor, signals, worker_ca).await?.is_none() {
        return Ok(());
    }
    let config = configs::gateway(&pki.gateway, addrs);
    supervisor.spawn("heartbeat gateway", "gateway", move |shutdown| {
        muster_heartbeat_gateway::run(config, gateway, gateway_admin, shutdown)
    });
    for (n, admin) in (1..=AGENTS).zip(agents_admin) {
        let config = configs::agent(dir, n, addrs)?;
        // An operator may revoke an agent's worker: only that agent stops.
        supervisor.spawn_optional(format!("worker agent {n}"), "agents", move |shutdown| async move {
            let result = muster_worker_agent::run(config, admin, shutdown).await;
            match result.as_ref().err().and_then(muster_worker_agent::Revoked::find) {
                Some(revoked) => {
                    eprintln!(
                        "musterctl dev: agent {n} (worker {}) was revoked and stops; the rest keeps running, and the \
                         next start registers it as a new worker",
                        revoked.worker_id
                    );
                    Ok(())
                }
                None => result,
            }
        });
    }

    let workers = readiness::workers(client, AGENTS);
    let Some(mut workers) = step(supervisor, signals, workers).await? else {
        return Ok(());
    };
    workers.sort_by_key(|worker| worker.worker_id);
    ready.extend(workers.iter().map(|worker| worker.worker_id));
    let program = program_name();
    let summary = summary::Summary {
        program: &program,
        data_dir: dir.root(),
        temporary: dir.is_temporary(),
        addrs,
        pki,
        token_file: &dir.token_file(),
        leader: &leader,
        workers: &workers,
    };
    print!("{}", summary.render());

    tokio::select! {
        () = signals.recv() => Ok(()),
        failure = supervisor.failure() => Err(failure),
    }
}

/// Runs one start-up step unless a component fails or a stop signal comes first (`None`).
async fn step<T>(
    supervisor: &mut Supervisor,
    signals: &mut StopSignals,
    step: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Option<T>> {
    tokio::select! {
        result = step => result.map(Some),
        failure = supervisor.failure() => Err(failure),
        () = signals.recv() => Ok(None),
    }
}

/// How the user invoked musterctl, for the printed commands: the path when it was run by
/// path (`target/release/musterctl` under `cargo run`), else `musterctl` from the PATH.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(|arg0| arg0.to_string_lossy().into_owned())
        .filter(|arg0| arg0.contains('/'))
        .unwrap_or_else(|| "musterctl".to_string())
}
