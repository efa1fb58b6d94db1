//! A short run of `muster-bench scale`, so the benchmark keeps working: two small fleet sizes,
//! every stage (the registration storm, growth, steady beating, state and reads, the failure
//! run, the floor). It checks that every stage ran and reported and that the failure run
//! marked no live worker Unreachable, not how fast anything was.

use std::process::Command;

#[test]
fn the_scale_benchmark_runs_every_stage_and_marks_no_live_worker_down() {
    let output = Command::new(env!("CARGO_BIN_EXE_muster-bench"))
        .args(["scale", "--sizes", "100,300", "--kill-workers", "50", "--window", "1s", "--gateways", "2"])
        .output()
        .expect("running muster-bench (the control-plane, registrar and heartbeat-gateway binaries sit beside it after `cargo build --workspace --bins`)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "muster-bench scale failed:\n{stdout}\n{stderr}");
    for heading in
        ["registration storm: 300 workers", "growth", "steady beating", "state and reads", "failure run at 300"]
    {
        assert!(stdout.contains(heading), "no `{heading}` in the results:\n{stdout}");
    }
    let rows = |table: &str| -> Vec<String> {
        let section = stdout.split(table).nth(1).unwrap_or_default();
        section.lines().skip(2).take_while(|line| !line.trim().is_empty()).map(str::to_string).collect()
    };
    for table in ["growth", "steady beating", "state and reads"] {
        let rows = rows(table);
        assert_eq!(rows.len(), 2, "one row per size in `{table}`:\n{stdout}");
        assert!(rows[0].trim_start().starts_with("100") && rows[1].trim_start().starts_with("300"), "{rows:?}");
    }
    // workers, TTL ("2105 ms": two words), acks/s, then the floor's acks/s.
    for row in rows("steady beating") {
        let floor_acks = row.split_whitespace().nth(4).unwrap_or("-");
        assert!(floor_acks.parse::<f64>().is_ok(), "the floor ran at every size: {row}\n{stdout}");
    }
    assert!(stdout.contains("live workers marked Unreachable through the failover: 0 "), "{stdout}");
    assert!(stdout.contains("50 workers killed at once"), "{stdout}");
}
