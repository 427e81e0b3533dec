//! The control link's decisions in time, as pure values: when to dial again (capped
//! exponential backoff with jitter), when to ping a silent control plane and when to
//! give the link up, and when a hold of the app ends by itself. The clock and the
//! random draw are passed in; `proxy/control.py` and `proxy/appgate.py` hold the same
//! constants.

use std::time::{Duration, Instant};

/// The first wait before dialling again.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait before dialling again.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// This long without a word from the control plane, the sidecar pings it.
pub const PING_AFTER: Duration = Duration::from_secs(10);
/// This long without a word from the control plane (its pongs included), the link is dead.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(25);
/// How often the link sends what is pending and looks at the silence.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// At most this long a hold of the app lasts.
pub const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// The wait before each dial: doubles after each, up to [`BACKOFF_MAX`]; each wait is
/// drawn in [half, whole) of the current step (jitter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { step: BACKOFF_MIN }
    }
}

impl Backoff {
    /// A link that ended in good order: the next wait starts from the shortest again.
    pub fn reset(&mut self) {
        self.step = BACKOFF_MIN;
    }

    /// The wait before the next dial, with `draw` in [0, 1); the step doubles.
    pub fn next_delay(&mut self, draw: f64) -> Duration {
        let delay = self.step.mul_f64(0.5 + draw.clamp(0.0, 1.0) / 2.0);
        self.step = (self.step * 2).min(BACKOFF_MAX);
        delay
    }
}

/// What the link should do about the silence now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Nothing to do.
    Fine,
    /// Send a WebSocket ping.
    Ping,
    /// Give the link up: nothing heard for [`SILENCE_LIMIT`].
    GiveUp,
}

/// When the control plane was last heard from (any frame counts), and last pinged.
#[derive(Debug, Clone)]
pub struct Liveness {
    last_heard: Instant,
    pinged: Option<Instant>,
    ping_after: Duration,
    limit: Duration,
}

impl Liveness {
    /// A link that opened at `now`, with the Python's constants.
    pub fn new(now: Instant) -> Self {
        Liveness::with_limits(now, PING_AFTER, SILENCE_LIMIT)
    }

    /// A link with other limits (tests).
    pub fn with_limits(now: Instant, ping_after: Duration, limit: Duration) -> Self {
        Liveness {
            last_heard: now,
            pinged: None,
            ping_after,
            limit,
        }
    }

    /// A frame came in at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// What to do at `now` (a ping at most once per `ping_after` while silent).
    pub fn check(&mut self, now: Instant) -> Silence {
        let silent = now.saturating_duration_since(self.last_heard);
        if silent > self.limit {
            return Silence::GiveUp;
        }
        let since_ping = self.pinged.map(|at| now.saturating_duration_since(at));
        if silent > self.ping_after && since_ping.is_none_or(|d| d > self.ping_after) {
            self.pinged = Some(now);
            return Silence::Ping;
        }
        Silence::Fine
    }

    /// The silence limit, for the error text.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// A hold of the app: when it began, so that it ends by itself after [`HOLD_LIMIT`].
#[derive(Debug, Clone, Default)]
pub struct Hold {
    since: Option<Instant>,
}

impl Hold {
    /// Whether calls to the app are held now.
    pub fn held(&self) -> bool {
        self.since.is_some()
    }

    /// Hold at `now` (a hold already on keeps its start).
    pub fn begin(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// End the hold; true if there was one.
    pub fn end(&mut self) -> bool {
        self.since.take().is_some()
    }

    /// True (and the hold ends) if it has lasted past [`HOLD_LIMIT`] at `now`.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.since {
            Some(since) if now.saturating_duration_since(since) >= HOLD_LIMIT => self.end(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut backoff = Backoff::default();
        let lows: Vec<_> = (0..7).map(|_| backoff.next_delay(0.0)).collect();
        let ms: Vec<u128> = lows.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000, 1000]);
        let mut backoff = Backoff::default();
        let highs: Vec<u128> = (0..7)
            .map(|_| backoff.next_delay(0.999_999).as_millis())
            .collect();
        assert_eq!(highs, [99, 199, 399, 799, 1599, 1999, 1999]);
        backoff.reset();
        assert_eq!(backoff.next_delay(0.5), Duration::from_millis(75));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_link_is_pinged_every_ping_after_and_given_up_at_the_limit() {
        let start = tokio::time::Instant::now();
        let mut live = Liveness::new(start.into_std());
        let mut seen = Vec::new();
        loop {
            tokio::time::sleep(FLUSH_INTERVAL).await;
            let now = tokio::time::Instant::now();
            let what = live.check(now.into_std());
            if what != Silence::Fine {
                seen.push((what, (now - start).as_millis()));
            }
            if what == Silence::GiveUp {
                break;
            }
        }
        assert_eq!(
            seen,
            [
                (Silence::Ping, 10_100),
                (Silence::Ping, 20_200),
                (Silence::GiveUp, 25_100)
            ]
        );
    }

    #[test]
    fn any_frame_heard_keeps_the_link() {
        let start = Instant::now();
        let mut live = Liveness::new(start);
        for second in 1..=100 {
            let now = start + Duration::from_secs(second);
            live.heard(now);
            assert_eq!(live.check(now + Duration::from_millis(500)), Silence::Fine);
        }
    }

    #[test]
    fn a_pong_after_a_ping_starts_the_silence_over() {
        let start = Instant::now();
        let mut live = Liveness::new(start);
        let at = |s: u64| start + Duration::from_millis(s);
        assert_eq!(live.check(at(10_001)), Silence::Ping);
        live.heard(at(10_050));
        assert_eq!(live.check(at(20_000)), Silence::Fine);
        assert_eq!(live.check(at(20_100)), Silence::Ping);
        assert_eq!(
            live.check(at(30_000)),
            Silence::Fine,
            "pinged less than PING_AFTER ago"
        );
        assert_eq!(live.check(at(35_100)), Silence::GiveUp);
    }

    #[test]
    fn a_hold_ends_by_itself_after_the_limit_and_keeps_its_start() {
        let start = Instant::now();
        let mut hold = Hold::default();
        assert!(!hold.held());
        hold.begin(start);
        hold.begin(start + Duration::from_secs(30));
        assert!(!hold.expire(start + Duration::from_secs(59)));
        assert!(hold.expire(start + HOLD_LIMIT));
        assert!(!hold.held());
        assert!(!hold.end(), "nothing left to end");
    }
}
