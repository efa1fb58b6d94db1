//! The README's quick-start lines, run as written against the test's stack. The only
//! rewrites are the ones that let this stack run beside a user's: the published port
//! (13669 → the test's), the certificate directory (`.muster-local/compose` → the test's),
//! the compose command (v1 or v2, whichever is here) and the host musterctl binary.

use muster_e2e::compose::{ComposeStack, compose_program, repo_root, run};
use std::time::Duration;

/// The shell lines of the fenced block that follows `<!-- MARKER` in README.md.
fn readme_block(marker: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let after = readme
        .split_once(&format!("<!-- {marker}"))
        .unwrap_or_else(|| panic!("README.md has no `<!-- {marker}` block"))
        .1;
    let body = after.split_once("```sh\n").expect("a ```sh block after the marker").1;
    let body = body.split_once("```").expect("the block's closing fence").0;
    body.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).map(str::to_owned).collect()
}

fn for_this_stack(stack: &ComposeStack, line: &str) -> String {
    let local = stack.local_dir().display().to_string();
    let musterctl = muster_e2e::binaries::musterctl().display().to_string();
    let compose = compose_program().join(" ");
    let [p1, p2, p3] = stack.api_ports();
    line.replace(".muster-local/compose", &local)
        .replace("127.0.0.1:13669", &format!("127.0.0.1:{p1}"))
        .replace("127.0.0.1:23669", &format!("127.0.0.1:{p2}"))
        .replace("127.0.0.1:33669", &format!("127.0.0.1:{p3}"))
        .replace("target/release/musterctl", &musterctl)
        .replace("docker compose", &compose)
}

/// Runs one README line with bash in the repository root; returns its output, or panics
/// with the line as written, as run, and what it printed.
async fn run_line(stack: &ComposeStack, line: &str) -> String {
    let streams = line.contains("/Watch");
    let mut shell_line = for_this_stack(stack, line);
    if streams {
        // A watch streams until Ctrl-C; here it is stopped after a few seconds (status 124).
        shell_line = format!("timeout -s INT 5 {shell_line}; test $? = 124 -o $? = 130");
    }
    let outcome =
        run(stack.bash(&shell_line), Duration::from_secs(90)).await.unwrap_or_else(|err| panic!("{line}: {err:#}"));
    assert!(outcome.ok, "README line failed:\n  {line}\nrun as:\n  {shell_line}\n{}", outcome.text());
    outcome.text()
}

/// What each kind of line must print, beyond succeeding.
fn expect(line: &str, out: &str) {
    let wanted: &[&str] = if line.ends_with(" list") && line.starts_with("grpcurl") {
        &["grpc.health.v1.Health", "muster.v1.ClusterManagementService", "muster.v1.WorkerAdminService"]
    } else if line.contains(" describe ") {
        &["rpc ListWorkers"]
    } else if line.contains("Health/Check") {
        &["SERVING"]
    } else if line.contains("GetClusterMetadata") {
        &["leaderId", "clusterId"]
    } else if line.contains("WatchWorkers") {
        &["workerId", "\"synced\": true"]
    } else if line.contains("ListWorkers") {
        &["workerId", "WORKER_STATE_READY"]
    } else if line.ends_with("workers list") {
        &["ready"]
    } else if line.ends_with("cluster status") {
        &["leader"]
    } else {
        panic!("the test does not know what this README line should print: {line}")
    };
    for needle in wanted {
        assert!(out.contains(needle), "README line `{line}` printed no {needle:?}:\n{out}");
    }
}

pub async fn grpcurl_lines_work(stack: &ComposeStack) {
    let lines = readme_block("compose-grpcurl");
    assert!(lines.len() >= 5, "the README's grpcurl block is shorter than expected: {lines:?}");
    for line in &lines {
        assert!(line.starts_with("grpcurl "), "not a grpcurl line: {line}");
        let out = run_line(stack, line).await;
        expect(line, &out);
    }
}

pub async fn musterctl_lines_work(stack: &ComposeStack) {
    let lines = readme_block("compose-musterctl");
    assert!(!lines.is_empty(), "the README's musterctl block is empty");
    for line in &lines {
        let out = run_line(stack, line).await;
        expect(line, &out);
    }
}
