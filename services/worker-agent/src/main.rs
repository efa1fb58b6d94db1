//! `worker-agent`: runs on every worker node.

use std::path::PathBuf;

use clap::Parser;
use muster_config::ConfigLoader;
use muster_worker_agent::AgentConfig;

#[derive(Parser, Debug)]
#[command(name = "worker-agent", version, about = "Muster worker agent")]
struct Cli {
    /// TOML configuration file (also MUSTER_CONFIG).
    #[arg(long, short = 'c', env = "MUSTER_CONFIG")]
    config: Option<PathBuf>,
    /// Registrar address (cluster.servers; repeatable).
    #[arg(long = "server")]
    servers: Vec<String>,
    /// Bootstrap token file (cluster.token_file).
    #[arg(long)]
    token_file: Option<String>,
    /// Where the identity is kept (cluster.identity_dir).
    #[arg(long)]
    identity_dir: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Check readiness over the admin listener (for container healthchecks).
    Health {
        #[arg(long, default_value = "127.0.0.1:3683")]
        admin_addr: String,
    },
    /// Tell the cluster this node finished its drain (run by the node's own software once
    /// the work in hand is done; `/status` on the admin listener says when a drain began).
    Drained,
}

/// What an agent started with flags only (`--server`, `--token-file`) runs as: the seed's
/// `worker-tier` mode with `role = "worker"`, the only one an agent can be. A config file
/// says its mode itself, so this applies only when there is none.
const FLAGS_ONLY_CLUSTER: &str = "[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\n";

fn load(cli: &Cli) -> anyhow::Result<AgentConfig> {
    let mut loader = ConfigLoader::new();
    loader = match &cli.config {
        Some(path) => loader.file(path),
        None => loader.toml_text("(worker-agent defaults)", FLAGS_ONLY_CLUSTER),
    };
    let config: AgentConfig = loader
        .env_vars(std::env::vars())
        .set_list("cluster.servers", &cli.servers)
        .set_if("cluster.token_file", cli.token_file.clone())
        .set_if("cluster.identity_dir", cli.identity_dir.clone())
        .load()?;
    config.validate()?;
    Ok(config)
}

/// `worker-agent drained`: the marker the running agent reports on its next beat.
fn drained(cli: &Cli) -> std::process::ExitCode {
    let marked = load(cli).and_then(|config| {
        let settings = config.validate()?;
        muster_worker_agent::drain::mark_drained(&settings.identity_dir)
    });
    match marked {
        Ok(path) => {
            println!("marked drained ({}); the agent reports it on its next heartbeat", path.display());
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Health { admin_addr }) => return muster_admin::health_probe(admin_addr),
        Some(Command::Drained) => return drained(&cli),
        None => {}
    }
    muster_telemetry::run_service("worker-agent", load(&cli), |config| async move {
        let admin = muster_listener::bind("admin_addr", config.admin_addr).await?;
        muster_worker_agent::run(config, admin, muster_telemetry::shutdown_signal()).await
    })
}
