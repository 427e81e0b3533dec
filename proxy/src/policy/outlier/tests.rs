//! The cases of tests/unit/proxy/test_outlier.py, on a clock the test moves by hand.

use super::*;
use std::sync::{Arc, Mutex};

const E503: Outcome = Outcome::Status(503);
const OK: Outcome = Outcome::Status(200);

/// A detector and the time the test has moved it to.
struct T {
    d: OutlierDetector,
    now: Instant,
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ep-{i}")).collect()
}

fn detector_with(n: usize, settings: OutlierSettings) -> T {
    let now = Instant::now();
    T {
        d: OutlierDetector::new(now, settings, &ids(n), None),
        now,
    }
}

fn detector(n: usize) -> T {
    detector_with(n, OutlierSettings::default())
}

fn all_may_go(n: usize) -> T {
    detector_with(
        n,
        OutlierSettings {
            max_ejection_percent: 100.0,
            ..OutlierSettings::default()
        },
    )
}

impl T {
    fn advance(&mut self, seconds: f64) {
        self.now += Duration::from_nanos((seconds * 1e9).round() as u64);
    }
    fn record(&mut self, instance: &str, outcome: &Outcome) -> Option<EndpointState> {
        self.d.record(instance, outcome, self.now)
    }
    fn fail(&mut self, instance: &str, times: usize) {
        self.fail_with(instance, times, &E503);
    }
    fn fail_with(&mut self, instance: &str, times: usize, outcome: &Outcome) {
        for _ in 0..times {
            self.record(instance, outcome);
        }
    }
    fn endpoint(&mut self, instance: &str) -> EndpointState {
        self.d.endpoint(instance, self.now).expect(instance)
    }
    fn state(&mut self, instance: &str) -> State {
        self.endpoint(instance).state
    }
    fn ejected(&mut self, instance: &str) -> bool {
        self.d.is_ejected(instance, self.now)
    }
    fn retry_in(&mut self, instance: &str) -> f64 {
        let ep = self.endpoint(instance);
        let at = ep.retry_at.unwrap_or_else(|| panic!("not open: {ep:?}"));
        (at - self.now).as_secs_f64()
    }
    fn summary(&mut self) -> BreakerSummary {
        self.d.summary(self.now)
    }
}

// consecutive failures

#[test]
fn the_defaults_are_envoys() {
    let s = OutlierSettings::default();
    assert_eq!(
        (s.consecutive_5xx, s.interval, s.base_ejection_time),
        (5, 10.0, 30.0)
    );
    assert_eq!((s.max_ejection_time, s.max_ejection_percent), (300.0, 10.0));
    assert_eq!(s.panic_threshold, 50.0);
}

#[test]
fn exactly_five_consecutive_5xx_eject() {
    let mut t = detector(3);
    t.fail("ep-0", 4);
    assert!(!t.ejected("ep-0"));
    assert_eq!(t.state("ep-0"), State::Closed);
    t.record("ep-0", &Outcome::Status(500));
    assert!(t.ejected("ep-0"));
    assert_eq!(t.state("ep-0"), State::Open);
}

#[test]
fn four_5xx_then_a_success_do_not_eject_and_the_run_starts_again() {
    let mut t = detector(3);
    t.fail("ep-0", 4);
    t.record("ep-0", &OK);
    t.fail("ep-0", 4);
    assert!(!t.ejected("ep-0"));
    t.record("ep-0", &E503);
    assert!(t.ejected("ep-0"));
}

#[test]
fn any_status_below_500_is_a_success() {
    for code in [200, 204, 301, 404, 429, 499] {
        let mut t = detector(3);
        t.fail("ep-0", 4);
        t.record("ep-0", &Outcome::Status(code));
        t.record("ep-0", &E503);
        assert!(!t.ejected("ep-0"), "{code}");
    }
}

#[test]
fn overflow_neither_counts_nor_resets() {
    let mut t = detector(3);
    t.fail_with("ep-0", 20, &Outcome::overflow());
    assert!(!t.ejected("ep-0"));
    t.fail("ep-0", 4);
    t.fail_with("ep-0", 20, &Outcome::overflow());
    assert_eq!(t.endpoint("ep-0").consecutive_failures, 4);
    t.record("ep-0", &E503);
    assert!(t.ejected("ep-0"));
}

#[test]
fn local_origin_failures_count_like_5xx() {
    for what in [
        LocalFailure::ConnectFailure,
        LocalFailure::Reset,
        LocalFailure::Timeout,
    ] {
        let mut t = detector(3);
        t.fail_with("ep-0", 5, &Outcome::LocalFailure(what));
        assert!(t.ejected("ep-0"));
        assert_eq!(
            t.summary().reason.as_deref(),
            Some(format!("5 consecutive failures (last: {})", what.as_str()).as_str())
        );
    }
}

#[test]
fn a_run_mixing_5xx_and_local_failures_is_called_failures() {
    let mut t = detector(3);
    t.record("ep-0", &Outcome::LocalFailure(LocalFailure::Reset));
    t.fail_with("ep-0", 4, &Outcome::Status(502));
    assert_eq!(
        t.summary().reason.as_deref(),
        Some("5 consecutive failures (last: 502)")
    );
}

#[test]
fn a_run_of_5xx_names_the_last_status() {
    let mut t = detector(3);
    t.fail_with("ep-0", 4, &Outcome::Status(500));
    t.record("ep-0", &Outcome::Status(503));
    assert_eq!(
        t.summary().reason.as_deref(),
        Some("5 consecutive 5xx (last: 503)")
    );
}

#[test]
fn consecutive_5xx_setting_is_honoured() {
    let mut t = detector_with(
        3,
        OutlierSettings {
            consecutive_5xx: 2,
            max_ejection_percent: 100.0,
            ..OutlierSettings::default()
        },
    );
    t.fail("ep-0", 1);
    assert!(!t.ejected("ep-0"));
    t.fail("ep-0", 1);
    assert!(t.ejected("ep-0"));
    t.d.set_settings(OutlierSettings {
        consecutive_5xx: 3,
        max_ejection_percent: 100.0,
        ..OutlierSettings::default()
    });
    t.fail("ep-1", 2);
    assert!(!t.ejected("ep-1"));
    t.fail("ep-1", 1);
    assert!(t.ejected("ep-1"));
}

// max ejection percent

#[test]
fn ten_endpoints_allow_one_ejection_the_second_failing_one_stays() {
    let mut t = detector(10);
    t.fail("ep-0", 5);
    t.fail("ep-1", 5);
    assert!(t.ejected("ep-0"));
    assert!(!t.ejected("ep-1"));
    assert_eq!(t.summary().ejected, 1);
}

#[test]
fn twenty_endpoints_allow_two_ejections() {
    let mut t = detector(20);
    for i in 0..3 {
        t.fail(&format!("ep-{i}"), 5);
    }
    let out: Vec<bool> = (0..3).map(|i| t.ejected(&format!("ep-{i}"))).collect();
    assert_eq!(out, [true, true, false]);
}

#[test]
fn one_endpoint_may_always_be_ejected() {
    for n in [1, 2] {
        let mut t = detector(n);
        for i in 0..n {
            t.fail(&format!("ep-{i}"), 5);
        }
        assert!(t.ejected("ep-0"));
        if n == 2 {
            assert!(!t.ejected("ep-1"));
        }
    }
}

#[test]
fn a_refused_ejection_starts_the_run_again_as_in_envoy() {
    let mut t = detector(10);
    t.fail("ep-0", 5);
    t.fail("ep-1", 5);
    let ep1 = t.endpoint("ep-1");
    assert_eq!((ep1.consecutive_failures, ep1.ejections), (0, 0));
    t.advance(30.0);
    t.record("ep-0", &OK); // back in service: room for one ejection again
    t.fail("ep-1", 4);
    assert!(!t.ejected("ep-1"));
    t.fail("ep-1", 1);
    assert!(t.ejected("ep-1"));
}

#[test]
fn a_half_open_failure_beyond_the_limit_returns_the_endpoint_to_closed() {
    let mut t = detector(10);
    t.fail("ep-0", 5);
    t.advance(30.0);
    assert_eq!(t.state("ep-0"), State::HalfOpen);
    t.fail("ep-1", 5); // ep-0 no longer counts as ejected: ep-1 may go
    assert!(t.ejected("ep-1"));
    t.record("ep-0", &E503);
    assert_eq!(t.state("ep-0"), State::Closed);
    assert_eq!(t.summary().ejected, 1);
}

// ejection time

#[test]
fn ejection_time_grows_30_60_90_up_to_300() {
    let mut t = detector(3);
    t.fail("ep-0", 5);
    let mut seen = Vec::new();
    for _ in 0..12 {
        seen.push(t.retry_in("ep-0"));
        t.advance(*seen.last().unwrap());
        assert_eq!(t.state("ep-0"), State::HalfOpen);
        t.record("ep-0", &E503);
    }
    assert_eq!(
        seen,
        [30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0, 300.0, 300.0]
    );
    assert_eq!(t.endpoint("ep-0").ejections, 13);
}

#[test]
fn base_and_max_ejection_time_settings_are_honoured() {
    let mut t = detector_with(
        3,
        OutlierSettings {
            base_ejection_time: 5.0,
            max_ejection_time: 12.0,
            ..OutlierSettings::default()
        },
    );
    t.fail("ep-0", 5);
    assert_eq!(t.retry_in("ep-0"), 5.0);
    t.advance(5.0);
    t.record("ep-0", &E503);
    assert_eq!(t.retry_in("ep-0"), 10.0);
    t.advance(10.0);
    t.record("ep-0", &E503);
    assert_eq!(t.retry_in("ep-0"), 12.0);
}

#[test]
fn an_endpoint_stays_open_until_its_time_is_up() {
    let mut t = detector(3);
    t.fail("ep-0", 5);
    t.advance(29.999);
    assert!(t.ejected("ep-0"));
    let pair = ["ep-0", "ep-1"];
    assert_eq!(t.d.eligible(&pair, t.now), [&"ep-1"]);
    t.advance(0.001);
    assert!(!t.ejected("ep-0"));
    assert_eq!(t.state("ep-0"), State::HalfOpen);
    assert_eq!(t.d.eligible(&pair, t.now), [&"ep-0", &"ep-1"]);
}

#[test]
fn results_arriving_while_open_change_nothing() {
    let mut t = detector(3);
    t.fail("ep-0", 5);
    t.advance(10.0);
    t.record("ep-0", &OK);
    t.fail("ep-0", 10);
    assert!(t.ejected("ep-0"));
    assert_eq!(t.retry_in("ep-0"), 20.0);
    assert_eq!(t.endpoint("ep-0").ejections, 1);
}

// half-open

#[test]
fn half_open_success_closes() {
    let mut t = detector(3);
    t.fail("ep-0", 5);
    t.advance(30.0);
    t.record("ep-0", &Outcome::overflow());
    assert_eq!(t.state("ep-0"), State::HalfOpen);
    t.record("ep-0", &OK);
    assert_eq!(t.state("ep-0"), State::Closed);
    t.fail("ep-0", 4); // a fresh run of five is needed again
    assert!(!t.ejected("ep-0"));
    t.record("ep-0", &E503);
    assert!(t.ejected("ep-0"));
}

#[test]
fn half_open_failure_ejects_again_at_once_for_longer() {
    let mut t = detector(3);
    t.fail("ep-0", 5);
    t.advance(30.0);
    t.record("ep-0", &Outcome::LocalFailure(LocalFailure::Timeout));
    assert!(t.ejected("ep-0"));
    assert_eq!(t.retry_in("ep-0"), 60.0);
    assert_eq!(
        t.summary().reason.as_deref(),
        Some("failed while half-open (last: timeout)")
    );
}

#[test]
fn half_open_endpoint_keeps_the_reason_of_its_ejection() {
    let mut t = detector(3);
    t.fail("ep-0", 5);
    t.advance(30.0);
    let ep = t.endpoint("ep-0");
    assert_eq!(
        (ep.state, ep.reason.as_deref(), ep.retry_at),
        (State::HalfOpen, Some("5 consecutive 5xx (last: 503)"), None)
    );
}

// decay of the multiplier

fn eject_twice_then_close(t: &mut T) {
    t.fail("ep-0", 5);
    t.advance(30.0);
    t.record("ep-0", &E503);
    t.advance(60.0);
    t.record("ep-0", &OK);
    let ep = t.endpoint("ep-0");
    assert_eq!((ep.state, ep.multiplier), (State::Closed, 2));
}

#[test]
fn one_healthy_interval_takes_one_off_the_multiplier() {
    let mut t = detector(3);
    eject_twice_then_close(&mut t);
    t.advance(9.9);
    t.fail("ep-0", 5);
    assert_eq!(t.retry_in("ep-0"), 90.0); // no full interval yet: third ejection
}

#[test]
fn the_multiplier_decays_per_healthy_interval() {
    let mut t = detector(3);
    eject_twice_then_close(&mut t);
    t.advance(10.0);
    t.fail("ep-0", 5);
    assert_eq!(t.retry_in("ep-0"), 60.0); // 2 - 1 + 1
}

#[test]
fn the_multiplier_decays_to_zero_and_no_further() {
    let mut t = detector(3);
    eject_twice_then_close(&mut t);
    t.advance(1000.0);
    let ep = t.endpoint("ep-0");
    assert_eq!((ep.multiplier, ep.ejections), (0, 2));
    t.fail("ep-0", 5);
    assert_eq!(t.retry_in("ep-0"), 30.0);
}

#[test]
fn a_failure_restarts_the_healthy_interval() {
    let mut t = detector(3);
    eject_twice_then_close(&mut t);
    t.advance(5.0);
    t.record("ep-0", &E503);
    t.record("ep-0", &OK);
    t.advance(9.0); // 14 s after closing, but only 9 s since the failure
    assert_eq!(t.endpoint("ep-0").multiplier, 2);
    t.advance(1.0);
    assert_eq!(t.endpoint("ep-0").multiplier, 1);
}

#[test]
fn no_decay_while_open_or_half_open() {
    let mut t = detector(3);
    t.fail("ep-0", 5);
    t.advance(500.0); // half-open since 470 s, never tried
    let ep = t.endpoint("ep-0");
    assert_eq!((ep.state, ep.multiplier), (State::HalfOpen, 1));
    t.record("ep-0", &E503);
    assert_eq!(t.retry_in("ep-0"), 60.0);
}

#[test]
fn the_multiplier_stops_growing_past_the_cap_as_in_envoy() {
    let mut t = detector(3);
    t.fail("ep-0", 5);
    for _ in 0..15 {
        let wait = t.retry_in("ep-0");
        t.advance(wait);
        t.record("ep-0", &E503);
    }
    assert_eq!(t.endpoint("ep-0").multiplier, 11); // Envoy: grows while base * n < max + base
    let wait = t.retry_in("ep-0");
    t.advance(wait);
    t.record("ep-0", &OK);
    t.advance(20.0); // two healthy intervals: 11 -> 9, the next ejection is the 10th step
    t.fail("ep-0", 5);
    assert_eq!(t.retry_in("ep-0"), 300.0);
    t.advance(300.0);
    t.record("ep-0", &OK);
    t.advance(30.0); // 10 -> 7
    t.fail("ep-0", 5);
    assert_eq!(t.retry_in("ep-0"), 240.0);
}

// endpoints joining and leaving

#[test]
fn new_endpoints_start_closed_and_removed_ones_are_forgotten() {
    let mut t = detector(2);
    t.fail("ep-0", 5);
    t.d.set_endpoints(&["ep-1", "ep-2"], t.now);
    let listed: Vec<String> =
        t.d.endpoints(t.now)
            .into_iter()
            .map(|e| e.instance)
            .collect();
    assert_eq!(listed, ["ep-1", "ep-2"]);
    assert_eq!(t.state("ep-2"), State::Closed);
    assert_eq!(t.record("ep-0", &E503), None);
    assert_eq!(t.d.endpoint("ep-0", t.now), None);
    assert!(!t.ejected("ep-0"));
    t.d.set_endpoints(&["ep-0", "ep-1", "ep-2"], t.now);
    let ep = t.endpoint("ep-0");
    assert_eq!(
        (ep.state, ep.ejections, ep.multiplier),
        (State::Closed, 0, 0)
    );
}

#[test]
fn endpoints_kept_across_an_update_keep_their_state() {
    let mut t = detector(2);
    t.fail("ep-0", 5);
    t.fail("ep-1", 3);
    t.d.set_endpoints(&["ep-0", "ep-1", "ep-9"], t.now);
    assert!(t.ejected("ep-0"));
    t.fail("ep-1", 2);
    assert_eq!(t.state("ep-1"), State::Closed); // 1 of 3 already out: refused
    assert_eq!(t.summary().total, 3);
}

#[test]
fn the_ejection_limit_follows_the_endpoint_count() {
    let mut t = detector(10);
    t.fail("ep-0", 5);
    t.d.set_endpoints(&ids(20), t.now);
    t.fail("ep-15", 5);
    assert!(t.ejected("ep-15"));
    assert_eq!(t.summary().ejected, 2);
}

// summary and JSON

#[test]
fn summary_is_closed_with_no_trouble() {
    let mut t = detector(3);
    t.fail("ep-0", 4);
    assert_eq!(
        t.summary(),
        BreakerSummary {
            state: State::Closed,
            instance: None,
            reason: None,
            retry_at: None,
            ejected: 0,
            half_open: 0,
            total: 3,
            ejections: 0,
            panic: false,
        }
    );
}

#[test]
fn summary_open_gives_the_reason_and_a_countdown() {
    let mut t = detector(3);
    t.fail("ep-1", 5);
    t.advance(17.5);
    let mut data = t.d.to_json(t.now);
    let endpoints = data
        .as_object_mut()
        .unwrap()
        .remove("endpoints")
        .expect("endpoints");
    assert_eq!(
        data,
        json!({
            "state": "open",
            "instance": "ep-1",
            "reason": "5 consecutive 5xx (last: 503)",
            "retry_in": 12.5,
            "ejected": 1,
            "half_open": 0,
            "total": 3,
            "ejections": 1,
            "panic": false,
        })
    );
    assert_eq!(
        endpoints[1],
        json!({
            "instance": "ep-1",
            "state": "open",
            "reason": "5 consecutive 5xx (last: 503)",
            "retry_in": 12.5,
            "ejections": 1,
            "consecutive_failures": 0,
        })
    );
    assert_eq!(endpoints[0]["state"], "closed");
    assert_eq!(endpoints[0]["retry_in"], Value::Null);
}

#[test]
fn summary_open_shows_the_endpoint_that_retries_soonest() {
    let mut t = all_may_go(2);
    t.fail("ep-0", 5); // retries at +30
    t.advance(30.0);
    t.record("ep-0", &E503); // retries at +60 from now
    t.advance(10.0);
    t.fail_with(
        "ep-1",
        5,
        &Outcome::LocalFailure(LocalFailure::ConnectFailure),
    ); // in 30
    let summary = t.summary();
    assert_eq!(
        (summary.state, summary.instance.as_deref(), summary.ejected),
        (State::Open, Some("ep-1"), 2)
    );
    assert_eq!(
        summary.reason.as_deref(),
        Some("5 consecutive failures (last: connect-failure)")
    );
    assert_eq!(summary.retry_at, Some(t.now + Duration::from_secs(30)));
}

#[test]
fn summary_open_wins_over_half_open() {
    let mut t = all_may_go(2);
    t.fail("ep-0", 5);
    t.advance(20.0);
    t.fail("ep-1", 5);
    t.advance(10.0);
    let summary = t.summary();
    assert_eq!(
        (
            summary.state,
            summary.instance.as_deref(),
            summary.half_open
        ),
        (State::Open, Some("ep-1"), 1)
    );
    t.advance(20.0);
    let summary = t.summary();
    assert_eq!(
        (summary.state, summary.half_open, summary.retry_at),
        (State::HalfOpen, 2, None)
    );
    assert_eq!(t.d.to_json(t.now)["retry_in"], Value::Null);
}

// notifications

fn recorder() -> (Arc<Mutex<Vec<BreakerSummary>>>, OnChange) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (
        seen,
        Box::new(move |s: &BreakerSummary| sink.lock().unwrap().push(s.clone())),
    )
}

fn changes(seen: &Arc<Mutex<Vec<BreakerSummary>>>) -> Vec<(State, usize)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|s| (s.state, s.ejected))
        .collect()
}

#[test]
fn state_changes_are_reported_once_each() {
    let (seen, on_change) = recorder();
    let now = Instant::now();
    let mut t = T {
        d: OutlierDetector::new(
            now,
            OutlierSettings::default(),
            &["a", "b"],
            Some(on_change),
        ),
        now,
    };
    t.fail("a", 4);
    t.record("b", &OK);
    assert_eq!(changes(&seen), []);
    t.record("a", &E503);
    assert_eq!(changes(&seen), [(State::Open, 1)]);
    t.fail("a", 3);
    t.advance(29.0);
    t.d.tick(t.now);
    assert_eq!(changes(&seen), [(State::Open, 1)]);
    t.advance(1.0);
    t.d.eligible(&["a", "b"], t.now); // any call notices the time
    assert_eq!(changes(&seen), [(State::Open, 1), (State::HalfOpen, 0)]);
    t.record("a", &OK);
    assert_eq!(
        changes(&seen),
        [(State::Open, 1), (State::HalfOpen, 0), (State::Closed, 0)]
    );
}

#[test]
fn a_second_ejection_and_a_removal_are_reported() {
    let (seen, on_change) = recorder();
    let now = Instant::now();
    let settings = OutlierSettings {
        max_ejection_percent: 100.0,
        ..OutlierSettings::default()
    };
    let mut t = T {
        d: OutlierDetector::new(now, settings, &["a", "b", "c"], Some(on_change)),
        now,
    };
    t.fail("a", 5);
    t.fail("b", 5);
    assert_eq!(changes(&seen), [(State::Open, 1), (State::Open, 2)]);
    t.d.set_endpoints(&["c"], t.now);
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last.state, last.ejected, last.total),
        (State::Closed, 0, 1)
    );
}

#[test]
fn next_change_is_when_the_first_open_endpoint_turns_half_open() {
    let mut t = all_may_go(3);
    assert_eq!(t.d.next_change(t.now), None);
    t.fail("ep-0", 5);
    t.advance(5.0);
    t.fail("ep-1", 5);
    assert_eq!(
        t.d.next_change(t.now),
        Some(t.now + Duration::from_secs(25))
    );
    t.advance(25.0);
    assert_eq!(t.d.next_change(t.now), Some(t.now + Duration::from_secs(5)));
    t.advance(5.0);
    assert_eq!(t.d.next_change(t.now), None);
}

#[test]
fn ejected_lists_open_endpoints_with_their_retry_time() {
    let mut t = detector(3);
    t.fail("ep-2", 5);
    let out = t.d.ejected(t.now);
    assert_eq!(out.len(), 1);
    assert_eq!(out["ep-2"], t.now + Duration::from_secs(30));
}

// what is not the endpoint's doing

#[test]
fn what_is_not_the_endpoint_s_doing_neither_counts_nor_resets() {
    for why in [
        "downstream-reset",
        "body-timeout",
        "no-identity",
        "overflow",
    ] {
        let not_it = Outcome::NotTheEndpoint(why.into());
        let mut t = detector(3);
        t.fail_with("ep-0", 20, &not_it);
        assert_eq!(t.endpoint("ep-0").consecutive_failures, 0);
        t.fail("ep-0", 4);
        t.record("ep-0", &not_it);
        assert_eq!(
            t.endpoint("ep-0").consecutive_failures,
            4,
            "a caller's hang-up is no success"
        );
        t.record("ep-0", &E503);
        assert!(t.ejected("ep-0"));
    }
}

#[test]
fn a_caller_hanging_up_on_a_half_open_endpoint_leaves_it_half_open() {
    let mut t = detector(3);
    t.fail("ep-0", 5);
    t.advance(30.0);
    t.record("ep-0", &Outcome::NotTheEndpoint("downstream-reset".into()));
    assert_eq!(t.state("ep-0"), State::HalfOpen);
    t.record("ep-0", &OK);
    assert_eq!(t.state("ep-0"), State::Closed);
}

#[test]
fn outcomes_say_what_they_are() {
    assert_eq!((E503.kind(), E503.detail()), ("5xx", "503".to_owned()));
    assert_eq!((OK.kind(), OK.failed()), ("success", false));
    let reset = Outcome::LocalFailure(LocalFailure::Reset);
    assert_eq!(
        (reset.kind(), reset.detail(), reset.failed()),
        ("local-failure", "reset".to_owned(), true)
    );
    assert_eq!(Outcome::overflow().kind(), "not-the-endpoint");
    assert_eq!(Outcome::Status(599).kind(), "5xx");
    assert_eq!(Outcome::Status(600).kind(), "success");
}

// the panic threshold

#[test]
fn a_pool_is_in_panic_when_fewer_than_the_threshold_are_healthy() {
    for (size, ejected, threshold, panic) in [
        (1, 1, 50.0, true),  // the only endpoint ejected: route to it all the same
        (2, 1, 50.0, false), // half healthy is not fewer than half
        (3, 2, 50.0, true),
        (10, 1, 50.0, false),
        (10, 6, 50.0, true),
        (4, 1, 100.0, true), // 100: any ejection routes to all
        (4, 0, 100.0, false),
        (1, 1, 0.0, false), // 0: never (Istio's default)
        (3, 3, 0.0, false),
        (0, 0, 50.0, false), // no endpoints: nothing to route to either way
    ] {
        let pool = ids(size);
        let out = &pool[..ejected];
        assert_eq!(
            in_panic(&pool, |i| out.iter().any(|o| o == i), threshold),
            panic,
            "{size} {ejected} {threshold}"
        );
    }
}

#[test]
fn ejected_ids_outside_the_pool_do_not_count_against_it() {
    let out = ["v2-1", "v2-2"];
    assert!(!in_panic(&["v1-1", "v1-2"], |i| out.contains(&i), 100.0));
}
