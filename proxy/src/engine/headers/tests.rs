//! What a sidecar forwards of a request's or a response's headers (ported from
//! `tests/unit/proxy/test_headers.py`). A `HeaderMap` keeps no case, so the Python's
//! "whatever their case" cases are about the names given in `Connection`.

use std::collections::BTreeSet;
use std::convert::Infallible;

use rand::rngs::StdRng;
use rand::{SeedableRng, TryRng};

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn names(h: &HeaderMap) -> BTreeSet<String> {
    h.keys().map(|n| n.as_str().to_owned()).collect()
}

fn all<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

#[test]
fn each_hop_by_hop_header_is_removed() {
    for name in HOP_BY_HOP {
        let out = forwardable(&headers(&[(name, "x"), ("Accept", "text/plain")]), false);
        assert!(!names(&out).contains(name), "{name}");
        assert_eq!(out["accept"], "text/plain");
    }
}

#[test]
fn end_to_end_headers_are_kept_with_their_order_and_repeats() {
    let h = headers(&[
        ("Accept", "a"),
        ("Set-Cookie", "1"),
        ("Set-Cookie", "2"),
        ("X-Thing", "t"),
    ]);
    let out = forwardable(&h, false);
    let pairs = |m: &HeaderMap| {
        m.iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(pairs(&out), pairs(&h));
}

#[test]
fn headers_named_by_connection_are_removed_whatever_their_case() {
    let h = headers(&[
        ("Connection", "X-Custom"),
        ("x-custom", "secret"),
        ("Accept", "a"),
    ]);
    let out = forwardable(&h, false);
    assert!(!names(&out).contains("x-custom"));
    assert_eq!(out["accept"], "a");
}

#[test]
fn connection_may_name_several_headers_in_a_comma_list() {
    let h = headers(&[
        ("Connection", " x-one ,X-Two,, keep-alive "),
        ("X-One", "1"),
        ("X-Two", "2"),
        ("X-Three", "3"),
    ]);
    assert_eq!(names(&forwardable(&h, false)), set(&["x-three"]));
}

#[test]
fn every_connection_header_counts_when_there_are_several() {
    let h = headers(&[
        ("Connection", "x-one"),
        ("Connection", "X-TWO"),
        ("X-One", "1"),
        ("x-two", "2"),
        ("X-Kept", "k"),
    ]);
    assert_eq!(names(&forwardable(&h, false)), set(&["x-kept"]));
}

#[test]
fn works_on_a_borrowed_map_and_in_place() {
    let h = headers(&[("Connection", "x-a"), ("X-A", "1"), ("X-B", "2")]);
    assert_eq!(names(&forwardable(&h, false)), set(&["x-b"]));
    let mut owned = h.clone();
    make_forwardable(&mut owned, false);
    assert_eq!(names(&owned), set(&["x-b"]));
}

#[test]
fn mesh_headers_are_kept_by_default() {
    let h = headers(&[("X-Devmesh-Source", "web"), ("x-devmesh-other", "o")]);
    assert_eq!(
        names(&forwardable(&h, false)),
        set(&["x-devmesh-source", "x-devmesh-other"])
    );
}

#[test]
fn mesh_headers_are_dropped_with_drop_mesh_in_any_case() {
    let h = headers(&[
        ("X-DevMesh-Source", "forged"),
        ("x-devmesh-error", "e"),
        ("X-Devmeshy", "keep"),
    ]);
    assert_eq!(names(&forwardable(&h, true)), set(&["x-devmeshy"]));
}

#[test]
fn forwardable_returns_a_copy() {
    let h = headers(&[("Connection", "close"), ("Accept", "a")]);
    let mut out = forwardable(&h, false);
    out.insert("added", HeaderValue::from_static("1"));
    assert_eq!(names(&h), set(&["connection", "accept"]));
}

#[test]
fn forwarded_for_is_set_when_absent() {
    let mut h = headers(&[("Accept", "a")]);
    append_forwarded_for(&mut h, Some("10.0.0.1"));
    assert_eq!(all(&h, "x-forwarded-for"), ["10.0.0.1"]);
}

#[test]
fn forwarded_for_is_appended_once_to_an_existing_list() {
    let mut h = headers(&[
        ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
        ("x-forwarded-for", "3.3.3.3"),
    ]);
    append_forwarded_for(&mut h, Some("10.0.0.1"));
    assert_eq!(
        all(&h, "x-forwarded-for"),
        ["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"]
    );
}

#[test]
fn forwarded_for_is_untouched_without_a_peer() {
    for peer in [None, Some(""), Some("bad\npeer")] {
        let mut h = headers(&[("X-Forwarded-For", "1.1.1.1")]);
        append_forwarded_for(&mut h, peer);
        assert_eq!(all(&h, "x-forwarded-for"), ["1.1.1.1"], "{peer:?}");
    }
}

#[test]
fn without_removes_every_occurrence() {
    let mut h = headers(&[("A", "1"), ("a", "2"), ("B", "3")]);
    without(&mut h, ["A", "missing", "not a name"]);
    assert_eq!(names(&h), set(&["b"]));
}

#[test]
fn a_hop_starts_a_trace_and_a_request_id_when_there_are_none() {
    let mut h = HeaderMap::new();
    let hop = trace_hop(&mut h, &mut rng());
    let traceparent = h["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts,
        ["00", hop.trace_id.as_str(), hop.span_id.as_str(), "01"]
    );
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16));
    assert_eq!(hop.parent_id, None, "the trace starts here");
    assert_eq!(h["x-request-id"].len(), 36);
}

#[test]
fn a_hop_keeps_the_trace_and_request_id_and_becomes_the_parent() {
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut h = headers(&[("traceparent", incoming), ("X-Request-Id", "abc")]);
    let hop = trace_hop(&mut h, &mut rng());
    assert_eq!(
        (hop.trace_id.as_str(), hop.parent_id.as_deref()),
        ("0af7651916cd43dd8448eb211c80319c", Some("b7ad6b7169203331"))
    );
    assert_eq!(h.get_all("traceparent").iter().count(), 1, "exactly one");
    assert_eq!(
        h["traceparent"],
        format!("00-0af7651916cd43dd8448eb211c80319c-{}-01", hop.span_id)
    );
    assert_ne!(
        hop.span_id, "b7ad6b7169203331",
        "a new span, the next hop's parent"
    );
    assert_eq!(h["x-request-id"], "abc");
}

#[test]
fn a_malformed_traceparent_starts_a_new_trace() {
    let zeros = format!("00-{}-b7ad6b7169203331-01", "0".repeat(32));
    let ff = format!("ff-{}-{}-01", "a".repeat(32), "b".repeat(16));
    let zero_parent = format!("00-{}-{}-01", "a".repeat(32), "0".repeat(16));
    let not_hex = format!("00-{}-{}-01", "g".repeat(32), "b".repeat(16));
    let five = format!("00-{}-{}-01-x", "a".repeat(32), "b".repeat(16));
    for bad in ["junk", &zeros, &ff, &zero_parent, &not_hex, &five] {
        let mut h = headers(&[("traceparent", bad)]);
        let hop = trace_hop(&mut h, &mut rng());
        assert_ne!(h["traceparent"], bad);
        assert!(!bad.contains(&hop.trace_id), "{bad}");
        assert_eq!(hop.parent_id, None, "{bad}");
    }
}

#[test]
fn a_traceparent_is_read_in_any_case_and_repeats_become_one() {
    let mut h = headers(&[
        (
            "traceparent",
            " 00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-03 ",
        ),
        (
            "traceparent",
            "00-11111111111111111111111111111111-2222222222222222-01",
        ),
    ]);
    let hop = trace_hop(&mut h, &mut rng());
    assert_eq!(hop.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(hop.parent_id.as_deref(), Some("b7ad6b7169203331"));
    assert_eq!(all(&h, "traceparent").len(), 1);
    assert!(
        all(&h, "traceparent")[0].ends_with("-03"),
        "the flags are kept"
    );
}

#[test]
fn an_empty_request_id_is_replaced() {
    let mut h = headers(&[("x-request-id", "")]);
    trace_hop(&mut h, &mut rng());
    assert_eq!(h["x-request-id"].len(), 36);
}

/// A generator of zeros: the ids it would make are all zero, which W3C forbids.
struct Zeros;

impl TryRng for Zeros {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(0)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.fill(0);
        Ok(())
    }
}

#[test]
fn an_all_zero_draw_makes_ids_of_one() {
    let mut h = HeaderMap::new();
    let hop = trace_hop(&mut h, &mut Zeros);
    assert_eq!(hop.span_id, "0000000000000001");
    assert_eq!(hop.trace_id, format!("{}1", "0".repeat(31)));
    assert_eq!(h["x-request-id"], "00000000-0000-4000-8000-000000000000");
}

#[test]
fn a_request_id_is_a_uuid_4() {
    assert_eq!(uuid4(u128::MAX), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    assert_eq!(
        uuid4(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        "01234567-89ab-4def-8123-456789abcdef"
    );
}

#[test]
fn header_safe_keeps_printable_ascii_within_the_limit() {
    assert_eq!(header_safe("/a b~", HEADER_SAFE_LIMIT), "/a b~");
    assert_eq!(
        header_safe("/x\r\nSet-Cookie: é\t", HEADER_SAFE_LIMIT),
        "/x??Set-Cookie: ??"
    );
    assert_eq!(
        header_safe(&"é".repeat(600), HEADER_SAFE_LIMIT),
        "?".repeat(512)
    );
    assert_eq!(header_safe("abcdef", 3), "abc");
}
