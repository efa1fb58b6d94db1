//! What every listener of the process has refused and closed, as Prometheus text. Listeners
//! register their [`ListenerStats`] here when they start; the admin listener appends
//! [`render`] to each component's `/metrics`, so no component wires counters by hand.
//! Listeners with the same name (tests run several servers in one process) are summed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use crate::incoming::ListenerStats;

static LISTENERS: Mutex<Vec<Weak<ListenerStats>>> = Mutex::new(Vec::new());

pub(crate) fn register(stats: &Arc<ListenerStats>) {
    let mut listeners = LISTENERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    listeners.retain(|weak| weak.strong_count() > 0);
    listeners.push(Arc::downgrade(stats));
}

/// The `muster_listener_*` families for every live listener of the process.
pub fn render() -> String {
    let mut by_name: BTreeMap<&'static str, [u64; 5]> = BTreeMap::new();
    let listeners = LISTENERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for stats in listeners.iter().filter_map(Weak::upgrade) {
        let row = by_name.entry(stats.name).or_default();
        row[0] += stats.open_connections() as u64;
        row[1] += stats.refused_over_cap.load(Ordering::Relaxed);
        row[2] += stats.handshake_timeouts.load(Ordering::Relaxed);
        row[3] += stats.handshake_failures.load(Ordering::Relaxed);
        row[4] += stats.preface_timeouts.load(Ordering::Relaxed);
    }
    let families = [
        ("muster_listener_open_connections", "gauge", "Connections open now, handshaking ones included."),
        (
            "muster_listener_refused_total",
            "counter",
            "Connections closed at accept because a connection cap was reached.",
        ),
        (
            "muster_listener_handshake_timeouts_total",
            "counter",
            "Connections closed because TLS did not finish in time.",
        ),
        ("muster_listener_handshake_failures_total", "counter", "Connections whose TLS handshake failed."),
        (
            "muster_listener_preface_timeouts_total",
            "counter",
            "Connections closed because the HTTP/2 preface did not arrive in time.",
        ),
    ];
    let mut out = String::new();
    if by_name.is_empty() {
        return out;
    }
    for (column, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (listener, row) in &by_name {
            let _ = writeln!(out, "{name}{{listener=\"{listener}\"}} {}", row[column]);
        }
    }
    out
}
