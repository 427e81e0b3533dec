//! The bounded record buffer a sidecar keeps until the control plane takes it (ported
//! from `tests/unit/proxy/test_telemetry.py`).

use super::*;

fn rec(n: usize) -> Record {
    Record {
        ts: 1000.0 + n as f64,
        direction: Direction::Outbound,
        source: "web".into(),
        destination: "catalog".into(),
        version: "v1".into(),
        instance: "catalog-v1-1".into(),
        status: 200,
        latency_ms: 1.5,
        method: "GET".into(),
        path: format!("/items/{n}"),
        error: None,
        fault: None,
        retries: 0,
        trace_id: None,
        span_id: None,
        parent_id: None,
        mtls: false,
        authz: None,
    }
}

fn ids(records: &[Record]) -> Vec<usize> {
    records
        .iter()
        .map(|r| r.path.rsplit('/').next().unwrap().parse().unwrap())
        .collect()
}

fn filled(capacity: usize, count: usize) -> TelemetryBuffer {
    let mut buffer = TelemetryBuffer::new(capacity);
    for n in 0..count {
        buffer.add(rec(n));
    }
    buffer
}

#[test]
fn take_hands_out_the_oldest_first_and_removes_them() {
    let mut buffer = filled(10, 5);
    assert_eq!(ids(&buffer.take(3)), [0, 1, 2]);
    assert_eq!(buffer.len(), 2);
    assert_eq!(ids(&buffer.take(100)), [3, 4]);
    assert_eq!(buffer.len(), 0);
    assert!(buffer.is_empty());
    assert_eq!(buffer.take(5), []);
}

#[test]
fn when_full_the_oldest_are_dropped_and_counted() {
    let mut buffer = filled(3, 7);
    assert_eq!(buffer.dropped, 4);
    assert_eq!(buffer.len(), 3);
    assert_eq!(ids(&buffer.take(10)), [4, 5, 6]);
}

#[test]
fn nothing_is_dropped_up_to_capacity() {
    let mut buffer = filled(3, 3);
    assert_eq!(buffer.dropped, 0);
    assert_eq!(ids(&buffer.take(10)), [0, 1, 2]);
}

#[test]
fn a_buffer_of_no_capacity_counts_every_record_as_dropped() {
    let mut buffer = filled(0, 2);
    assert_eq!((buffer.len(), buffer.dropped), (0, 2));
    buffer.put_back(vec![rec(9)]);
    assert_eq!((buffer.len(), buffer.dropped), (0, 3));
}

#[test]
fn put_back_returns_records_to_the_front_in_their_order() {
    let mut buffer = filled(10, 5);
    let batch = buffer.take(3);
    buffer.add(rec(5));
    buffer.put_back(batch);
    assert_eq!(buffer.dropped, 0);
    assert_eq!(ids(&buffer.take(10)), [0, 1, 2, 3, 4, 5]);
}

#[test]
fn put_back_into_a_full_buffer_drops_and_counts_what_does_not_fit() {
    let mut buffer = filled(4, 4);
    let batch = buffer.take(3); // [0, 1, 2] out, [3] left
    for n in [10, 11] {
        buffer.add(rec(n)); // [3, 10, 11]: one free slot
    }
    buffer.put_back(batch);
    assert_eq!(buffer.len(), 4);
    assert_eq!(
        ids(&buffer.take(10)),
        [2, 3, 10, 11],
        "the newest of the returned batch fills the free slot"
    );
    assert_eq!(
        buffer.dropped, 2,
        "records 0 and 1 did not fit and must be counted as dropped"
    );
}

#[test]
fn records_go_to_the_wire_as_plain_objects() {
    let wire = rec(1).to_wire();
    assert_eq!(wire["path"], "/items/1");
    assert!(wire["error"].is_null());
    assert_eq!(wire["direction"], "outbound");
    assert_eq!(wire["status"], 200);
    let mut keys: Vec<&str> = wire
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected = [
        "ts",
        "direction",
        "source",
        "destination",
        "version",
        "instance",
        "status",
        "latency_ms",
        "method",
        "path",
        "error",
        "fault",
        "retries",
        "trace_id",
        "span_id",
        "parent_id",
        "mtls",
        "authz",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    let back: Record = serde_json::from_value(wire).unwrap();
    assert_eq!(back, rec(1));
}

#[test]
fn a_record_carries_at_most_256_characters_of_path() {
    assert_eq!(record_path("/short"), "/short");
    let long = format!("/{}", "é".repeat(300));
    let cut = record_path(&long);
    assert_eq!(cut.chars().count(), MAX_PATH_IN_RECORD);
    assert!(long.starts_with(cut));
    let exact = "x".repeat(MAX_PATH_IN_RECORD);
    assert_eq!(record_path(&exact), exact);
}
