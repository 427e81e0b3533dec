//! The cases of tests/unit/proxy/test_faults.py (the deciding and wire parts; pacing and
//! hangs belong to the engine). Statistical tests use seeded randomness, so they are
//! deterministic; their tolerances hold for any seed (about 4 standard deviations).

use super::*;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

type Pairs = Vec<(&'static str, &'static str)>;

fn get() -> RequestInfo<'static, Pairs> {
    static NONE: Pairs = Vec::new();
    RequestInfo {
        method: "GET",
        path: "/items/42",
        headers: &NONE,
        source: Some("frontend"),
    }
}

fn sequence(values: &[f64]) -> impl FnMut() -> f64 + '_ {
    let mut it = values.iter();
    move || *it.next().expect("rand was called more often than expected")
}

fn no_dice() -> f64 {
    panic!("rand was called")
}

fn seeded(seed: u64) -> impl FnMut() -> f64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    move || rng.random::<f64>()
}

fn fraction(hits: usize, n: usize) -> f64 {
    100.0 * hits as f64 / n as f64
}

/// A fault from its wire form (`id` "f" unless given).
fn fault(wire: Value) -> Fault {
    let mut obj = wire.as_object().cloned().unwrap_or_default();
    obj.entry("id").or_insert_with(|| json!("f"));
    parse_fault(&Value::Object(obj), "fault").expect("a valid fault")
}

fn refused(wire: Value) -> FaultError {
    let mut obj = wire.as_object().cloned().unwrap_or_default();
    obj.entry("id").or_insert_with(|| json!("f"));
    match parse_fault(&Value::Object(obj), "fault") {
        Ok(f) => panic!("accepted {f:?}"),
        Err(e) => e,
    }
}

fn matcher(wire: Value) -> Match {
    fault(json!({"match": wire, "delay": 1})).matcher
}

fn match_error(wire: Value) -> String {
    let e = refused(json!({"match": wire, "delay": 1}));
    e.to_string()
        .strip_prefix("fault.match.")
        .expect("an error in the match")
        .to_owned()
}

fn matches(
    m: &Match,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    src: Option<&str>,
) -> bool {
    m.matches(method, path, headers, src)
}

fn decision(fired: &[&str]) -> Decision {
    Decision {
        fired: fired.iter().map(|s| s.to_string()).collect(),
        ..Decision::default()
    }
}

// -- matching ------------------------------------------------------------------------------

#[test]
fn an_empty_match_matches_every_request() {
    let m = Match::default();
    assert!(matches(&m, "DELETE", "/", &[], None));
    assert!(matches(
        &m,
        "GET",
        "/anything/at/all?x=1",
        &[("x", "y")],
        Some("frontend")
    ));
}

#[test]
fn path_prefix_is_a_plain_string_prefix_as_in_istio() {
    let m = matcher(json!({"path_prefix": "/items"}));
    for (path, expected) in [
        ("/items", true),
        ("/items/42", true),
        ("/itemsx", true),
        ("/item", false),
        ("/", false),
    ] {
        assert_eq!(matches(&m, "GET", path, &[], None), expected, "{path}");
    }
}

#[test]
fn method_compares_case_insensitively() {
    for method in ["GET", "get", "Get"] {
        assert!(matches(
            &matcher(json!({"method": "get"})),
            method,
            "/",
            &[],
            None
        ));
        assert!(matches(
            &matcher(json!({"method": "GET"})),
            method,
            "/",
            &[],
            None
        ));
        assert!(!matches(
            &matcher(json!({"method": "POST"})),
            method,
            "/",
            &[],
            None
        ));
    }
}

#[test]
fn source_is_the_calling_service_exactly() {
    let m = matcher(json!({"source": "frontend"}));
    assert!(matches(&m, "GET", "/", &[], Some("frontend")));
    assert!(!matches(&m, "GET", "/", &[], Some("catalog")));
    assert!(!matches(&m, "GET", "/", &[], None));
}

#[test]
fn header_names_are_case_insensitive_and_values_exact() {
    let m = matcher(json!({"headers": {"X-Env": "dev"}}));
    assert!(matches(&m, "GET", "/", &[("x-env", "dev")], None));
    assert!(matches(&m, "GET", "/", &[("X-ENV", "dev")], None));
    assert!(!matches(&m, "GET", "/", &[("x-env", "Dev")], None));
    assert!(!matches(&m, "GET", "/", &[("x-env", "dev ")], None));
    assert!(!matches(&m, "GET", "/", &[], None));
}

#[test]
fn every_header_must_match() {
    let m = matcher(json!({"headers": {"x-env": "dev", "x-user": "ann"}}));
    let all = [("x-env", "dev"), ("x-user", "ann"), ("other", "1")];
    assert!(matches(&m, "GET", "/", &all, None));
    assert!(!matches(&m, "GET", "/", &[("x-env", "dev")], None));
    assert!(!matches(
        &m,
        "GET",
        "/",
        &[("x-env", "dev"), ("x-user", "bob")],
        None
    ));
}

#[test]
fn headers_as_hyper_gives_them_including_a_repeated_header() {
    let mut headers = http::HeaderMap::new();
    headers.append("X-Env", "prod".parse().unwrap());
    headers.append("x-env", "dev".parse().unwrap());
    headers.append("Host", "c".parse().unwrap());
    let m = |h: Value| matcher(json!({"headers": h}));
    assert!(m(json!({"x-env": "dev"})).matches("GET", "/", &headers, None));
    assert!(m(json!({"X-ENV": "prod"})).matches("GET", "/", &headers, None));
    assert!(!m(json!({"x-env": "test"})).matches("GET", "/", &headers, None));
}

#[test]
fn a_repeated_header_in_a_plain_list_of_pairs_also_matches() {
    let m = matcher(json!({"headers": {"x-env": "dev"}}));
    assert!(matches(
        &m,
        "GET",
        "/",
        &[("X-Env", "prod"), ("X-Env", "dev")],
        None
    ));
}

#[test]
fn all_conditions_of_a_match_must_hold() {
    let m = matcher(
        json!({"path_prefix": "/a", "method": "POST", "headers": {"k": "v"}, "source": "web"}),
    );
    assert!(matches(&m, "POST", "/a/1", &[("k", "v")], Some("web")));
    let kv: &[(&str, &str)] = &[("k", "v")];
    for (method, path, headers, source) in [
        ("GET", "/a/1", kv, "web"),
        ("POST", "/b", kv, "web"),
        ("POST", "/a/1", &[][..], "web"),
        ("POST", "/a/1", kv, "api"),
    ] {
        assert!(!matches(&m, method, path, headers, Some(source)));
    }
}

#[test]
fn a_non_matching_fault_does_not_apply_and_rolls_no_dice() {
    let faults = [
        fault(
            json!({"id": "p", "match": {"path_prefix": "/pricing"}, "delay": 1.0, "delay_percent": 50}),
        ),
        fault(
            json!({"id": "m", "match": {"method": "POST"}, "abort_status": 503, "abort_percent": 50}),
        ),
        fault(json!({"id": "h", "match": {"headers": {"x-env": "prod"}}, "bandwidth": 10})),
    ];
    assert!(decide(&faults, &get(), &mut no_dice, 0.0).is_none());
}

// -- no fault ------------------------------------------------------------------------------

#[test]
fn no_fault_is_the_empty_decision() {
    assert!(Decision::default().is_none());
    assert_eq!(decide(&[], &get(), &mut no_dice, 0.0), Decision::default());
}

#[test]
fn a_fault_that_fires_makes_a_decision_naming_it() {
    let d = decide(
        &[fault(json!({"id": "slow", "delay": 0.25}))],
        &get(),
        &mut no_dice,
        0.0,
    );
    assert!(!d.is_none());
    assert_eq!(
        d,
        Decision {
            delay: 0.25,
            ..decision(&["slow"])
        }
    );
    assert_eq!(d.fired_list(), "slow");
    assert_eq!(d.delay_duration(), std::time::Duration::from_millis(250));
    assert_eq!(d.hang_duration(), None);
}

#[test]
fn the_faults_fired_over_a_call_s_attempts_are_named_once_each() {
    let mut all = vec!["a".to_owned()];
    decision(&["b", "a"]).add_fired_to(&mut all);
    decision(&["c", "b"]).add_fired_to(&mut all);
    assert_eq!(all, ["a", "b", "c"]);
}

#[test]
fn certain_and_impossible_percentages_draw_no_dice() {
    let always = fault(json!({"id": "a", "delay": 0.1, "abort_status": 500}));
    let never = fault(
        json!({"id": "n", "delay": 0.1, "delay_percent": 0, "abort_status": 500, "abort_percent": 0.0}),
    );
    assert_eq!(decide(&[always], &get(), &mut no_dice, 0.0).fired, ["a"]);
    assert!(decide(&[never], &get(), &mut no_dice, 0.0).is_none());
}

#[test]
fn a_roll_fires_below_the_percentage_only() {
    let f = [fault(json!({"abort_status": 503, "abort_percent": 20}))];
    assert_eq!(
        decide(&f, &get(), &mut sequence(&[0.1999]), 0.0).abort_status,
        Some(503)
    );
    assert!(decide(&f, &get(), &mut sequence(&[0.2]), 0.0).is_none());
    assert_eq!(
        decide(&f, &get(), &mut sequence(&[0.0]), 0.0).abort_status,
        Some(503)
    );
}

// -- percentages, statistically ------------------------------------------------------------

const N: usize = 10_000;

#[test]
fn abort_percent_holds_over_10000_requests_within_1_5_points() {
    for percent in [0.5, 20.0, 50.0, 99.5] {
        let mut draw = seeded(1234);
        let f = [fault(
            json!({"abort_status": 503, "abort_percent": percent}),
        )];
        let hits = (0..N)
            .filter(|_| !decide(&f, &get(), &mut draw, 0.0).is_none())
            .count();
        assert!(
            (fraction(hits, N) - percent).abs() <= 1.5,
            "{percent}: {hits}"
        );
    }
}

#[test]
fn delay_percent_holds_over_10000_requests_within_1_5_points() {
    for percent in [0.1, 20.0, 75.0] {
        let mut draw = seeded(99);
        let f = [fault(json!({"delay": 0.05, "delay_percent": percent}))];
        let hits = (0..N)
            .filter(|_| decide(&f, &get(), &mut draw, 0.0).delay > 0.0)
            .count();
        assert!(
            (fraction(hits, N) - percent).abs() <= 1.5,
            "{percent}: {hits}"
        );
    }
}

#[test]
fn delay_and_abort_of_one_fault_are_independent() {
    let mut draw = seeded(7);
    let f = [fault(
        json!({"delay": 0.1, "delay_percent": 30, "abort_status": 500, "abort_percent": 40}),
    )];
    let (mut delayed, mut aborted, mut both) = (0, 0, 0);
    for _ in 0..N {
        let d = decide(&f, &get(), &mut draw, 0.0);
        delayed += usize::from(d.delay > 0.0);
        aborted += usize::from(d.abort_status.is_some());
        both += usize::from(d.delay > 0.0 && d.abort_status.is_some());
    }
    assert!((fraction(delayed, N) - 30.0).abs() <= 1.5);
    assert!((fraction(aborted, N) - 40.0).abs() <= 1.5);
    assert!((fraction(both, N) - 12.0).abs() <= 1.5);
    assert!((100.0 * both as f64 / delayed as f64 - 40.0).abs() <= 3.5);
}

#[test]
fn faults_roll_independently_of_each_other() {
    let mut draw = seeded(11);
    let faults = [
        fault(json!({"id": "a", "abort_status": 500, "abort_percent": 50})),
        fault(json!({"id": "b", "abort_reset": true, "abort_percent": 20})),
    ];
    let (mut by_status, mut by_reset) = (0, 0);
    for _ in 0..N {
        let d = decide(&faults, &get(), &mut draw, 0.0);
        by_status += usize::from(d.abort_status == Some(500));
        by_reset += usize::from(d.abort_reset);
    }
    // the first abort wins: b resets only when a did not fire: 50 % of 20 % = 10 %
    assert!((fraction(by_status, N) - 50.0).abs() <= 1.5);
    assert!((fraction(by_reset, N) - 10.0).abs() <= 1.5);
}

// -- jitter --------------------------------------------------------------------------------

#[test]
fn jitter_spreads_the_delay_uniformly_within_its_bounds() {
    let mut draw = seeded(5);
    let f = [fault(json!({"id": "j", "delay": 0.2, "jitter": 0.05}))];
    let delays: Vec<f64> = (0..N)
        .map(|_| decide(&f, &get(), &mut draw, 0.0).delay)
        .collect();
    let min = delays.iter().copied().fold(f64::INFINITY, f64::min);
    let max = delays.iter().copied().fold(0.0, f64::max);
    assert!(min >= 0.15 && max <= 0.25, "{min} {max}");
    assert!(min < 0.151 && max > 0.249, "{min} {max}");
    assert!((delays.iter().sum::<f64>() / N as f64 - 0.2).abs() <= 0.002);
    let lower_half = delays.iter().filter(|d| **d < 0.2).count();
    assert!((fraction(lower_half, N) - 50.0).abs() <= 1.5);
}

#[test]
fn jitter_never_takes_the_delay_below_zero() {
    let mut draw = seeded(6);
    let f = [fault(json!({"id": "j", "delay": 0.01, "jitter": 0.05}))];
    let delays: Vec<f64> = (0..N)
        .map(|_| decide(&f, &get(), &mut draw, 0.0).delay)
        .collect();
    let min = delays.iter().copied().fold(f64::INFINITY, f64::min);
    let max = delays.iter().copied().fold(0.0, f64::max);
    assert_eq!(min, 0.0);
    assert!(max <= 0.06);
    // uniform on [-0.04, 0.06]: 40 % of draws fall at or below 0
    let zeros = delays.iter().filter(|d| **d == 0.0).count();
    assert!((fraction(zeros, N) - 40.0).abs() <= 1.5);
}

#[test]
fn jitter_draws_after_the_delay_roll_and_maps_0_and_1_to_the_bounds() {
    let f = [fault(
        json!({"id": "j", "delay": 1.0, "jitter": 0.5, "delay_percent": 50}),
    )];
    assert_eq!(
        decide(&f, &get(), &mut sequence(&[0.1, 0.0]), 0.0).delay,
        0.5
    );
    assert_eq!(
        decide(&f, &get(), &mut sequence(&[0.1, 0.5]), 0.0).delay,
        1.0
    );
    let d = decide(&f, &get(), &mut sequence(&[0.1, 0.999]), 0.0).delay;
    assert!((d - 1.499).abs() < 1e-9, "{d}");
    assert!(decide(&f, &get(), &mut sequence(&[0.7]), 0.0).is_none()); // no jitter draw
}

// -- expiry --------------------------------------------------------------------------------

#[test]
fn a_fault_applies_until_its_expiry_and_not_from_then_on() {
    let boxed = fault(json!({"id": "boxed", "abort_status": 503, "expires_at": 1000.0}));
    let f = [boxed.clone()];
    assert_eq!(
        decide(&f, &get(), &mut no_dice, 999.999).abort_status,
        Some(503)
    );
    assert!(decide(&f, &get(), &mut no_dice, 1000.0).is_none());
    assert!(decide(&f, &get(), &mut no_dice, 5000.0).is_none());
    assert!(!boxed.expired(999.0));
    assert!(boxed.expired(1000.0));
}

#[test]
fn an_expired_fault_rolls_no_dice_and_others_still_apply() {
    let faults = [
        fault(json!({"id": "old", "abort_status": 500, "abort_percent": 50, "expires_at": 10.0})),
        fault(json!({"id": "new", "delay": 0.3})),
    ];
    assert_eq!(
        decide(&faults, &get(), &mut no_dice, 20.0),
        Decision {
            delay: 0.3,
            ..decision(&["new"])
        }
    );
}

#[test]
fn a_fault_without_expiry_never_expires() {
    let f = [fault(json!({"delay": 0.1}))];
    assert_eq!(decide(&f, &get(), &mut no_dice, 1e12).fired, ["f"]);
}

// -- several faults ------------------------------------------------------------------------

#[test]
fn the_delays_that_fire_add_up() {
    let faults = [
        fault(json!({"id": "a", "delay": 0.125})),
        fault(json!({"id": "b", "delay": 0.25, "delay_percent": 50})),
        fault(json!({"id": "c", "delay": 0.5})),
    ];
    assert_eq!(
        decide(&faults, &get(), &mut sequence(&[0.9]), 0.0),
        Decision {
            delay: 0.625,
            ..decision(&["a", "c"])
        }
    );
    assert_eq!(
        decide(&faults, &get(), &mut sequence(&[0.1]), 0.0),
        Decision {
            delay: 0.875,
            ..decision(&["a", "b", "c"])
        }
    );
}

#[test]
fn the_first_abort_that_fires_wins_by_fault_order() {
    let faults = [
        fault(json!({"id": "a", "abort_status": 500, "abort_percent": 50})),
        fault(json!({"id": "b", "abort_reset": true})),
        fault(json!({"id": "c", "abort_status": 429})),
    ];
    assert_eq!(
        decide(&faults, &get(), &mut sequence(&[0.1]), 0.0),
        Decision {
            abort_status: Some(500),
            ..decision(&["a"])
        }
    );
    assert_eq!(
        decide(&faults, &get(), &mut sequence(&[0.9]), 0.0),
        Decision {
            abort_reset: true,
            ..decision(&["b"])
        }
    );
}

#[test]
fn every_matching_fault_rolls_even_after_an_abort_won() {
    let faults = [
        fault(json!({"id": "a", "abort_status": 500})),
        fault(json!({"id": "b", "abort_status": 502, "abort_percent": 50})),
        fault(json!({"id": "c", "delay": 0.2, "delay_percent": 50})),
    ];
    let mut draws = 0;
    let mut draw = || {
        draws += 1;
        0.25
    };
    assert_eq!(
        decide(&faults, &get(), &mut draw, 0.0),
        Decision {
            delay: 0.2,
            abort_status: Some(500),
            ..decision(&["a", "c"])
        }
    );
    assert_eq!(draws, 2);
}

#[test]
fn delay_comes_with_an_abort_of_another_fault() {
    let faults = [
        fault(json!({"id": "slow", "delay": 0.3})),
        fault(json!({"id": "fail", "abort_status": 503})),
    ];
    assert_eq!(
        decide(&faults, &get(), &mut no_dice, 0.0),
        Decision {
            delay: 0.3,
            abort_status: Some(503),
            ..decision(&["slow", "fail"])
        }
    );
}

#[test]
fn the_longest_hang_and_the_smallest_bandwidth_are_in_force() {
    let hangs = [
        fault(json!({"id": "h1", "hang": 2.0})),
        fault(json!({"id": "h2", "hang": 5.0})),
        fault(json!({"id": "h3", "hang": 5.0})),
    ];
    assert_eq!(
        decide(&hangs, &get(), &mut no_dice, 0.0),
        Decision {
            hang: Some(5.0),
            ..decision(&["h2"])
        }
    );
    let limits = [
        fault(json!({"id": "b1", "bandwidth": 5000})),
        fault(json!({"id": "b2", "bandwidth": 800})),
    ];
    assert_eq!(
        decide(&limits, &get(), &mut no_dice, 0.0),
        Decision {
            bandwidth: Some(800),
            ..decision(&["b2"])
        }
    );
}

#[test]
fn an_abort_ends_the_request_before_a_hang_or_a_bandwidth_limit() {
    let faults = [
        fault(json!({"id": "limit", "bandwidth": 1000})),
        fault(json!({"id": "hang", "hang": 3.0})),
        fault(json!({"id": "abort", "abort_status": 503, "abort_percent": 50})),
    ];
    assert_eq!(
        decide(&faults, &get(), &mut sequence(&[0.1]), 0.0),
        Decision {
            abort_status: Some(503),
            ..decision(&["abort"])
        }
    );
    // the abort did not fire: the hang ends the request, the limit never applies
    assert_eq!(
        decide(&faults, &get(), &mut sequence(&[0.9]), 0.0),
        Decision {
            hang: Some(3.0),
            ..decision(&["hang"])
        }
    );
    assert_eq!(
        decide(&faults[..1], &get(), &mut no_dice, 0.0),
        Decision {
            bandwidth: Some(1000),
            ..decision(&["limit"])
        }
    );
}

#[test]
fn hang_and_abort_in_one_fault_abort_some_and_hang_the_rest() {
    let f = [fault(
        json!({"abort_status": 503, "abort_percent": 25, "hang": 1.0}),
    )];
    assert_eq!(
        decide(&f, &get(), &mut sequence(&[0.2]), 0.0),
        Decision {
            abort_status: Some(503),
            ..decision(&["f"])
        }
    );
    assert_eq!(
        decide(&f, &get(), &mut sequence(&[0.3]), 0.0),
        Decision {
            hang: Some(1.0),
            ..decision(&["f"])
        }
    );
}

#[test]
fn only_the_matching_faults_combine() {
    let faults = [
        fault(json!({"id": "items", "match": {"path_prefix": "/items"}, "delay": 0.125})),
        fault(json!({"id": "post", "match": {"method": "POST"}, "abort_status": 500})),
        fault(json!({"id": "web", "match": {"source": "frontend"}, "delay": 0.25})),
    ];
    assert_eq!(
        decide(&faults, &get(), &mut no_dice, 0.0),
        Decision {
            delay: 0.375,
            ..decision(&["items", "web"])
        }
    );
}

// -- validation ----------------------------------------------------------------------------

const DOES_NOTHING: &str =
    "does nothing: give it a delay, an abort_status, abort_reset, a bandwidth or a hang";

#[test]
fn an_invalid_fault_is_refused_with_one_sentence_naming_the_field() {
    let cases: Vec<(Value, &str, String)> = vec![
        (
            json!({"delay": 0.1, "delay_percent": 120}),
            "delay_percent",
            "delay_percent must be a percentage from 0 to 100, got 120".into(),
        ),
        (
            json!({"abort_status": 503, "abort_percent": -0.5}),
            "abort_percent",
            "abort_percent must be a percentage from 0 to 100, got -0.5".into(),
        ),
        (
            json!({"delay": -0.1}),
            "delay",
            "delay must be a number of seconds, 0 or more, got -0.1".into(),
        ),
        (
            json!({"delay": "200ms"}),
            "delay",
            "delay must be a number of seconds, 0 or more, got '200ms'".into(),
        ),
        (
            json!({"delay": 0.1, "jitter": -1}),
            "jitter",
            "jitter must be a number of seconds, 0 or more, got -1".into(),
        ),
        (
            json!({"abort_status": 199}),
            "abort_status",
            "abort_status must be an HTTP status from 200 to 599, got 199".into(),
        ),
        (
            json!({"abort_status": 600}),
            "abort_status",
            "abort_status must be an HTTP status from 200 to 599, got 600".into(),
        ),
        (
            json!({"abort_status": 503.0}),
            "abort_status",
            "abort_status must be an HTTP status from 200 to 599, got 503.0".into(),
        ),
        (
            json!({"abort_status": 503, "abort_reset": true}),
            "abort_reset",
            "abort_reset cannot be set together with abort_status: an abort either answers \
             with a status or resets the connection"
                .into(),
        ),
        (
            json!({"abort_reset": 1}),
            "abort_reset",
            "abort_reset must be true or false, got 1".into(),
        ),
        (json!({}), "", format!("the fault {DOES_NOTHING}")),
        (json!({"delay": 0}), "", format!("the fault {DOES_NOTHING}")),
        (
            json!({"bandwidth": 0}),
            "bandwidth",
            "bandwidth must be a whole number of bytes per second above 0, got 0".into(),
        ),
        (
            json!({"bandwidth": -100}),
            "bandwidth",
            "bandwidth must be a whole number of bytes per second above 0, got -100".into(),
        ),
        (
            json!({"hang": 0}),
            "hang",
            "hang must be a number of seconds above 0, got 0".into(),
        ),
        (
            json!({"hang": -2.5}),
            "hang",
            "hang must be a number of seconds above 0, got -2.5".into(),
        ),
        (
            json!({"jitter": 0.05, "abort_status": 500}),
            "jitter",
            "jitter is set but the fault has no delay; give it a delay too".into(),
        ),
        (
            json!({"delay_percent": 20, "abort_status": 500}),
            "delay_percent",
            "delay_percent is set but the fault has no delay".into(),
        ),
        (
            json!({"abort_percent": 20, "delay": 0.1}),
            "abort_percent",
            "abort_percent is set but the fault has no abort".into(),
        ),
        (
            json!({"id": "", "delay": 0.1}),
            "id",
            "id must be a fault id (non-empty, no spaces or ':'), got ''".into(),
        ),
    ];
    for (wire, field, message) in cases {
        // the checks themselves, before parse_fault puts the fault's place in front
        let obj = wire.as_object().cloned().unwrap();
        let id = obj.get("id").cloned().unwrap_or(json!("f"));
        let e = build_fault(&id, Match::default(), &obj).expect_err(&message);
        assert_eq!(e.to_string(), message);
        assert_eq!(e.field, field);
        // and through the wire, the place in front
        let placed = refused(wire).to_string();
        let expected = if field.is_empty() {
            format!("fault {DOES_NOTHING}")
        } else {
            format!("fault.{message}")
        };
        assert_eq!(placed, expected);
    }
}

#[test]
fn numbers_json_cannot_carry_are_refused_by_the_same_checks() {
    // JSON has no nan or inf (serde_json refuses them), so the checks only meet them
    // here; their texts are Python's.
    assert!(serde_json::from_str::<Value>("1e999").is_err());
    assert_eq!(py_float_repr(f64::NAN), "nan");
    assert_eq!(py_float_repr(f64::INFINITY), "inf");
    assert!(!(0.0..=100.0).contains(&f64::NAN)); // check_percent's test
    assert!(!(0.0..f64::INFINITY).contains(&f64::INFINITY)); // check_seconds' test
}

#[test]
fn floats_are_quoted_as_python_writes_them() {
    for (x, repr) in [
        (0.1, "0.1"),
        (503.0, "503.0"),
        (-0.5, "-0.5"),
        (1e16, "1e+16"),
        (1.5e-5, "1.5e-05"),
        (0.0001, "0.0001"),
        (123456789012345.6, "123456789012345.6"),
        (1_700_000_000.25, "1700000000.25"),
        // the float is 272797022373564.125 exactly: a tie, rounded half-even
        (272797022373564.12, "272797022373564.12"),
        (9999999999999998.0, "9999999999999998.0"),
        (-1e-5, "-1e-05"),
        (100.0, "100.0"),
    ] {
        assert_eq!(py_float_repr(x), repr);
    }
    assert_eq!(py_str_repr("it's"), "\"it's\"");
    assert_eq!(
        py_repr(&json!([1, "a", null, true])),
        "[1, 'a', None, True]"
    );
    assert_eq!(py_repr(&json!({"a": 1.0})), "{'a': 1.0}");
}

#[test]
fn an_invalid_match_is_refused_naming_the_field() {
    for (wire, message) in [
        (
            json!({"path_prefix": "items"}),
            "path_prefix must start with '/', got 'items'",
        ),
        (
            json!({"path_prefix": ""}),
            "path_prefix must start with '/', got ''",
        ),
        (
            json!({"method": "GE T"}),
            "method must be an HTTP method (non-empty, no spaces or ':'), got 'GE T'",
        ),
        (
            json!({"headers": {"x-env": "dev", "X-Env": "prod"}}),
            "headers names 'X-Env' twice; give each header once",
        ),
        (
            json!({"headers": {"": "dev"}}),
            "headers must be a header name (non-empty, no spaces or ':'), got ''",
        ),
        (
            json!({"source": ""}),
            "source must be a service name (non-empty, no spaces or ':'), got ''",
        ),
    ] {
        assert_eq!(match_error(wire), message);
    }
}

#[test]
fn the_field_checks_serve_under_other_names() {
    assert_eq!(check_percent(&json!(20), "--percent"), Ok((20.0, true)));
    assert_eq!(check_seconds(&json!(0), "--delay"), Ok((0.0, true)));
    assert_eq!(check_status(&json!(503), "--abort"), Ok(503));
    assert_eq!(check_path_prefix(&json!("/x"), "--path"), Ok("/x".into()));
    assert_eq!(check_bandwidth(&json!(1), "--bandwidth"), Ok(1));
    assert_eq!(check_hang(&json!(0.5), "--hang"), Ok((0.5, false)));
    let errors = [
        (
            check_percent(&json!(120), "--percent").err(),
            "--percent must be a percentage from 0 to 100, got 120",
        ),
        (
            check_percent(&json!(true), "--percent").err(),
            "--percent must be a percentage from 0 to 100, got True",
        ),
        (
            check_seconds(&json!(-1), "--delay").err(),
            "--delay must be a number of seconds, 0 or more, got -1",
        ),
        (
            check_status(&json!(700), "--abort").err(),
            "--abort must be an HTTP status from 200 to 599, got 700",
        ),
        (
            check_path_prefix(&json!("x"), "--path").err(),
            "--path must start with '/', got 'x'",
        ),
        (
            check_bandwidth(&json!(0), "--bandwidth").err(),
            "--bandwidth must be a whole number of bytes per second above 0, got 0",
        ),
        (
            check_hang(&json!(0), "--hang").err(),
            "--hang must be a number of seconds above 0, got 0",
        ),
    ];
    for (error, message) in errors {
        let error = error.expect(message);
        assert_eq!(error.to_string(), message);
        assert_eq!(error.field, message.split(' ').next().unwrap());
    }
}

#[test]
fn valid_edges_are_accepted() {
    for wire in [
        json!({"delay": 0.0, "jitter": 0.01}),
        json!({"delay": 0.1, "delay_percent": 0}),
        json!({"abort_status": 200}),
        json!({"abort_status": 599}),
        json!({"abort_reset": true, "abort_percent": 100}),
        json!({"bandwidth": 1}),
        json!({"hang": 0.001}),
        json!({"delay": 1, "abort_status": 503, "bandwidth": 10, "hang": 1, "expires_at": 0}),
    ] {
        fault(wire);
    }
}

// -- wire form -----------------------------------------------------------------------------

fn canonical() -> Vec<Value> {
    vec![
        json!({"id": "slow", "delay": 0.2}),
        json!({"id": "flaky", "delay": 0.2, "jitter": 0.05, "delay_percent": 20.5}),
        json!({"id": "fail", "abort_status": 503, "abort_percent": 10}),
        json!({"id": "cut", "match": {"path_prefix": "/items"}, "abort_reset": true, "abort_percent": 0.1}),
        json!({
            "id": "all",
            "match": {
                "path_prefix": "/a",
                "method": "post",
                "headers": {"X-Env": "dev", "x-user": "ann"},
                "source": "frontend",
            },
            "delay": 1,
            "jitter": 0.5,
            "delay_percent": 50,
            "abort_status": 500,
            "abort_percent": 33.3,
            "bandwidth": 10_000,
            "hang": 2.5,
            "expires_at": 1_700_000_000.25,
        }),
        json!({"id": "toxic", "bandwidth": 1024, "hang": 30}),
    ]
}

#[test]
fn the_canonical_wire_form_round_trips_exactly() {
    for wire in canonical() {
        let through_json: Value = serde_json::from_str(&wire.to_string()).unwrap();
        let f = parse_fault(&through_json, "fault").unwrap();
        assert_eq!(fault_to_wire(&f), wire);
        assert_eq!(fault_to_wire(&f).to_string(), wire.to_string());
        let again: Value = serde_json::from_str(&fault_to_wire(&f).to_string()).unwrap();
        assert_eq!(parse_fault(&again, "fault").unwrap(), f);
    }
}

#[test]
fn faults_round_trip_through_json() {
    let wire = json!([
        {"id": "a", "delay": 0.25, "jitter": 0.1, "delay_percent": 12.5},
        {"id": "b", "match": {"path_prefix": "/x", "method": "GET", "headers": {"k": "v"}, "source": "web"},
         "abort_status": 502, "abort_percent": 99.9, "expires_at": 123.5},
        {"id": "c", "abort_reset": true, "bandwidth": 5, "hang": 0.5},
    ]);
    let faults = parse_faults(&wire, "faults").unwrap();
    let back: Value = serde_json::from_str(&faults_to_wire(&faults).to_string()).unwrap();
    assert_eq!(back, wire);
    assert_eq!(parse_faults(&back, "faults").unwrap(), faults);
}

#[test]
fn defaults_are_left_out_of_the_wire_form() {
    let plain = fault(json!({"delay": 0.1}));
    assert_eq!(fault_to_wire(&plain), json!({"id": "f", "delay": 0.1}));
    assert_eq!(
        fault(json!({"delay": 0.1, "jitter": 0, "match": {}})),
        plain
    );
}

#[test]
fn an_integer_and_a_float_are_the_same_number_to_a_fault() {
    assert_eq!(fault(json!({"delay": 1})), fault(json!({"delay": 1.0})));
    assert_eq!(
        fault_to_wire(&fault(json!({"delay": 1}))),
        json!({"id": "f", "delay": 1})
    );
    assert_eq!(
        fault_to_wire(&fault(json!({"delay": 1.0}))).to_string(),
        r#"{"id":"f","delay":1.0}"#
    );
}

const WHERE: &str = "snapshot.routes.catalog.faults";

#[test]
fn a_bad_wire_fault_is_refused_naming_its_path() {
    let cases: Vec<(Value, String)> = vec![
        (json!({"abort_percent": 120}), format!("{WHERE}[1].abort_percent must be a percentage from 0 to 100, got 120")),
        (json!({"abort_status": "503"}), format!("{WHERE}[1].abort_status must be an HTTP status from 200 to 599, got '503'")),
        (json!({"toxicity": 0.5}), format!("{WHERE}[1].toxicity is not a fault field")),
        (json!({"id": null}), format!("{WHERE}[1].id must be a fault id (non-empty, no spaces or ':'), got None")),
        (json!({"abort_status": null}), format!("{WHERE}[1].abort_percent is set but the fault has no abort")),
        (json!({"match": []}), format!("{WHERE}[1].match must be an object")),
        (json!({"match": {"path": "/x"}}), format!("{WHERE}[1].match.path is not a match field")),
        (json!({"match": {"path_prefix": "x"}}), format!("{WHERE}[1].match.path_prefix must start with '/', got 'x'")),
        (json!({"match": {"headers": {"x-env": 1}}}), format!("{WHERE}[1].match.headers.x-env must be a string, got 1")),
        (json!({"match": {"method": 7}}), format!("{WHERE}[1].match.method must be an HTTP method (non-empty, no spaces or ':'), got 7")),
        (
            json!({"abort_reset": true}),
            format!("{WHERE}[1].abort_reset cannot be set together with abort_status: an abort either answers with a status or resets the connection"),
        ),
        (json!({"id": "slow"}), format!("{WHERE}[1].id 'slow' is taken by {WHERE}[0]")),
    ];
    for (change, message) in cases {
        let mut wire: Vec<Value> = canonical()[..3].to_vec();
        let mut second = json!({"id": "fail", "abort_status": 503, "abort_percent": 10});
        for (k, v) in change.as_object().unwrap() {
            second[k] = v.clone();
        }
        wire[1] = second;
        assert_eq!(
            parse_faults(&Value::Array(wire), WHERE),
            Err(Invalid(message.clone())),
            "{message}"
        );
    }
}

#[test]
fn a_wire_fault_without_an_id_or_that_does_nothing_is_refused_naming_its_path() {
    assert_eq!(
        parse_faults(&json!([{"delay": 1}]), "faults")
            .unwrap_err()
            .0,
        "faults[0].id is missing; every fault needs an id"
    );
    assert_eq!(
        parse_faults(&json!([{"id": "x"}]), "faults").unwrap_err().0,
        format!("faults[0] {DOES_NOTHING}")
    );
    assert_eq!(
        parse_faults(&json!({"id": "x"}), "faults").unwrap_err().0,
        "faults must be a list"
    );
    assert_eq!(
        parse_fault(&json!("slow"), "fault")
            .unwrap_err()
            .to_string(),
        "fault must be an object"
    );
}

#[test]
fn names_refuse_what_python_calls_space() {
    for id in ["a b", "a\tb", "a\u{a0}b", "a\u{1c}b", "a:b"] {
        let e = refused(json!({"id": id, "delay": 1}));
        assert_eq!(e.field, "fault.id", "{id:?}");
    }
    fault(json!({"id": "a-b_c.d", "delay": 1}));
}
