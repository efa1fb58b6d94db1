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
}

fn load(cli: &Cli) -> anyhow::Result<AgentConfig> {
    let mut loader = ConfigLoader::new().env_vars(std::env::vars());
    if let Some(path) = &cli.config {
        loader = loader.file(path);
    }
    if !cli.servers.is_empty() {
        loader = loader
            .set("cluster.servers", toml::Value::Array(cli.servers.iter().cloned().map(toml::Value::String).collect()));
    }
    for (key, value) in [("cluster.token_file", &cli.token_file), ("cluster.identity_dir", &cli.identity_dir)] {
        if let Some(value) = value {
            loader = loader.set(key, toml::Value::String(value.clone()));
        }
    }
    let config: AgentConfig = loader.load()?;
    config.validate()?;
    Ok(config)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health { admin_addr }) = &cli.command {
        return muster_admin::health_probe(admin_addr);
    }
    muster_telemetry::run_service("worker-agent", load(&cli), |config| async move {
        use anyhow::Context;
        let admin = tokio::net::TcpListener::bind(config.admin_addr).await;
        let admin = admin.with_context(|| format!("binding {}", config.admin_addr))?;
        muster_worker_agent::run(config, admin, muster_telemetry::shutdown_signal()).await
    })
}
