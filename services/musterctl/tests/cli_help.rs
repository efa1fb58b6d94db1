//! The built `musterctl` binary's command line: what `--help` shows where, that the
//! connection flags still parse before and after the subcommand, and `completions`.
//! (Every command and argument having a description is checked on the clap tree itself, in
//! `src/main.rs`.)

use std::process::{Command, Output};

/// Exit code of a clap usage error.
const USAGE_ERROR: i32 = 2;

/// The environment variables the connection flags read.
const CONNECTION_ENV: [&str; 6] =
    ["MUSTER_ENDPOINTS", "MUSTER_TLS_DIR", "MUSTER_CA", "MUSTER_CERT", "MUSTER_KEY", "MUSTER_INSECURE"];

/// The connection flags.
const CONNECTION_FLAGS: [&str; 7] = ["--endpoints", "--tls-dir", "--ca", "--cert", "--key", "--insecure", "--timeout"];

/// Runs `musterctl ARGS` with none of the connection variables set.
fn musterctl(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_musterctl"));
    command.args(args);
    for name in CONNECTION_ENV {
        command.env_remove(name);
    }
    command.output().expect("running musterctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The help of `musterctl ARGS --help`, which must succeed.
fn help(args: &[&str]) -> String {
    let args: Vec<&str> = args.iter().copied().chain(["--help"]).collect();
    let output = musterctl(&args);
    assert!(output.status.success(), "musterctl {args:?}: {}", text(&output.stderr));
    text(&output.stdout)
}

#[test]
fn local_commands_do_not_list_the_connection_flags() {
    for args in [&["dev"][..], &["tls"], &["tls", "init"], &["completions"], &["help", "dev"]] {
        let help = if args[0] == "help" {
            let output = musterctl(args);
            assert!(output.status.success(), "musterctl {args:?}: {}", text(&output.stderr));
            text(&output.stdout)
        } else {
            help(args)
        };
        assert!(help.contains("Usage: musterctl"), "musterctl {args:?}: {help}");
        // A flag as help lists it: `--ca <CA>`, not the start of `--ca-validity`.
        let listed = |flag: &str| help.lines().any(|line| line.trim_start().split([' ', ',']).next() == Some(flag));
        for flag in CONNECTION_FLAGS {
            assert!(!listed(flag), "musterctl {args:?} --help mentions {flag}:\n{help}");
        }
        assert!(!help.contains("[env: MUSTER_"), "musterctl {args:?} --help mentions an environment variable:\n{help}");
    }
}

#[test]
fn networked_commands_list_the_connection_flags() {
    let commands = [
        &[][..],
        &["cluster"],
        &["cluster", "status"],
        &["cluster", "join"],
        &["kv", "get"],
        &["token", "create"],
        &["workers"],
        &["workers", "list"],
    ];
    for args in commands {
        let help = help(args);
        for flag in CONNECTION_FLAGS {
            assert!(help.contains(flag), "musterctl {args:?} --help does not mention {flag}:\n{help}");
        }
    }
}

#[test]
fn previously_empty_help_now_describes_commands_and_arguments() {
    let kv = help(&["kv"]);
    for command in ["put", "get", "delete", "list"] {
        let line = kv.lines().find(|line| line.trim_start().starts_with(command)).expect(command);
        assert!(line.trim_start().len() > command.len() + 4, "`kv {command}` has no description:\n{kv}");
    }
    let put = help(&["kv", "put"]);
    assert!(put.contains("<KEY>") && put.contains("The key to write"), "{put}");
    assert!(put.contains("<VALUE>") && put.contains("The value to store"), "{put}");
    let get = help(&["workers", "get"]);
    assert!(get.starts_with("Show one worker"), "{get}");
    assert!(get.contains("<WORKER_ID>") && get.contains("The worker's id"), "{get}");
    let join = help(&["cluster", "join"]);
    for (flag, words) in [("--node-id", "new node's id"), ("--raft-addr", "Raft port"), ("--api-addr", "API port")] {
        // The option's line (not the usage line) and its description under it.
        let lines: Vec<&str> = join.lines().collect();
        let at = lines.iter().position(|line| line.trim_start().starts_with(flag));
        let at = at.unwrap_or_else(|| panic!("no {flag}:\n{join}"));
        assert!(lines[at..=at + 1].iter().any(|line| line.contains(words)), "{flag} is not described:\n{join}");
    }
}

/// A networked command line that gets as far as trying the cluster: it fails, but not with
/// a usage error.
fn fails_only_at_connecting(args: &[&str]) {
    let output = musterctl(args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "musterctl {args:?}: {stderr}");
    assert!(stderr.starts_with("musterctl: ") && !stderr.contains("Usage:"), "musterctl {args:?}: {stderr}");
}

#[test]
fn connection_flags_still_work_before_and_after_the_subcommand() {
    // Without TLS material it stops before connecting, having parsed everything.
    fails_only_at_connecting(&["--endpoints", "127.0.0.1:1", "--timeout", "1s", "cluster", "status"]);
    // As tests/e2e/tests/musterctl.rs and the README type them, and after the subcommand.
    fails_only_at_connecting(&["--insecure", "--timeout", "1s", "--endpoints", "127.0.0.1:1", "cluster", "status"]);
    fails_only_at_connecting(&["workers", "list", "--insecure", "--timeout", "1s", "--endpoints", "127.0.0.1:1"]);
    fails_only_at_connecting(&["--tls-dir", "/nonexistent/tls", "--endpoints", "127.0.0.1:1", "workers", "list"]);
}

#[test]
fn output_is_offered_only_where_something_is_formatted() {
    for args in [&["dev"][..], &["completions"]] {
        let help = help(args);
        assert!(!help.contains("--output"), "musterctl {args:?} --help offers --output:\n{help}");
    }
    for args in [&["tls", "init"][..], &["workers", "list"], &["cluster", "status"]] {
        let help = help(args);
        assert!(help.contains("-o, --output"), "musterctl {args:?} --help lacks --output:\n{help}");
    }
    for args in [&["dev", "-o", "json"][..], &["-o", "json", "completions", "bash"]] {
        let output = musterctl(args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(USAGE_ERROR), "musterctl {args:?}: {stderr}");
        assert!(stderr.contains("--output has no meaning for `musterctl"), "{stderr}");
        assert!(stderr.contains("it prints no table or JSON"), "{stderr}");
    }
}

#[test]
fn connection_flags_typed_for_tls_are_refused_but_the_environment_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let tls = tls.to_str().unwrap();

    let output = musterctl(&["tls", "init", "--dir", tls, "--endpoints", "127.0.0.1:1"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(USAGE_ERROR), "{stderr}");
    assert!(stderr.contains("--endpoints has no meaning for `musterctl tls init`"), "{stderr}");
    assert!(!std::path::Path::new(tls).exists(), "it wrote certificates anyway");

    // As in compose.yaml, where MUSTER_ENDPOINTS and MUSTER_TLS_DIR are set for every command.
    let mut command = Command::new(env!("CARGO_BIN_EXE_musterctl"));
    command.args(["tls", "init", "--dir", tls, "--node", "n1"]);
    for (name, value) in CONNECTION_ENV.iter().zip(["127.0.0.1:1", "/pki", "/ca.pem", "/c.pem", "/k.pem", "true"]) {
        command.env(name, value);
    }
    let output = command.output().expect("running musterctl");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(std::path::Path::new(tls).join("ca.pem").is_file(), "{}", text(&output.stdout));
}

#[test]
fn completions_print_a_script_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _musterctl"),
        ("zsh", "#compdef musterctl"),
        ("fish", "complete -c musterctl"),
        ("elvish", "edit:completion:arg-completer[musterctl]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let output = musterctl(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", text(&output.stderr));
        let script = text(&output.stdout);
        assert!(script.contains(marker), "the {shell} script lacks {marker:?}:\n{script}");
        assert!(script.contains("musterctl") && script.contains("workers"), "{shell}:\n{script}");
    }
}

#[test]
fn completions_offer_the_connection_flags_only_to_networked_commands() {
    let output = musterctl(&["completions", "fish"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let script = text(&output.stdout);
    let offers = |command: &str| {
        let condition = format!("__fish_musterctl_using_subcommand {command}");
        script.lines().filter(|line| line.contains(&condition)).any(|line| line.contains("-l endpoints"))
    };
    assert!(offers("workers") && offers("cluster") && offers("kv") && offers("token"), "{script}");
    assert!(!offers("dev") && !offers("tls") && !offers("completions"), "{script}");
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let output = musterctl(&["completions", "tcsh"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(USAGE_ERROR), "{stderr}");
    assert!(stderr.contains("invalid value 'tcsh'") && stderr.contains("bash"), "{stderr}");
    assert!(output.stdout.is_empty());
    let output = musterctl(&["completions"]);
    assert_eq!(output.status.code(), Some(USAGE_ERROR), "{}", text(&output.stderr));
}
