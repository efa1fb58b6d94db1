//! `musterctl kv ...`: put, get, delete, cas, list.

use clap::{Subcommand, ValueEnum};
use muster_client::ReadConsistency;
use muster_proto::v1;

use crate::connect::ConnectArgs;
use crate::output::{Format, print_json, print_table, show_bytes};

/// How up to date a read must be.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Consistency {
    /// Confirmed with a quorum by the leader, then read: never stale.
    Linearizable,
    /// Read by the leader while its lease holds, no quorum round trip; assumes bounded clock drift.
    Lease,
    /// Whatever the answering node has applied; any node serves it, may be stale.
    Stale,
}

impl From<Consistency> for ReadConsistency {
    fn from(c: Consistency) -> Self {
        match c {
            Consistency::Linearizable => ReadConsistency::Linearizable,
            Consistency::Lease => ReadConsistency::Lease,
            Consistency::Stale => ReadConsistency::Stale,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Store VALUE under KEY, replacing any value it holds.
    Put {
        /// The key to write.
        key: String,
        /// The value to store (as UTF-8 text).
        value: String,
    },
    /// Print the value stored under KEY (fails if there is none).
    Get {
        /// The key to read.
        key: String,
        /// How up to date the read must be.
        #[arg(long, default_value = "linearizable")]
        consistency: Consistency,
    },
    /// Delete KEY.
    Delete {
        /// The key to delete.
        key: String,
    },
    /// Follow the keys starting with PREFIX (every key by default): one line per put or delete
    /// until Ctrl-C.
    Watch {
        /// Only keys starting with this (empty: every key).
        #[arg(default_value = "")]
        prefix: String,
        /// Changes after this revision (default: from now).
        #[arg(long)]
        since: Option<u64>,
    },
    /// Set KEY to NEW only if it currently holds --expected (or, with --absent, does not exist;
    /// or, with --mod-revision, was last written at that revision).
    Cas {
        /// The key to compare and set.
        key: String,
        /// The value to store if the comparison holds.
        new: String,
        /// The value KEY must hold for the swap to happen.
        #[arg(long, conflicts_with_all = ["absent", "mod_revision"], required_unless_present_any = ["absent", "mod_revision"])]
        expected: Option<String>,
        /// Swap only if KEY does not exist.
        #[arg(long, conflicts_with = "mod_revision")]
        absent: bool,
        /// Swap only if KEY was last written at this revision (its mod_revision; 0: absent).
        #[arg(long)]
        mod_revision: Option<u64>,
    },
    /// List keys starting with PREFIX (every key by default) with their values, in key order.
    List {
        /// Only keys starting with this (empty: every key).
        #[arg(default_value = "")]
        prefix: String,
        /// At most this many keys (0: no limit).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// How up to date the read must be.
        #[arg(long, default_value = "linearizable")]
        consistency: Consistency,
    },
}

fn kv_json(kv: &v1::KeyValue) -> serde_json::Value {
    serde_json::json!({
        "key": kv.key, "value": show_bytes(&kv.value),
        "create_revision": kv.create_revision, "mod_revision": kv.mod_revision, "version": kv.version,
    })
}

fn print_write(result: &v1::CommandResult, format: Format, verb: &str) {
    match format {
        Format::Json => print_json(&serde_json::json!({
            "index": result.index, "succeeded": result.succeeded, "deduplicated": result.deduplicated,
            "previous": result.previous.as_ref().map(kv_json),
        })),
        Format::Table if result.succeeded => println!("{verb} at revision {}", result.index),
        Format::Table => println!("not {verb} (revision {})", result.index),
    }
}

pub async fn run(command: KvCommand, connect: &ConnectArgs, format: Format) -> anyhow::Result<()> {
    let client = connect.client()?;
    match command {
        KvCommand::Put { key, value } => print_write(&client.put(&key, value).await?, format, "stored"),
        KvCommand::Delete { key } => print_write(&client.delete(&key).await?, format, "deleted"),
        KvCommand::Cas { key, new, expected, absent, mod_revision } => {
            let written = match mod_revision {
                Some(revision) => client.compare_revision_and_swap(&key, revision, new).await?,
                None => {
                    client
                        .compare_and_swap(&key, if absent { None } else { expected.map(String::into_bytes) }, new)
                        .await?
                }
            };
            print_write(&written, format, "swapped");
        }
        KvCommand::Watch { prefix, since } => {
            let request = v1::WatchRequest { key: prefix, prefix: true, since_revision: since, ..Default::default() };
            return crate::watch::kv(client, request, format).await;
        }
        KvCommand::Get { key, consistency } => match client.get(&key, consistency.into()).await? {
            Some(kv) => match format {
                Format::Json => print_json(&kv_json(&kv)),
                Format::Table => println!("{}", show_bytes(&kv.value)),
            },
            None => anyhow::bail!("key {key:?} not found"),
        },
        KvCommand::List { prefix, limit, consistency } => {
            let list = client.list(&prefix, limit, consistency.into()).await?;
            match format {
                Format::Json => print_json(&serde_json::json!({
                    "items": list.items.iter().map(kv_json).collect::<Vec<_>>(), "truncated": list.truncated,
                })),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list
                        .items
                        .iter()
                        .map(|kv| vec![kv.key.clone(), show_bytes(&kv.value), kv.mod_revision.to_string()])
                        .collect();
                    print_table(&["KEY", "VALUE", "REVISION"], &rows);
                    if list.truncated {
                        println!("(more keys match; raise --limit)");
                    }
                }
            }
        }
    }
    Ok(())
}
