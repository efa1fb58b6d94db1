//! The Prometheus text format, written by hand: every deployable keeps its numbers in plain
//! atomics (no registry, no locks, no allocation on the hot path) and renders them on scrape
//! with these helpers, so names, `HELP`/`TYPE` lines, label escaping and histogram layout are
//! the same everywhere. A metrics crate would bring a registry and a global for what is a
//! few dozen series per process.
//!
//! A series without labels is written `name{} value`, which the format allows and which keeps
//! one code path for labelled and unlabelled series.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The `TYPE` of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The `# HELP` and `# TYPE` lines that open a family; its samples follow.
pub fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
}

/// One sample line: `name{labels} value`. `labels` is already rendered (`a="1",b="2"`, see
/// [`label`]); it may be empty.
pub fn sample(out: &mut String, name: &str, labels: &str, value: impl Into<Value>) {
    let _ = writeln!(out, "{name}{{{labels}}} {}", value.into());
}

/// A gauge family with one series.
pub fn gauge(out: &mut String, name: &str, help: &str, labels: &str, value: impl Into<Value>) {
    header(out, name, help, Kind::Gauge);
    sample(out, name, labels, value);
}

/// A counter family with one series (`name` should end in `_total`).
pub fn counter(out: &mut String, name: &str, help: &str, labels: &str, value: u64) {
    header(out, name, help, Kind::Counter);
    sample(out, name, labels, value);
}

/// A family of one kind with a series per label set, under one header.
pub fn family<L: AsRef<str>>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: Kind,
    series: impl IntoIterator<Item = (L, u64)>,
) {
    header(out, name, help, kind);
    for (labels, value) in series {
        sample(out, name, labels.as_ref(), value);
    }
}

/// `key="value"` with the value escaped as the format requires.
pub fn label(key: &str, value: &str) -> String {
    format!("{key}=\"{}\"", escape(value))
}

/// Joins rendered label sets, skipping empty ones: `join(&["node_id=\"1\"", "state=\"ready\""])`.
pub fn join(labels: &[&str]) -> String {
    labels.iter().filter(|l| !l.is_empty()).copied().collect::<Vec<_>>().join(",")
}

fn escape(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// A sample value: integers as written, floats in the format's spelling (`+Inf`, `NaN`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Int(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Int(value) => write!(f, "{value}"),
            Value::Float(value) if value.is_nan() => f.write_str("NaN"),
            Value::Float(value) if value == f64::INFINITY => f.write_str("+Inf"),
            Value::Float(value) if value == f64::NEG_INFINITY => f.write_str("-Inf"),
            Value::Float(value) => write!(f, "{value}"),
        }
    }
}

/// Bucket bounds (seconds) for request latencies: 5 ms to 10 s, Prometheus' defaults.
pub const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A histogram on fixed bucket bounds: `observe` is one relaxed atomic add and a CAS on the
/// sum (no lock, no allocation), so it can sit on a per-heartbeat path. Buckets are stored
/// per bucket and made cumulative on render.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, plus the `+Inf` bucket.
    buckets: Box<[AtomicU64]>,
    /// f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    /// `bounds` ascending, finite, without `+Inf` (always added).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "bucket bounds must ascend");
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        // The first bound >= value (`le` is inclusive); past the last one is `+Inf`.
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }

    /// Observes a duration in seconds.
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(duration.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    /// The `_bucket`, `_sum` and `_count` lines of this series (the header is the caller's, see
    /// [`histogram`]). `_count` is the `+Inf` bucket as read, so the two always agree even while
    /// observations race the scrape (only `_sum` may then include one more).
    pub fn write_samples(&self, out: &mut String, name: &str, labels: &str) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = Value::Float(self.bounds.get(index).copied().unwrap_or(f64::INFINITY));
            let le = format!("le=\"{le}\"");
            sample(out, &bucket_name, &join(&[labels, &le]), cumulative);
        }
        sample(out, &format!("{name}_sum"), labels, self.sum());
        sample(out, &format!("{name}_count"), labels, cumulative);
    }
}

/// A histogram family: one header, then each `(labels, histogram)` series.
pub fn histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (&'a str, &'a Histogram)>,
) {
    header(out, name, help, Kind::Histogram);
    for (labels, histogram) in series {
        histogram.write_samples(out, name, labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_have_help_and_type() {
        let mut out = String::new();
        counter(&mut out, "muster_things_total", "Things.\nMany.", "", 3);
        gauge(&mut out, "muster_level", "Level.", &label("node_id", "1"), 7);
        assert_eq!(
            out,
            "# HELP muster_things_total Things.\\nMany.\n# TYPE muster_things_total counter\nmuster_things_total{} 3\n\
             # HELP muster_level Level.\n# TYPE muster_level gauge\nmuster_level{node_id=\"1\"} 7\n"
        );
    }

    #[test]
    fn families_share_one_header_and_labels_are_escaped() {
        let mut out = String::new();
        let series = [("a", 1), ("b\"\\\nc", 2)].map(|(state, n)| (join(&["x=\"1\"", &label("state", state)]), n));
        family(&mut out, "muster_f", "F.", Kind::Gauge, series);
        assert_eq!(out.matches("# TYPE").count(), 1);
        assert!(out.contains("muster_f{x=\"1\",state=\"a\"} 1\n"), "{out}");
        assert!(out.contains("muster_f{x=\"1\",state=\"b\\\"\\\\\\nc\"} 2\n"), "{out}");
        assert_eq!(join(&["", "a=\"1\"", ""]), "a=\"1\"");
    }

    #[test]
    fn floats_use_the_formats_spelling() {
        let shown = [0.25, 10.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN].map(|v| Value::Float(v).to_string());
        assert_eq!(shown, ["0.25", "10", "+Inf", "-Inf", "NaN"]);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inclusive() {
        static BOUNDS: &[f64] = &[0.1, 1.0];
        let latency = Histogram::new(BOUNDS);
        for value in [0.05, 0.1, 0.5, 1.0, 7.0] {
            latency.observe(value);
        }
        latency.observe_duration(Duration::from_millis(250));
        let mut out = String::new();
        let ok = label("outcome", "ok");
        histogram(&mut out, "muster_op_seconds", "Op latency.", [(ok.as_str(), &latency)]);
        let expected = "# HELP muster_op_seconds Op latency.\n# TYPE muster_op_seconds histogram\n\
            muster_op_seconds_bucket{outcome=\"ok\",le=\"0.1\"} 2\n\
            muster_op_seconds_bucket{outcome=\"ok\",le=\"1\"} 5\n\
            muster_op_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 6\n\
            muster_op_seconds_sum{outcome=\"ok\"} 8.9\n\
            muster_op_seconds_count{outcome=\"ok\"} 6\n";
        assert_eq!(out, expected);
        assert_eq!(latency.count(), 6);
    }

    #[test]
    fn an_unlabelled_histogram_names_only_le() {
        let histogram = Histogram::new(LATENCY_BUCKETS);
        let mut out = String::new();
        histogram.write_samples(&mut out, "h", "");
        assert!(out.starts_with("h_bucket{le=\"0.005\"} 0\n"), "{out}");
        assert!(out.ends_with("h_sum{} 0\nh_count{} 0\n"), "{out}");
    }
}
