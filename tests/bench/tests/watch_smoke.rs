//! A short run of `muster-bench watch` against both systems, so the benchmark keeps working:
//! a few watchers, a low write rate, a one-second window, two rounds (the fewest that pair a
//! Muster round with an etcd round more than once). It checks what the benchmark measures is
//! whole (every event of every acknowledged write reached every watcher, no watch failed, every
//! round ran), not how fast anything was.

use std::process::Command;

#[test]
fn the_watch_benchmark_runs_on_both_systems_and_loses_no_event() {
    let output = Command::new(env!("CARGO_BIN_EXE_muster-bench"))
        .args(["watch", "--watchers", "30", "--connections", "3", "--rates", "50", "--worker-rate", "10"])
        .args(["--duration", "1s", "--warmup", "500ms", "--rounds", "2"])
        .output()
        .expect("running muster-bench (the control-plane and registrar binaries sit beside it after `cargo build --workspace --bins`; etcd comes from `apt-get install etcd-server`)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "muster-bench watch failed:\n{stdout}\n{stderr}");

    // One progress line per row, system and round: two Muster rows (KV, workers) and one etcd
    // row, twice.
    let rows: Vec<&str> = stderr.lines().filter(|line| line.contains("events/s in")).collect();
    assert_eq!(rows.len(), 6, "expected 6 measured rows:\n{stderr}");
    for row in rows {
        assert!(row.contains("missing 0/") && !row.contains("missing 0/0 "), "events lost or none measured: {row}");
        assert!(row.contains("watch failures 0") && row.contains("write errors 0"), "{row}");
    }
    for name in ["| kv puts 50/s | Muster", "| kv puts 50/s | etcd", "| workers registering 10/s | Muster"] {
        assert!(stdout.contains(name), "no `{name}` row in the table:\n{stdout}");
    }
    assert!(stdout.contains("kv puts 50/s: events/s"), "no Muster / etcd ratio:\n{stdout}");
    assert!(stdout.contains(" of 2 rounds)"), "the ratio does not pair both rounds:\n{stdout}");
}
