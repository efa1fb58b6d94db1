//! `heartbeat-gateway`: serves workers' ReportStatus streams and batches their liveness to the
//! control-plane leader.

use std::path::PathBuf;

use clap::Parser;
use muster_config::ConfigLoader;
use muster_heartbeat_gateway::GatewayConfig;

#[derive(Parser, Debug)]
#[command(name = "heartbeat-gateway", version, about = "Muster heartbeat gateway: workers report status here")]
struct Cli {
    /// TOML configuration file (also MUSTER_CONFIG).
    #[arg(long, short = 'c', env = "MUSTER_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve ReportStatus on (listen_addr).
    #[arg(long)]
    listen_addr: Option<String>,
    /// Address workers dial, host:port (advertise_addr).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Admin HTTP address (admin_addr).
    #[arg(long)]
    admin_addr: Option<String>,
    /// Control-plane API addresses, comma-separated (control_plane).
    #[arg(long, value_delimiter = ',')]
    control_plane: Vec<String>,
    /// Plaintext, workers named by x-muster-worker-id metadata (local development only).
    #[arg(long)]
    insecure: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Check readiness over the admin listener (for container healthchecks).
    Health {
        #[arg(long, default_value = "127.0.0.1:3682")]
        admin_addr: String,
    },
}

fn load(cli: &Cli) -> anyhow::Result<GatewayConfig> {
    let config: GatewayConfig = ConfigLoader::new()
        .env_vars(std::env::vars())
        .file_if(cli.config.as_deref())
        .set_if("listen_addr", cli.listen_addr.clone())
        .set_if("advertise_addr", cli.advertise_addr.clone())
        .set_if("admin_addr", cli.admin_addr.clone())
        .set_list("control_plane", &cli.control_plane)
        .set_switch("tls.insecure", cli.insecure)
        .load()?;
    config.validate()?;
    Ok(config)
}

/// Accept backlog of the heartbeat port: when a gateway restarts, thousands of workers
/// reconnect at once, and the default (1024) drops SYNs that then retry only after seconds.
const HEARTBEAT_BACKLOG: u32 = 8192;

async fn bind(config: &GatewayConfig) -> anyhow::Result<(tokio::net::TcpListener, tokio::net::TcpListener)> {
    let grpc = muster_listener::bind_with_backlog("listen_addr", config.listen_addr, HEARTBEAT_BACKLOG)?;
    Ok((grpc, muster_listener::bind("admin_addr", config.admin_addr).await?))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health { admin_addr }) = &cli.command {
        return muster_admin::health_probe(admin_addr);
    }
    muster_telemetry::run_service("heartbeat-gateway", load(&cli), |config| async move {
        let (listener, admin) = bind(&config).await?;
        muster_heartbeat_gateway::run(config, listener, admin, muster_telemetry::shutdown_signal()).await
    })
}
