//! `musterctl workers ...`: list, get, drain, undrain, purge, revoke, label, cordon, uncordon,
//! rotate-ca.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Subcommand, ValueEnum};
use muster_client::WorkerAction;
use muster_proto::v1;

use crate::connect::ConnectArgs;
use crate::output::{Format, print_json, print_table};

/// Lifecycle state of a worker.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum State {
    /// Registered and heartbeating within its lease.
    Ready,
    /// Its lease expired: no heartbeat within TTL + grace.
    Unreachable,
    /// Drained by an operator: alive, takes no new work.
    Draining,
    /// Left gracefully (stopped with SIGTERM).
    Left,
    /// Identity revoked by an operator; refused everywhere.
    Revoked,
}

impl From<State> for v1::WorkerState {
    fn from(state: State) -> Self {
        match state {
            State::Ready => v1::WorkerState::Ready,
            State::Unreachable => v1::WorkerState::Unreachable,
            State::Draining => v1::WorkerState::Draining,
            State::Left => v1::WorkerState::Left,
            State::Revoked => v1::WorkerState::Revoked,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum WorkersCommand {
    /// List workers, optionally filtered by state and labels.
    List {
        /// Only workers in this state.
        #[arg(long)]
        state: Option<State>,
        /// Only workers with this label: KEY=VALUE (repeatable; all must match).
        #[arg(long = "label", value_parser = crate::token::parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Follow workers: the matching ones first (unless --since), then one line per change
    /// (registered, ready, unreachable, returned, draining, left, revoked, labels-changed,
    /// certificate-renewed, ...) until Ctrl-C.
    Watch {
        /// Only workers in this state (before or after a change).
        #[arg(long)]
        state: Option<State>,
        /// Only workers with this label: KEY=VALUE (repeatable; all must match).
        #[arg(long = "label", value_parser = crate::token::parse_label)]
        labels: Vec<(String, String)>,
        /// Only changes after this revision (no listing first).
        #[arg(long)]
        since: Option<u64>,
    },
    /// Show one worker: state, labels, certificate and current lease.
    Get {
        /// The worker's id (the ID column of `workers list`).
        worker_id: u64,
    },
    /// Drain a worker: it takes no new work, and its agent is told to finish what it runs
    /// (admin /status) and to report `drained` when done.
    Drain {
        /// The worker's id (the ID column of `workers list`).
        worker_id: u64,
        /// How long the worker has to report drained (e.g. 10m, 2h); past it the drain is
        /// recorded as deadline-passed. No deadline unless given.
        #[arg(long, value_parser = humantime::parse_duration)]
        deadline: Option<Duration>,
    },
    /// End a drain: the worker is Ready (once it beats) and eligible again.
    Undrain {
        /// The worker's id (the ID column of `workers list`).
        worker_id: u64,
    },
    /// Cordon: give the worker (or every worker with the labels) no new work, whatever its
    /// liveness. It keeps beating and stays Ready.
    Cordon {
        /// The worker's id; or --label instead.
        worker_id: Option<u64>,
        /// Every worker with this label: KEY=VALUE (repeatable; all must match).
        #[arg(long = "label", value_parser = crate::token::parse_label, conflicts_with = "worker_id")]
        labels: Vec<(String, String)>,
    },
    /// Uncordon: make the worker (or every worker with the labels) eligible for work again.
    Uncordon {
        /// The worker's id; or --label instead.
        worker_id: Option<u64>,
        /// Every worker with this label: KEY=VALUE (repeatable; all must match).
        #[arg(long = "label", value_parser = crate::token::parse_label, conflicts_with = "worker_id")]
        labels: Vec<(String, String)>,
    },
    /// Remove a gone (left, revoked, unreachable) worker's record now, as garbage collection
    /// would after worker_gc.threshold. Its id is never used again.
    Purge {
        /// The worker's id (the ID column of `workers list`).
        worker_id: u64,
        /// Purge a live worker too: its identity is revoked first.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a worker's identity for good.
    Revoke {
        /// The worker's id (the ID column of `workers list`).
        worker_id: u64,
    },
    /// Set (KEY=VALUE) or remove (--remove KEY) labels.
    Label {
        /// The worker's id (the ID column of `workers list`).
        worker_id: u64,
        /// Labels to set, each KEY=VALUE.
        #[arg(value_parser = crate::token::parse_label)]
        set: Vec<(String, String)>,
        /// Label key to remove (repeatable).
        #[arg(long)]
        remove: Vec<String>,
    },
    /// Move the cluster to a new worker CA while workers beat: begin (trust a next CA),
    /// promote (sign with it; workers move as they renew), finish (stop trusting the old).
    RotateCa {
        /// begin, promote or finish.
        step: crate::worker_ca::RotateStep,
        /// The PKI directory holding worker-ca.pem and worker-ca-key.pem (the registrars').
        #[arg(long, default_value = "./tls")]
        dir: std::path::PathBuf,
        /// finish: stop trusting the old CA even though workers may still hold certificates of
        /// it (they are refused from then on).
        #[arg(long)]
        force: bool,
    },
}

pub fn state_name(state: i32) -> &'static str {
    match v1::WorkerState::try_from(state).unwrap_or_default() {
        v1::WorkerState::Ready => "ready",
        v1::WorkerState::Unreachable => "unreachable",
        v1::WorkerState::Draining => "draining",
        v1::WorkerState::Left => "left",
        v1::WorkerState::Revoked => "revoked",
        v1::WorkerState::Unspecified => "unknown",
    }
}

/// The STATE column: the state, and how a drain stands or that the worker is cordoned.
fn state_text(worker: &v1::WorkerRecord) -> String {
    let state = state_name(worker.state);
    match &worker.drain {
        Some(drain) if worker.state == v1::WorkerState::Draining as i32 => match drain_outcome_name(drain.outcome) {
            "draining" => state.to_string(),
            outcome => outcome.to_string(),
        },
        _ if worker.ineligible && worker.state != v1::WorkerState::Draining as i32 => format!("{state},cordoned"),
        _ => state.to_string(),
    }
}

/// `draining` while in progress, else how it ended (`drained`, `deadline-passed`).
pub fn drain_outcome_name(outcome: i32) -> &'static str {
    match v1::DrainOutcome::try_from(outcome).unwrap_or_default() {
        v1::DrainOutcome::Unspecified => "draining",
        v1::DrainOutcome::Drained => "drained",
        v1::DrainOutcome::DeadlinePassed => "deadline-passed",
    }
}

fn drain_json(drain: &v1::WorkerDrain) -> serde_json::Value {
    serde_json::json!({
        "started_at": when(drain.started_at_unix), "deadline": when(drain.deadline_unix),
        "outcome": drain_outcome_name(drain.outcome), "ended_at": when(drain.ended_at_unix),
    })
}

fn when(unix: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix as u64)).to_string()
}

pub fn labels_text(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

fn when_ms(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms as u64)).to_string()
}

fn worker_json(worker: &v1::WorkerRecord, lease: Option<&v1::WorkerLease>) -> serde_json::Value {
    let profile = worker.profile.clone().unwrap_or_default();
    let lease = lease.map(|lease| {
        serde_json::json!({
            "gateway": lease.gateway_id, "last_beat": when_ms(lease.last_beat_unix_ms), "ttl_ms": lease.ttl_ms,
            "deadline": when_ms(lease.deadline_unix_ms),
        })
    });
    serde_json::json!({
        "lease": lease,
        "id": worker.worker_id, "name": worker.name, "state": state_name(worker.state), "labels": worker.labels,
        "eligible": !worker.ineligible, "drain": worker.drain.as_ref().map(drain_json),
        "registered_at": when(worker.registered_at_unix), "state_changed_at": when(worker.state_changed_at_unix),
        "cert_serial": worker.cert_serial, "previous_cert_serial": worker.previous_cert_serial,
        "cert_expires_at": when(worker.cert_expires_at_unix),
        "os": profile.os, "arch": profile.arch, "version": profile.version, "capacity": profile.capacity,
        "token_id": worker.token_id,
        "replaces": (worker.replaces != 0).then_some(worker.replaces),
        "replaced_by": (worker.replaced_by != 0).then_some(worker.replaced_by),
    })
}

fn print_workers(workers: &[v1::WorkerRecord], leases: &HashMap<u64, v1::WorkerLease>, format: Format) {
    match format {
        Format::Json => print_json(&workers.iter().map(|w| worker_json(w, leases.get(&w.worker_id))).collect()),
        Format::Table => {
            let rows: Vec<Vec<String>> = workers
                .iter()
                .map(|w| {
                    let lease = leases.get(&w.worker_id);
                    let gateway = lease.map(|l| l.gateway_id.clone()).filter(|g| !g.is_empty());
                    vec![
                        w.worker_id.to_string(),
                        w.name.clone(),
                        state_text(w),
                        labels_text(&w.labels),
                        gateway.unwrap_or_else(|| "-".into()),
                        lease.map_or_else(|| "-".into(), |l| when_ms(l.last_beat_unix_ms)),
                        lease.map_or_else(|| "-".into(), |l| format!("{:.1}s", f64::from(l.ttl_ms) / 1000.0)),
                        when(w.cert_expires_at_unix),
                    ]
                })
                .collect();
            let headers = ["ID", "NAME", "STATE", "LABELS", "GATEWAY", "LAST BEAT", "TTL", "CERT EXPIRES"];
            print_table(&headers, &rows);
        }
    }
}

pub async fn run(command: WorkersCommand, connect: &ConnectArgs, format: Format) -> anyhow::Result<()> {
    let client = connect.client()?;
    let worker = match command {
        WorkersCommand::List { state, labels } => {
            let filter = v1::ListWorkersRequest {
                state: state.map_or(0, |s| v1::WorkerState::from(s) as i32),
                labels: labels.into_iter().collect(),
                ..Default::default()
            };
            let listed = client.list_workers_with_leases(filter).await?;
            print_workers(&listed.workers, &listed.leases, format);
            return Ok(());
        }
        WorkersCommand::Watch { state, labels, since } => {
            let request = v1::WatchWorkersRequest {
                state: state.map_or(0, |s| v1::WorkerState::from(s) as i32),
                labels: labels.into_iter().collect(),
                since_revision: since,
                ..Default::default()
            };
            return crate::watch::workers(client, request, format).await;
        }
        WorkersCommand::Get { worker_id } => (worker_id, client.worker_call(WorkerAction::Get, worker_id).await?),
        WorkersCommand::Drain { worker_id, deadline } => {
            let seconds = deadline.map_or(0, |deadline| deadline.as_secs().max(1));
            (worker_id, client.drain_worker(worker_id, seconds).await?)
        }
        WorkersCommand::Undrain { worker_id } => {
            (worker_id, client.worker_call(WorkerAction::Undrain, worker_id).await?)
        }
        WorkersCommand::Purge { worker_id, force } => {
            let purged = client.purge_worker(worker_id, force).await?;
            if format == Format::Table {
                let was = purged.worker.as_ref().map_or("unknown", |w| state_name(w.state));
                println!("worker {worker_id} removed (it was {was}); its id is never used again");
                return Ok(());
            }
            (worker_id, purged)
        }
        WorkersCommand::Revoke { worker_id } => (worker_id, client.worker_call(WorkerAction::Revoke, worker_id).await?),
        WorkersCommand::Cordon { worker_id, labels } => {
            return set_eligibility(&client, WorkerAction::Cordon, worker_id, labels, format).await;
        }
        WorkersCommand::Uncordon { worker_id, labels } => {
            return set_eligibility(&client, WorkerAction::Uncordon, worker_id, labels, format).await;
        }
        WorkersCommand::RotateCa { step, dir, force } => {
            return crate::worker_ca::rotate(&client, step, &dir, force, format).await;
        }
        WorkersCommand::Label { worker_id, set, remove } => {
            let change = v1::LabelChange { set: set.into_iter().collect(), remove };
            (worker_id, client.label_worker_call(worker_id, change).await?)
        }
    };
    let (worker_id, response) = worker;
    // Every answer carries the lease as the leader holds it (a drained worker keeps beating).
    let leases = response.lease.into_iter().map(|lease| (worker_id, lease)).collect();
    print_workers(&[response.worker.unwrap_or_default()], &leases, format);
    Ok(())
}

/// Cordons or uncordons one worker, or every live worker (not Left or Revoked) with `labels`.
async fn set_eligibility(
    client: &muster_client::ControlPlaneClient,
    action: WorkerAction,
    worker_id: Option<u64>,
    labels: Vec<(String, String)>,
    format: Format,
) -> anyhow::Result<()> {
    let ids: Vec<u64> = match worker_id {
        Some(id) => vec![id],
        None => {
            anyhow::ensure!(!labels.is_empty(), "name a worker id, or select workers with --label KEY=VALUE");
            let filter = v1::ListWorkersRequest { labels: labels.into_iter().collect(), ..Default::default() };
            let listed = client.list_workers(filter).await?;
            let live = |w: &&v1::WorkerRecord| {
                !matches!(v1::WorkerState::try_from(w.state), Ok(v1::WorkerState::Left | v1::WorkerState::Revoked))
            };
            listed.iter().filter(live).map(|w| w.worker_id).collect()
        }
    };
    let mut workers = Vec::with_capacity(ids.len());
    let mut leases = HashMap::new();
    for id in ids {
        let response = client.worker_call(action, id).await?;
        if let Some(lease) = response.lease {
            leases.insert(id, lease);
        }
        workers.push(response.worker.unwrap_or_default());
    }
    print_workers(&workers, &leases, format);
    Ok(())
}
