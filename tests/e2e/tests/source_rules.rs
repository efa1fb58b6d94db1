//! Rules about Muster's own source that a review would otherwise have to remember.
//!
//! A refusal's reason is typed (`v1::Refusal`, sent in the `x-muster-refusal` metadata entry
//! and read back with `muster_middleware::refusal`): no code outside tests recovers a reason
//! from the words of a status message.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// Every `.rs` file under `dir`, skipping build output and test-only files.
fn production_sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if !matches!(name, "target" | "tests" | "benches") {
                production_sources(&path, found);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            found.push(path);
        }
    }
}

/// The part of a source file before its `#[cfg(test)]` module.
fn non_test_part(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn no_code_reads_a_reason_out_of_a_status_message() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["services", "shared"] {
        production_sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files under {}", files.len(), root.display());
    let readers = [".message().contains(", ".message().starts_with(", ".message().split", ".message().find("];
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source");
        for (number, line) in non_test_part(&text).lines().enumerate() {
            if readers.iter().any(|reader| line.contains(reader)) {
                offenders.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "branch on muster_middleware::refusal(&status), not the words:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_rule_sees_a_message_being_read() {
    let sample = "fn f(s: &Status) -> bool { s.message().contains(\"revoked\") }\n#[cfg(test)]\nmod tests {}";
    assert!(non_test_part(sample).contains(".message().contains("));
    assert!(!non_test_part("#[cfg(test)]\nfn t() { s.message().contains(\"x\") }").contains(".message()"));
}
