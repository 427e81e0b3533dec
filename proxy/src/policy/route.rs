//! How a sidecar handles calls to one destination: the route policy of a snapshot.
//!
//! Timeout, retries, outlier detection (the circuit breaker), connection-pool
//! limits, load balancing and faults. Like the rest of the snapshot this schema
//! belongs to the data plane: the control plane builds it, the sidecar validates
//! it whole ([`parse_policy`]) and rejects a snapshot with a bad one.
//!
//! Wire form (JSON; every key optional, absent means the default):
//!
//! ```json
//! {"timeout": 2.0,
//!  "retries": {"attempts": 3, "per_try_timeout": 0.5,
//!              "retry_on": ["5xx", "connect-failure"]},
//!  "outlier": {"consecutive_5xx": 5, "interval": 10.0, "base_ejection_time": 30.0,
//!              "max_ejection_time": 300.0, "max_ejection_percent": 10.0,
//!              "panic_threshold": 50.0},
//!  "pool": {"max_connections": 1024, "max_pending": 1024, "max_requests": 1024},
//!  "lb": "round-robin",
//!  "faults": [{"id": "f1", "abort_status": 503, "abort_percent": 20.0}]}
//! ```
//!
//! Which outcomes are retried is [`retry`]'s.

pub mod retry;

use serde_json::{Map, Value};

use crate::invalid::Invalid;
use crate::policy::balancer::{LbPolicy, LB_POLICIES};
use crate::policy::faults::{faults_to_wire, parse_faults, Fault};
use crate::policy::outlier::OutlierSettings;
use crate::policy::pool::PoolLimits;

pub use retry::{Retries, RetryOn, RETRY_ON};

/// Timeout, retries, outlier detection, pool limits, balancing and faults.
/// `Default` is the Python sidecar's `DEFAULT` (the policy of `{}`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutePolicy {
    /// Seconds the whole call may take; `None`: no limit.
    pub timeout: Option<f64>,
    /// `None`: no retries (a connect failure is still tried once more elsewhere).
    pub retries: Option<Retries>,
    pub outlier: OutlierSettings,
    pub pool: PoolLimits,
    pub lb: LbPolicy,
    pub faults: Vec<Fault>,
}

/// Validate a route policy's wire form; `at` names where it sits (`snapshot.routes.x.policy`).
pub fn parse_policy(value: &Value, at: &str) -> Result<RoutePolicy, Invalid> {
    let obj = object(value, at)?;
    const KEYS: [&str; 6] = ["timeout", "retries", "outlier", "pool", "lb", "faults"];
    if let Some(unknown) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(Invalid(format!("{at}.{unknown} is not a policy field")));
    }
    let lb = match obj.get("lb") {
        None => Some(LbPolicy::RoundRobin),
        Some(v) => v.as_str().and_then(LbPolicy::from_wire),
    }
    .ok_or_else(|| Invalid(format!("{at}.lb must be one of {}", LB_POLICIES.join(", "))))?;
    let faults = match obj.get("faults") {
        None => Vec::new(),
        Some(v) => parse_faults(v, &format!("{at}.faults"))?,
    };
    Ok(RoutePolicy {
        timeout: seconds(obj.get("timeout"), &format!("{at}.timeout"))?,
        retries: retry::parse_retries(obj.get("retries"), &format!("{at}.retries"))?,
        outlier: parse_outlier(obj.get("outlier"), &format!("{at}.outlier"))?,
        pool: parse_pool(obj.get("pool"), &format!("{at}.pool"))?,
        lb,
        faults,
    })
}

/// The wire form; parts left at their defaults are left out (the default policy is `{}`).
pub fn policy_to_wire(policy: &RoutePolicy) -> Value {
    let mut wire = Map::new();
    if let Some(t) = policy.timeout {
        wire.insert("timeout".into(), t.into());
    }
    if let Some(r) = &policy.retries {
        wire.insert("retries".into(), retry::retries_to_wire(r));
    }
    if policy.outlier != OutlierSettings::default() {
        let o = &policy.outlier;
        wire.insert(
            "outlier".into(),
            serde_json::json!({
                "consecutive_5xx": o.consecutive_5xx,
                "interval": o.interval,
                "base_ejection_time": o.base_ejection_time,
                "max_ejection_time": o.max_ejection_time,
                "max_ejection_percent": o.max_ejection_percent,
                "panic_threshold": o.panic_threshold,
            }),
        );
    }
    if policy.pool != PoolLimits::default() {
        let p = &policy.pool;
        wire.insert(
            "pool".into(),
            serde_json::json!({
                "max_connections": p.max_connections,
                "max_pending": p.max_pending,
                "max_requests": p.max_requests,
            }),
        );
    }
    if policy.lb != LbPolicy::RoundRobin {
        wire.insert("lb".into(), policy.lb.as_str().into());
    }
    if !policy.faults.is_empty() {
        wire.insert("faults".into(), faults_to_wire(&policy.faults));
    }
    Value::Object(wire)
}

fn parse_outlier(data: Option<&Value>, at: &str) -> Result<OutlierSettings, Invalid> {
    let default = OutlierSettings::default();
    let Some(data) = data.filter(|v| !v.is_null()) else {
        return Ok(default);
    };
    let obj = object(data, at)?;
    let consecutive_5xx = match obj.get("consecutive_5xx") {
        None => default.consecutive_5xx,
        Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            Invalid(format!(
                "{at}.consecutive_5xx must be a whole number of 1 or more"
            ))
        })?,
    };
    let percent = |key: &str, default: f64| -> Result<f64, Invalid> {
        match obj.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| Invalid(format!("{at}.{key} must be from 0 to 100"))),
        }
    };
    let max_ejection_percent = percent("max_ejection_percent", default.max_ejection_percent)?;
    let panic_threshold = percent("panic_threshold", default.panic_threshold)?;
    let time = |key: &str, default: f64| -> Result<f64, Invalid> {
        Ok(seconds(obj.get(key), &format!("{at}.{key}"))?.unwrap_or(default))
    };
    Ok(OutlierSettings {
        consecutive_5xx,
        interval: time("interval", default.interval)?,
        base_ejection_time: time("base_ejection_time", default.base_ejection_time)?,
        max_ejection_time: time("max_ejection_time", default.max_ejection_time)?,
        max_ejection_percent,
        panic_threshold,
    })
}

fn parse_pool(data: Option<&Value>, at: &str) -> Result<PoolLimits, Invalid> {
    let default = PoolLimits::default();
    let Some(data) = data.filter(|v| !v.is_null()) else {
        return Ok(default);
    };
    let obj = object(data, at)?;
    let limit = |key: &str, default: usize| -> Result<usize, Invalid> {
        match obj.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| *n >= 1)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .ok_or_else(|| Invalid(format!("{at}.{key} must be a whole number of 1 or more"))),
        }
    };
    Ok(PoolLimits {
        max_connections: limit("max_connections", default.max_connections)?,
        max_pending: limit("max_pending", default.max_pending)?,
        max_requests: limit("max_requests", default.max_requests)?,
    })
}

/// A number of seconds above 0 (finite); absent or `null`: `None`.
fn seconds(value: Option<&Value>, at: &str) -> Result<Option<f64>, Invalid> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Some)
            .ok_or_else(|| Invalid(format!("{at} must be a number of seconds above 0"))),
    }
}

fn object<'a>(data: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Invalid> {
    data.as_object()
        .ok_or_else(|| Invalid(format!("{at} must be an object")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(value: Value) -> String {
        parse_policy(&value, "p").expect_err("refused").0
    }

    #[test]
    fn the_default_policy_is_an_empty_object() {
        assert_eq!(policy_to_wire(&RoutePolicy::default()), json!({}));
        assert_eq!(parse_policy(&json!({}), "p"), Ok(RoutePolicy::default()));
    }

    #[test]
    fn the_default_is_pythons() {
        let d = RoutePolicy::default();
        assert_eq!(
            (d.timeout, d.retries.clone(), d.lb),
            (None, None, LbPolicy::RoundRobin)
        );
        assert_eq!(d.outlier, OutlierSettings::default());
        assert_eq!(d.pool, PoolLimits::default());
        assert!(d.faults.is_empty());
        let r = Retries::default();
        assert_eq!(r.attempts, 2);
        assert_eq!(r.per_try_timeout, None);
        assert_eq!(r.retry_on, [RetryOn::FiveXx, RetryOn::ConnectFailure]);
    }

    #[test]
    fn a_panic_threshold_goes_in_the_outlier_object_and_back() {
        for threshold in [0.0, 12.5, 100.0] {
            let policy = RoutePolicy {
                outlier: OutlierSettings {
                    panic_threshold: threshold,
                    ..OutlierSettings::default()
                },
                ..RoutePolicy::default()
            };
            let wired: Value = serde_json::from_str(&policy_to_wire(&policy).to_string()).unwrap();
            assert_eq!(wired["outlier"]["panic_threshold"], json!(threshold));
            assert_eq!(parse_policy(&wired, "p"), Ok(policy));
        }
    }

    #[test]
    fn an_outlier_object_without_a_panic_threshold_means_envoy_s_50() {
        let parsed = parse_policy(&json!({"outlier": {"consecutive_5xx": 3}}), "p").unwrap();
        assert_eq!(
            parsed.outlier,
            OutlierSettings {
                consecutive_5xx: 3,
                panic_threshold: 50.0,
                ..OutlierSettings::default()
            }
        );
    }

    #[test]
    fn a_panic_threshold_out_of_0_to_100_is_refused_naming_the_field() {
        for value in [
            json!(-1),
            json!(100.5),
            json!("50"),
            json!(true),
            Value::Null,
        ] {
            assert_eq!(
                refused(json!({"outlier": {"panic_threshold": value}})),
                "p.outlier.panic_threshold must be from 0 to 100"
            );
        }
    }

    #[test]
    fn a_full_policy_round_trips() {
        let wire = json!({
            "timeout": 2.0,
            "retries": {"attempts": 3, "retry_on": ["5xx", "gateway-error", "reset"], "per_try_timeout": 0.5},
            "outlier": {"consecutive_5xx": 3, "interval": 5.0, "base_ejection_time": 10.0,
                        "max_ejection_time": 60.0, "max_ejection_percent": 50.0, "panic_threshold": 0.0},
            "pool": {"max_connections": 10, "max_pending": 2, "max_requests": 20},
            "lb": "least-request",
            "faults": [{"id": "f1", "abort_status": 503, "abort_percent": 20.0}],
        });
        let policy = parse_policy(&wire, "p").unwrap();
        assert_eq!(policy.timeout, Some(2.0));
        assert_eq!(policy.lb, LbPolicy::LeastRequest);
        assert_eq!(policy.pool.max_pending, 2);
        assert_eq!(policy.faults[0].abort_status, Some(503));
        assert_eq!(policy_to_wire(&policy), wire);
    }

    #[test]
    fn whole_numbers_of_seconds_come_back_as_floats() {
        let policy = parse_policy(&json!({"timeout": 2, "outlier": {"interval": 5}}), "p").unwrap();
        let wire = policy_to_wire(&policy).to_string();
        assert!(wire.contains(r#""timeout":2.0"#), "{wire}");
        assert!(wire.contains(r#""interval":5.0"#), "{wire}");
    }

    #[test]
    fn null_means_the_default_where_python_reads_it_so() {
        let policy = parse_policy(
            &json!({"timeout": null, "retries": null, "outlier": null, "pool": null,
                    "faults": []}),
            "p",
        )
        .unwrap();
        assert_eq!(policy, RoutePolicy::default());
        let o = parse_policy(&json!({"outlier": {"interval": null}}), "p").unwrap();
        assert_eq!(o.outlier, OutlierSettings::default());
    }

    #[test]
    fn a_bad_policy_is_refused_naming_the_field() {
        for (wire, message) in [
            (json!([]), "p must be an object"),
            (json!({"timeouts": 1}), "p.timeouts is not a policy field"),
            (json!({"lb": "random"}), "p.lb must be one of round-robin, least-request"),
            (json!({"lb": null}), "p.lb must be one of round-robin, least-request"),
            (json!({"faults": {}}), "p.faults must be a list"),
            (json!({"faults": [{"id": "x"}]}), "p.faults[0] does nothing: give it a delay, an abort_status, abort_reset, a bandwidth or a hang"),
            (json!({"timeout": 0}), "p.timeout must be a number of seconds above 0"),
            (json!({"timeout": -1.5}), "p.timeout must be a number of seconds above 0"),
            (json!({"timeout": "2s"}), "p.timeout must be a number of seconds above 0"),
            (json!({"timeout": true}), "p.timeout must be a number of seconds above 0"),
            (json!({"retries": 3}), "p.retries must be an object"),
            (json!({"retries": {"attempts": 0}}), "p.retries.attempts must be a whole number from 1 to 10"),
            (json!({"retries": {"attempts": 11}}), "p.retries.attempts must be a whole number from 1 to 10"),
            (json!({"retries": {"attempts": 2.0}}), "p.retries.attempts must be a whole number from 1 to 10"),
            (json!({"retries": {"attempts": null}}), "p.retries.attempts must be a whole number from 1 to 10"),
            (json!({"retries": {"retry_on": ["5xx", "503"]}}), "p.retries.retry_on must be a list of 5xx, gateway-error, reset, connect-failure"),
            (json!({"retries": {"retry_on": "5xx"}}), "p.retries.retry_on must be a list of 5xx, gateway-error, reset, connect-failure"),
            (json!({"retries": {"per_try_timeout": 0}}), "p.retries.per_try_timeout must be a number of seconds above 0"),
            (json!({"outlier": []}), "p.outlier must be an object"),
            (json!({"outlier": {"consecutive_5xx": 0}}), "p.outlier.consecutive_5xx must be a whole number of 1 or more"),
            (json!({"outlier": {"consecutive_5xx": true}}), "p.outlier.consecutive_5xx must be a whole number of 1 or more"),
            (json!({"outlier": {"max_ejection_percent": 101}}), "p.outlier.max_ejection_percent must be from 0 to 100"),
            (json!({"outlier": {"interval": 0}}), "p.outlier.interval must be a number of seconds above 0"),
            (json!({"outlier": {"base_ejection_time": "30s"}}), "p.outlier.base_ejection_time must be a number of seconds above 0"),
            (json!({"outlier": {"max_ejection_time": -1}}), "p.outlier.max_ejection_time must be a number of seconds above 0"),
            (json!({"pool": 1}), "p.pool must be an object"),
            (json!({"pool": {"max_connections": 0}}), "p.pool.max_connections must be a whole number of 1 or more"),
            (json!({"pool": {"max_pending": 1.5}}), "p.pool.max_pending must be a whole number of 1 or more"),
            (json!({"pool": {"max_requests": null}}), "p.pool.max_requests must be a whole number of 1 or more"),
        ] {
            assert_eq!(refused(wire.clone()), message, "{wire}");
        }
    }

    #[test]
    fn the_checks_run_in_pythons_order() {
        // lb, then faults, then timeout, retries, outlier, pool
        assert_eq!(
            refused(json!({"pool": 0, "lb": "x", "timeout": 0})),
            "p.lb must be one of round-robin, least-request"
        );
        assert_eq!(
            refused(json!({"pool": 0, "faults": 1, "timeout": 0})),
            "p.faults must be a list"
        );
        assert_eq!(
            refused(json!({"pool": 0, "outlier": 0, "retries": 0, "timeout": 0})),
            "p.timeout must be a number of seconds above 0"
        );
        assert_eq!(
            refused(json!({"pool": 0, "outlier": 0, "retries": 0})),
            "p.retries must be an object"
        );
        assert_eq!(
            refused(json!({"pool": 0, "outlier": 0})),
            "p.outlier must be an object"
        );
        // within retries: attempts, retry_on, per_try_timeout
        assert_eq!(
            refused(json!({"retries": {"per_try_timeout": 0, "retry_on": 1, "attempts": 0}})),
            "p.retries.attempts must be a whole number from 1 to 10"
        );
        assert_eq!(
            refused(json!({"retries": {"per_try_timeout": 0, "retry_on": 1}})),
            "p.retries.retry_on must be a list of 5xx, gateway-error, reset, connect-failure"
        );
    }

    #[test]
    fn unknown_keys_inside_the_parts_are_let_through_as_python_does() {
        let policy = parse_policy(
            &json!({"retries": {"attempts": 3, "backoff": 1}, "outlier": {"x": 1}, "pool": {"y": 2}}),
            "p",
        )
        .unwrap();
        assert_eq!(policy.retries.map(|r| r.attempts), Some(3));
    }
}
