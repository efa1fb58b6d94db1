//! How large a worker's profile and labels may be, defined once for every place that accepts
//! them (registrar, control plane, heartbeat gateway, token creation, relabelling).
//!
//! Profiles and labels reach Raft, every liveness batch and every `ListWorkers` page, so an
//! unbounded one lets a single worker grow the log and break batches for a whole gateway.
//! The limits follow Kubernetes labels where they have a counterpart (`prefix/name` keys with
//! a name of at most 63 bytes and a DNS prefix of at most 253). Each refusal is a
//! [`LimitError`] that names the limit it broke; callers turn it into `INVALID_ARGUMENT`.

use std::collections::HashMap;

use crate::v1;

/// Most labels one worker, token or label change may carry.
pub const MAX_LABELS: usize = 64;
/// Longest name part of a label key (after the optional `prefix/`).
pub const MAX_LABEL_NAME_BYTES: usize = 63;
/// Longest optional DNS prefix of a label key (before the `/`).
pub const MAX_LABEL_PREFIX_BYTES: usize = 253;
/// Longest label value.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
/// All label keys and values and every profile string together.
pub const MAX_PROFILE_BYTES: usize = 8 * 1024;
/// A hostname is 1 to this many bytes (DNS).
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// Longest `os`, `arch` and `version` of a profile.
pub const MAX_PROFILE_FIELD_BYTES: usize = 128;
/// Most capacity entries in a profile.
pub const MAX_CAPACITY_ENTRIES: usize = 32;
/// Largest `StatusReport` a gateway decodes: twice what the biggest valid profile encodes to,
/// so every valid report fits and an oversize one is cut before it is buffered.
pub const MAX_STATUS_REPORT_BYTES: usize = 2 * MAX_PROFILE_BYTES;

/// Longest certificate serial, in hex, a registrar may record or present: RFC 5280 serials are
/// at most 20 octets. (The serials travel in Raft entries, so they are bounded too.)
pub const MAX_CERT_SERIAL_HEX: usize = 40;

/// Largest worker CA certificate (PEM) a registrar or an operator may hand the control plane:
/// it is stored in Raft and sent to every gateway. A P-256 CA is under 1 KiB, an RSA-4096 one
/// about 2 KiB.
pub const MAX_CA_CERT_PEM_BYTES: usize = 16 * 1024;
/// The longest drain deadline an operator may set (`DrainWorker.deadline_seconds`): a year.
pub const MAX_DRAIN_DEADLINE_SECONDS: u64 = 365 * 24 * 3600;

/// Which limit an input broke; the message names the field and the limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{field} has {count} entries; the limit is {limit} (max_labels)", limit = MAX_LABELS)]
    TooManyLabels { field: &'static str, count: usize },
    #[error("{field} key {key:?} is invalid: {reason} (label_key)")]
    BadKey { field: &'static str, key: String, reason: &'static str },
    #[error(
        "{field} key {key:?} has a {len}-byte name; the limit is {limit} (max_label_name_bytes)",
        key = truncated(key), limit = MAX_LABEL_NAME_BYTES
    )]
    KeyNameTooLong { field: &'static str, key: String, len: usize },
    #[error(
        "{field} key {key:?} has a {len}-byte prefix; the limit is {limit} (max_label_prefix_bytes)",
        key = truncated(key), limit = MAX_LABEL_PREFIX_BYTES
    )]
    KeyPrefixTooLong { field: &'static str, key: String, len: usize },
    #[error(
        "{field} value of {key:?} is {len} bytes; the limit is {limit} (max_label_value_bytes)",
        key = truncated(key), limit = MAX_LABEL_VALUE_BYTES
    )]
    ValueTooLong { field: &'static str, key: String, len: usize },
    #[error("profile.hostname is {len} bytes; it must be 1 to {limit} (max_hostname_bytes)", limit = MAX_HOSTNAME_BYTES)]
    Hostname { len: usize },
    #[error("{field} is {len} bytes; the limit is {limit} (max_profile_field_bytes)", limit = MAX_PROFILE_FIELD_BYTES)]
    FieldTooLong { field: &'static str, len: usize },
    #[error(
        "profile.capacity has {count} entries; the limit is {limit} (max_capacity_entries)",
        limit = MAX_CAPACITY_ENTRIES
    )]
    TooManyCapacities { count: usize },
    #[error("{field} adds up to {total} bytes; the limit is {limit} (max_profile_bytes)", limit = MAX_PROFILE_BYTES)]
    TooLarge { field: &'static str, total: usize },
}

impl LimitError {
    /// The name of the limit broken, as the docs and messages spell it.
    pub fn limit(&self) -> &'static str {
        match self {
            LimitError::TooManyLabels { .. } => "max_labels",
            LimitError::BadKey { .. } => "label_key",
            LimitError::KeyNameTooLong { .. } => "max_label_name_bytes",
            LimitError::KeyPrefixTooLong { .. } => "max_label_prefix_bytes",
            LimitError::ValueTooLong { .. } => "max_label_value_bytes",
            LimitError::Hostname { .. } => "max_hostname_bytes",
            LimitError::FieldTooLong { .. } => "max_profile_field_bytes",
            LimitError::TooManyCapacities { .. } => "max_capacity_entries",
            LimitError::TooLarge { .. } => "max_profile_bytes",
        }
    }
}

/// A key quoted in an error stays short however long the key was.
fn truncated(key: &str) -> String {
    const SHOWN: usize = 40;
    match key.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}...", &key[..end]),
        None => key.to_string(),
    }
}

/// Checks one label key: `name` or `prefix/name`, no `=`, `,`, whitespace or control
/// characters (they break `k=v,k=v` parsing and terminals).
pub fn validate_key(field: &'static str, key: &str) -> Result<(), LimitError> {
    let bad = |reason| LimitError::BadKey { field, key: truncated(key), reason };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(bad("the prefix before '/' is empty"));
        }
        if prefix.len() > MAX_LABEL_PREFIX_BYTES {
            return Err(LimitError::KeyPrefixTooLong { field, key: key.to_string(), len: prefix.len() });
        }
    }
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    if name.len() > MAX_LABEL_NAME_BYTES {
        return Err(LimitError::KeyNameTooLong { field, key: key.to_string(), len: name.len() });
    }
    if name.contains('/') {
        return Err(bad("only one '/' may separate prefix and name"));
    }
    if key.chars().any(|c| c == '=' || c == ',' || c.is_whitespace() || c.is_control()) {
        return Err(bad("no '=', ',', whitespace or control characters"));
    }
    Ok(())
}

/// Checks one label; returns the bytes it counts toward [`MAX_PROFILE_BYTES`].
pub fn validate_label(field: &'static str, key: &str, value: &str) -> Result<usize, LimitError> {
    validate_key(field, key)?;
    if value.len() > MAX_LABEL_VALUE_BYTES {
        return Err(LimitError::ValueTooLong { field, key: key.to_string(), len: value.len() });
    }
    Ok(key.len() + value.len())
}

/// Checks a whole label set (a profile's, a token's, or what a relabel leaves).
pub fn validate_labels(field: &'static str, labels: &HashMap<String, String>) -> Result<(), LimitError> {
    labels_bytes(field, labels).map(|_| ())
}

fn labels_bytes(field: &'static str, labels: &HashMap<String, String>) -> Result<usize, LimitError> {
    if labels.len() > MAX_LABELS {
        return Err(LimitError::TooManyLabels { field, count: labels.len() });
    }
    let mut total = 0;
    for (key, value) in labels {
        total += validate_label(field, key, value)?;
    }
    if total > MAX_PROFILE_BYTES {
        return Err(LimitError::TooLarge { field, total });
    }
    Ok(total)
}

/// Checks a worker profile: hostname, the short strings, capacity, labels, and all of it
/// together.
pub fn validate_profile(profile: &v1::WorkerProfile) -> Result<(), LimitError> {
    let hostname = profile.hostname.len();
    if hostname == 0 || hostname > MAX_HOSTNAME_BYTES {
        return Err(LimitError::Hostname { len: hostname });
    }
    for (field, value) in
        [("profile.os", &profile.os), ("profile.arch", &profile.arch), ("profile.version", &profile.version)]
    {
        if value.len() > MAX_PROFILE_FIELD_BYTES {
            return Err(LimitError::FieldTooLong { field, len: value.len() });
        }
    }
    if profile.capacity.len() > MAX_CAPACITY_ENTRIES {
        return Err(LimitError::TooManyCapacities { count: profile.capacity.len() });
    }
    let mut total = hostname + profile.os.len() + profile.arch.len() + profile.version.len();
    for key in profile.capacity.keys() {
        validate_key("profile.capacity", key)?;
        total += key.len() + 8;
    }
    total += labels_bytes("profile.labels", &profile.labels)?;
    if total > MAX_PROFILE_BYTES {
        return Err(LimitError::TooLarge { field: "profile", total });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn profile(labels: &[(&str, &str)]) -> v1::WorkerProfile {
        v1::WorkerProfile {
            hostname: "node-1".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            capacity: HashMap::from([("cpu_millis".into(), 4_000)]),
            version: "0.1.0".into(),
        }
    }

    fn many(count: usize, value_len: usize) -> HashMap<String, String> {
        (0..count).map(|i| (format!("k{i}"), "v".repeat(value_len))).collect()
    }

    #[test]
    fn ordinary_profiles_and_kubernetes_style_keys_pass() {
        let keys = [("zone", "a"), ("example.com/tier", "gpu"), ("rack", "")];
        assert_eq!(validate_profile(&profile(&keys)), Ok(()));
        let name = "n".repeat(MAX_LABEL_NAME_BYTES);
        let prefixed = format!("{}/{name}", "p".repeat(MAX_LABEL_PREFIX_BYTES));
        assert_eq!(validate_label("labels", &prefixed, &"v".repeat(MAX_LABEL_VALUE_BYTES)).map(|_| ()), Ok(()));
        assert_eq!(validate_labels("labels", &many(MAX_LABELS, 100)), Ok(()));
    }

    #[test]
    fn each_limit_is_named_in_its_refusal() {
        let cases: Vec<(Result<(), LimitError>, &str)> = vec![
            (validate_labels("labels", &many(MAX_LABELS + 1, 1)), "max_labels"),
            (validate_key("labels", &"n".repeat(MAX_LABEL_NAME_BYTES + 1)), "max_label_name_bytes"),
            (validate_key("labels", &format!("{}/n", "p".repeat(254))), "max_label_prefix_bytes"),
            (validate_label("labels", "k", &"v".repeat(257)).map(|_| ()), "max_label_value_bytes"),
            (validate_labels("labels", &many(MAX_LABELS, MAX_LABEL_VALUE_BYTES)), "max_profile_bytes"),
            (validate_key("labels", "a=b"), "label_key"),
            (validate_key("labels", ""), "label_key"),
            (validate_key("labels", "/x"), "label_key"),
            (validate_key("labels", "a/b/c"), "label_key"),
            (validate_key("labels", "line\nbreak"), "label_key"),
        ];
        for (result, limit) in cases {
            let err = result.expect_err(limit);
            assert_eq!(err.limit(), limit, "{err}");
            assert!(err.to_string().contains(limit), "{err}");
        }
    }

    #[test]
    fn profile_strings_are_bounded() {
        let mut p = profile(&[]);
        p.hostname.clear();
        assert_eq!(validate_profile(&p).unwrap_err().limit(), "max_hostname_bytes");
        p.hostname = "h".repeat(254);
        assert_eq!(validate_profile(&p).unwrap_err().limit(), "max_hostname_bytes");
        let mut p = profile(&[]);
        p.version = "v".repeat(MAX_PROFILE_FIELD_BYTES + 1);
        let err = validate_profile(&p).unwrap_err();
        assert!(err.to_string().contains("profile.version"), "{err}");
        let mut p = profile(&[]);
        p.capacity = (0..=MAX_CAPACITY_ENTRIES).map(|i| (format!("r{i}"), 1)).collect();
        assert_eq!(validate_profile(&p).unwrap_err().limit(), "max_capacity_entries");
    }

    #[test]
    fn labels_and_strings_together_are_bounded() {
        let mut p = profile(&[]);
        // 31 labels of ~260 bytes: under the label count, over the total with the hostname.
        p.labels = many(31, MAX_LABEL_VALUE_BYTES);
        p.hostname = "h".repeat(MAX_HOSTNAME_BYTES);
        assert_eq!(validate_profile(&p).unwrap_err().limit(), "max_profile_bytes");
    }

    #[test]
    fn a_long_key_is_quoted_short() {
        let err = validate_key("labels", &"x".repeat(70_000)).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn the_largest_valid_profile_fits_in_a_status_report() {
        let mut p = profile(&[]);
        p.hostname = "h".repeat(MAX_HOSTNAME_BYTES);
        p.os = "o".repeat(MAX_PROFILE_FIELD_BYTES);
        p.arch = "a".repeat(MAX_PROFILE_FIELD_BYTES);
        p.version = "v".repeat(MAX_PROFILE_FIELD_BYTES);
        p.capacity = (0..MAX_CAPACITY_ENTRIES).map(|i| (format!("r{i:02}"), u64::MAX)).collect();
        let used =
            p.hostname.len() + 3 * MAX_PROFILE_FIELD_BYTES + p.capacity.keys().map(|k| k.len() + 8).sum::<usize>();
        // Fill the rest of the byte budget with as many labels as it allows.
        let mut room = MAX_PROFILE_BYTES - used;
        for i in 0..MAX_LABELS {
            let key = format!("k{i:02}");
            if room < key.len() {
                break;
            }
            let value_len = MAX_LABEL_VALUE_BYTES.min(room - key.len());
            room -= key.len() + value_len;
            p.labels.insert(key, "v".repeat(value_len));
        }
        assert_eq!(validate_profile(&p), Ok(()));
        let report = v1::StatusReport {
            sequence: u64::MAX,
            state: 1,
            full: true,
            profile: Some(p),
            gateways_epoch: u64::MAX,
            drained: true,
        };
        assert!(report.encoded_len() <= MAX_STATUS_REPORT_BYTES, "{} bytes", report.encoded_len());
    }
}
