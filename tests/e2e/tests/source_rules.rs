//! Rules about Muster's own source that a review would otherwise have to remember.
//!
//! One place picks gRPC codes: handlers return `muster_middleware::ApiError`, and only
//! `shared/middleware/src/error.rs` builds a `tonic::Status` from a code.
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
            if !matches!(name, "target" | "tests" | "benches" | "examples") {
                production_sources(&path, found);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            found.push(path);
        }
    }
}

/// A source file without its inline `#[cfg(test)] mod tests { .. }` (by convention the last
/// item). Everything else is read, test-only helpers in the middle of a file included, so no
/// production code after one escapes the rules.
fn non_test_part(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests {").next().unwrap_or(text)
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

/// `Status::` constructors that pick a code.
const STATUS_CONSTRUCTORS: [&str; 18] = [
    "Status::new(",
    "Status::with_metadata(",
    "Status::with_details(",
    "Status::cancelled(",
    "Status::unknown(",
    "Status::invalid_argument(",
    "Status::deadline_exceeded(",
    "Status::not_found(",
    "Status::already_exists(",
    "Status::permission_denied(",
    "Status::resource_exhausted(",
    "Status::failed_precondition(",
    "Status::aborted(",
    "Status::out_of_range(",
    "Status::unimplemented(",
    "Status::internal(",
    "Status::unavailable(",
    "Status::unauthenticated(",
];

#[test]
fn only_the_error_module_picks_grpc_codes() {
    let root = workspace_root();
    let the_one_place = root.join("shared/middleware/src/error.rs");
    let mut files = Vec::new();
    for dir in ["services", "shared"] {
        production_sources(&root.join(dir), &mut files);
    }
    let mut offenders = Vec::new();
    for file in files.iter().filter(|file| **file != the_one_place) {
        let text = std::fs::read_to_string(file).expect("source");
        for (number, line) in non_test_part(&text).lines().enumerate() {
            if STATUS_CONSTRUCTORS.iter().any(|constructor| calls(line, constructor)) {
                offenders.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "return an ApiError (shared/middleware/src/error.rs) instead:\n{}",
        offenders.join("\n")
    );
}

/// Whether `line` calls `path` itself (`Status::new(`, not `AgentStatus::new(`).
fn calls(line: &str, path: &str) -> bool {
    line.match_indices(path)
        .any(|(at, _)| !line[..at].chars().next_back().is_some_and(|before| before.is_alphanumeric() || before == '_'))
}

#[test]
fn the_rules_see_what_they_forbid() {
    assert!(calls("Err(tonic::Status::internal(\"x\"))", "Status::internal("));
    assert!(calls("Status::new(code, m)", "Status::new("));
    assert!(!calls("AgentStatus::new(rx)", "Status::new("));
}

#[test]
fn the_rule_sees_a_message_being_read() {
    let sample = "fn f(s: &Status) -> bool { s.message().contains(\"revoked\") }\n#[cfg(test)]\nmod tests {}";
    assert!(non_test_part(sample).contains(".message().contains("));
    assert!(!non_test_part("#[cfg(test)]\nmod tests { s.message().contains(\"x\") }").contains(".message()"));
    // Production code after a test-only helper is still read.
    let after_helper = "#[cfg(test)]\nfn helper() {}\nfn f(s: &Status) { s.message().find(\"x\"); }";
    assert!(non_test_part(after_helper).contains(".message().find("));
}
