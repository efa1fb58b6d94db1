//! FSM commands: each frame is decoded as a `v1::Command` (as a log entry's payload is) and
//! applied at the next index to an empty in-memory FSM database, in one write transaction
//! that is then aborted (so every input starts from the same empty state, without the cost of
//! a new database). Applying must never fail (a command that fails to apply stops every
//! replica that applies it), and a retry of a client's command (not a batch, which has no
//! session of its own) must answer with the original result.
//!
//! Input: `[term: u8]` then frames, one command each.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use muster_control_plane::store::fuzzing::{apply_command, memory_database, readable};
use muster_fuzz::Input;
use muster_proto::v1;
use prost::Message;
use redb::Database;

fn database() -> &'static Arc<Database> {
    static DB: OnceLock<Arc<Database>> = OnceLock::new();
    DB.get_or_init(|| memory_database().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let term = u64::from(input.u8());
    let txn = database().begin_write().unwrap();
    let mut index = 0u64;
    while let Some(frame) = input.frame() {
        let Ok(command) = v1::Command::decode(frame) else { continue };
        index += 1;
        if !readable(&command) {
            // A format above this release's, or a kind it does not know: refused, never skipped.
            assert!(apply_command(&txn, index, term, &command).is_err(), "an unreadable command is refused");
            continue;
        }
        let result = apply_command(&txn, index, term, &command).expect("a decodable command applies");
        // A batch has no session of its own (each command in it has its own; the leader writes
        // batches without a client id), so only a plain command's retry is recognised.
        let has_session = command.client_id != 0 && !matches!(command.op, Some(v1::command::Op::Batch(_)));
        if has_session {
            index += 1;
            let retry = apply_command(&txn, index, term, &command).expect("a retry applies");
            assert!(retry.deduplicated, "a retry is recognised");
            // The first answer may itself be a retry's (an earlier frame had the same client).
            let original = v1::CommandResult { deduplicated: true, ..result };
            assert_eq!(retry, original, "a retry answers as the original");
        }
    }
    txn.abort().unwrap();
});
