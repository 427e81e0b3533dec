//! Retries: the policy's `retries` part, and which outcomes of an attempt are retried.
//!
//! Envoy's `retry_on` conditions (Istio's names): `5xx` (any 5xx or no answer at all),
//! `gateway-error` (502, 503, 504, or a reset or timeout), `reset` (a reset or
//! timeout), `connect-failure` (nothing reached the app). Retries react to injected
//! aborts too (unlike Istio, where faults turn retries off). A request whose body
//! cannot be replayed gets one attempt; bodies up to [`REPLAYABLE_BODY`] bytes with a
//! length are kept so that a retry can resend them. A request that never reached an
//! app (connect failure) and can be replayed is tried once more on another endpoint
//! even without a retry policy ([`next_step`]).

use serde_json::{Map, Value};

use crate::invalid::Invalid;
use crate::policy::outlier::{LocalFailure, Outcome};

/// Bodies up to this size (with a Content-Length) are kept so that a retry can resend them.
pub const REPLAYABLE_BODY: u64 = 64 * 1024;

/// The wire names of the retry conditions, in the order error texts list them.
pub const RETRY_ON: [&str; 4] = ["5xx", "gateway-error", "reset", "connect-failure"];

pub use crate::wire::mesh_headers::ERROR_HEADER;

/// One retry condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    FiveXx,
    GatewayError,
    Reset,
    ConnectFailure,
}

impl RetryOn {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::FiveXx => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Reset => "reset",
            RetryOn::ConnectFailure => "connect-failure",
        }
    }

    pub fn from_wire(name: &str) -> Option<RetryOn> {
        match name {
            "5xx" => Some(RetryOn::FiveXx),
            "gateway-error" => Some(RetryOn::GatewayError),
            "reset" => Some(RetryOn::Reset),
            "connect-failure" => Some(RetryOn::ConnectFailure),
            _ => None,
        }
    }
}

/// The policy's `retries`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Seconds each attempt may take; `None`: only the call's timeout.
    pub per_try_timeout: Option<f64>,
    /// As the wire listed them (order and repeats kept).
    pub retry_on: Vec<RetryOn>,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 2,
            per_try_timeout: None,
            retry_on: vec![RetryOn::FiveXx, RetryOn::ConnectFailure],
        }
    }
}

impl Retries {
    fn on(&self, condition: RetryOn) -> bool {
        self.retry_on.contains(&condition)
    }
}

pub(crate) fn parse_retries(data: Option<&Value>, at: &str) -> Result<Option<Retries>, Invalid> {
    let Some(data) = data.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let obj = data
        .as_object()
        .ok_or_else(|| Invalid(format!("{at} must be an object")))?;
    let default = Retries::default();
    let attempts = match obj.get("attempts") {
        None => default.attempts,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=10).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| Invalid(format!("{at}.attempts must be a whole number from 1 to 10")))?,
    };
    let retry_on = match obj.get("retry_on") {
        None => default.retry_on,
        Some(v) => v
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|c| c.as_str().and_then(RetryOn::from_wire))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                Invalid(format!(
                    "{at}.retry_on must be a list of {}",
                    RETRY_ON.join(", ")
                ))
            })?,
    };
    let per_try_timeout = match obj.get("per_try_timeout") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| {
                    Invalid(format!(
                        "{at}.per_try_timeout must be a number of seconds above 0"
                    ))
                })?,
        ),
    };
    Ok(Some(Retries {
        attempts,
        per_try_timeout,
        retry_on,
    }))
}

pub(crate) fn retries_to_wire(r: &Retries) -> Value {
    let mut wire = Map::new();
    wire.insert("attempts".into(), r.attempts.into());
    let on: Vec<Value> = r.retry_on.iter().map(|c| c.as_str().into()).collect();
    wire.insert("retry_on".into(), on.into());
    if let Some(t) = r.per_try_timeout {
        wire.insert("per_try_timeout".into(), t.into());
    }
    Value::Object(wire)
}

/// What one attempt got, as far as retries and the breaker care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent<'a> {
    /// The upstream's answer. `mesh_connect_failure`: it is the endpoint's sidecar saying
    /// it could not connect to its app (a trusted 503 with `x-devmesh-error:
    /// connect-failure`).
    Response {
        status: u16,
        mesh_connect_failure: bool,
    },
    /// An abort a fault injected in place of the upstream's answer.
    Injected { status: u16 },
    /// No response; the code says whose doing it was: the upstream's (`connect-failure`:
    /// nothing was sent; `reset`, `timeout`), the caller's (`downstream-reset`,
    /// `body-timeout`), or the mesh's refusal (`no-healthy-upstream`, `overflow`...).
    NoAnswer { code: &'a str },
}

impl Sent<'_> {
    /// The status the attempt ended with, if it was answered (injected or real).
    pub fn status(&self) -> Option<u16> {
        match *self {
            Sent::Response { status, .. } | Sent::Injected { status } => Some(status),
            Sent::NoAnswer { .. } => None,
        }
    }

    /// How a log line names it: the code, or the status.
    pub fn describe(&self) -> String {
        match self {
            Sent::NoAnswer { code } => (*code).to_owned(),
            other => other.status().map(|s| s.to_string()).unwrap_or_default(),
        }
    }
}

/// Envoy's retry_on conditions, for what this attempt got.
pub fn should_retry(sent: &Sent<'_>, retries: Option<&Retries>) -> bool {
    let Some(retries) = retries else {
        return false;
    };
    let status = sent.status();
    let no_answer = matches!(sent, Sent::NoAnswer { .. });
    let lost = matches!(sent, Sent::NoAnswer { code } if *code == "reset" || *code == "timeout");
    if retries.on(RetryOn::FiveXx) && (no_answer || status.is_some_and(|s| s >= 500)) {
        return true;
    }
    if retries.on(RetryOn::GatewayError)
        && (lost || matches!(status, Some(502) | Some(503) | Some(504)))
    {
        return true;
    }
    if retries.on(RetryOn::Reset) && lost {
        return true;
    }
    retries.on(RetryOn::ConnectFailure) && never_reached_an_app(sent)
}

/// Nothing was sent (the endpoint's sidecar refused the connection), or the endpoint's
/// sidecar answered that it could not connect to its app (a trusted, mesh-made 503).
pub fn never_reached_an_app(sent: &Sent<'_>) -> bool {
    match *sent {
        Sent::NoAnswer { code } => code == "connect-failure",
        Sent::Injected { .. } => false,
        Sent::Response {
            status,
            mesh_connect_failure,
        } => status == 503 && mesh_connect_failure,
    }
}

/// What one attempt tells the outlier detector of its endpoint: the upstream's status, or
/// its failure to answer (it could not be reached, it reset, it did not answer a request
/// sent whole in time); what the caller did or the mesh refused says nothing of the
/// endpoint. (An attempt a fault shaped is not recorded at all: the caller skips it.)
pub fn endpoint_result(sent: &Sent<'_>) -> Outcome {
    match *sent {
        Sent::Response { status, .. } | Sent::Injected { status } => Outcome::Status(status),
        Sent::NoAnswer { code } => match code {
            "connect-failure" => Outcome::LocalFailure(LocalFailure::ConnectFailure),
            "reset" => Outcome::LocalFailure(LocalFailure::Reset),
            "timeout" => Outcome::LocalFailure(LocalFailure::Timeout),
            other => Outcome::NotTheEndpoint(other.to_owned()),
        },
    }
}

/// Whether a request body is read whole and kept so that a retry can resend it: only
/// with a retry policy, and a length known and at most [`REPLAYABLE_BODY`]. (A request
/// without a body, or whose body had ended empty, can always be replayed.)
pub fn kept_for_replay(retries: Option<&Retries>, content_length: Option<u64>) -> bool {
    retries.is_some() && content_length.is_some_and(|n| n <= REPLAYABLE_BODY)
}

/// How many attempts a call may make: the policy's, if its body can be replayed, else 1.
pub fn attempts_allowed(retries: Option<&Retries>, replayable: bool) -> u32 {
    match retries {
        Some(r) if replayable => r.attempts,
        _ => 1,
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Retry under the policy.
    Retry,
    /// Nothing reached an app: try once more on another endpoint (even without a
    /// retry policy); the one failover is used up.
    Failover,
    /// The attempt's result is the call's.
    Stop,
}

/// After `tried` attempts (this one included) of the `allowed` ones: retry, fail over
/// (`failover_left`: the call's one failover is unused; the body can be replayed), or stop.
/// `candidates` is the size of the pool the call picks among.
pub fn next_step(
    sent: &Sent<'_>,
    retries: Option<&Retries>,
    allowed: u32,
    tried: u32,
    failover_left: bool,
    candidates: usize,
) -> Next {
    if allowed > tried && should_retry(sent, retries) {
        Next::Retry
    } else if failover_left && never_reached_an_app(sent) && candidates > 1 {
        Next::Failover
    } else {
        Next::Stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(conditions: &[RetryOn]) -> Retries {
        Retries {
            retry_on: conditions.to_vec(),
            ..Retries::default()
        }
    }

    fn answer(status: u16) -> Sent<'static> {
        Sent::Response {
            status,
            mesh_connect_failure: false,
        }
    }

    const MESH_CONNECT_FAILURE: Sent<'static> = Sent::Response {
        status: 503,
        mesh_connect_failure: true,
    };

    fn none(code: &str) -> Sent<'_> {
        Sent::NoAnswer { code }
    }

    #[test]
    fn without_a_retry_policy_nothing_is_retried() {
        assert!(!should_retry(&answer(503), None));
        assert!(!should_retry(&none("connect-failure"), None));
    }

    #[test]
    fn five_xx_retries_any_5xx_and_any_missing_answer() {
        let r = on(&[RetryOn::FiveXx]);
        for sent in [
            answer(500),
            answer(503),
            answer(599),
            Sent::Injected { status: 502 },
            none("reset"),
            none("timeout"),
            none("connect-failure"),
            none("downstream-reset"),
        ] {
            assert!(should_retry(&sent, Some(&r)), "{sent:?}");
        }
        for sent in [
            answer(200),
            answer(404),
            answer(499),
            Sent::Injected { status: 429 },
        ] {
            assert!(!should_retry(&sent, Some(&r)), "{sent:?}");
        }
    }

    #[test]
    fn gateway_error_retries_502_503_504_and_lost_answers() {
        let r = on(&[RetryOn::GatewayError]);
        for sent in [
            answer(502),
            answer(503),
            Sent::Injected { status: 504 },
            none("reset"),
            none("timeout"),
        ] {
            assert!(should_retry(&sent, Some(&r)), "{sent:?}");
        }
        for sent in [
            answer(500),
            answer(200),
            none("connect-failure"),
            none("overflow"),
        ] {
            assert!(!should_retry(&sent, Some(&r)), "{sent:?}");
        }
    }

    #[test]
    fn reset_retries_resets_and_timeouts_only() {
        let r = on(&[RetryOn::Reset]);
        assert!(should_retry(&none("reset"), Some(&r)));
        assert!(should_retry(&none("timeout"), Some(&r)));
        assert!(!should_retry(&none("connect-failure"), Some(&r)));
        assert!(!should_retry(&answer(503), Some(&r)));
    }

    #[test]
    fn connect_failure_retries_what_never_reached_an_app() {
        let r = on(&[RetryOn::ConnectFailure]);
        assert!(should_retry(&none("connect-failure"), Some(&r)));
        assert!(should_retry(&MESH_CONNECT_FAILURE, Some(&r)));
        assert!(!should_retry(&answer(503), Some(&r)));
        assert!(!should_retry(&Sent::Injected { status: 503 }, Some(&r)));
        assert!(!should_retry(&none("reset"), Some(&r)));
    }

    #[test]
    fn the_default_retries_5xx_and_connect_failures() {
        let r = Retries::default();
        assert!(should_retry(&answer(500), Some(&r)));
        assert!(!should_retry(&answer(404), Some(&r)));
    }

    #[test]
    fn attempts_count_the_first_and_a_stream_gets_one() {
        let r = Retries {
            attempts: 3,
            ..Retries::default()
        };
        assert_eq!(attempts_allowed(Some(&r), true), 3);
        assert_eq!(attempts_allowed(Some(&r), false), 1);
        assert_eq!(attempts_allowed(None, true), 1);
        assert_eq!(
            next_step(&answer(503), Some(&r), 3, 1, true, 2),
            Next::Retry
        );
        assert_eq!(
            next_step(&answer(503), Some(&r), 3, 2, true, 2),
            Next::Retry
        );
        assert_eq!(next_step(&answer(503), Some(&r), 3, 3, true, 2), Next::Stop);
        assert_eq!(next_step(&answer(200), Some(&r), 3, 1, true, 2), Next::Stop);
    }

    #[test]
    fn a_connect_failure_fails_over_once_even_without_retries() {
        let cf = none("connect-failure");
        assert_eq!(next_step(&cf, None, 1, 1, true, 2), Next::Failover);
        assert_eq!(next_step(&cf, None, 1, 2, false, 2), Next::Stop);
        assert_eq!(next_step(&cf, None, 1, 1, true, 1), Next::Stop); // nowhere else to go
        assert_eq!(
            next_step(&MESH_CONNECT_FAILURE, None, 1, 1, true, 3),
            Next::Failover
        );
        assert_eq!(next_step(&none("reset"), None, 1, 1, true, 3), Next::Stop);
    }

    #[test]
    fn only_a_known_short_body_is_kept_for_replay() {
        let r = Retries::default();
        assert!(kept_for_replay(Some(&r), Some(0)));
        assert!(kept_for_replay(Some(&r), Some(64 * 1024)));
        assert!(!kept_for_replay(Some(&r), Some(64 * 1024 + 1)));
        assert!(!kept_for_replay(Some(&r), None)); // chunked: streamed once
        assert!(!kept_for_replay(None, Some(10)));
    }

    #[test]
    fn what_an_attempt_tells_the_breaker() {
        assert_eq!(endpoint_result(&answer(503)), Outcome::Status(503));
        assert_eq!(
            endpoint_result(&Sent::Injected { status: 500 }),
            Outcome::Status(500)
        );
        assert_eq!(
            endpoint_result(&none("connect-failure")),
            Outcome::LocalFailure(LocalFailure::ConnectFailure)
        );
        assert_eq!(
            endpoint_result(&none("reset")),
            Outcome::LocalFailure(LocalFailure::Reset)
        );
        assert_eq!(
            endpoint_result(&none("timeout")),
            Outcome::LocalFailure(LocalFailure::Timeout)
        );
        assert_eq!(
            endpoint_result(&none("downstream-reset")),
            Outcome::NotTheEndpoint("downstream-reset".into())
        );
        assert_eq!(endpoint_result(&none("overflow")), Outcome::overflow());
    }

    #[test]
    fn retries_keep_the_wire_s_order_and_round_trip() {
        let wire = serde_json::json!({"attempts": 4, "retry_on": ["reset", "5xx", "reset"], "per_try_timeout": 0.25});
        let r = parse_retries(Some(&wire), "r").unwrap().unwrap();
        assert_eq!(
            r.retry_on,
            [RetryOn::Reset, RetryOn::FiveXx, RetryOn::Reset]
        );
        assert_eq!(retries_to_wire(&r), wire);
        for name in RETRY_ON {
            assert_eq!(RetryOn::from_wire(name).map(RetryOn::as_str), Some(name));
        }
        assert_eq!(answer(503).describe(), "503");
        assert_eq!(none("reset").describe(), "reset");
    }
}
