//! A short run of `muster-bench apply`, so the state-machine benchmark keeps working: two
//! batch sizes, a few hundred entries. It checks the table is whole, not how fast anything
//! was.

use std::process::Command;

#[test]
fn the_apply_benchmark_reports_each_batch_size() {
    let output = Command::new(env!("CARGO_BIN_EXE_muster-bench"))
        .args(["apply", "--batch-sizes", "1,8", "--entries", "200", "--history-revisions", "100"])
        .output()
        .expect("running muster-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "muster-bench apply failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("history kept at 100 revisions"), "{stdout}");
    for batch in ["1", "8"] {
        let row = stdout.lines().find(|line| line.split_whitespace().next() == Some(batch));
        let cells: Vec<&str> =
            row.unwrap_or_else(|| panic!("no row for {batch}:\n{stdout}")).split_whitespace().collect();
        assert!(cells.len() >= 4 && cells.iter().all(|cell| *cell != "-"), "a whole row: {cells:?}");
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_muster-bench"))
        .args(["apply", "--batch-sizes", "0"])
        .output()
        .expect("running muster-bench");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--batch-sizes must be positive"));
}
