//! `musterctl`: the operator's command line. Talks to the control plane's API port with the
//! leader-aware client; prints tables for people and `-o json` for scripts.
//! `musterctl dev` instead runs a whole cluster inside this process (see `dev/`).

mod cluster;
mod connect;
mod dev;
mod kv;
mod output;
mod tls;
mod token;
mod workers;

use clap::{Parser, Subcommand};

use crate::connect::ConnectArgs;
use crate::output::Format;

#[derive(Parser, Debug)]
#[command(name = "musterctl", version, about = "Operate a Muster cluster")]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Output format.
    #[arg(long, short = 'o', global = true, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Certificates: the cluster CA and per-node / operator certificates.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Cluster membership and status.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// The replicated key-value store.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Bootstrap tokens workers join with.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Registered workers.
    #[command(subcommand)]
    Workers(workers::WorkersCommand),
    /// Run a whole cluster in this process (control plane, registrar, gateway, 3 worker
    /// agents) with generated certificates, for trying Muster out.
    Dev(dev::DevArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Dev(args) => return dev::main(args),
        command => command,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(command, &cli.connect, cli.output)),
        Err(err) => Err(anyhow::Error::new(err).context("starting the async runtime")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("musterctl: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, connect: &ConnectArgs, output: Format) -> anyhow::Result<()> {
    match command {
        Command::Tls(command) => tls::run(command, output),
        Command::Cluster(command) => cluster::run(command, connect, output).await,
        Command::Kv(command) => kv::run(command, connect, output).await,
        Command::Token(command) => token::run(command, connect, output).await,
        Command::Workers(command) => workers::run(command, connect, output).await,
        Command::Dev(_) => unreachable!("dev runs on its own runtime"),
    }
}
