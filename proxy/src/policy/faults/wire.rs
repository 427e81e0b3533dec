//! A fault's wire form: the field checks, [`parse_fault`] / [`parse_faults`] with the
//! Python sidecar's error texts and order of checks, and [`fault_to_wire`].

use serde_json::{Map, Value};

use super::repr::{py_repr, py_str_repr};
use super::{
    Fault, FaultError, Integers, Match, ABORT_PERCENT, DELAY, DELAY_PERCENT, EXPIRES_AT, HANG,
    JITTER,
};
use crate::invalid::Invalid;

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

/// Python's `str.isspace`: Unicode white space plus the separators \x1c-\x1f.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

fn check_name(value: &Value, field: &str, what: &str) -> Result<String, FaultError> {
    match value.as_str() {
        Some(s) if !s.is_empty() && !s.chars().any(|c| is_py_space(c) || c == ':') => {
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
pub(super) fn build_fault(
    id: &Value,
    matcher: Match,
    obj: &Map<String, Value>,
) -> Result<Fault, FaultError> {
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
