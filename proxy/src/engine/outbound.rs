//! The outbound call pipeline (`proxy/outbound.py`): one request to a mesh service,
//! from the caller's sidecar.
//!
//! 1. the version: one the host named or the call pinned (`x-devmesh-version`), else the
//!    split draws one;
//! 2. the connection pool admits the request, queues it, or overflows (503);
//! 3. attempts, as many as the retry policy allows (a body that cannot be replayed gets
//!    one), each on an endpoint the breaker lets through (a retry prefers one not tried
//!    yet): faults are rolled per attempt (delays count against the per-try timeout,
//!    and retries react to injected aborts); every real attempt's result feeds the
//!    outlier detector as far as it tells of the endpoint;
//! 4. the answer is relayed (at the fault's bandwidth, if one limits it), all within the
//!    route's timeout (a timeout while the caller's body is still arriving is the
//!    caller's: 408, not the endpoint's 504).
//!
//! A request that never reached an app (connect failure) and can be replayed is tried
//! once more on another endpoint even without a retry policy.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use http_body_util::BodyExt;
use rand::RngExt;
use tracing::info;

use super::body::{caller_body_error, empty, full, BodyState, ProxyBody};
use super::headers::VERSION_HEADER;
use super::sidecar::mode_of;
use super::sidecar::Engine;
use super::upstream::{discard, relay, Abort, NoAnswer, Outcome, RelayOptions, Sent, Transport};
use crate::policy::balancer::Unavailable;
use crate::policy::deadline::{attempt_timeout_reason, body_timeout_reason, call_timeout_reason};
use crate::policy::faults::{decide, Decision, RequestInfo};
use crate::policy::route::retry::{
    attempts_allowed, endpoint_result, kept_for_replay, next_step, Next,
};
use crate::policy::route::RoutePolicy;
use crate::policy::router;
use crate::security::mtls::{self, Dial};
use crate::wire::snapshot::Endpoint;
use std::sync::atomic::{AtomicBool, Ordering};

/// One request to a service, as the pipeline sees it.
pub struct Call<'a> {
    pub method: &'a Method,
    /// The request target's path and query, as sent on.
    pub path_qs: &'a str,
    /// The decoded path (faults match on it).
    pub path: &'a str,
    /// The caller's headers as they arrived (faults match on them; the pin is read there).
    pub original: &'a HeaderMap,
    /// The headers to send on.
    pub headers: HeaderMap,
    pub service: &'a str,
    pub source: &'a str,
    /// The version the host named.
    pub version: Option<&'a str>,
}

/// The body a call sends: none, bytes kept so that a retry can resend them, or the
/// caller's stream (sent once).
enum CallBody {
    Replay(Bytes),
    Stream(Option<ProxyBody>),
}

impl CallBody {
    fn replayable(&self) -> bool {
        matches!(self, CallBody::Replay(_))
    }

    fn for_attempt(&mut self) -> ProxyBody {
        match self {
            CallBody::Replay(bytes) if bytes.is_empty() => empty(),
            CallBody::Replay(bytes) => full(bytes.clone()),
            CallBody::Stream(body) => body.take().unwrap_or_else(empty),
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Make the call; the answer to send the caller, or [`Abort`] (the caller's connection
/// is to be closed, or reset if `outcome.error` is `reset`). What must live as long as
/// the answer (the pool's slot) is put in `holds`.
pub async fn call(
    engine: &Engine,
    call: Call<'_>,
    body: ProxyBody,
    body_state: Arc<BodyState>,
    content_length: Option<u64>,
    outcome: &mut Outcome,
    holds: &mut Vec<Box<dyn std::any::Any + Send + Sync>>,
) -> Result<Response<ProxyBody>, Abort> {
    let trusted = RelayOptions {
        trusted: true,
        ..RelayOptions::default()
    };
    let snapshot = engine.snapshot();
    let route = snapshot.routes.get(call.service);
    let pinned = call
        .original
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok());
    let asked = router::requested_version(call.version, pinned);
    let draw: f64 = rand::rng().random();
    let target = router::target(call.service, route.map(|r| r.view()), asked, draw);
    let (version, candidates) = match target {
        Err(none) => {
            let sent = Sent::NoAnswer(NoAnswer::new("no-healthy-upstream", none.reason));
            return relay(sent, outcome, trusted);
        }
        Ok((version, candidates)) => (
            version,
            candidates.into_iter().cloned().collect::<Vec<Endpoint>>(),
        ),
    };
    let policy = route.map(|r| r.policy.clone()).unwrap_or_default();
    let gate = {
        let mut all = engine.destinations.lock().expect("destinations");
        match all.get(&snapshot, call.service, Instant::now()) {
            Some(d) => d.gate.clone(),
            None => {
                let sent = Sent::NoAnswer(NoAnswer::new("no-healthy-upstream", "no route yet"));
                return relay(sent, outcome, trusted);
            }
        }
    };
    let slot = match gate.acquire().await {
        Ok(slot) => slot,
        Err(overflow) => {
            let reason = overflow.0.overflow_reason(call.service);
            return relay(
                Sent::NoAnswer(NoAnswer::new("overflow", reason)),
                outcome,
                trusted,
            );
        }
    };
    holds.push(Box::new(slot));
    let deadline = policy
        .timeout
        .map(|t| Instant::now() + std::time::Duration::from_secs_f64(t));
    let service = call.service;
    let work = async {
        let body = match call_body(body, &body_state, &policy, content_length).await {
            Ok(body) => body,
            Err(text) => {
                let gone = NoAnswer::new("downstream-reset", text).with_status(0);
                return (Sent::NoAnswer(gone), Decision::default());
            }
        };
        attempts(
            engine,
            &call,
            &policy,
            version.as_deref(),
            &candidates,
            body,
            &body_state,
            outcome,
        )
        .await
    };
    let done = match deadline {
        None => Ok(work.await),
        Some(at) => tokio::time::timeout_at(at.into(), work).await,
    };
    let (sent, decision) = match done {
        Ok(done) => done,
        Err(_) => {
            let seconds = policy.timeout.unwrap_or(0.0);
            let answer = if body_state.waiting_on_sender() {
                NoAnswer::new("body-timeout", body_timeout_reason(service, seconds))
                    .with_status(408)
            } else {
                NoAnswer::new("timeout", call_timeout_reason(service, seconds)).with_status(504)
            };
            return relay(Sent::NoAnswer(answer), outcome, trusted);
        }
    };
    if let Sent::NoAnswer(answer) = &sent {
        if answer.fault.is_some() {
            // An injected reset or hang ends as the real thing would: a reset.
            outcome.error = Some("reset".into());
            return Err(Abort);
        }
    }
    relay(
        sent,
        outcome,
        RelayOptions {
            trusted: true,
            bandwidth: decision.bandwidth,
            deadline,
        },
    )
}

/// The body to send: the bytes (kept for a retry: none, one that had ended empty, or a
/// short one read whole), or the stream. `Err`: a body kept for retries broke off.
async fn call_body(
    body: ProxyBody,
    state: &BodyState,
    policy: &RoutePolicy,
    content_length: Option<u64>,
) -> Result<CallBody, String> {
    if state.ended() || content_length == Some(0) {
        return Ok(CallBody::Replay(Bytes::new()));
    }
    if kept_for_replay(policy.retries.as_ref(), content_length) {
        return match body.collect().await {
            Ok(collected) => Ok(CallBody::Replay(collected.to_bytes())),
            Err(err) => {
                Err(caller_body_error(err.as_ref())
                    .map_or_else(|| err.to_string(), |e| e.0.clone()))
            }
        };
    }
    Ok(CallBody::Stream(Some(body)))
}

#[allow(clippy::too_many_arguments)]
async fn attempts(
    engine: &Engine,
    call: &Call<'_>,
    policy: &RoutePolicy,
    version: Option<&str>,
    candidates: &[Endpoint],
    mut body: CallBody,
    body_state: &BodyState,
    outcome: &mut Outcome,
) -> (Sent, Decision) {
    let retries = policy.retries.as_ref();
    let allowed = attempts_allowed(retries, body.replayable());
    let mut failover = body.replayable();
    let mut tried: Vec<String> = Vec::new();
    let mut fired: Vec<String> = Vec::new();
    let (sent, decision) = loop {
        let picked = {
            let snapshot = engine.snapshot();
            let mut all = engine.destinations.lock().expect("destinations");
            let mut rng = rand::rng();
            match all.get(&snapshot, call.service, Instant::now()) {
                None => Err(Unavailable::NoEndpoints),
                Some(d) => d.pick(candidates, version, &tried, Instant::now(), &mut || {
                    rng.random()
                }),
            }
        };
        let endpoint = match picked {
            Ok(endpoint) => endpoint,
            Err(unavailable) => {
                let what = match version {
                    None => call.service.to_owned(),
                    Some(v) => format!("{} version {v}", call.service),
                };
                let code = if matches!(unavailable, Unavailable::AllEjected { .. }) {
                    "breaker-open"
                } else {
                    "no-healthy-upstream"
                };
                let text = unavailable.describe(&what, Instant::now());
                break (
                    Sent::NoAnswer(NoAnswer::new(code, text)),
                    Decision::default(),
                );
            }
        };
        tried.push(endpoint.instance.clone());
        outcome.instance = endpoint.instance.clone();
        outcome.version = endpoint.version.clone();
        let decision = if policy.faults.is_empty() {
            Decision::default()
        } else {
            let info = RequestInfo {
                method: call.method.as_str(),
                path: call.path,
                headers: call.original,
                source: Some(call.source),
            };
            let mut rng = rand::rng();
            decide(&policy.faults, &info, &mut || rng.random(), unix_now())
        };
        decision.add_fired_to(&mut fired);
        let mtls_used = AtomicBool::new(false);
        let sent = attempt(
            engine, call, policy, version, &endpoint, &mut body, body_state, &decision, &mtls_used,
        )
        .await;
        outcome.mtls = mtls_used.load(Ordering::Relaxed);
        if decision.is_none() {
            // An injected failure says nothing of the endpoint's health.
            let result = endpoint_result(&sent.as_policy());
            let snapshot = engine.snapshot();
            let mut all = engine.destinations.lock().expect("destinations");
            if let Some(d) = all.get(&snapshot, call.service, Instant::now()) {
                d.detector
                    .record(&endpoint.instance, &result, Instant::now());
            }
        }
        let step = next_step(
            &sent.as_policy(),
            retries,
            allowed,
            tried.len() as u32,
            failover,
            candidates.len(),
        );
        match step {
            Next::Stop => break (sent, decision),
            Next::Retry => outcome.retries += 1,
            Next::Failover => {
                failover = false;
                outcome.retries += 1;
            }
        }
        info!(
            "retrying {} {} to {} (after {} on {})",
            call.method,
            call.path,
            call.service,
            sent.as_policy().describe(),
            endpoint.instance
        );
        discard(sent).await;
    };
    outcome.fault = (!fired.is_empty()).then(|| fired.join(","));
    (sent, decision)
}

/// Counts a request to an endpoint in flight (least-request) until dropped.
struct Started<'a> {
    engine: &'a Engine,
    service: &'a str,
    endpoint: &'a Endpoint,
    version: Option<&'a str>,
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        let snapshot = self.engine.snapshot();
        let mut all = self.engine.destinations.lock().expect("destinations");
        if let Some(d) = all.get(&snapshot, self.service, Instant::now()) {
            d.finished(self.endpoint, self.version);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    engine: &Engine,
    call: &Call<'_>,
    policy: &RoutePolicy,
    version: Option<&str>,
    endpoint: &Endpoint,
    body: &mut CallBody,
    body_state: &BodyState,
    decision: &Decision,
    mtls_used: &AtomicBool,
) -> Sent {
    let per_try = policy.retries.as_ref().and_then(|r| r.per_try_timeout);
    let fault = decision.fired_list();
    let work = async {
        if decision.delay > 0.0 {
            tokio::time::sleep(decision.delay_duration()).await;
        }
        if decision.abort_reset {
            let mut answer = NoAnswer::new("reset", format!("fault {fault} injected a reset"));
            answer.fault = Some(fault.clone());
            return Sent::NoAnswer(answer);
        }
        if let Some(status) = decision.abort_status {
            return Sent::Injected {
                status,
                fault: fault.clone(),
            };
        }
        if let Some(hang) = decision.hang_duration() {
            tokio::time::sleep(hang).await;
            let mut answer = NoAnswer::new("reset", format!("fault {fault} hung the request"));
            answer.fault = Some(fault.clone());
            return Sent::NoAnswer(answer);
        }
        // The destination's mode and this sidecar's identity now choose the transport
        // (the Python's `_tls`): a renewed identity serves the connections made after it.
        let snapshot = engine.snapshot();
        let mode = mode_of(&snapshot, call.service);
        let credentials = engine.credentials();
        let transport = match mtls::dial(mode, credentials.as_ref(), call.service) {
            Dial::Plain => Transport::Plain,
            Dial::Mtls(credentials) => Transport::Mtls {
                credentials,
                service: call.service.to_owned(),
            },
            Dial::NoIdentity(text) => return Sent::NoAnswer(NoAnswer::new("no-identity", text)),
        };
        mtls_used.store(transport.is_mtls(), Ordering::Relaxed);
        {
            let mut all = engine.destinations.lock().expect("destinations");
            if let Some(d) = all.get(&snapshot, call.service, Instant::now()) {
                d.started(endpoint, version);
            }
        }
        let _started = Started {
            engine,
            service: call.service,
            endpoint,
            version,
        };
        engine
            .upstream
            .send(
                transport,
                endpoint.host(),
                endpoint.port(),
                call.method,
                call.path_qs,
                call.headers.clone(),
                body.for_attempt(),
                &endpoint.instance,
            )
            .await
    };
    let Some(seconds) = per_try else {
        return work.await;
    };
    match tokio::time::timeout(std::time::Duration::from_secs_f64(seconds), work).await {
        Ok(sent) => sent,
        Err(_) => {
            // This attempt's own timeout: the route's is not caught here.
            if !body.replayable() && body_state.waiting_on_sender() {
                let text = body_timeout_reason(call.service, seconds);
                return Sent::NoAnswer(NoAnswer::new("body-timeout", text).with_status(408));
            }
            let text = attempt_timeout_reason(&endpoint.instance, seconds);
            Sent::NoAnswer(NoAnswer::new("timeout", text).with_status(504))
        }
    }
}
