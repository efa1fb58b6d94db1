//! A drain, or a cordon, as the node sees it. An operator's `musterctl workers drain` (or
//! `cordon`) reaches the agent in its acks (`StatusAck.drain`, `StatusAck.ineligible`); the agent shows it on the admin listener (`/status`, and
//! `muster_worker_draining` in `/metrics`) so the node's own software can stop taking work and
//! finish what it runs. When it is done it runs `worker-agent drained`, which leaves a marker
//! file in the identity dir: whoever may write there (the node's own services) may say so,
//! and nobody else. The agent reports `drained` on every report while the marker is there and
//! the drain is in progress, and removes the marker once no drain is in progress (undrained),
//! so a later drain needs a fresh report.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use muster_proto::v1;

/// The marker's name in the identity dir.
pub const MARKER: &str = "drained";

/// Writes the marker: the node's work is finished (`worker-agent drained`).
pub fn mark_drained(identity_dir: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let path = identity_dir.join(MARKER);
    if !identity_dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory: is this the worker's identity dir (cluster.identity_dir), and has the agent \
             registered?",
            identity_dir.display()
        );
    }
    std::fs::write(&path, b"drained\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The drain and eligibility the last ack carried, and the marker.
#[derive(Debug)]
pub struct DrainView {
    marker: PathBuf,
    drain: Mutex<Option<v1::WorkerDrain>>,
    ineligible: AtomicBool,
    /// An ack has been seen: a marker left from before this agent started has been looked at.
    acked: AtomicBool,
}

impl DrainView {
    pub fn new(identity_dir: &Path) -> Self {
        Self {
            marker: identity_dir.join(MARKER),
            drain: Mutex::new(None),
            ineligible: AtomicBool::new(false),
            acked: AtomicBool::new(false),
        }
    }

    /// Whether the node may take new work (not cordoned, not draining).
    pub fn eligible(&self) -> bool {
        !self.ineligible.load(Ordering::Relaxed)
    }

    pub fn current(&self) -> Option<v1::WorkerDrain> {
        *self.drain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An ack arrived: its drain (None: not draining) and eligibility replace the ones held. A
    /// marker left while no drain is in progress belongs to an ended drain and is removed.
    pub fn on_ack(&self, drain: Option<v1::WorkerDrain>, ineligible: bool) {
        if self.ineligible.swap(ineligible, Ordering::Relaxed) != ineligible {
            match ineligible {
                true => tracing::warn!("this worker is cordoned: take no new work"),
                false => tracing::info!("this worker is eligible for new work again"),
            }
        }
        let in_progress = drain.as_ref().is_some_and(|drain| drain.outcome == v1::DrainOutcome::Unspecified as i32);
        let first = !self.acked.swap(true, Ordering::Relaxed);
        let mut held = self.drain.lock().unwrap_or_else(|p| p.into_inner());
        // The marker is looked for when a drain is lifted (or on the first ack), not on every ack.
        let lifted = drain.is_none() && (first || held.is_some());
        if *held != drain {
            match &drain {
                Some(drain) if in_progress => tracing::warn!(
                    deadline_unix = drain.deadline_unix,
                    "this worker is being drained: take no new work, finish what runs, then run `worker-agent \
                     drained`"
                ),
                Some(drain) => tracing::info!(outcome = drain.outcome, "the drain ended"),
                None if held.is_some() => tracing::info!("the drain was lifted: this worker takes work again"),
                None => {}
            }
            *held = drain;
        }
        drop(held);
        if lifted
            && self.marker.exists()
            && let Err(err) = std::fs::remove_file(&self.marker)
        {
            tracing::warn!(error = %err, marker = %self.marker.display(), "cannot remove the drained marker");
        }
    }

    /// What the next report says: drained, if a drain is in progress and the marker is there.
    pub fn report_drained(&self) -> bool {
        let in_progress = self.current().is_some_and(|drain| drain.outcome == v1::DrainOutcome::Unspecified as i32);
        in_progress && self.marker.exists()
    }

    /// `/status` and metrics name the drain's stage: none, draining, drained, deadline-passed.
    pub fn stage(&self) -> &'static str {
        match self.current() {
            None => "none",
            Some(drain) => match v1::DrainOutcome::try_from(drain.outcome).unwrap_or_default() {
                v1::DrainOutcome::Unspecified => "draining",
                v1::DrainOutcome::Drained => "drained",
                v1::DrainOutcome::DeadlinePassed => "deadline-passed",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drained_is_reported_only_during_a_drain_with_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let view = DrainView::new(dir.path());
        mark_drained(dir.path()).unwrap();
        assert!(!view.report_drained(), "no drain in progress");
        view.on_ack(None, false);
        assert!(!dir.path().join(MARKER).exists(), "a stale marker is removed");

        view.on_ack(Some(v1::WorkerDrain { started_at_unix: 10, deadline_unix: 70, ..Default::default() }), true);
        assert_eq!(view.stage(), "draining");
        assert!(!view.eligible());
        assert!(!view.report_drained(), "not yet marked");
        mark_drained(dir.path()).unwrap();
        assert!(view.report_drained());

        let ended = v1::WorkerDrain { outcome: v1::DrainOutcome::Drained as i32, ..view.current().unwrap() };
        view.on_ack(Some(ended), true);
        assert_eq!(view.stage(), "drained");
        assert!(!view.report_drained(), "reported once it is recorded");
        assert!(dir.path().join(MARKER).exists(), "kept while the drain stands");
        view.on_ack(None, false);
        assert_eq!(view.stage(), "none");
        assert!(view.eligible());
        assert!(!dir.path().join(MARKER).exists(), "undrained: the next drain needs a new report");
    }

    #[test]
    fn marking_names_a_missing_identity_dir() {
        let dir = tempfile::tempdir().unwrap();
        let err = mark_drained(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("identity dir"), "{err}");
    }
}
