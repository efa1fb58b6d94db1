//! A short run of `muster-bench kv` against both systems in alternating rounds, so the
//! benchmark keeps working: two rounds of one-second rows. It checks the tables are whole
//! (each row has both systems, a ratio with its range of rounds, CPU per operation and the
//! machine's stalls) and that no operation failed, not how fast anything was.

use std::process::Command;

#[test]
fn the_kv_benchmark_alternates_rounds_and_reports_their_spread() {
    let output = Command::new(env!("CARGO_BIN_EXE_muster-bench"))
        .args(["kv", "--clients", "1,4", "--rounds", "2", "--duration", "1s", "--warmup", "300ms"])
        .output()
        .expect("running muster-bench (the control-plane binary sits beside it after `cargo build --workspace --bins`; etcd comes from `apt-get install etcd-server`)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "muster-bench kv failed:\n{stdout}\n{stderr}");

    // Muster, etcd, Muster, etcd: one progress line per row, system and round.
    let systems: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(" ops/s "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let one_round = ["muster"; 3].into_iter().chain(["etcd"; 3]);
    assert_eq!(systems, one_round.clone().chain(one_round).collect::<Vec<_>>(), "rounds out of order:\n{stderr}");
    assert!(stderr.lines().filter(|l| l.contains(" ops/s ")).all(|l| l.contains("errors 0")), "{stderr}");

    assert!(stdout.contains("medians of 2 rounds"), "{stdout}");
    for row in ["put c=1", "put c=4", "get(lin) c=4"] {
        let lines: Vec<&str> = stdout.lines().filter(|line| line.starts_with(row)).collect();
        assert_eq!(lines.len(), 3, "`{row}` in the results, CPU and stall tables:\n{stdout}");
        // The range is left out only when it vanishes at the ratio's two decimal places.
        let ratio = lines[0].rsplit("  ").next().unwrap_or_default();
        assert!(ratio.contains("x (") || ratio.ends_with('x'), "a ratio with its range of rounds: {}", lines[0]);
        assert!(!lines[1].contains(" - "), "CPU per operation of both systems: {}", lines[1]);
        assert!(lines[2].matches(" ms, ").count() == 2, "stalls of both systems: {}", lines[2]);
    }
    assert!(!stdout.contains("failed operations"), "{stdout}");
}
