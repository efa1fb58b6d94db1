//! `musterctl snapshot save FILE`: a backup of the whole control-plane state, from the leader
//! (see `muster_proto::backup` for the file); `musterctl snapshot inspect FILE`: what a backup
//! holds, after checking it is whole.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use muster_proto::backup::{self, Backup};
use muster_proto::v1;

use crate::connect::ConnectArgs;
use crate::output::{Format, print_json, unix_time};

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Write a consistent snapshot of the cluster's state (KV, workers, tokens, sessions, the
    /// worker CA record), taken on the leader after every acknowledged write, to FILE.
    Save {
        /// The backup file to write (refused if it exists, unless --force).
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Check a backup file and print its header: cluster id, revision, when and where it was
    /// taken, and what it holds.
    Inspect {
        /// The backup file.
        file: PathBuf,
    },
}

pub async fn run(command: SnapshotCommand, connect: &ConnectArgs, format: Format) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save { file, force } => {
            if file.exists() && !force {
                anyhow::bail!("{} exists; pass --force to replace it", file.display());
            }
            let (header, snapshot) = connect.client()?.save_snapshot().await?;
            let bytes = backup::encode(header, &snapshot);
            // Read back what is about to be written: the file must parse as a whole.
            let parsed = Backup::parse(&bytes).map_err(|err| anyhow::anyhow!("the backup just made: {err}"))?;
            muster_tls::write_atomic(&file, &bytes, 0o600)?;
            print_header(&file, &parsed.header, bytes.len(), format);
            Ok(())
        }
        SnapshotCommand::Inspect { file } => {
            let bytes = std::fs::read(&file).map_err(|err| anyhow::anyhow!("reading {}: {err}", file.display()))?;
            let parsed =
                Backup::parse(&bytes).map_err(|err| anyhow::anyhow!("{} is refused: {err}", file.display()))?;
            print_header(&file, &parsed.header, bytes.len(), format);
            Ok(())
        }
    }
}

fn print_header(file: &Path, header: &v1::BackupHeader, file_bytes: usize, format: Format) {
    let sha256 = hex(&header.snapshot_sha256);
    match format {
        Format::Json => print_json(&serde_json::json!({
            "file": file, "bytes": file_bytes, "format_version": header.format_version,
            "snapshot_format": header.snapshot_format, "cluster_id": header.cluster_id,
            "revision": header.revision, "term": header.term, "node_id": header.node_id,
            "created_at_unix": header.created_at_unix, "snapshot_bytes": header.snapshot_bytes,
            "snapshot_sha256": sha256, "kv_keys": header.kv_keys, "workers": header.workers,
            "tokens": header.tokens,
        })),
        Format::Table => {
            println!("file:        {} ({file_bytes} bytes, checksum OK)", file.display());
            println!("cluster id:  {}", header.cluster_id);
            println!("revision:    {} (term {})", header.revision, header.term);
            println!("taken:       {} on node {}", unix_time(header.created_at_unix), header.node_id);
            println!("holds:       {} keys, {} workers, {} tokens", header.kv_keys, header.workers, header.tokens);
            println!(
                "format:      backup {}, snapshot {} ({} bytes, sha256 {sha256})",
                header.format_version, header.snapshot_format, header.snapshot_bytes
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
