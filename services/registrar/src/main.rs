//! `registrar`: serves worker registration (bootstrap token + CSR → mTLS identity).

use std::path::PathBuf;

use clap::Parser;
use muster_config::ConfigLoader;
use muster_registrar::RegistrarConfig;

#[derive(Parser, Debug)]
#[command(name = "registrar", version, about = "Muster registrar: workers register here")]
struct Cli {
    /// TOML configuration file (also MUSTER_CONFIG).
    #[arg(long, short = 'c', env = "MUSTER_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve Register on (worker_grpc_addr).
    #[arg(long)]
    worker_grpc_addr: Option<String>,
    /// Control-plane API addresses, comma-separated (control_plane).
    #[arg(long, value_delimiter = ',')]
    control_plane: Vec<String>,
    /// Plaintext (local use only; workers cannot pin the registrar).
    #[arg(long)]
    insecure: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Check readiness over the admin listener (for container healthchecks).
    Health {
        #[arg(long, default_value = "127.0.0.1:3681")]
        admin_addr: String,
    },
}

fn load(cli: &Cli) -> anyhow::Result<RegistrarConfig> {
    let mut loader = ConfigLoader::new().env_vars(std::env::vars());
    if let Some(path) = &cli.config {
        loader = loader.file(path);
    }
    if let Some(addr) = &cli.worker_grpc_addr {
        loader = loader.set("worker_grpc_addr", toml::Value::String(addr.clone()));
    }
    if !cli.control_plane.is_empty() {
        let endpoints = cli.control_plane.iter().cloned().map(toml::Value::String).collect();
        loader = loader.set("control_plane", toml::Value::Array(endpoints));
    }
    if cli.insecure {
        loader = loader.set("tls.insecure", toml::Value::Boolean(true));
    }
    let config: RegistrarConfig = loader.load()?;
    config.validate()?;
    Ok(config)
}

async fn bind(config: &RegistrarConfig) -> anyhow::Result<(tokio::net::TcpListener, tokio::net::TcpListener)> {
    use anyhow::Context;
    let grpc = tokio::net::TcpListener::bind(config.worker_grpc_addr).await;
    let grpc = grpc.with_context(|| format!("binding {}", config.worker_grpc_addr))?;
    let admin = tokio::net::TcpListener::bind(config.admin_addr).await;
    Ok((grpc, admin.with_context(|| format!("binding {}", config.admin_addr))?))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health { admin_addr }) = &cli.command {
        return muster_admin::health_probe(admin_addr);
    }
    muster_telemetry::run_service("registrar", load(&cli), |config| async move {
        let (listener, admin) = bind(&config).await?;
        muster_registrar::run(config, listener, admin, muster_telemetry::shutdown_signal()).await
    })
}
