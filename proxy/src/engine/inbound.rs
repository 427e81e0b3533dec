//! The inbound listener's handler (`proxy/server.py`'s `_inbound`): a call from another
//! sidecar (or from outside the mesh), judged by the service's authorization policies
//! (the path made canonical first, Istio's normalisation), then handed to the app on
//! `127.0.0.1:<app_port>` through the app gate (held while the app restarts). Its
//! source is the peer's proven identity over mTLS, else what `x-devmesh-source` says.

use std::time::Instant;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::appgate::HOLD_LIMIT;
use super::body::{ProxyBody, Watched};
use super::headers::{forwardable, trace_hop, DENIED_HEADER, SOURCE_HEADER};
use super::sidecar::{ConnInfo, Engine};
use super::target::Head;
use super::upstream::{relay, Abort, NoAnswer, RelayOptions, Sent, Transport};
use crate::policy::deadline::py_g;
use crate::security::authz::{canonical_target, evaluate, percent_decoded};
use crate::wire::telemetry::Direction;

/// The source name of inbound traffic that did not come through a sidecar.
pub const EXTERNAL_SOURCE: &str = "external";

impl Engine {
    /// Handle a request that came to the inbound listener.
    pub(super) async fn inbound(
        &self,
        conn: &ConnInfo,
        mut request: Request<Incoming>,
        start: Instant,
    ) -> Result<Response<ProxyBody>, Abort> {
        let principal = conn.principal.clone();
        let source = match &principal {
            Some(p) => service_of(p).to_owned(),
            None => request
                .headers()
                .get(SOURCE_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(EXTERNAL_SOURCE)
                .to_owned(),
        };
        let mut head = Head::of(&request);
        let mut rec = self.recorder(
            Direction::Inbound,
            &source,
            &self.boot.service,
            &head,
            start,
        );
        rec.outcome.instance = self.boot.instance.clone();
        rec.outcome.version = self.boot.version.clone();
        rec.outcome.mtls = principal.is_some();
        let untrusted = RelayOptions::default();
        let snapshot = self.snapshot();
        let route = snapshot.routes.get(&self.boot.service);
        let mut verdict = None;
        if let Some(route) = route.filter(|r| !r.authz.is_empty()) {
            match canonical_target(&head.target, &head.path_qs) {
                Err(why) => {
                    let sent = NoAnswer::new("bad-path", why).with_status(400).into_sent();
                    let response = relay(sent, &mut rec.outcome, untrusted)?;
                    return Ok(rec.answer(response));
                }
                Ok(Some(canonical)) => {
                    if let Ok(uri) = canonical.parse::<http::Uri>() {
                        *request.uri_mut() = uri;
                    }
                    head.path_qs = canonical;
                    let raw = head.path_qs.split('?').next().unwrap_or("");
                    head.path = percent_decoded(raw);
                }
                Ok(None) => {}
            }
            verdict = Some(evaluate(
                &route.authz,
                principal.as_deref(),
                &head.path,
                head.method.as_str(),
            ));
        }
        if let Some(audit) = verdict.as_ref().and_then(|v| v.audit.as_ref()) {
            rec.outcome.authz = Some(format!("audit:{}", audit.policy.as_deref().unwrap_or("")));
            tracing::info!("audit: {} (not enforced)", audit.reason);
        }
        if let Some(denied) = verdict.filter(|v| !v.allowed) {
            rec.outcome.authz = Some(format!("deny:{}", denied.policy.as_deref().unwrap_or("")));
            let mut sent = NoAnswer::new(
                "denied",
                format!("{}: {}", self.boot.service, denied.reason),
            )
            .with_status(403);
            sent.headers.push((DENIED_HEADER, denied.reason.clone()));
            let response = relay(sent.into_sent(), &mut rec.outcome, untrusted)?;
            return Ok(rec.answer(response));
        }
        let Some(app_port) = self.boot.app_port else {
            let sent = NoAnswer::new(
                "no-port",
                format!("{} declares no port to receive calls on", self.boot.service),
            );
            let response = relay(sent.into_sent(), &mut rec.outcome, untrusted)?;
            return Ok(rec.answer(response));
        };
        let Some(in_flight) = self.app_gate.enter().await else {
            let sent = NoAnswer::new(
                "app-restarting",
                format!(
                    "{} was held for its app's restart longer than {}s",
                    self.boot.instance,
                    py_g(HOLD_LIMIT.as_secs_f64())
                ),
            );
            let response = relay(sent.into_sent(), &mut rec.outcome, untrusted)?;
            return Ok(rec.answer(response));
        };
        rec.hold(in_flight);
        let (parts, body) = request.into_parts();
        let mut headers = forwardable(&parts.headers, false);
        headers.remove(SOURCE_HEADER);
        headers.remove(http::header::EXPECT);
        // The server span: the app's own calls, if it passes traceparent on, are its children.
        rec.outcome.span = Some(trace_hop(&mut headers, &mut rand::rng()));
        let (watched, _) = Watched::new(body);
        let sent = self
            .upstream
            .send(
                Transport::Plain,
                "127.0.0.1",
                app_port,
                &parts.method,
                &head.path_qs,
                headers,
                watched.boxed(),
                &self.boot.instance,
            )
            .await;
        if matches!(&sent, Sent::NoAnswer(answer) if answer.refused) {
            self.app_refused(format!(
                "connection refused on 127.0.0.1:{app_port} by a request"
            ));
        }
        let answered = relay(sent, &mut rec.outcome, untrusted);
        self.answer(conn, rec, answered)
    }
}

/// The service a SPIFFE ID names (`spiffe://<domain>/<project>/<service>`): its last
/// path segment.
pub fn service_of(principal: &str) -> &str {
    principal.rsplit('/').next().unwrap_or(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_names_its_service_last() {
        assert_eq!(service_of("spiffe://devmesh.local/demo/catalog"), "catalog");
    }
}
