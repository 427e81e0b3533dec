//! Fault injection for the sidecar, in Istio's shape, plus Toxiproxy's connection faults.
//!
//! A [`Fault`] is scoped by a [`Match`] and may delay (fixed, with jitter, for a
//! percentage of requests), abort (an HTTP status or a connection reset, for a
//! percentage of requests, independent of the delay), limit the response body's
//! bandwidth, or hang (accept the request, never answer for a while, then reset).
//! It may be time-boxed by `expires_at` (wall clock, seconds since the epoch).
//!
//! [`decide`] is pure: it takes the faults in force, the request, a source of
//! randomness and the time, and says what to do to that one request. Several
//! matching faults combine so:
//!
//! - every matching, unexpired fault rolls its own dice, in fault order: the delay's
//!   percentage, then the jitter (only if the delay fired), then the abort's
//!   percentage; a roll with percent 0 or 100 draws nothing;
//! - the delays that fired add up (each one `delay ± jitter`, never below 0);
//! - the first abort that fired (by fault order) ends the request: its status, or a reset;
//! - otherwise the longest hang ends it (accept, never answer, then reset);
//! - otherwise the request is forwarded, the response body held to the smallest bandwidth;
//! - [`Decision::fired`] holds the ids (in fault order) of the faults whose effect is
//!   in force, so injected failures are always told apart from real ones.
//!
//! The wire form is validated by [`parse_faults`] with the Python sidecar's error
//! texts (values quoted as Python's `repr` writes them) and written back by
//! [`faults_to_wire`]; numbers keep the form the wire gave them (`20` stays `20`).

mod repr;
mod wire;

use crate::invalid::Invalid;

pub(crate) use repr::py_str_repr;
#[cfg(test)]
use repr::{py_float_repr, py_repr};
#[cfg(test)]
use wire::build_fault;
pub use wire::{
    check_bandwidth, check_hang, check_path_prefix, check_percent, check_seconds, check_status,
    fault_to_wire, faults_to_wire, parse_fault, parse_fault_list, parse_faults,
};

/// A fault is invalid: `field` is the dotted path of the offending field (`""` when the
/// fault as a whole is wrong) and `problem` what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultError {
    pub field: String,
    pub problem: String,
}

impl FaultError {
    pub(crate) fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FaultError {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error, its field prefixed by where the fault sits (`faults[0]`).
    pub fn at(self, place: &str) -> FaultError {
        let field = if self.field.is_empty() {
            place.to_owned()
        } else {
            format!("{place}.{}", self.field)
        };
        FaultError::new(field, self.problem)
    }
}

impl std::fmt::Display for FaultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let field = if self.field.is_empty() {
            "the fault"
        } else {
            &self.field
        };
        write!(f, "{field} {}", self.problem)
    }
}

impl std::error::Error for FaultError {}

impl From<FaultError> for Invalid {
    fn from(e: FaultError) -> Self {
        Invalid(e.to_string())
    }
}

// -- the model ----------------------------------------------------------------------------

/// The request headers a [`Match`] looks at; names are given in lower case.
pub trait Headers {
    /// Whether the request carries header `name` with exactly `value` (any one of its
    /// values, if repeated).
    fn has(&self, name: &str, value: &str) -> bool;
}

impl Headers for http::HeaderMap {
    fn has(&self, name: &str, value: &str) -> bool {
        self.get_all(name)
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for [(K, V)] {
    fn has(&self, name: &str, value: &str) -> bool {
        self.iter()
            .any(|(k, v)| k.as_ref().eq_ignore_ascii_case(name) && v.as_ref() == value)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for Vec<(K, V)> {
    fn has(&self, name: &str, value: &str) -> bool {
        self.as_slice().has(name, value)
    }
}

/// Which requests a fault applies to; every condition given must hold.
///
/// `path_prefix` is a plain string prefix, as Istio's `uri.prefix` (`/item`
/// matches `/items`). `method` compares case-insensitively. `headers`: the
/// request must carry each header (name case-insensitive) with exactly that value
/// (any one of its values, if repeated). `source` is the calling service.
/// An empty match matches every request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    pub path_prefix: Option<String>,
    /// As the wire gave it.
    pub method: Option<String>,
    /// (name, value) as the wire gave them.
    pub headers: Vec<(String, String)>,
    pub source: Option<String>,
    upper_method: Option<String>,
    lower_headers: Vec<(String, String)>,
}

impl Match {
    /// Whether a request matches.
    pub fn matches<H: Headers + ?Sized>(
        &self,
        method: &str,
        path: &str,
        headers: &H,
        source: Option<&str>,
    ) -> bool {
        if let Some(prefix) = &self.path_prefix {
            if !path.starts_with(prefix.as_str()) {
                return false;
            }
        }
        if let Some(wanted) = &self.upper_method {
            if method != wanted && method.to_uppercase() != *wanted {
                return false;
            }
        }
        if let Some(wanted) = &self.source {
            if source != Some(wanted.as_str()) {
                return false;
            }
        }
        self.lower_headers.iter().all(|(n, v)| headers.has(n, v))
    }
}

/// One fault rule, as [`parse_fault`] validated it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub id: String,
    pub matcher: Match,
    /// Seconds added before the request goes on (or is aborted).
    pub delay: Option<f64>,
    /// The delay varies uniformly within ± this many seconds, never below 0.
    pub jitter: f64,
    pub delay_percent: f64,
    pub abort_status: Option<u16>,
    /// Reset the connection instead of answering.
    pub abort_reset: bool,
    pub abort_percent: f64,
    /// Bytes per second on the response body.
    pub bandwidth: Option<u64>,
    /// Accept the request, never answer for this many seconds, then reset.
    pub hang: Option<f64>,
    /// Wall clock (seconds since the epoch); from then on the fault no longer applies.
    pub expires_at: Option<f64>,
    integers: Integers,
}

/// Which of a fault's numbers the wire wrote as integers, so the wire form round-trips
/// exactly; not part of the fault's meaning (`1` and `1.0` are the same delay).
#[derive(Debug, Clone, Copy, Default)]
struct Integers(u8);

impl PartialEq for Integers {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

const DELAY: u8 = 1;
const JITTER: u8 = 2;
const DELAY_PERCENT: u8 = 4;
const ABORT_PERCENT: u8 = 8;
const HANG: u8 = 16;
const EXPIRES_AT: u8 = 32;

impl Fault {
    /// Whether the fault's time is up at `now` (wall clock seconds).
    pub fn expired(&self, now: f64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// What [`decide`] needs to know of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a, H: Headers + ?Sized> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a H,
    /// The calling service, if known.
    pub source: Option<&'a str>,
}

/// What to do to one request; [`Decision::is_none`] when no fault fired.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// Seconds to wait first (the fired delays, added up).
    pub delay: f64,
    pub abort_status: Option<u16>,
    pub abort_reset: bool,
    /// Seconds to hold the request unanswered before resetting (only if no abort).
    pub hang: Option<f64>,
    /// Bytes per second for the response body (only if neither abort nor hang).
    pub bandwidth: Option<u64>,
    /// Ids of the faults whose effect is in force, in fault order.
    pub fired: Vec<String>,
}

impl Decision {
    /// No fault fired: forward the request as it is.
    pub fn is_none(&self) -> bool {
        self.fired.is_empty()
    }

    /// The fired ids as the telemetry and the fault header carry them (`a,b`).
    pub fn fired_list(&self) -> String {
        self.fired.join(",")
    }

    /// Add this decision's fired ids to those of a call's earlier attempts, each once, in
    /// the order first fired (what the call's telemetry record names).
    pub fn add_fired_to(&self, all: &mut Vec<String>) {
        for id in &self.fired {
            if !all.contains(id) {
                all.push(id.clone());
            }
        }
    }

    /// The delay as a `Duration` (zero if none).
    pub fn delay_duration(&self) -> std::time::Duration {
        std::time::Duration::try_from_secs_f64(self.delay).unwrap_or_default()
    }

    /// The hang as a `Duration`, if any.
    pub fn hang_duration(&self) -> Option<std::time::Duration> {
        self.hang
            .map(|h| std::time::Duration::try_from_secs_f64(h).unwrap_or(std::time::Duration::MAX))
    }
}

// -- the decision -------------------------------------------------------------------------

/// What the faults in force do to `request` (see the module's combination rule).
/// `draw` gives floats in [0, 1) (e.g. `|| rng.random::<f64>()`); `now` is the wall
/// clock in seconds since the epoch.
pub fn decide<H: Headers + ?Sized>(
    faults: &[Fault],
    request: &RequestInfo<'_, H>,
    draw: &mut impl FnMut() -> f64,
    now: f64,
) -> Decision {
    let mut total = 0.0;
    let mut delayed: Vec<usize> = Vec::new();
    let mut abort: Option<usize> = None;
    let mut hang: Option<usize> = None;
    let mut slow: Option<usize> = None;
    let mut longest = 0.0;
    let mut narrowest = 0;
    for (i, fault) in faults.iter().enumerate() {
        if fault.expired(now) {
            continue;
        }
        if !fault.matcher.matches(
            request.method,
            request.path,
            request.headers,
            request.source,
        ) {
            continue;
        }
        if let Some(delay) = fault.delay {
            if rolls(fault.delay_percent, draw) {
                let mut seconds = delay;
                if fault.jitter != 0.0 {
                    seconds = (seconds + (2.0 * draw() - 1.0) * fault.jitter).max(0.0);
                }
                total += seconds;
                delayed.push(i);
            }
        }
        if fault.abort_status.is_some() || fault.abort_reset {
            let fires = rolls(fault.abort_percent, draw); // rolled even when an abort already won
            if fires && abort.is_none() {
                abort = Some(i);
            }
        }
        if let Some(h) = fault.hang {
            if hang.is_none() || h > longest {
                hang = Some(i);
                longest = h;
            }
        }
        if let Some(b) = fault.bandwidth {
            if slow.is_none() || b < narrowest {
                slow = Some(i);
                narrowest = b;
            }
        }
    }
    if abort.is_some() {
        hang = None;
        slow = None;
    } else if hang.is_some() {
        slow = None;
    }
    let mut in_force = delayed;
    in_force.extend(abort.into_iter().chain(hang).chain(slow));
    if in_force.is_empty() {
        return Decision::default();
    }
    in_force.sort_unstable();
    in_force.dedup();
    Decision {
        delay: total,
        abort_status: abort.and_then(|i| faults[i].abort_status),
        abort_reset: abort.is_some_and(|i| faults[i].abort_reset),
        hang: hang.map(|_| longest),
        bandwidth: slow.map(|_| narrowest),
        fired: in_force.into_iter().map(|i| faults[i].id.clone()).collect(),
    }
}

fn rolls(percent: f64, draw: &mut impl FnMut() -> f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    if percent <= 0.0 {
        return false;
    }
    draw() * 100.0 < percent
}

#[cfg(test)]
mod tests;
