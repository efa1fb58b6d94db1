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
    let config: RegistrarConfig = ConfigLoader::new()
        .env_vars(std::env::vars())
        .file_if(cli.config.as_deref())
        .set_if("worker_grpc_addr", cli.worker_grpc_addr.clone())
        .set_list("control_plane", &cli.control_plane)
        .set_switch("tls.insecure", cli.insecure)
        .load()?;
    config.validate()?;
    Ok(config)
}

async fn bind(config: &RegistrarConfig) -> anyhow::Result<(tokio::net::TcpListener, tokio::net::TcpListener)> {
    let grpc = muster_listener::bind("worker_grpc_addr", config.worker_grpc_addr).await?;
    Ok((grpc, muster_listener::bind("admin_addr", config.admin_addr).await?))
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
