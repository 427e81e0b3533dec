//! Outlier detection (circuit breaking) per endpoint of one destination service. Pure logic.
//!
//! It follows Envoy's outlier detection (consecutive 5xx), with Envoy's defaults:
//!
//! - `consecutive_5xx` failures in a row eject an endpoint. A failure is a 5xx from
//!   the upstream or a locally-originated one (connect failure, reset, timeout of a
//!   request sent whole), which Envoy maps to a 5xx; a success (any other status)
//!   resets the run. What says nothing of the endpoint neither counts nor resets:
//!   as in Envoy, only upstream results count, not a caller that hung up or never
//!   sent its body whole, nor a request the mesh refused itself (the caller's own
//!   connection-pool limit overflowing, say).
//! - An ejection is refused if it would take more than `max_ejection_percent` of
//!   the endpoints out, but one endpoint may always be ejected. Either way the run
//!   starts again from zero, as in Envoy.
//! - The n-th ejection lasts `base_ejection_time * n`, at most `max_ejection_time`.
//!   Each full `interval` an endpoint spends closed without a failure lowers n by one.
//! - When its time is up the endpoint is *half-open*: it takes traffic again and its
//!   first result decides: a success closes it, a failure ejects it again at once
//!   (where Envoy would wait for a new run of failures).
//! - The panic threshold (Envoy's `healthy_panic_threshold`): when fewer than
//!   `panic_threshold` percent of a pool's endpoints are healthy (not open), the
//!   caller routes to all of them, ejected or not ([`in_panic`]); 0 never does.
//!   Ejections go on as before: panic only overrides them for picking.
//!
//! Time is passed in (`now`, a monotonic `Instant`) to every method; time-driven
//! changes happen lazily, whenever a method is given the time (there are no timers).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Envoy's `outlier_detection` settings and defaults (times in seconds).
///
/// A plain value: the route policy's parser validates it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierSettings {
    pub consecutive_5xx: u64,
    pub interval: f64,
    pub base_ejection_time: f64,
    pub max_ejection_time: f64,
    pub max_ejection_percent: f64,
    /// Below this percent of a pool healthy, route to all of it (0: never).
    pub panic_threshold: f64,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        OutlierSettings {
            consecutive_5xx: 5,
            interval: 10.0,
            base_ejection_time: 30.0,
            max_ejection_time: 300.0,
            max_ejection_percent: 10.0,
            panic_threshold: 50.0,
        }
    }
}

/// Whether fewer than `threshold` percent of `pool` (instance ids) are healthy, that is
/// not in `ejected`: then the caller routes to the whole pool, as Envoy does.
pub fn in_panic<S: AsRef<str>>(
    pool: &[S],
    is_ejected: impl Fn(&str) -> bool,
    threshold: f64,
) -> bool {
    if threshold <= 0.0 || pool.is_empty() {
        return false;
    }
    let healthy = pool.iter().filter(|i| !is_ejected(i.as_ref())).count();
    100.0 * healthy as f64 / (pool.len() as f64) < threshold
}

/// A failure before any answer, counted like a 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFailure {
    ConnectFailure,
    Reset,
    Timeout,
}

impl LocalFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            LocalFailure::ConnectFailure => "connect-failure",
            LocalFailure::Reset => "reset",
            LocalFailure::Timeout => "timeout",
        }
    }
}

/// How one attempt on an endpoint ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered: 500-599 is a failure, anything else a success.
    Status(u16),
    /// The attempt failed before an answer: counted like a 5xx.
    LocalFailure(LocalFailure),
    /// It ended by the caller's doing or the mesh's (the caller hung up, its body never
    /// came whole, the mesh refused the request): neither counts nor resets. The text says
    /// why (`downstream-reset`).
    NotTheEndpoint(String),
}

impl Outcome {
    /// The caller's own connection-pool limit answered 503.
    pub fn overflow() -> Outcome {
        Outcome::NotTheEndpoint("overflow".into())
    }

    /// `success`, `5xx`, `local-failure` or `not-the-endpoint`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Status(500..=599) => "5xx",
            Outcome::Status(_) => "success",
            Outcome::LocalFailure(_) => "local-failure",
            Outcome::NotTheEndpoint(_) => "not-the-endpoint",
        }
    }

    /// The status (`503`), the local failure (`connect-failure`), or why it says nothing
    /// of the endpoint.
    pub fn detail(&self) -> String {
        match self {
            Outcome::Status(code) => code.to_string(),
            Outcome::LocalFailure(what) => what.as_str().to_owned(),
            Outcome::NotTheEndpoint(why) => why.clone(),
        }
    }

    /// A 5xx or a local failure.
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Status(500..=599) | Outcome::LocalFailure(_))
    }
}

/// An endpoint's breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// `closed`, `open`, `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
}

/// What the user sees of one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointState {
    pub instance: String,
    pub state: State,
    /// Why it was last ejected (kept while half-open); `None` when closed.
    pub reason: Option<String>,
    /// When an open endpoint turns half-open; `None` unless open.
    pub retry_at: Option<Instant>,
    /// Times ejected since it joined (never decays).
    pub ejections: u64,
    /// Envoy's ejection-time multiplier: the next ejection lasts `base * (multiplier + 1)`.
    pub multiplier: u64,
    pub consecutive_failures: u64,
}

impl EndpointState {
    pub fn to_json(&self, now: Instant) -> Value {
        json!({
            "instance": self.instance,
            "state": self.state.as_str(),
            "reason": self.reason,
            "retry_in": seconds_until(self.retry_at, now),
            "ejections": self.ejections,
            "consecutive_failures": self.consecutive_failures,
        })
    }
}

/// The breaker state of the edge to the destination service.
///
/// `open` if any endpoint is open (with the reason and retry time of the one that
/// retries soonest), else `half-open` if any is, else `closed`.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSummary {
    pub state: State,
    /// The endpoint the reason and retry time are about.
    pub instance: Option<String>,
    pub reason: Option<String>,
    pub retry_at: Option<Instant>,
    /// Endpoints open now.
    pub ejected: usize,
    pub half_open: usize,
    pub total: usize,
    /// Ejections on this edge since the sidecar started, over every endpoint.
    pub ejections: u64,
    /// A pool the caller picks among is under its panic threshold: it routes to all of
    /// it, ejected endpoints too (the detector alone cannot say: the destination fills
    /// it in).
    pub panic: bool,
}

impl BreakerSummary {
    pub fn to_json(&self, now: Instant) -> Value {
        json!({
            "state": self.state.as_str(),
            "instance": self.instance,
            "reason": self.reason,
            "retry_in": seconds_until(self.retry_at, now),
            "ejected": self.ejected,
            "half_open": self.half_open,
            "total": self.total,
            "ejections": self.ejections,
            "panic": self.panic,
        })
    }
}

#[derive(Debug, Clone)]
struct Endpoint {
    state: State,
    consecutive: u64,
    local_in_run: bool,
    multiplier: u64,
    ejections: u64,
    reason: Option<String>,
    retry_at: Instant,
    /// Start of the interval now running without ejection or failure (for the decay).
    healthy_since: Instant,
}

impl Endpoint {
    fn new(now: Instant) -> Self {
        Endpoint {
            state: State::Closed,
            consecutive: 0,
            local_in_run: false,
            multiplier: 0,
            ejections: 0,
            reason: None,
            retry_at: now,
            healthy_since: now,
        }
    }
}

/// Called with the new summary whenever the breaker's state, its number of open
/// endpoints or its ejection count changes, from within whichever call noticed it.
pub type OnChange = Box<dyn FnMut(&BreakerSummary) + Send>;

/// Outlier detection over the endpoints (instance ids) of one destination service.
pub struct OutlierDetector {
    settings: OutlierSettings,
    order: Vec<String>,
    endpoints: HashMap<String, Endpoint>,
    on_change: Option<OnChange>,
    reported: (State, usize, u64),
}

impl std::fmt::Debug for OutlierDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutlierDetector")
            .field("settings", &self.settings)
            .field("order", &self.order)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn secs(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX)
}

fn seconds_until(at: Option<Instant>, now: Instant) -> Option<f64> {
    at.map(|at| {
        let s = at.saturating_duration_since(now).as_secs_f64();
        (s * 1000.0).round() / 1000.0
    })
}

impl OutlierDetector {
    pub fn new<S: AsRef<str>>(
        now: Instant,
        settings: OutlierSettings,
        instances: &[S],
        on_change: Option<OnChange>,
    ) -> Self {
        let mut d = OutlierDetector {
            settings,
            order: Vec::new(),
            endpoints: HashMap::new(),
            on_change,
            reported: (State::Closed, 0, 0),
        };
        for i in instances {
            let i = i.as_ref();
            if d.endpoints
                .insert(i.to_owned(), Endpoint::new(now))
                .is_none()
            {
                d.order.push(i.to_owned());
            }
        }
        d.reported = key(&d.summary_now());
        d
    }

    pub fn settings(&self) -> &OutlierSettings {
        &self.settings
    }

    /// New settings apply to later decisions; running ejections keep their end.
    pub fn set_settings(&mut self, settings: OutlierSettings) {
        self.settings = settings;
    }

    /// The destination's endpoints changed: new ones start closed, removed ones are
    /// forgotten (one coming back later starts afresh).
    pub fn set_endpoints<S: AsRef<str>>(&mut self, instances: &[S], now: Instant) {
        self.advance(now);
        let mut old = std::mem::take(&mut self.endpoints);
        self.order.clear();
        for i in instances {
            let i = i.as_ref();
            if self.endpoints.contains_key(i) {
                continue;
            }
            let ep = old.remove(i).unwrap_or_else(|| Endpoint::new(now));
            self.endpoints.insert(i.to_owned(), ep);
            self.order.push(i.to_owned());
        }
        self.notify();
    }

    /// Account for one attempt on `instance`; `None` if it is not an endpoint (any more).
    /// Results arriving while the endpoint is open (requests that were already in
    /// flight) change nothing.
    pub fn record(
        &mut self,
        instance: &str,
        outcome: &Outcome,
        now: Instant,
    ) -> Option<EndpointState> {
        self.advance(now);
        let open = self.open_count();
        let total = self.endpoints.len();
        let settings = self.settings;
        let ep = self.endpoints.get_mut(instance)?;
        if matches!(outcome, Outcome::NotTheEndpoint(_)) || ep.state == State::Open {
            return Some(state_of(instance, ep));
        }
        if !outcome.failed() && ep.state == State::Closed {
            ep.consecutive = 0; // the common case, which changes no state: nothing to report
            ep.local_in_run = false;
            return Some(state_of(instance, ep));
        }
        if !outcome.failed() {
            if ep.state == State::HalfOpen {
                ep.state = State::Closed;
                ep.healthy_since = now;
            }
            ep.consecutive = 0;
            ep.local_in_run = false;
        } else {
            ep.consecutive += 1;
            ep.local_in_run = ep.local_in_run || matches!(outcome, Outcome::LocalFailure(_));
            ep.healthy_since = now;
            if ep.state == State::HalfOpen {
                let reason = format!("failed while half-open (last: {})", outcome.detail());
                try_eject(ep, &settings, open, total, now, reason);
            } else if ep.consecutive >= settings.consecutive_5xx {
                let what = if ep.local_in_run { "failures" } else { "5xx" };
                let reason = format!(
                    "{} consecutive {what} (last: {})",
                    ep.consecutive,
                    outcome.detail()
                );
                try_eject(ep, &settings, open, total, now, reason);
            }
        }
        let state = state_of(instance, ep);
        self.notify();
        Some(state)
    }

    /// Apply what the clock says (ejections ending) and return the summary; call it now
    /// and then, or at [`OutlierDetector::next_change`], to be told of time-driven changes.
    pub fn tick(&mut self, now: Instant) -> BreakerSummary {
        self.advance(now);
        self.notify()
    }

    /// When the next time-driven change happens (an open endpoint turning half-open), if
    /// any.
    pub fn next_change(&mut self, now: Instant) -> Option<Instant> {
        self.tick(now);
        self.endpoints
            .values()
            .filter(|ep| ep.state == State::Open)
            .map(|ep| ep.retry_at)
            .min()
    }

    pub fn is_ejected(&mut self, instance: &str, now: Instant) -> bool {
        self.tick(now);
        self.is_open(instance)
    }

    /// `instances` without the open ones (unknown ids count as eligible).
    pub fn eligible<'a, S: AsRef<str>>(&mut self, instances: &'a [S], now: Instant) -> Vec<&'a S> {
        self.tick(now);
        instances
            .iter()
            .filter(|i| !self.is_open(i.as_ref()))
            .collect()
    }

    /// Open endpoints and the time each turns half-open.
    pub fn ejected(&mut self, now: Instant) -> HashMap<String, Instant> {
        self.tick(now);
        self.endpoints
            .iter()
            .filter(|(_, ep)| ep.state == State::Open)
            .map(|(i, ep)| (i.clone(), ep.retry_at))
            .collect()
    }

    pub fn endpoint(&mut self, instance: &str, now: Instant) -> Option<EndpointState> {
        self.tick(now);
        self.endpoints
            .get(instance)
            .map(|ep| state_of(instance, ep))
    }

    /// Every endpoint, in the order they were given.
    pub fn endpoints(&mut self, now: Instant) -> Vec<EndpointState> {
        self.tick(now);
        self.order
            .iter()
            .map(|i| state_of(i, &self.endpoints[i]))
            .collect()
    }

    pub fn summary(&mut self, now: Instant) -> BreakerSummary {
        self.tick(now)
    }

    /// The summary with an `endpoints` list; times as seconds from now.
    pub fn to_json(&mut self, now: Instant) -> Value {
        let summary = self.tick(now);
        let mut data = summary.to_json(now);
        let endpoints: Vec<Value> = self
            .order
            .iter()
            .map(|i| state_of(i, &self.endpoints[i]).to_json(now))
            .collect();
        data["endpoints"] = Value::Array(endpoints);
        data
    }

    // internals

    /// Bring every endpoint to `now`: ejections that ended turn half-open, and the
    /// multiplier drops by one per full healthy interval.
    fn advance(&mut self, now: Instant) {
        let interval = self.settings.interval;
        for ep in self.endpoints.values_mut() {
            if ep.state == State::Open && now >= ep.retry_at {
                ep.state = State::HalfOpen;
                ep.consecutive = 0;
                ep.local_in_run = false;
            } else if ep.state == State::Closed && ep.multiplier > 0 && interval > 0.0 {
                let healthy = now
                    .saturating_duration_since(ep.healthy_since)
                    .as_secs_f64();
                let intervals = (healthy / interval).floor();
                if intervals > 0.0 {
                    ep.multiplier = ep.multiplier.saturating_sub(intervals as u64);
                    ep.healthy_since += secs(intervals * interval);
                }
            }
        }
    }

    fn open_count(&self) -> usize {
        self.endpoints
            .values()
            .filter(|ep| ep.state == State::Open)
            .count()
    }

    fn is_open(&self, instance: &str) -> bool {
        self.endpoints
            .get(instance)
            .is_some_and(|ep| ep.state == State::Open)
    }

    fn summary_now(&self) -> BreakerSummary {
        let total = self.endpoints.len();
        let ejections = self.endpoints.values().map(|ep| ep.ejections).sum();
        let opened = self
            .order
            .iter()
            .map(|i| (i, &self.endpoints[i]))
            .filter(|(_, ep)| ep.state == State::Open);
        let ejected = opened.clone().count();
        let soonest = opened.min_by(|a, b| (a.1.retry_at, a.0).cmp(&(b.1.retry_at, b.0)));
        let mut half = self
            .order
            .iter()
            .map(|i| (i, &self.endpoints[i]))
            .filter(|(_, ep)| ep.state == State::HalfOpen);
        let half_open = half.clone().count();
        if let Some((instance, ep)) = soonest {
            return BreakerSummary {
                state: State::Open,
                instance: Some(instance.clone()),
                reason: ep.reason.clone(),
                retry_at: Some(ep.retry_at),
                ejected,
                half_open,
                total,
                ejections,
                panic: false,
            };
        }
        if let Some((instance, ep)) = half.next() {
            return BreakerSummary {
                state: State::HalfOpen,
                instance: Some(instance.clone()),
                reason: ep.reason.clone(),
                retry_at: None,
                ejected: 0,
                half_open,
                total,
                ejections,
                panic: false,
            };
        }
        BreakerSummary {
            state: State::Closed,
            instance: None,
            reason: None,
            retry_at: None,
            ejected: 0,
            half_open: 0,
            total,
            ejections,
            panic: false,
        }
    }

    fn notify(&mut self) -> BreakerSummary {
        let summary = self.summary_now();
        let now_key = key(&summary);
        if now_key != self.reported {
            self.reported = now_key;
            if let Some(on_change) = self.on_change.as_mut() {
                on_change(&summary);
            }
        }
        summary
    }
}

fn key(summary: &BreakerSummary) -> (State, usize, u64) {
    (summary.state, summary.ejected, summary.ejections)
}

fn state_of(instance: &str, ep: &Endpoint) -> EndpointState {
    EndpointState {
        instance: instance.to_owned(),
        state: ep.state,
        reason: if ep.state == State::Closed {
            None
        } else {
            ep.reason.clone()
        },
        retry_at: (ep.state == State::Open).then_some(ep.retry_at),
        ejections: ep.ejections,
        multiplier: ep.multiplier,
        consecutive_failures: ep.consecutive,
    }
}

/// Eject `ep` unless the max ejection percent forbids it; either way its run of failures
/// starts again (as Envoy resets the counter after an ejection attempt). `open` is how
/// many endpoints are open now (`ep` is not), `total` how many there are.
fn try_eject(
    ep: &mut Endpoint,
    settings: &OutlierSettings,
    open: usize,
    total: usize,
    now: Instant,
    reason: String,
) {
    ep.consecutive = 0;
    ep.local_in_run = false;
    let percent = 100.0 * (open + 1) as f64 / total as f64;
    if open > 0 && percent > settings.max_ejection_percent {
        ep.state = State::Closed; // refused: a half-open endpoint is simply back in service
        ep.reason = None;
        return;
    }
    let (base, cap) = (settings.base_ejection_time, settings.max_ejection_time);
    // Envoy stops growing the multiplier once base * multiplier has passed the cap.
    if (ep.multiplier as f64) * base < cap + base {
        ep.multiplier += 1;
    }
    ep.ejections += 1;
    ep.state = State::Open;
    ep.reason = Some(reason);
    ep.retry_at = now + secs((base * ep.multiplier as f64).min(cap));
}

#[cfg(test)]
mod tests;
