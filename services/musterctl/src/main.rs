//! `musterctl`: the operator's command line. Talks to the control plane's API port with the
//! leader-aware client; prints tables for people and `-o json` for scripts.
//! `musterctl dev` instead runs a whole cluster inside this process (see `dev/`).

mod cluster;
mod cluster_certs;
mod connect;
mod dev;
mod kv;
mod output;
mod snapshot;
mod tls;
mod token;
mod watch;
mod worker_ca;
mod workers;

use std::ffi::OsString;
use std::io::Write as _;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::connect::ConnectArgs;
use crate::output::Format;

#[derive(Parser, Debug)]
#[command(name = "musterctl", version, about = "Operate a Muster cluster")]
struct Cli {
    /// Output format: a table for people or JSON for scripts.
    // Listed after each command's own flags.
    #[arg(long, short = 'o', global = true, default_value = "table", display_order = 100)]
    output: Format,
    // After `output`: the connection flags' `next_help_heading` applies to every argument
    // declared after them.
    #[command(flatten)]
    connect: ConnectArgs,
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
    /// Backups: save the cluster's state to a file, inspect one.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Run a whole cluster in this process (control plane, registrar, gateway, 3 worker
    /// agents) with generated certificates, for trying Muster out.
    Dev(dev::DevArgs),
    /// Print the shell completion script for musterctl to stdout.
    ///
    /// Install it where the shell looks, e.g.
    /// `musterctl completions bash > ~/.local/share/bash-completion/completions/musterctl`,
    /// `musterctl completions zsh > ~/.zfunc/_musterctl` (with ~/.zfunc on $fpath) or
    /// `musterctl completions fish > ~/.config/fish/completions/musterctl.fish`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
}

/// The commands that never talk to a cluster, and why the connection flags mean nothing to them.
const LOCAL_COMMANDS: [(&str, &str); 3] = [
    ("dev", "dev runs its own cluster"),
    ("tls", "tls commands work on files"),
    ("completions", "completions only print a script"),
];

/// The commands that print nothing in a chosen format, for which `--output` means nothing.
const UNFORMATTED_COMMANDS: [&str; 2] = ["dev", "completions"];

/// The global flags that mean nothing to command `name`: the connection flags for the
/// [`LOCAL_COMMANDS`], `--output` for the [`UNFORMATTED_COMMANDS`].
fn meaningless_flags(name: &str) -> Vec<clap::Id> {
    let mut ids = Vec::new();
    if LOCAL_COMMANDS.iter().any(|(local, _)| *local == name) {
        ids.extend(connect::arg_ids());
    }
    if UNFORMATTED_COMMANDS.contains(&name) {
        ids.push(clap::Id::from("output"));
    }
    ids
}

/// The command line. The connection flags and `--output` are global, so they go before or
/// after the subcommand, but a command they mean nothing to ([`meaningless_flags`]) gets
/// hidden copies of them: clap does not propagate a global flag to a command that already has
/// one of that id, so they stay out of that command's help while every command line parses as
/// before (and typed there, they are refused by [`refuse_connection_flags`]).
fn cli_command() -> clap::Command {
    let command = Cli::command();
    let globals: Vec<clap::Arg> = command.get_arguments().cloned().collect();
    command.mut_subcommands(|sub| {
        let ids = meaningless_flags(sub.get_name());
        let hidden = globals.iter().filter(|arg| ids.contains(arg.get_id())).map(|arg| arg.clone().hide(true));
        let hidden: Vec<clap::Arg> = hidden.collect();
        sub.args(hidden)
    })
}

/// The command tree completion scripts are generated from. clap_complete offers hidden
/// arguments too, so there the connection flags are not global but copied onto the networked
/// commands, which pass them on to their subcommands.
fn completion_command() -> clap::Command {
    let command = Cli::command();
    let ids = connect::arg_ids();
    let connection: Vec<clap::Arg> =
        command.get_arguments().filter(|arg| ids.contains(arg.get_id())).cloned().collect();
    command.mut_args(|arg| if ids.contains(arg.get_id()) { arg.global(false) } else { arg }).mut_subcommands(|sub| {
        if LOCAL_COMMANDS.iter().any(|(name, _)| sub.get_name() == *name) { sub } else { sub.args(connection.clone()) }
    })
}

/// Parses a command line (`args[0]` is the program) into a [`Cli`]: usage errors, `--help`
/// and `--version` come back as the error clap prints.
fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = cli_command();
    let mut matches = command.try_get_matches_from_mut(args)?;
    refuse_connection_flags(&mut command, &matches)?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|err| err.format(&mut command))
}

/// A connection flag typed on the command line of a command in [`LOCAL_COMMANDS`] is a usage
/// error rather than silently ignored. Values from the environment (`MUSTER_ENDPOINTS`, ...)
/// are not: they are set for the networked commands and must not break the others.
fn refuse_connection_flags(command: &mut clap::Command, matches: &ArgMatches) -> Result<(), clap::Error> {
    let Some((name, _)) = matches.subcommand() else { return Ok(()) };
    let why = |id: &clap::Id| match LOCAL_COMMANDS.iter().find(|(local, _)| *local == name) {
        Some((_, why)) if *id != "output" => *why,
        _ => "it prints no table or JSON",
    };
    // The matches of every level, root first, and the command the line ended in.
    let mut levels = vec![matches];
    let mut path = vec![command.get_name().to_string()];
    let mut leaf = &mut *command;
    let mut current = matches;
    while let Some((name, sub)) = current.subcommand() {
        levels.push(sub);
        path.push(name.to_string());
        leaf = leaf.find_subcommand_mut(name).expect("matched subcommands exist");
        current = sub;
    }
    for id in meaningless_flags(name) {
        let typed = levels.iter().any(|m| m.value_source(id.as_str()) == Some(ValueSource::CommandLine));
        if typed {
            let flag = leaf
                .get_arguments()
                .find(|arg| *arg.get_id() == id)
                .and_then(|arg| arg.get_long())
                .map_or_else(|| id.to_string(), |long| format!("--{long}"));
            let message = format!("{flag} has no meaning for `{}`: {}", path.join(" "), why(&id));
            return Err(leaf.error(ErrorKind::ArgumentConflict, message));
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = parse_from(std::env::args_os()).unwrap_or_else(|err| err.exit());
    let command = match cli.command {
        Command::Dev(args) => return dev::main(args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut completion_command(), "musterctl", &mut script);
            return match std::io::stdout().write_all(&script) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                // Piped into `head` or the like: the reader has all it wanted.
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => std::process::ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("musterctl: writing the completion script: {err}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
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
        Command::Snapshot(command) => snapshot::run(command, connect, output).await,
        Command::Dev(_) | Command::Completions { .. } => unreachable!("handled before the runtime starts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every argument, possible values included, in `command`'s tree that
    /// has no description, as `path: what`.
    fn undescribed(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        let blank = |text: Option<&clap::builder::StyledStr>| text.is_none_or(|t| t.to_string().trim().is_empty());
        if blank(command.get_about()) && blank(command.get_long_about()) {
            missing.push(format!("{path}: the command"));
        }
        for arg in command.get_arguments() {
            // clap's own --help / --version, and the hidden copies of the connection flags.
            if ["help", "version"].contains(&arg.get_id().as_str()) || arg.is_hide_set() {
                continue;
            }
            if blank(arg.get_help()) && blank(arg.get_long_help()) {
                missing.push(format!("{path}: {}", arg.get_id()));
            }
            // The shell names of `completions` are self-explanatory and come from clap_complete.
            if arg.get_id() == "shell" {
                continue;
            }
            for value in arg.get_possible_values().iter().filter(|value| !value.is_hide_set()) {
                if blank(value.get_help()) {
                    missing.push(format!("{path}: {}={}", arg.get_id(), value.get_name()));
                }
            }
        }
        for sub in command.get_subcommands().filter(|sub| sub.get_name() != "help") {
            undescribed(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }

    #[test]
    fn every_command_and_argument_has_a_description() {
        cli_command().debug_assert();
        completion_command().debug_assert();
        let mut command = cli_command();
        // As clap shows it: the global flags copied onto every subcommand.
        command.build();
        let mut missing = Vec::new();
        undescribed(&command, "musterctl", &mut missing);
        assert!(missing.is_empty(), "without a description:\n{}", missing.join("\n"));
    }

    /// The paths of every command in `command`'s tree (but clap's `help`), root first.
    fn paths(command: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
        out.push((path.clone(), command.clone()));
        for sub in command.get_subcommands().filter(|sub| sub.get_name() != "help") {
            let mut path = path.clone();
            path.push(sub.get_name().to_string());
            paths(sub, path, out);
        }
    }

    #[test]
    fn only_the_networked_commands_show_and_complete_the_connection_flags() {
        let ids = connect::arg_ids();
        for (what, mut command) in [("help", cli_command()), ("completions", completion_command())] {
            command.build();
            let mut all = Vec::new();
            paths(&command, Vec::new(), &mut all);
            for (path, command) in &all[1..] {
                let local = LOCAL_COMMANDS.iter().any(|(name, _)| path[0] == *name);
                for id in &ids {
                    let arg = command.get_arguments().find(|arg| arg.get_id() == id);
                    let offered = match what {
                        // The help shows what is not hidden; completions offer every argument.
                        "help" => arg.is_some_and(|arg| !arg.is_hide_set()),
                        _ => arg.is_some(),
                    };
                    assert_eq!(offered, !local, "{what} of `musterctl {}` and {id}", path.join(" "));
                }
            }
        }
    }

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        parse_from(std::iter::once("musterctl").chain(line.split_whitespace()))
    }

    #[test]
    fn connection_flags_go_before_or_after_the_subcommand() {
        for line in [
            "--insecure --timeout 3s --endpoints 10.0.0.1:3669,10.0.0.2:3669 workers list",
            "workers --insecure --timeout 3s --endpoints 10.0.0.1:3669,10.0.0.2:3669 list",
            "workers list --insecure --timeout 3s --endpoints 10.0.0.1:3669,10.0.0.2:3669",
            "--insecure workers list --timeout 3s --endpoints 10.0.0.1:3669,10.0.0.2:3669",
        ] {
            let cli = parse(line).unwrap_or_else(|err| panic!("{line}: {err}"));
            assert_eq!(cli.connect.endpoints, ["10.0.0.1:3669", "10.0.0.2:3669"], "{line}");
            assert_eq!(cli.connect.timeout, std::time::Duration::from_secs(3), "{line}");
            assert!(cli.connect.insecure, "{line}");
            assert!(matches!(cli.command, Command::Workers(workers::WorkersCommand::List { .. })), "{line}");
        }
        let cli = parse("--tls-dir /pki --ca /ca.pem cluster status -o json").unwrap();
        assert_eq!(cli.connect.tls_dir.as_deref(), Some(std::path::Path::new("/pki")));
        assert_eq!(cli.connect.ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(cli.output, Format::Json);
    }

    #[test]
    fn connection_flags_given_to_local_commands_are_usage_errors_naming_the_flag() {
        for (line, message) in [
            ("dev --endpoints 127.0.0.1:1", "--endpoints has no meaning for `musterctl dev`: dev runs its own cluster"),
            ("--insecure dev --base-port 0", "--insecure has no meaning for `musterctl dev`"),
            (
                "--timeout 1s tls init --dir x",
                "--timeout has no meaning for `musterctl tls init`: tls commands work on files",
            ),
            ("tls --tls-dir x init", "--tls-dir has no meaning for `musterctl tls init`"),
            ("tls init --key k.pem", "--key has no meaning for `musterctl tls init`"),
            ("completions bash --ca ca.pem", "--ca has no meaning for `musterctl completions`"),
        ] {
            let err = parse(line).err().unwrap_or_else(|| panic!("{line} parsed"));
            assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{line}: {err}");
            assert_eq!(err.exit_code(), 2, "{line}");
            assert!(err.to_string().contains(message), "{line}: {err}");
        }
        assert!(matches!(parse("-o json tls init --dir x").map(|cli| cli.command), Ok(Command::Tls(_))));
        assert!(matches!(parse("dev --base-port 0").map(|cli| cli.command), Ok(Command::Dev(_))));
    }
}
