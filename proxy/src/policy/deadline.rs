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

#[cfg(test)]
mod tests {
    use super::*;

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
