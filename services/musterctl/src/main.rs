//! `musterctl`: the operator's command line. Talks to the control plane's API port with the
//! leader-aware client; prints tables for people and `-o json` for scripts.

mod cluster;
mod connect;
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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tls(command) => tls::run(command, cli.output),
        Command::Cluster(command) => cluster::run(command, &cli.connect, cli.output).await,
        Command::Kv(command) => kv::run(command, &cli.connect, cli.output).await,
        Command::Token(command) => token::run(command, &cli.connect, cli.output).await,
        Command::Workers(command) => workers::run(command, &cli.connect, cli.output).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("musterctl: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
