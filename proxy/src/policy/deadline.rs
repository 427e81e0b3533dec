//! Deadlines on the request path, as values: when a block must end, and whose limit
//! ended it.
//!
//! The Python sidecar cancels the request's task when a deadline passes (asyncio's
//! `timeout`, nested: each deadline catches only its own, the outer one expires
//! through the inner, a cancellation from elsewhere stays a cancellation). Here a
//! deadline is an `Instant` (or none): the engine waits with `timeout_at` on the
//! sooner of the call's and the attempt's, and [`Deadlines::expired`] says which
//! one ran out. A cancellation from elsewhere is a dropped future in Rust, so it
//! never turns into a timeout.
//!
//! The 504 and 408 texts of a deadline that ran out are here too, with the Python
//! sidecar's wording ([`call_timeout_reason`], [`attempt_timeout_reason`],
//! [`body_timeout_reason`]).

use std::time::{Duration, Instant};

/// When a block must end; `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadline(pub Option<Instant>);

impl Deadline {
    /// No limit.
    pub const NONE: Deadline = Deadline(None);

    /// `seconds` from `now` (`None`: no limit). Seconds must be finite and not negative
    /// (the route policy's parser sees to it); others count as no limit.
    pub fn after(now: Instant, seconds: Option<f64>) -> Deadline {
        Deadline(
            seconds
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .map(|d| now + d),
        )
    }

    /// The time it ends, if it does.
    pub fn at(self) -> Option<Instant> {
        self.0
    }

    /// Whether it has passed at `now` (a block finishing exactly then overran).
    pub fn expired(self, now: Instant) -> bool {
        self.0.is_some_and(|at| now >= at)
    }

    /// Time left at `now` (zero once passed); `None`: no limit.
    pub fn remaining(self, now: Instant) -> Option<Duration> {
        self.0.map(|at| at.saturating_duration_since(now))
    }
}

/// Which of two nested deadlines ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The outer one (the call's timeout): it expires through the inner.
    Outer,
    /// The inner one (an attempt's per-try timeout): caught by the attempt alone.
    Inner,
}

/// An outer deadline (the call's) and an inner one (the attempt's) in force together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadlines {
    pub outer: Deadline,
    pub inner: Deadline,
}

impl Deadlines {
    /// When the block must end: the sooner of the two.
    pub fn at(self) -> Option<Instant> {
        match (self.outer.0, self.inner.0) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Which one has run out at `now`, if any; when both have, the outer (it was set
    /// first, so it fires first, and the inner does not catch it).
    pub fn expired(self, now: Instant) -> Option<Expired> {
        match (self.outer.expired(now), self.inner.expired(now)) {
            (true, _) => Some(Expired::Outer),
            (false, true) => Some(Expired::Inner),
            (false, false) => None,
        }
    }
}

/// A number of seconds as Python's `{:g}` writes it (`2`, `0.5`, `1e-05`).
pub fn py_g(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{x:.5e}"); // six significant digits, e.g. 2.00000e0
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let strip = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s.to_owned()
        }
    };
    if (-4..6).contains(&exp) {
        let decimals = (5 - exp).max(0) as usize;
        strip(&format!("{x:.decimals$}"))
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip(mantissa), exp.abs())
    }
}

/// The 504's reason when the call's timeout ran out before `service` answered.
pub fn call_timeout_reason(service: &str, seconds: f64) -> String {
    format!(
        "upstream request timeout: {service} did not answer within {}s",
        py_g(seconds)
    )
}

/// The reason when an attempt's per-try timeout ran out before `instance` answered
/// (a 504, which a retry policy may retry).
pub fn attempt_timeout_reason(instance: &str, seconds: f64) -> String {
    format!("{instance} did not answer within {}s", py_g(seconds))
}

/// The 408's reason when a timeout ran out while the request's body was still
/// arriving: the caller's doing, not the endpoint's.
pub fn body_timeout_reason(service: &str, seconds: f64) -> String {
    format!(
        "the request body was still arriving when the {}s timeout of the call to \
         {service} ran out",
        py_g(seconds)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_as_python_s_g_writes_them() {
        for (x, g) in [
            (2.0, "2"),
            (0.5, "0.5"),
            (0.2, "0.2"),
            (1.25, "1.25"),
            (30.0, "30"),
            (123456.0, "123456"),
            (1234567.0, "1.23457e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (1.0 / 3.0, "0.333333"),
        ] {
            assert_eq!(py_g(x), g, "{x}");
        }
    }

    #[test]
    fn the_timeout_texts_are_the_python_sidecar_s() {
        assert_eq!(
            call_timeout_reason("catalog", 2.0),
            "upstream request timeout: catalog did not answer within 2s"
        );
        assert_eq!(
            attempt_timeout_reason("catalog-1", 0.2),
            "catalog-1 did not answer within 0.2s"
        );
        assert_eq!(
            body_timeout_reason("catalog", 1.5),
            "the request body was still arriving when the 1.5s timeout of the call to \
             catalog ran out"
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_block_that_overruns_has_expired() {
        let start = Instant::now();
        let d = Deadline::after(start, Some(0.01));
        assert_eq!(d.at(), Some(start + ms(10)));
        assert!(!d.expired(start + ms(9)));
        assert!(d.expired(start + ms(10)));
        assert_eq!(d.remaining(start + ms(4)), Some(ms(6)));
        assert_eq!(d.remaining(start + ms(40)), Some(Duration::ZERO));
    }

    #[test]
    fn a_block_that_finishes_in_time_is_left_alone() {
        let start = Instant::now();
        let d = Deadline::after(start, Some(5.0));
        assert!(!d.expired(start));
        assert!(!d.expired(start + ms(4_999)));
    }

    #[test]
    fn none_means_no_limit() {
        let start = Instant::now();
        let d = Deadline::after(start, None);
        assert_eq!(d, Deadline::NONE);
        assert!(!d.expired(start + Duration::from_secs(1_000_000)));
        assert_eq!(d.remaining(start), None);
        assert_eq!(Deadlines::default().at(), None);
    }

    #[test]
    fn the_inner_of_two_catches_only_its_own() {
        let start = Instant::now();
        let both = Deadlines {
            outer: Deadline::after(start, Some(5.0)),
            inner: Deadline::after(start, Some(0.01)),
        };
        assert_eq!(both.at(), Some(start + ms(10)));
        assert_eq!(both.expired(start + ms(5)), None);
        assert_eq!(both.expired(start + ms(10)), Some(Expired::Inner));
        // the outer one still runs
        assert_eq!(both.expired(start + ms(4_999)), Some(Expired::Inner));
        assert_eq!(both.expired(start + ms(5_000)), Some(Expired::Outer));
    }

    #[test]
    fn the_outer_of_two_expires_through_the_inner() {
        let start = Instant::now();
        let both = Deadlines {
            outer: Deadline::after(start, Some(0.01)),
            inner: Deadline::after(start, Some(5.0)),
        };
        assert_eq!(both.at(), Some(start + ms(10)));
        assert_eq!(both.expired(start + ms(10)), Some(Expired::Outer));
    }

    #[test]
    fn when_both_run_out_at_once_the_outer_wins() {
        let start = Instant::now();
        let both = Deadlines {
            outer: Deadline::after(start, Some(1.0)),
            inner: Deadline::after(start, Some(1.0)),
        };
        assert_eq!(both.expired(start + ms(1_000)), Some(Expired::Outer));
    }

    #[test]
    fn only_one_deadline_of_two_may_be_set() {
        let start = Instant::now();
        let inner_only = Deadlines {
            outer: Deadline::NONE,
            inner: Deadline::after(start, Some(0.5)),
        };
        assert_eq!(inner_only.at(), Some(start + ms(500)));
        assert_eq!(inner_only.expired(start + ms(500)), Some(Expired::Inner));
        let outer_only = Deadlines {
            outer: Deadline::after(start, Some(0.5)),
            inner: Deadline::NONE,
        };
        assert_eq!(outer_only.expired(start + ms(500)), Some(Expired::Outer));
    }
}
