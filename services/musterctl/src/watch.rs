//! `musterctl workers watch` and `musterctl kv watch`: one line per change, as it happens,
//! until Ctrl-C. The watch resumes on another node if the one serving it fails
//! ([`muster_client::ResumableWatch`]), so the output has no gap and no repeat.
//!
//! Lines are not aligned (a stream cannot know its widest cell); `-o json` prints one JSON
//! object per line.

use std::io::Write as _;

use muster_client::{ControlPlaneClient, KvWatchItem, WorkerWatchItem};
use muster_proto::v1;

use crate::output::{Format, cell, show_bytes};
use crate::workers::{labels_text, state_name};

/// Prints one line of a stream and flushes it (a pipe would otherwise hold it).
fn line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())?;
    out.flush()?;
    Ok(())
}

fn json_line(value: serde_json::Value) -> anyhow::Result<()> {
    line(&serde_json::to_string(&value)?)
}

/// Runs `follow` until it fails or Ctrl-C.
async fn until_interrupted(follow: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::select! {
        followed = follow => followed,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

fn kv_event_type(event: &v1::KvEvent) -> &'static str {
    match v1::KvEventType::try_from(event.r#type).unwrap_or_default() {
        v1::KvEventType::Put => "put",
        v1::KvEventType::Delete => "delete",
        v1::KvEventType::Unspecified => "unknown",
    }
}

pub async fn kv(client: ControlPlaneClient, request: v1::WatchRequest, format: Format) -> anyhow::Result<()> {
    let mut watch = std::sync::Arc::new(client).watch_kv(request);
    until_interrupted(async move {
        if format == Format::Table {
            line("REVISION  EVENT  KEY  VALUE")?;
        }
        loop {
            let KvWatchItem::Events { revision, events } = watch.next().await? else { continue };
            for event in events {
                let kv = event.kv.clone().unwrap_or_default();
                match format {
                    Format::Json => json_line(serde_json::json!({
                        "revision": revision, "event": kv_event_type(&event), "key": kv.key,
                        "value": show_bytes(&kv.value), "version": kv.version,
                    }))?,
                    Format::Table => line(&format!(
                        "{revision}  {}  {}  {}",
                        kv_event_type(&event),
                        cell(&kv.key),
                        cell(&show_bytes(&kv.value))
                    ))?,
                }
            }
        }
    })
    .await
}

pub fn worker_event_type(event: &v1::WorkerEvent) -> &'static str {
    use v1::WorkerEventType as Event;
    match Event::try_from(event.r#type).unwrap_or_default() {
        Event::Registered => "registered",
        Event::Ready => "ready",
        Event::Unreachable => "unreachable",
        Event::Returned => "returned",
        Event::Draining => "draining",
        Event::Left => "left",
        Event::Revoked => "revoked",
        Event::LabelsChanged => "labels-changed",
        Event::Cordoned => "cordoned",
        Event::Uncordoned => "uncordoned",
        Event::Drained => "drained",
        Event::DrainDeadlinePassed => "drain-deadline-passed",
        Event::Removed => "removed",
        Event::CertificateIssued => "certificate-issued",
        Event::CertificateRenewed => "certificate-renewed",
        Event::ProfileChanged => "profile-changed",
        Event::Updated => "updated",
        Event::Unspecified => "unknown",
    }
}

fn worker_line(revision: u64, event: &str, worker: &v1::WorkerRecord, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => json_line(serde_json::json!({
            "revision": revision, "event": event, "id": worker.worker_id, "name": worker.name,
            "state": state_name(worker.state), "labels": worker.labels,
        })),
        Format::Table => line(&format!(
            "{revision}  {event}  {}  {}  {}  {}",
            worker.worker_id,
            cell(&worker.name),
            state_name(worker.state),
            cell(&labels_text(&worker.labels))
        )),
    }
}

pub async fn workers(
    client: ControlPlaneClient,
    request: v1::WatchWorkersRequest,
    format: Format,
) -> anyhow::Result<()> {
    let mut watch = std::sync::Arc::new(client).watch_workers(request);
    until_interrupted(async move {
        if format == Format::Table {
            line("REVISION  EVENT  ID  NAME  STATE  LABELS")?;
        }
        loop {
            match watch.next().await? {
                // The listing, and again after a relist: each worker as it stands.
                WorkerWatchItem::Listed { revision, workers } => {
                    for worker in &workers {
                        worker_line(revision, "listed", worker, format)?;
                    }
                    match format {
                        Format::Json => json_line(serde_json::json!({"revision": revision, "event": "synced"}))?,
                        Format::Table => line(&format!("{revision}  synced"))?,
                    }
                }
                WorkerWatchItem::Events { revision, events } => {
                    for event in &events {
                        worker_line(
                            revision,
                            worker_event_type(event),
                            &event.worker.clone().unwrap_or_default(),
                            format,
                        )?;
                    }
                }
                WorkerWatchItem::Progress { .. } => {}
            }
        }
    })
    .await
}
