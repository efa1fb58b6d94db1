//! `control-plane`: runs one Muster control-plane node.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use muster_config::{ConfigLoader, ControlPlaneConfig};

#[derive(Parser, Debug)]
#[command(name = "control-plane", version, about = "Muster control-plane node (Raft + FSM)")]
struct Cli {
    /// TOML configuration file (also MUSTER_CONFIG).
    #[arg(long, short = 'c', env = "MUSTER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// This node's Raft id (cluster.node_id).
    #[arg(long)]
    node_id: Option<u64>,
    /// Data directory (data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Raft peer listen address (listen.raft_addr).
    #[arg(long)]
    raft_addr: Option<String>,
    /// Client API listen address (listen.api_addr).
    #[arg(long)]
    api_addr: Option<String>,
    /// Admin HTTP listen address (listen.admin_addr).
    #[arg(long)]
    admin_addr: Option<String>,
    /// Join an existing cluster through this API address (repeatable).
    #[arg(long)]
    join: Vec<String>,
    /// Serve plaintext without TLS (local use only; logs a warning).
    #[arg(long)]
    insecure: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the effective configuration and exit.
    Config,
    /// Check the node's readiness over its admin HTTP listener (for container healthchecks).
    Health {
        /// Admin address to query.
        #[arg(long, default_value = "127.0.0.1:3680")]
        admin_addr: String,
    },
    /// Prepare this node's empty data directory to start a new cluster holding a backup's
    /// state (`musterctl snapshot save`), keeping its cluster id; the members are the
    /// configuration's `cluster.peers`. Run it on every initial member, then start them.
    Restore {
        /// The backup file.
        #[arg(long)]
        snapshot: PathBuf,
    },
    /// After a majority of the voters is lost for good: make this stopped node the only voter
    /// of its cluster, keeping its data; start it, then join new nodes to it.
    Recover {
        /// Required: this discards the other members, which must never come back.
        #[arg(long)]
        force_new_cluster: bool,
    },
}

fn load_config(cli: &Cli) -> anyhow::Result<ControlPlaneConfig> {
    // TOML integers are i64.
    let node_id = cli.node_id.map(i64::try_from).transpose().context("--node-id must be below 2^63")?;
    let config: ControlPlaneConfig = ConfigLoader::new()
        .env_vars(std::env::vars())
        .file_if(cli.config.as_deref())
        .set_if("cluster.node_id", node_id)
        .set_if("data_dir", cli.data_dir.as_ref().map(|dir| dir.display().to_string()))
        .set_if("listen.raft_addr", cli.raft_addr.clone())
        .set_if("listen.api_addr", cli.api_addr.clone())
        .set_if("listen.admin_addr", cli.admin_addr.clone())
        .set_list("join", &cli.join)
        .set_switch("tls.insecure", cli.insecure)
        .load()?;
    config.validate()?;
    Ok(config)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health { admin_addr }) = &cli.command {
        return muster_admin::health_probe(admin_addr);
    }
    if let Some(Command::Config) = cli.command {
        return match load_config(&cli) {
            Ok(config) => {
                println!("{}", toml::to_string_pretty(&config).unwrap_or_else(|e| format!("<unprintable: {e}>")));
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("control-plane: configuration error: {err:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Restore { snapshot }) = &cli.command {
        let restored = load_config(&cli).and_then(|config| {
            let restored = muster_control_plane::restore::restore(&config, snapshot)?;
            Ok((config, restored))
        });
        return match restored {
            Ok((config, restored)) => {
                println!(
                    "restored cluster {} at revision {} into {} (members {:?}); start the node with the same \
                     configuration",
                    restored.cluster_id,
                    restored.revision,
                    config.data_dir.display(),
                    restored.members
                );
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("control-plane restore: {err:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Recover { force_new_cluster }) = &cli.command {
        return recover(&cli, *force_new_cluster);
    }
    muster_telemetry::run_service("control-plane", load_config(&cli), |config| {
        muster_control_plane::run(config, muster_telemetry::shutdown_signal())
    })
}

/// `control-plane recover`: refuses without `--force-new-cluster`, then reports what changed
/// and what to do next.
fn recover(cli: &Cli, force_new_cluster: bool) -> std::process::ExitCode {
    if !force_new_cluster {
        eprintln!(
            "control-plane recover: --force-new-cluster is required: it makes this node the only member of its \
             cluster, and the other members must never start again (see docs/operations.md, disaster recovery)"
        );
        return std::process::ExitCode::from(2);
    }
    match load_config(cli).and_then(|config| muster_control_plane::recover::force_new_cluster(&config)) {
        Ok(recovered) => {
            println!(
                "recovered cluster {}: node {} is its only voter from log index {} (term {}); the members were {:?}. \
                 Start the node with the same configuration, then add nodes with empty data directories and \
                 `join` set to it, and `musterctl cluster promote` them",
                recovered.cluster_id, recovered.node_id, recovered.index, recovered.term, recovered.previous_members
            );
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("control-plane recover: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
