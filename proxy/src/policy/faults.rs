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

use serde_json::{Map, Value};

use crate::invalid::Invalid;

/// A fault is invalid: `field` is the dotted path of the offending field (`""` when the
/// fault as a whole is wrong) and `problem` what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultError {
    pub field: String,
    pub problem: String,
}

impl FaultError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
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

// -- Python's repr, for the error texts ---------------------------------------------------

/// A float as Python's `repr` writes it (`0.1`, `503.0`, `1e+16`, `inf`, `nan`).
pub(crate) fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // The shortest digits that round-trip, rounded half-even as Python's repr rounds
    // them (Rust's shortest form may round a tie up).
    let shortest = format!("{x:e}");
    let digits = shortest
        .split('e')
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .count()
        .max(1);
    let exact = format!("{x:.*e}", digits - 1);
    let (mantissa, exp) = exact.split_once('e').unwrap_or((&exact, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let d: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        if exp >= 0 {
            let point = exp as usize + 1;
            if d.len() <= point {
                format!("{sign}{d}{}.0", "0".repeat(point - d.len()))
            } else {
                format!("{sign}{}.{}", &d[..point], &d[point..])
            }
        } else {
            format!("{sign}0.{}{d}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{esign}{:02}", exp.abs())
    }
}

/// A string as Python's `repr` writes it (`'dev'`, `"it's"`).
pub(crate) fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A JSON value as Python's `repr` writes what `json.loads` makes of it.
pub(crate) fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) if n.is_f64() => py_float_repr(n.as_f64().unwrap_or(f64::NAN)),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_str_repr(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", py_str_repr(k), py_repr(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

// -- field checks (each names `field`) ----------------------------------------------------

/// A number the wire gave, and whether it was written as an integer.
fn number(value: &Value) -> Option<(f64, bool)> {
    match value {
        Value::Number(n) => Some((n.as_f64()?, !n.is_f64())),
        _ => None,
    }
}

/// A percentage from 0 to 100.
pub fn check_percent(value: &Value, field: &str) -> Result<(f64, bool), FaultError> {
    match number(value) {
        Some((x, int)) if (0.0..=100.0).contains(&x) => Ok((x, int)),
        _ => Err(FaultError::new(
            field,
            format!("must be a percentage from 0 to 100, got {}", py_repr(value)),
        )),
    }
}

/// A delay or jitter: a finite number of seconds, 0 or more.
pub fn check_seconds(value: &Value, field: &str) -> Result<(f64, bool), FaultError> {
    match number(value) {
        Some((x, int)) if (0.0..f64::INFINITY).contains(&x) => Ok((x, int)),
        _ => Err(FaultError::new(
            field,
            format!(
                "must be a number of seconds, 0 or more, got {}",
                py_repr(value)
            ),
        )),
    }
}

/// An HTTP status from 200 to 599 (a whole number: `503.0` is refused).
pub fn check_status(value: &Value, field: &str) -> Result<u16, FaultError> {
    match value.as_i64() {
        Some(code @ 200..=599) => Ok(code as u16),
        _ => Err(FaultError::new(
            field,
            format!(
                "must be an HTTP status from 200 to 599, got {}",
                py_repr(value)
            ),
        )),
    }
}

/// A path prefix: a string starting with `/`.
pub fn check_path_prefix(value: &Value, field: &str) -> Result<String, FaultError> {
    match value.as_str() {
        Some(s) if s.starts_with('/') => Ok(s.to_owned()),
        _ => Err(FaultError::new(
            field,
            format!("must start with '/', got {}", py_repr(value)),
        )),
    }
}

/// Bytes per second: a whole number above 0.
pub fn check_bandwidth(value: &Value, field: &str) -> Result<u64, FaultError> {
    match value.as_u64() {
        Some(rate) if rate > 0 => Ok(rate),
        _ => Err(FaultError::new(
            field,
            format!(
                "must be a whole number of bytes per second above 0, got {}",
                py_repr(value)
            ),
        )),
    }
}

/// A hang: a finite number of seconds above 0.
pub fn check_hang(value: &Value, field: &str) -> Result<(f64, bool), FaultError> {
    match number(value) {
        Some((x, int)) if x > 0.0 && x.is_finite() => Ok((x, int)),
        _ => Err(FaultError::new(
            field,
            format!(
                "must be a number of seconds above 0, got {}",
                py_repr(value)
            ),
        )),
    }
}

fn check_name(value: &Value, field: &str, what: &str) -> Result<String, FaultError> {
    match value.as_str() {
        Some(s) if !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == ':') => {
            Ok(s.to_owned())
        }
        _ => Err(FaultError::new(
            field,
            format!(
                "must be {what} (non-empty, no spaces or ':'), got {}",
                py_repr(value)
            ),
        )),
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

// -- wire form ----------------------------------------------------------------------------

const KEYS: [&str; 11] = [
    "id",
    "match",
    "delay",
    "jitter",
    "delay_percent",
    "abort_status",
    "abort_reset",
    "abort_percent",
    "bandwidth",
    "hang",
    "expires_at",
];
const MATCH_KEYS: [&str; 4] = ["path_prefix", "method", "headers", "source"];

fn float(x: f64, integer: bool) -> Value {
    if integer && x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

/// The JSON form; keys left at their defaults are left out.
pub fn fault_to_wire(fault: &Fault) -> Value {
    let ints = fault.integers.0;
    let mut wire = Map::new();
    wire.insert("id".into(), fault.id.clone().into());
    let m = &fault.matcher;
    let mut matcher = Map::new();
    if let Some(p) = &m.path_prefix {
        matcher.insert("path_prefix".into(), p.clone().into());
    }
    if let Some(method) = &m.method {
        matcher.insert("method".into(), method.clone().into());
    }
    if !m.headers.is_empty() {
        let headers: Map<String, Value> = m
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), Value::from(v.clone())))
            .collect();
        matcher.insert("headers".into(), headers.into());
    }
    if let Some(s) = &m.source {
        matcher.insert("source".into(), s.clone().into());
    }
    if !matcher.is_empty() {
        wire.insert("match".into(), matcher.into());
    }
    if let Some(d) = fault.delay {
        wire.insert("delay".into(), float(d, ints & DELAY != 0));
    }
    if fault.jitter != 0.0 {
        wire.insert("jitter".into(), float(fault.jitter, ints & JITTER != 0));
    }
    if fault.delay_percent != 100.0 {
        let v = float(fault.delay_percent, ints & DELAY_PERCENT != 0);
        wire.insert("delay_percent".into(), v);
    }
    if let Some(s) = fault.abort_status {
        wire.insert("abort_status".into(), s.into());
    }
    if fault.abort_reset {
        wire.insert("abort_reset".into(), true.into());
    }
    if fault.abort_percent != 100.0 {
        let v = float(fault.abort_percent, ints & ABORT_PERCENT != 0);
        wire.insert("abort_percent".into(), v);
    }
    if let Some(b) = fault.bandwidth {
        wire.insert("bandwidth".into(), b.into());
    }
    if let Some(h) = fault.hang {
        wire.insert("hang".into(), float(h, ints & HANG != 0));
    }
    if let Some(e) = fault.expires_at {
        wire.insert("expires_at".into(), float(e, ints & EXPIRES_AT != 0));
    }
    wire.into()
}

/// The JSON form of a list of faults.
pub fn faults_to_wire(faults: &[Fault]) -> Value {
    Value::Array(faults.iter().map(fault_to_wire).collect())
}

fn object<'a>(data: &'a Value, place: &str) -> Result<&'a Map<String, Value>, FaultError> {
    data.as_object()
        .ok_or_else(|| FaultError::new(place, "must be an object"))
}

/// A key absent or `null` is not given (as Python's keyword left at `None`).
fn given<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// Validate one fault's wire form; errors name the path under `place` (`fault` in Python's
/// default).
pub fn parse_fault(data: &Value, place: &str) -> Result<Fault, FaultError> {
    let obj = object(data, place)?;
    if let Some(unknown) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(FaultError::new(
            format!("{place}.{unknown}"),
            "is not a fault field",
        ));
    }
    let Some(id) = obj.get("id") else {
        return Err(FaultError::new(
            format!("{place}.id"),
            "is missing; every fault needs an id",
        ));
    };
    let matcher = match obj.get("match") {
        Some(m) => parse_match(m, &format!("{place}.match"))?,
        None => Match::default(),
    };
    build_fault(id, matcher, obj).map_err(|e| e.at(place))
}

/// The checks of Python's `Fault.__post_init__`, in its order.
fn build_fault(id: &Value, matcher: Match, obj: &Map<String, Value>) -> Result<Fault, FaultError> {
    let id = check_name(id, "id", "a fault id")?;
    let mut ints = 0u8;
    let mut flag = |bit: u8, (x, int): (f64, bool)| {
        if int {
            ints |= bit;
        }
        x
    };
    let delay = given(obj, "delay")
        .map(|v| check_seconds(v, "delay"))
        .transpose()?
        .map(|d| flag(DELAY, d));
    let delays = delay.is_some_and(|d| d > 0.0);
    let jitter = match obj.get("jitter") {
        Some(v) => flag(JITTER, check_seconds(v, "jitter")?),
        None => 0.0,
    };
    if jitter > 0.0 && delay.is_none() {
        return Err(FaultError::new(
            "jitter",
            "is set but the fault has no delay; give it a delay too",
        ));
    }
    let delay_percent = match obj.get("delay_percent") {
        Some(v) => flag(DELAY_PERCENT, check_percent(v, "delay_percent")?),
        None => 100.0,
    };
    if delay_percent != 100.0 && delay.is_none() {
        return Err(FaultError::new(
            "delay_percent",
            "is set but the fault has no delay",
        ));
    }
    let abort_status = given(obj, "abort_status")
        .map(|v| check_status(v, "abort_status"))
        .transpose()?;
    let abort_reset = match obj.get("abort_reset") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(FaultError::new(
                "abort_reset",
                format!("must be true or false, got {}", py_repr(other)),
            ))
        }
    };
    if abort_reset && abort_status.is_some() {
        return Err(FaultError::new(
            "abort_reset",
            "cannot be set together with abort_status: an abort either answers \
             with a status or resets the connection",
        ));
    }
    let aborts = abort_status.is_some() || abort_reset;
    let abort_percent = match obj.get("abort_percent") {
        Some(v) => flag(ABORT_PERCENT, check_percent(v, "abort_percent")?),
        None => 100.0,
    };
    if abort_percent != 100.0 && !aborts {
        return Err(FaultError::new(
            "abort_percent",
            "is set but the fault has no abort",
        ));
    }
    let bandwidth = given(obj, "bandwidth")
        .map(|v| check_bandwidth(v, "bandwidth"))
        .transpose()?;
    let hang = given(obj, "hang")
        .map(|v| check_hang(v, "hang"))
        .transpose()?
        .map(|h| flag(HANG, h));
    let expires_at = match given(obj, "expires_at") {
        None => None,
        Some(v) => match number(v) {
            Some(n) if n.0.is_finite() => Some(flag(EXPIRES_AT, n)),
            _ => {
                return Err(FaultError::new(
                    "expires_at",
                    format!("must be a time in seconds, got {}", py_repr(v)),
                ))
            }
        },
    };
    if !(delays || jitter > 0.0 || aborts || bandwidth.is_some() || hang.is_some()) {
        return Err(FaultError::new(
            "",
            "does nothing: give it a delay, an abort_status, abort_reset, \
             a bandwidth or a hang",
        ));
    }
    Ok(Fault {
        id,
        matcher,
        delay,
        jitter,
        delay_percent,
        abort_status,
        abort_reset,
        abort_percent,
        bandwidth,
        hang,
        expires_at,
        integers: Integers(ints),
    })
}

fn parse_match(data: &Value, place: &str) -> Result<Match, FaultError> {
    let obj = object(data, place)?;
    if let Some(unknown) = obj.keys().find(|k| !MATCH_KEYS.contains(&k.as_str())) {
        return Err(FaultError::new(
            format!("{place}.{unknown}"),
            "is not a match field",
        ));
    }
    let mut headers = Vec::new();
    let empty = Map::new();
    let raw_headers = match obj.get("headers") {
        Some(h) => object(h, &format!("{place}.headers"))?,
        None => &empty,
    };
    for (name, value) in raw_headers {
        let Some(value) = value.as_str() else {
            return Err(FaultError::new(
                format!("{place}.headers.{name}"),
                format!("must be a string, got {}", py_repr(value)),
            ));
        };
        headers.push((name.clone(), value.to_owned()));
    }
    build_match(obj, headers).map_err(|e| e.at(place))
}

/// The checks of Python's `Match.__post_init__`, in its order.
fn build_match(
    obj: &Map<String, Value>,
    headers: Vec<(String, String)>,
) -> Result<Match, FaultError> {
    let path_prefix = given(obj, "path_prefix")
        .map(|v| check_path_prefix(v, "path_prefix"))
        .transpose()?;
    let method = given(obj, "method")
        .map(|v| check_name(v, "method", "an HTTP method"))
        .transpose()?;
    let mut lower_headers: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in &headers {
        let lower =
            check_name(&Value::from(name.as_str()), "headers", "a header name")?.to_lowercase();
        if lower_headers.iter().any(|(n, _)| *n == lower) {
            return Err(FaultError::new(
                "headers",
                format!("names {} twice; give each header once", py_str_repr(name)),
            ));
        }
        lower_headers.push((lower, value.clone()));
    }
    let source = given(obj, "source")
        .map(|v| check_name(v, "source", "a service name"))
        .transpose()?;
    Ok(Match {
        path_prefix,
        upper_method: method.as_ref().map(|m| m.to_uppercase()),
        method,
        headers,
        source,
        lower_headers,
    })
}

/// A list of faults with distinct ids, in order; `at` names where the list sits
/// (`snapshot.routes.catalog.policy.faults`).
pub fn parse_faults(data: &Value, at: &str) -> Result<Vec<Fault>, Invalid> {
    parse_fault_list(data, at).map_err(Invalid::from)
}

/// [`parse_faults`], keeping the error's field apart.
pub fn parse_fault_list(data: &Value, place: &str) -> Result<Vec<Fault>, FaultError> {
    let Some(items) = data.as_array() else {
        return Err(FaultError::new(place, "must be a list"));
    };
    let faults = items
        .iter()
        .enumerate()
        .map(|(i, raw)| parse_fault(raw, &format!("{place}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, fault) in faults.iter().enumerate() {
        if let Some(first) = faults[..i].iter().position(|f| f.id == fault.id) {
            return Err(FaultError::new(
                format!("{place}[{i}].id"),
                format!("{} is taken by {place}[{first}]", py_str_repr(&fault.id)),
            ));
        }
    }
    Ok(faults)
}

#[cfg(test)]
mod tests;
