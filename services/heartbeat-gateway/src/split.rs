//! Cuts one round of beats into `ReportLivenessRequest`s that each stay under a byte budget.
//! A single request grew past the leader's message limit once (full reports with large
//! profiles); the leader refused it, and every retry carried the same beats again. Sizes are
//! prost's `encoded_len`, so the budget holds for the bytes on the wire.

use muster_proto::v1;
use prost::Message;

/// What one beat adds to a request: field 3's tag, the length prefix and the beat.
fn beat_bytes(beat: &v1::WorkerBeat) -> usize {
    let len = beat.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// The requests for `beats`, each `header` plus as many beats as fit in `max_bytes`; always
/// at least one (an empty round still registers the gateway). A beat too large on its own
/// goes without its profile (the beat itself is what keeps the lease).
pub fn split_beats(
    header: v1::ReportLivenessRequest,
    beats: Vec<v1::WorkerBeat>,
    max_bytes: usize,
) -> Vec<v1::ReportLivenessRequest> {
    let base = header.encoded_len();
    let room = max_bytes.saturating_sub(base);
    let mut requests = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for mut beat in beats {
        let mut size = beat_bytes(&beat);
        if size > room && beat.profile.is_some() {
            tracing::warn!(
                worker_id = beat.worker_id,
                bytes = size,
                "a beat is too large to forward; dropping its profile"
            );
            beat.profile = None;
            size = beat_bytes(&beat);
        }
        if used + size > room && !current.is_empty() {
            requests.push(v1::ReportLivenessRequest { beats: std::mem::take(&mut current), ..header.clone() });
            used = 0;
        }
        used += size;
        current.push(beat);
    }
    if !current.is_empty() || requests.is_empty() {
        requests.push(v1::ReportLivenessRequest { beats: current, ..header });
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> v1::ReportLivenessRequest {
        v1::ReportLivenessRequest {
            gateway_id: "gw-1".into(),
            gateway_addr: "127.0.0.1:3671".into(),
            connected_workers: 20,
            budget_per_second: 50.0,
            ..Default::default()
        }
    }

    fn beat(worker_id: u64, label_bytes: usize) -> v1::WorkerBeat {
        let profile = (label_bytes > 0).then(|| v1::WorkerProfile {
            hostname: format!("node-{worker_id}"),
            labels: [("big".to_string(), "x".repeat(label_bytes))].into(),
            ..Default::default()
        });
        v1::WorkerBeat {
            worker_id,
            ttl_ms: 10_000,
            age_ms: 5,
            reported_state: 1,
            profile,
            cert_serial: "ab".into(),
            drained: false,
        }
    }

    #[test]
    fn an_empty_round_is_one_request_with_the_header() {
        let requests = split_beats(header(), Vec::new(), 1024);
        assert_eq!(requests, vec![header()]);
    }

    #[test]
    fn every_request_stays_under_the_budget_and_every_beat_goes_once() {
        let beats: Vec<_> = (1..=20).map(|id| beat(id, 8_000)).collect();
        let requests = split_beats(header(), beats, 32 * 1024);
        assert!(requests.len() >= 5, "{} requests", requests.len());
        for request in &requests {
            assert!(request.encoded_len() <= 32 * 1024, "{} bytes", request.encoded_len());
            assert_eq!(request.gateway_id, "gw-1");
            assert_eq!(request.connected_workers, 20);
        }
        let mut ids: Vec<u64> = requests.iter().flat_map(|r| r.beats.iter().map(|b| b.worker_id)).collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=20).collect::<Vec<_>>());
        assert!(requests.iter().flat_map(|r| &r.beats).all(|b| b.profile.is_some()));
    }

    #[test]
    fn small_beats_share_one_request() {
        let beats: Vec<_> = (1..=1_000).map(|id| beat(id, 0)).collect();
        let requests = split_beats(header(), beats, 1024 * 1024);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].beats.len(), 1_000);
    }

    #[test]
    fn a_beat_too_large_alone_loses_its_profile_but_is_sent() {
        let requests = split_beats(header(), vec![beat(1, 1), beat(2, 50_000)], 4 * 1024);
        let sent: Vec<_> = requests.iter().flat_map(|r| &r.beats).collect();
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().find(|b| b.worker_id == 2).unwrap().profile.is_none());
        assert!(sent.iter().find(|b| b.worker_id == 1).unwrap().profile.is_some());
        assert!(requests.iter().all(|r| r.encoded_len() <= 4 * 1024));
    }
}
